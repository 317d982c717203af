/* `bnspike merge OUT SHARD_DIR...`: joins the N shard folders of one sweep
 * (`bnspike sweep --shard i/N`, or the MPI ranks) into exactly the outputs the
 * whole sweep writes: summary.csv, events.csv, theory-events.csv,
 * summary.json, trajectories.npz and run.json (marked merged_from).
 *
 * A shard writes its rows with their global trajectory index, so the tables
 * are the shards' rows in shard order (checked row by row); trajectories.npz
 * is concatenated member by member (record arrays re-padded with NaN to the
 * global maximum, ev_traj shifted by the shard's first trajectory).  Nothing
 * is written until every shard has been read and checked; every file is then
 * written atomically. */
#include "common.h"
#include "merge_io.h"
#include "shard.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static const char merge_help[] =
    "usage: bnspike merge OUT SHARD_DIR... [options]\n"
    "\n"
    "Joins the output folders of the N shards of one sweep (bnspike sweep ...\n"
    "--shard I/N --out SHARD_DIR, e.g. the tasks of a Slurm job array) into OUT,\n"
    "which then holds exactly what the whole sweep writes: summary.csv,\n"
    "events.csv, theory-events.csv, summary.json, trajectories.npz (when the\n"
    "shards saved trajectories) and a run.json that lists the shards under\n"
    "merged_from.  The rows equal the whole sweep's row for row.\n"
    "\n"
    "Checks first, writes nothing on failure: every folder is a finished shard\n"
    "of the same sweep (configuration, grid, event parameters, data checksum,\n"
    "N), each shard I = 0..N-1 is there exactly once, and each covers its slice.\n"
    "Shard folders may be given in any order (a shell glob is fine).\n"
    "  bnspike merge runs/phase runs/phase-shards/*\n"
    "\n"
    "options:\n"
    "  -q, --quiet    no summary line\n"
    "  -h, --help     this text\n";

