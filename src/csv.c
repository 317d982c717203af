/* Numeric CSV data sets: one sample per line, last column y, the others X.
 *
 * The delimiter is whichever of ',' ';' TAB occurs most on the first
 * non-blank line (',' on ties).  That line is a header when any of its
 * fields is not a number.  Blank lines, a UTF-8 byte order mark, trailing CR
 * and spaces around fields are ignored; quotes around a field are dropped.
 * Quoted delimiters are not supported: nothing in a numeric file needs them. */
#include "io_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    double *v;
    size_t n, cap;
} dvec;

static int dvec_push(dvec *a, double x)
{
    if (a->n == a->cap) {
        size_t ncap = a->cap ? a->cap * 2 : 1024;
        double *nv = ncap > a->cap && ncap <= SIZE_MAX / sizeof(double) ? realloc(a->v, ncap * sizeof(double))
                                                                         : NULL;
        if (!nv) return -1;
        a->v = nv;
        a->cap = ncap;
    }
    a->v[a->n++] = x;
    return 0;
}

static char pick_delimiter(const char *s, const char *e)
{
    size_t comma = 0, semi = 0, tab = 0;
    for (; s < e; s++) {
        comma += *s == ',';
        semi += *s == ';';
        tab += *s == '\t';
    }
    if (semi > comma && semi >= tab) return ';';
    if (tab > comma && tab > semi) return '\t';
    return ',';
}

static int is_blank(const char *s, const char *e)
{
    for (; s < e; s++)
        if (*s != ' ' && *s != '\t' && *s != '\r') return 0;
    return 1;
}

static int count_fields(const char *s, const char *e, char delim)
{
    int n = 1;
    for (; s < e; s++) n += *s == delim;
    return n;
}

/* Trims [*s, *e) of padding and one pair of surrounding double quotes. */
static void trim_field(char **s, char **e, char delim)
{
    while (*s < *e && (**s == ' ' || (**s == '\t' && delim != '\t'))) (*s)++;
    while (*e > *s && ((*e)[-1] == ' ' || ((*e)[-1] == '\t' && delim != '\t'))) (*e)--;
    if (*e - *s >= 2 && **s == '"' && (*e)[-1] == '"') {
        (*s)++;
        (*e)--;
    }
}

/* Parses [s, e) as a whole number; the byte at e is restored afterwards. */
static int parse_number(char *s, char *e, double *out)
{
    if (s == e) return 0;
    char saved = *e;
    *e = '\0';
    char *end;
    *out = strtod(s, &end);
    *e = saved;
    return end == e;
}

/* Field text made printable and short for messages. */
static void excerpt(const char *s, const char *e, char *buf, size_t cap)
{
    size_t n = 0;
    for (; s < e && n + 4 < cap; s++) buf[n++] = (*s >= 32 && *s < 127) ? *s : '?';
    if (s < e) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = '\0';
}

typedef struct {
    const char *path;
    char delim;
    int ncols;  /* fields per line, fixed by the first non-blank line */
    int header; /* the first non-blank line was a header */
    dvec X, y;
} csv_state;

/* One non-blank line: returns BN_OK after appending its values, or fails. */
static bn_status parse_line(csv_state *cs, char *s, char *e, long line)
{
    if (cs->ncols == 0) {
        cs->delim = pick_delimiter(s, e);
        cs->ncols = count_fields(s, e, cs->delim);
        if (cs->ncols < 2)
            return bn_fail(BN_ERR_DATA, "%s: line %ld has 1 column, but a data set needs at least 2 "
                           "(features, then y last)", cs->path, line);
        /* A header is a first line that is not all numbers. */
        char *fs = s;
        for (int c = 0; c < cs->ncols; c++) {
            char *fe = fs;
            while (fe < e && *fe != cs->delim) fe++;
            char *ts = fs, *te = fe;
            double v;
            trim_field(&ts, &te, cs->delim);
            if (!parse_number(ts, te, &v)) {
                cs->header = 1;
                return BN_OK;
            }
            fs = fe + 1;
        }
    }
    int nf = count_fields(s, e, cs->delim);
    if (nf != cs->ncols)
        return bn_fail(BN_ERR_FORMAT, "%s: line %ld has %d fields, expected %d", cs->path, line, nf, cs->ncols);
    char *fs = s;
    for (int c = 0; c < cs->ncols; c++) {
        char *fe = fs;
        while (fe < e && *fe != cs->delim) fe++;
        char *ts = fs, *te = fe;
        double v;
        trim_field(&ts, &te, cs->delim);
        if (!parse_number(ts, te, &v)) {
            char text[48];
            excerpt(ts, te, text, sizeof text);
            return bn_fail(BN_ERR_FORMAT, "%s: line %ld, column %d: '%s' is not a number%s", cs->path, line,
                           c + 1, text, ts == te ? " (empty field)" : "");
        }
        if (dvec_push(c == cs->ncols - 1 ? &cs->y : &cs->X, v) != 0)
            return bn_fail(BN_ERR_NOMEM, "%s: out of memory at line %ld", cs->path, line);
        fs = fe + 1;
    }
    return BN_OK;
}

bn_status bn_csv_parse(char *buf, size_t len, const char *path, bn_dataset **out)
{
    if (!out) return bn_fail(BN_ERR_ARG, "bn_csv_parse: out is NULL");
    *out = NULL;
    if (!buf || !path) return bn_fail(BN_ERR_ARG, "bn_csv_parse: buffer or name is NULL");
    csv_state cs = {.path = path};
    char *p = buf, *end = buf + len;
    if (len >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0) p += 3;
    bn_status st = BN_OK;
    for (long line = 1; st == BN_OK && p < end; line++) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *le = nl ? nl : end;
        char *e = le;
        if (e > p && e[-1] == '\r') e--;
        if (!is_blank(p, e)) st = parse_line(&cs, p, e, line);
        p = nl ? nl + 1 : end;
    }
    if (st == BN_OK && cs.y.n == 0)
        st = bn_fail(BN_ERR_FORMAT, "%s has no data rows (%s)", path,
                     cs.header ? "only a header line" : "the file is empty");
    if (st == BN_OK) {
        st = bn_dataset_create(cs.X.v, cs.y.v, (int64_t)cs.y.n, cs.ncols - 1, bn_path_basename(path), out);
        if (st != BN_OK) { /* say which file; copy first, bn_fail overwrites the text */
            char why[512];
            snprintf(why, sizeof why, "%s", bn_last_error());
            bn_fail(st, "%s: %s", path, why);
        }
    }
    free(cs.X.v);
    free(cs.y.v);
    return st;
}

bn_status bn_dataset_load_csv(const char *path, bn_dataset **out)
{
    if (!out) return bn_fail(BN_ERR_ARG, "bn_dataset_load_csv: out is NULL");
    *out = NULL;
    unsigned char *buf;
    size_t len;
    BN_TRY(bn_read_whole_file(path, &buf, &len));
    bn_status st = bn_csv_parse((char *)buf, len, path, out);
    free(buf);
    return st;
}