static int merr(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int merr(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bnspike merge: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return EXIT_RUN_FAILED;
}

typedef struct {
    const char *dir;
    jv run;
    int parsed;
    int64_t index, count, first, n, total;
} shard_t;

static int get_i64(const jv *o, const char *key, int64_t *v)
{
    return jv_int(jv_get(o, key), v);
}

/* run.json of one shard: parsed and its shard facts read. */
static int load_shard(shard_t *s)
{
    char path[4200], *buf;
    size_t len;
    snprintf(path, sizeof path, "%s/run.json", s->dir);
    struct stat sb;
    if (stat(s->dir, &sb) != 0) return merr("%s: %s", s->dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) return merr("%s is not a folder", s->dir);
    if (mio_read_file(path, &buf, &len))
        return merr("%s: no readable run.json (%s): not a finished sweep shard", s->dir, strerror(errno));
    char err[300];
    int bad = jv_parse(buf, len, &s->run, err, sizeof err);
    free(buf);
    if (bad) return merr("%s: not valid JSON: %s", path, err);
    s->parsed = 1;
    const char *tool = jv_string(jv_get(&s->run, "tool")), *cmd = jv_string(jv_get(&s->run, "command"));
    if (!tool || strcmp(tool, "bnspike") != 0 || !cmd || strcmp(cmd, "sweep") != 0)
        return merr("%s is not the output of bnspike sweep (run.json: command %s)", s->dir, cmd ? cmd : "?");
    if (jv_is_true(jv_get(&s->run, "partial")))
        return merr("%s holds partial outputs (an interrupted shard): finish it before merging", s->dir);
    const jv *sw = jv_get(&s->run, "sweep"), *sh = jv_get(sw, "shard");
    if (!sh) return merr("%s is a whole sweep, not a shard (run.json has no sweep.shard)", s->dir);
    if (get_i64(sh, "index", &s->index) || get_i64(sh, "count", &s->count) || get_i64(sh, "first", &s->first) ||
        get_i64(sh, "trajectories", &s->n) || get_i64(sw, "trajectories", &s->total) || s->count < 1 ||
        s->index < 0 || s->index >= s->count || s->n < 1 || s->first < 0 || s->total < s->count)
        return merr("%s/run.json: sweep.shard is incomplete or inconsistent", s->dir);
    return 0;
}

/* The parts of run.json that must agree for the shards to be one sweep. */
typedef struct {
    const char *key;
    const char *const *skip;
    double tol; /* numbers computed from the data (rounding may follow the thread count) */
} agree_rule;

static const char *const skip_sweep[] = {"shard", "batch_size", "batches", NULL};
static const char *const skip_data[] = {"source", NULL};
static const agree_rule rules[] = {
    {"tool", NULL, 0},   {"command", NULL, 0},  {"version", NULL, 0},         {"config", NULL, 0},
    {"sweep", skip_sweep, 0}, {"events", NULL, 0}, {"data", skip_data, 0},     {"outputs", NULL, 0},
    {"reference_info", NULL, 1e-9}, {"kappa_scale", NULL, 1e-9}, {"theory", NULL, 1e-9},
};

static int check_same_sweep(shard_t **ord, int N, int *warned)
{
    const shard_t *a = ord[0];
    for (int k = 1; k < N; k++) {
        const shard_t *b = ord[k];
        for (size_t r = 0; r < sizeof rules / sizeof rules[0]; r++) {
            char where[700];
            int c = jv_compare(jv_get(&a->run, rules[r].key), jv_get(&b->run, rules[r].key), rules[r].skip,
                               rules[r].tol, rules[r].key, where, sizeof where);
            if (c == 2)
                return merr("%s and %s are not shards of the same sweep: %s", a->dir, b->dir, where);
            if (c == 1 && !*warned) {
                fprintf(stderr, "bnspike merge: note: %s and %s differ in the last digits (%s); kept %s's\n",
                        a->dir, b->dir, where, a->dir);
                *warned = 1;
            }
        }
        const char *ga = jv_string(jv_get(&a->run, "git_commit")), *gb = jv_string(jv_get(&b->run, "git_commit"));
        if (ga && gb && strcmp(ga, gb) != 0)
            fprintf(stderr, "bnspike merge: note: %s was built from git %s, %s from %s\n", a->dir, ga, b->dir, gb);
        const char *ba = jv_string(jv_get(&a->run, "backend")), *bb = jv_string(jv_get(&b->run, "backend"));
        if (ba && bb && strcmp(ba, bb) != 0)
            fprintf(stderr,
                    "bnspike merge: note: %s ran on %s, %s on %s: the rows agree within the documented "
                    "cross-backend tolerance, not bit for bit\n",
                    a->dir, ba, b->dir, bb);
    }
    return 0;
}

/* ------------------------------------------------------------ text files */

static int load_text(const shard_t *s, const char *name, char **buf, size_t *len)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", s->dir, name);
    if (mio_read_file(path, buf, len)) return merr("%s: %s (the shard is incomplete)", path, strerror(errno));
    return 0;
}

/* CSV: identical header lines, then the rows.  per_traj: exactly one row per
 * trajectory, traj = first, first + 1, ...; else (events) traj within the
 * slice, in order. */
static int merge_csv(shard_t **ord, int N, const char *name, int per_traj, mio_buf *out)
{
    char *head0 = NULL;
    size_t hl0 = 0;
    int rc = 0;
    for (int k = 0; k < N && !rc; k++) {
        const shard_t *s = ord[k];
        char *buf;
        size_t len;
        if ((rc = load_text(s, name, &buf, &len))) break;
        char *nl = memchr(buf, '\n', len);
        if (!nl) {
            rc = merr("%s/%s: no header line", s->dir, name);
            free(buf);
            break;
        }
        size_t hl = (size_t)(nl - buf) + 1;
        if (k == 0) {
            head0 = buf;
            hl0 = hl;
            mio_append(out, buf, hl);
        } else if (hl != hl0 || memcmp(buf, head0, hl) != 0) {
            rc = merr("%s/%s: its columns differ from %s's", s->dir, name, ord[0]->dir);
            free(buf);
            break;
        }
        int64_t row = 0, last = -1;
        for (size_t p = hl; p < len && !rc;) {
            char *e = memchr(buf + p, '\n', len - p);
            if (!e) {
                rc = merr("%s/%s: the last line is incomplete", s->dir, name);
                break;
            }
            char *end;
            long long t = strtoll(buf + p, &end, 10);
            if (end == buf + p || *end != ',')
                rc = merr("%s/%s: line %lld does not start with a trajectory index", s->dir, name,
                          (long long)row + 2);
            else if (per_traj ? t != s->first + row : (t < s->first || t >= s->first + s->n || t < last))
                rc = merr("%s/%s: line %lld is trajectory %lld, expected %s%lld (shard %lld/%lld covers %lld..%lld)",
                          s->dir, name, (long long)row + 2, t, per_traj ? "" : "one of ",
                          (long long)(per_traj ? s->first + row : s->first), (long long)s->index,
                          (long long)s->count, (long long)s->first, (long long)(s->first + s->n - 1));
            last = t;
            row++;
            p = (size_t)(e - buf) + 1;
        }
        if (!rc && per_traj && row != s->n)
            rc = merr("%s/%s: %lld rows, expected %lld", s->dir, name, (long long)row, (long long)s->n);
        if (!rc) mio_append(out, buf + hl, len - hl);
        if (k) free(buf);
    }
    free(head0);
    return rc;
}

/* summary.json: the head (definitions, grid, seeds) identical, then one row
 * per line. */
static const char rows_mark[] = "\n  \"rows\": [\n";
static const char rows_end[] = "\n  ]\n}\n";

static int merge_summary_json(shard_t **ord, int N, mio_buf *out)
{
    char *head0 = NULL;
    size_t hl0 = 0;
    int rc = 0;
    for (int k = 0; k < N && !rc; k++) {
        const shard_t *s = ord[k];
        char *buf;
        size_t len;
        if ((rc = load_text(s, "summary.json", &buf, &len))) break;
        char *m = strstr(buf, rows_mark);
        size_t el = strlen(rows_end);
        if (!m || len < el || strcmp(buf + len - el, rows_end) != 0) {
            rc = merr("%s/summary.json: not the layout bnspike sweep writes", s->dir);
            free(buf);
            break;
        }
        size_t hl = (size_t)(m - buf) + strlen(rows_mark), re = len - el;
        if (re < hl) re = hl;
        if (k == 0) {
            head0 = buf;
            hl0 = hl;
            mio_append(out, buf, hl);
        } else {
            if (hl != hl0 || memcmp(buf, head0, hl) != 0) {
                rc = merr("%s/summary.json: its definitions or grid differ from %s's", s->dir, ord[0]->dir);
                free(buf);
                break;
            }
            mio_puts(out, ",\n");
        }
        int64_t row = 0;
        for (size_t p = hl; p < re && !rc; row++) {
            char *e = memchr(buf + p, '\n', re - p);
            size_t le = e ? (size_t)(e - buf) : re;
            long long t = -1;
            if (strncmp(buf + p, "{\"traj\":", 8) == 0) t = strtoll(buf + p + 8, NULL, 10);
            if (t != s->first + row)
                rc = merr("%s/summary.json: row %lld is not trajectory %lld", s->dir, (long long)row,
                          (long long)(s->first + row));
            p = le + 1;
        }
        if (!rc && row != s->n)
            rc = merr("%s/summary.json: %lld rows, expected %lld", s->dir, (long long)row, (long long)s->n);
        if (!rc) mio_append(out, buf + hl, re - hl);
        if (k) free(buf);
    }
    if (!rc) mio_puts(out, rows_end);
    free(head0);
    return rc;
}

/* ------------------------------------------------------------------ npz */

static int is_event_array(const char *name)
{
    return strncmp(name, "ev_", 3) == 0 || strncmp(name, "th_ev_", 6) == 0;
}
static int is_global_array(const char *name) { return strcmp(name, "w_ref") == 0 || strcmp(name, "kappa_scale") == 0; }

static int arrays_close(const mio_array *a, const mio_array *b)
{
    if (a->kind != 'f' || b->kind != 'f' || a->count != b->count) return 0;
    for (int64_t i = 0; i < a->count; i++) {
        double x, y;
        memcpy(&x, a->data + 8 * i, 8);
        memcpy(&y, b->data + 8 * i, 8);
        double m = fabs(x) > fabs(y) ? fabs(x) : fabs(y);
        if (!(fabs(x - y) <= 1e-9 * m) && !(isnan(x) && isnan(y))) return 0;
    }
    return 1;
}

static int add_array(bn_npz *z, const char *name, char kind, void *data, int ndim, const int64_t *shape)
{
    bn_status st = kind == 'f' ? bn_npz_add_f64(z, name, data, ndim, shape)
                               : bn_npz_add_i64(z, name, data, ndim, shape);
    return st ? cli_report("trajectories.npz", st) : 0;
}

static int merge_npz(shard_t **ord, int N, bn_npz *z)
{
    mio_npz *zs = calloc((size_t)N, sizeof *zs);
    if (!zs) return merr("out of memory");
    int rc = 0, warned = 0;
    for (int k = 0; k < N && !rc; k++) {
        char path[4200], err[600];
        snprintf(path, sizeof path, "%s/trajectories.npz", ord[k]->dir);
        if (mio_npz_load(path, &zs[k], err, sizeof err)) rc = merr("%s: %s", path, err);
    }
    for (int k = 1; k < N && !rc; k++) {
        if (zs[k].n != zs[0].n) {
            rc = merr("%s/trajectories.npz has %d arrays, %s's has %d", ord[k]->dir, zs[k].n, ord[0]->dir, zs[0].n);
            break;
        }
    }
    for (int m = 0; m < zs[0].n && !rc; m++) {
        const mio_array *a0 = &zs[0].a[m];
        const char *name = a0->name;
        const mio_array **per = calloc((size_t)N, sizeof *per);
        if (!per) {
            rc = merr("out of memory");
            break;
        }
        for (int k = 0; k < N && !rc; k++) {
            per[k] = mio_npz_find(&zs[k], name);
            if (!per[k]) rc = merr("%s/trajectories.npz has no array %s", ord[k]->dir, name);
            else if (per[k]->kind != a0->kind || per[k]->ndim != a0->ndim || a0->ndim < 1)
                rc = merr("%s/trajectories.npz: %s has another dtype or rank than in %s", ord[k]->dir, name,
                          ord[0]->dir);
        }
        if (rc) {
            free(per);
            break;
        }
        if (is_global_array(name)) {
            for (int k = 1; k < N && !rc; k++) {
                int same = per[k]->count == a0->count &&
                           memcmp(per[k]->shape, a0->shape, (size_t)a0->ndim * sizeof a0->shape[0]) == 0 &&
                           memcmp(per[k]->data, a0->data, (size_t)a0->count * 8) == 0;
                if (!same && arrays_close(per[k], a0)) {
                    if (!warned)
                        fprintf(stderr, "bnspike merge: note: %s differs in the last digits between %s and %s; kept %s's\n",
                                name, ord[0]->dir, ord[k]->dir, ord[0]->dir);
                    warned = 1;
                } else if (!same) {
                    rc = merr("%s and %s are not shards of the same sweep: trajectories.npz's %s differs", ord[0]->dir,
                              ord[k]->dir, name);
                }
            }
            if (!rc) rc = add_array(z, name, a0->kind, a0->data, a0->ndim, a0->shape);
            free(per);
            continue;
        }
        int event = is_event_array(name);
        if (event && a0->ndim != 1) rc = merr("%s/trajectories.npz: %s is not one-dimensional", ord[0]->dir, name);
        /* Rows: concatenated along axis 0; axis 1 padded to the widest (records). */
        int64_t rows = 0, cols = a0->ndim > 1 ? 0 : 1, inner = 1;
        for (int dd = 2; dd < a0->ndim; dd++) inner *= a0->shape[dd];
        for (int k = 0; k < N && !rc; k++) {
            const mio_array *a = per[k];
            if (!event && a->shape[0] != ord[k]->n)
                rc = merr("%s/trajectories.npz: %s has %lld rows, the shard has %lld trajectories", ord[k]->dir, name,
                          (long long)a->shape[0], (long long)ord[k]->n);
            for (int dd = 2; dd < a0->ndim && !rc; dd++)
                if (a->shape[dd] != a0->shape[dd])
                    rc = merr("%s/trajectories.npz: %s has another shape than in %s", ord[k]->dir, name, ord[0]->dir);
            if (a0->ndim > 1 && a->shape[1] != a0->shape[1] && a0->kind != 'f')
                rc = merr("%s/trajectories.npz: %s has another shape than in %s", ord[k]->dir, name, ord[0]->dir);
            rows += a->shape[0];
            if (a0->ndim > 1 && a->shape[1] > cols) cols = a->shape[1];
        }
        int64_t total = rows * cols * inner;
        unsigned char *buf = rc ? NULL : malloc((size_t)total * 8 + 8);
        if (!rc && !buf) rc = merr("out of memory for %s", name);
        if (!rc) {
            int64_t at = 0; /* elements written */
            for (int k = 0; k < N; k++) {
                const mio_array *a = per[k];
                int64_t ac = a0->ndim > 1 ? a->shape[1] : 1, rl = ac * inner, pad = (cols - ac) * inner;
                for (int64_t r = 0; r < a->shape[0]; r++) {
                    memcpy(buf + 8 * at, a->data + 8 * r * rl, (size_t)rl * 8);
                    if (event && a0->kind == 'i' && strstr(name, "ev_traj") && strlen(strstr(name, "ev_traj")) == 7) {
                        int64_t t;
                        memcpy(&t, buf + 8 * at, 8);
                        t += ord[k]->first;
                        memcpy(buf + 8 * at, &t, 8);
                    }
                    at += rl;
                    for (int64_t q = 0; q < pad; q++, at++) {
                        double nan = NAN;
                        memcpy(buf + 8 * at, &nan, 8);
                    }
                }
            }
            int64_t shape[8];
            memcpy(shape, a0->shape, sizeof shape);
            shape[0] = rows;
            if (a0->ndim > 1) shape[1] = cols;
            rc = add_array(z, name, a0->kind, buf, a0->ndim, shape);
        }
        free(buf);
        free(per);
    }
    for (int k = 0; k < N; k++) mio_npz_free(&zs[k]);
    free(zs);
    return rc;
}

/* -------------------------------------------------------------- run.json */

static void num_text(char *buf, size_t cap, double v)
{
    if (isfinite(v)) snprintf(buf, cap, "%.17g", v);
    else snprintf(buf, cap, "null");
}

/* The shards' command line as the whole sweep's: without --shard, with
 * --out OUT. */
static int whole_command_line(jv *cl, const char *out)
{
    if (!cl || cl->type != 'a') return 0;
    jv na;
    memset(&na, 0, sizeof na);
    na.type = 'a';
    int bad = 0, had_out = 0;
    for (int i = 0; i < cl->nkid && !bad; i++) {
        const char *a = jv_string(&cl->kid[i]);
        if (!a) continue;
        if (strcmp(a, "--shard") == 0) {
            i++;
            continue;
        }
        if (strncmp(a, "--shard=", 8) == 0) continue;
        if (strcmp(a, "--out") == 0 && i + 1 < cl->nkid) {
            bad |= !jv_add_string(&na, NULL, a) || !jv_add_string(&na, NULL, out);
            had_out = 1;
            i++;
            continue;
        }
        if (strncmp(a, "--out=", 6) == 0) {
            char tmp[4200];
            snprintf(tmp, sizeof tmp, "--out=%s", out);
            bad |= !jv_add_string(&na, NULL, tmp);
            had_out = 1;
            continue;
        }
        bad |= !jv_add_string(&na, NULL, a);
    }
    if (!had_out && !bad) bad |= !jv_add_string(&na, NULL, "--out") || !jv_add_string(&na, NULL, out);
    if (bad) {
        jv_free(&na);
        return -1;
    }
    jv tmp = *cl;
    cl->kid = na.kid;
    cl->nkid = na.nkid;
    cl->cap = na.cap;
    tmp.key = NULL;
    tmp.raw = NULL;
    tmp.str = NULL;
    jv_free(&tmp);
    return 0;
}

static int build_run_json(shard_t **ord, int N, const char *out, int argc, char **argv, const char *how,
                          mio_buf *text)
{
    jv *root = &ord[0]->run;
    char num[64];
    int bad = 0;
    /* merged_from: how, and each shard's own execution facts (read before
     * shard 0's tree becomes the merged one).  Built in a separate object,
     * appended last (pointers into root stay valid until then). */
    jv mf;
    memset(&mf, 0, sizeof mf);
    mf.type = 'o';
    snprintf(num, sizeof num, "%d", N);
    bad |= !jv_add(&mf, "shards", 'n', num);
    bad |= !jv_add_string(&mf, "by", how);
    jv *cl = jv_add(&mf, "command_line", 'a', NULL);
    bad |= !cl;
    if (cl) {
        bad |= !jv_add_string(cl, NULL, "bnspike");
        for (int i = 0; i < argc; i++) bad |= !jv_add_string(cl, NULL, argv[i]);
    }
    bad |= !jv_add_string(&mf, "note",
                          "sim_wall_seconds is the shards' sum, wall_seconds the longest shard's; sweep.batches is "
                          "the shards' sum, sweep.batch_size the largest; command_line is the equivalent whole sweep");
    jv *parts = jv_add(&mf, "parts", 'a', NULL);
    bad |= !parts;
    static const char *const copied[] = {"git_commit", "finished_utc", "backend", "backend_detail", "threads",
                                         "sim_wall_seconds", "wall_seconds", "command_line"};
    for (int k = 0; k < N && parts && !bad; k++) {
        jv *p = jv_add(parts, NULL, 'o', NULL);
        if (!p) {
            bad = 1;
            break;
        }
        const shard_t *s = ord[k];
        snprintf(num, sizeof num, "%lld", (long long)s->index);
        bad |= !jv_add(p, "index", 'n', num);
        snprintf(num, sizeof num, "%lld", (long long)s->first);
        bad |= !jv_add(p, "first", 'n', num);
        snprintf(num, sizeof num, "%lld", (long long)s->n);
        bad |= !jv_add(p, "trajectories", 'n', num);
        bad |= !jv_add_string(p, "folder", s->dir);
        const jv *ssw = jv_get(&s->run, "sweep");
        if (jv_get(ssw, "batch_size")) bad |= jv_clone_into(p, "batch_size", jv_get(ssw, "batch_size"));
        if (jv_get(ssw, "batches")) bad |= jv_clone_into(p, "batches", jv_get(ssw, "batches"));
        for (size_t c = 0; c < sizeof copied / sizeof copied[0]; c++) {
            const jv *src = jv_get(&s->run, copied[c]);
            if (src) bad |= jv_clone_into(p, copied[c], src);
        }
    }
    /* finished_utc, the whole sweep's command line */
    char when[64];
    time_t now = time(NULL);
    strftime(when, sizeof when, "\"%Y-%m-%dT%H:%M:%SZ\"", gmtime(&now));
    bad |= jv_set_raw(root, "finished_utc", 's', when);
    bad |= whole_command_line(jv_get_mut(root, "command_line"), out);
    /* sweep: no shard; batches summed, batch size the largest */
    jv *sw = jv_get_mut(root, "sweep");
    jv_remove(sw, "shard");
    int64_t bsize = 0, batches = 0, v;
    for (int k = 0; k < N; k++) {
        const jv *s = jv_get(&ord[k]->run, "sweep");
        if (!get_i64(s, "batch_size", &v) && v > bsize) bsize = v;
        if (!get_i64(s, "batches", &v)) batches += v;
    }
    snprintf(num, sizeof num, "%lld", (long long)bsize);
    if (jv_get(sw, "batch_size")) bad |= jv_set_raw(sw, "batch_size", 'n', num);
    snprintf(num, sizeof num, "%lld", (long long)batches);
    if (jv_get(sw, "batches")) bad |= jv_set_raw(sw, "batches", 'n', num);
    /* totals: sums */
    jv *tot = jv_get_mut(root, "totals");
    for (int i = 0; tot && tot->type == 'o' && i < tot->nkid; i++) {
        int64_t sum = 0;
        for (int k = 0; k < N; k++) {
            if (get_i64(jv_get(&ord[k]->run, "totals"), tot->kid[i].key, &v)) {
                jv_free(&mf);
                return merr("%s/run.json: totals.%s is missing", ord[k]->dir, tot->kid[i].key);
            }
            sum += v;
        }
        snprintf(num, sizeof num, "%lld", (long long)sum);
        bad |= jv_set_raw(tot, tot->kid[i].key, 'n', num);
    }
    /* times: simulation summed, wall the longest shard */
    double sim = 0, wall = 0, x;
    for (int k = 0; k < N; k++) {
        if (!jv_num(jv_get(&ord[k]->run, "sim_wall_seconds"), &x)) sim += x;
        if (!jv_num(jv_get(&ord[k]->run, "wall_seconds"), &x) && x > wall) wall = x;
    }
    num_text(num, sizeof num, sim);
    if (jv_get(root, "sim_wall_seconds")) bad |= jv_set_raw(root, "sim_wall_seconds", 'n', num);
    num_text(num, sizeof num, wall);
    if (jv_get(root, "wall_seconds")) bad |= jv_set_raw(root, "wall_seconds", 'n', num);

    if (!bad) bad |= jv_clone_into(root, "merged_from", &mf);
    jv_free(&mf);
    if (bad) return merr("out of memory while assembling run.json");
    jv_print(text, root);
    return 0;
}

/* ----------------------------------------------------------------- merge */

static int same_folder(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static int write_buf(const mio_buf *b, const char *dir, const char *name)
{
    cli_text t = {.buf = b->buf, .len = b->len, .cap = b->cap, .failed = b->failed};
    return cli_text_write(&t, dir, name);
}

int cli_merge_dirs(const char *out, char *const *dirs, int n, int argc, char **argv, const char *how, int quiet)
{
    shard_t *sh = calloc((size_t)(n > 0 ? n : 1), sizeof *sh);
    shard_t **ord = NULL;
    mio_buf txt[5];
    memset(txt, 0, sizeof txt);
    bn_npz *z = NULL;
    int rc = 0, N = 0, theory = 0, save = 0, warned = 0;
    if (!sh) return merr("out of memory");
    for (int k = 0; k < n && !rc; k++) {
        sh[k].dir = dirs[k];
        rc = load_shard(&sh[k]);
    }
    if (rc) goto done;
    /* N shards, each exactly once. */
    N = (int)sh[0].count;
    if (sh[0].count > INT_MAX / 2) {
        rc = merr("%s: %lld shards is too many", sh[0].dir, (long long)sh[0].count);
        goto done;
    }
    ord = calloc((size_t)N, sizeof *ord);
    if (!ord) {
        rc = merr("out of memory");
        goto done;
    }
    for (int k = 0; k < n; k++) {
        if (sh[k].count != N) {
            rc = merr("%s is shard %lld of %lld, but %s is one of %d: not the same sharding", sh[k].dir,
                      (long long)sh[k].index, (long long)sh[k].count, sh[0].dir, N);
            goto done;
        }
        if (ord[sh[k].index]) {
            rc = merr("%s and %s are both shard %lld/%d (give each shard once)", ord[sh[k].index]->dir, sh[k].dir,
                      (long long)sh[k].index, N);
            goto done;
        }
        ord[sh[k].index] = &sh[k];
    }
    int missing = 0;
    char list[512] = "";
    for (int i = 0; i < N; i++)
        if (!ord[i]) {
            size_t l = strlen(list);
            if (l < sizeof list - 32) snprintf(list + l, sizeof list - l, "%s%d", missing ? ", " : "", i);
            else if (l < sizeof list - 4) snprintf(list + l, sizeof list - l, ", ...");
            missing++;
        }
    if (missing) {
        rc = merr("%d of the %d shards %s missing: shard%s %s (of 0..%d); %d given", missing, N,
                  missing == 1 ? "is" : "are", missing == 1 ? "" : "s", list, N - 1, n);
        goto done;
    }
    /* Each shard covers its slice of the same total. */
    for (int i = 0; i < N; i++) {
        const shard_t *s = ord[i];
        int64_t total = ord[0]->total, a = cli_shard_first(total, i, N), b = cli_shard_first(total, i + 1, N);
        if (s->total != total) {
            rc = merr("%s and %s are not shards of the same sweep: %lld vs %lld trajectories", ord[0]->dir, s->dir,
                      (long long)total, (long long)s->total);
            goto done;
        }
        if (s->first != a || s->n != b - a) {
            rc = merr("%s: shard %d/%d covers trajectories %lld..%lld, expected %lld..%lld", s->dir, i, N,
                      (long long)s->first, (long long)(s->first + s->n - 1), (long long)a, (long long)(b - 1));
            goto done;
        }
    }
    if ((rc = check_same_sweep(ord, N, &warned))) goto done;
    for (int k = 0; k < n; k++)
        if (same_folder(out, sh[k].dir)) {
            rc = merr("OUT (%s) is one of the shard folders: merge into a new folder", out);
            goto done;
        }
    theory = jv_is_true(jv_get(jv_get(&ord[0]->run, "theory"), "computed"));
    save = jv_is_true(jv_get(jv_get(&ord[0]->run, "sweep"), "save_trajectories"));

    /* Everything is read and assembled before anything is written. */
    if ((rc = merge_csv(ord, N, "summary.csv", 1, &txt[0]))) goto done;
    if ((rc = merge_csv(ord, N, "events.csv", 0, &txt[1]))) goto done;
    if (theory && (rc = merge_csv(ord, N, "theory-events.csv", 0, &txt[2]))) goto done;
    if ((rc = merge_summary_json(ord, N, &txt[3]))) goto done;
    if (save) {
        bn_status st = bn_npz_create(&z);
        if (st) {
            rc = cli_report("trajectories.npz", st);
            goto done;
        }
        if ((rc = merge_npz(ord, N, z))) goto done;
    }
    if ((rc = build_run_json(ord, N, out, argc, argv, how, &txt[4]))) goto done;
    for (int i = 0; i < 5; i++)
        if (txt[i].failed) {
            rc = merr("out of memory while assembling the outputs");
            goto done;
        }

    if ((rc = cli_make_dirs(out))) goto done;
    if (!rc) rc = write_buf(&txt[0], out, "summary.csv");
    if (!rc) rc = write_buf(&txt[1], out, "events.csv");
    if (!rc && theory) rc = write_buf(&txt[2], out, "theory-events.csv");
    if (!rc) rc = write_buf(&txt[3], out, "summary.json");
    if (!rc && save) {
        char path[4200];
        snprintf(path, sizeof path, "%s/trajectories.npz", out);
        bn_status st = bn_npz_write(z, path);
        if (st) rc = cli_report(path, st);
    }
    if (!rc) rc = write_buf(&txt[4], out, "run.json");
    if (!rc && !quiet)
        printf("merged %d shard%s (%lld trajectories) into %s: summary.csv, events.csv, %ssummary.json, run.json%s\n",
               N, N == 1 ? "" : "s", (long long)ord[0]->total, out, theory ? "theory-events.csv, " : "",
               save ? ", trajectories.npz" : "");
done:
    for (int k = 0; k < n; k++)
        if (sh[k].parsed) jv_free(&sh[k].run);
    for (int i = 0; i < 5; i++) free(txt[i].buf);
    bn_npz_free(z);
    free(ord);
    free(sh);
    return rc;
}

int cmd_merge(int argc, char **argv)
{
    int quiet = 0, npos = 0;
    char **pos = calloc((size_t)argc + 1, sizeof *pos);
    if (!pos) return merr("out of memory");
    int only_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!only_pos && a[0] == '-' && a[1]) {
            if (strcmp(a, "--") == 0) only_pos = 1;
            else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
                fputs(merge_help, stdout);
                free(pos);
                return 0;
            } else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) quiet = 1;
            else {
                free(pos);
                return cli_usage_error("merge", "unknown option '%s'", a);
            }
            continue;
        }
        pos[npos++] = argv[i];
    }
    int rc;
    if (npos < 2) rc = cli_usage_error("merge", "expected OUT and at least one SHARD_DIR");
    else if (cli_parse_only) rc = 0;
    else rc = cli_merge_dirs(pos[0], pos + 1, npos - 1, argc, argv, "bnspike merge", quiet);
    free(pos);
    return rc;
}
