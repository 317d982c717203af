/* Readers for `bnspike merge`: a JSON tree that keeps scalars as written, and
 * the raw members of an .npz (see merge_io.h). */
#include "merge_io.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* ---------------------------------------------------------------- files */

int mio_read_file(const char *path, char **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    while (b) {
        if (n + 1 >= cap) {
            char *nb = cap < ((size_t)1 << 62) ? realloc(b, cap * 2) : NULL;
            if (!nb) {
                free(b);
                b = NULL;
                break;
            }
            b = nb;
            cap *= 2;
        }
        size_t got = fread(b + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    int bad = !b || ferror(f);
    int saved = b ? EIO : ENOMEM;
    fclose(f);
    if (bad) {
        free(b);
        errno = saved;
        return -1;
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    return 0;
}

void mio_append(mio_buf *b, const void *p, size_t n)
{
    if (b->failed) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (b->len + n + 1 > cap) cap *= 2;
        char *nb = realloc(b->buf, cap);
        if (!nb) {
            b->failed = 1;
            return;
        }
        b->buf = nb;
        b->cap = cap;
    }
    if (n) memcpy(b->buf + b->len, p, n);
    b->len += n;
    b->buf[b->len] = '\0';
}

void mio_puts(mio_buf *b, const char *s) { mio_append(b, s, strlen(s)); }

/* ----------------------------------------------------------------- JSON */

typedef struct {
    const char *s;
    size_t len, pos;
    char *err;
    size_t errcap;
    int failed;
} jparser;

static void jfail(jparser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void jfail(jparser *p, const char *fmt, ...)
{
    if (p->failed) return;
    p->failed = 1;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* line of the failure */
    int line = 1;
    for (size_t i = 0; i < p->pos && i < p->len; i++) line += p->s[i] == '\n';
    snprintf(p->err, p->errcap, "%s at line %d", msg, line);
}

static void jws(jparser *p)
{
    while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\n' || p->s[p->pos] == '\r' ||
                               p->s[p->pos] == '\t'))
        p->pos++;
}

static char *jdup(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* A string token at p->pos: *raw (with quotes) and *dec (decoded). */
static int jstring(jparser *p, char **raw, char **dec)
{
    size_t start = p->pos++;
    size_t cap = 64, n = 0;
    char *d = malloc(cap);
    if (!d) {
        jfail(p, "out of memory");
        return -1;
    }
    for (;;) {
        if (p->pos >= p->len) {
            free(d);
            jfail(p, "unterminated string");
            return -1;
        }
        unsigned char c = (unsigned char)p->s[p->pos++];
        if (c == '"') break;
        if (c < 0x20) {
            free(d);
            jfail(p, "control character in a string");
            return -1;
        }
        char out[4];
        size_t k = 1;
        out[0] = (char)c;
        if (c == '\\') {
            if (p->pos >= p->len) continue;
            char e = p->s[p->pos++];
            switch (e) {
            case '"': case '\\': case '/': out[0] = e; break;
            case 'b': out[0] = '\b'; break;
            case 'f': out[0] = '\f'; break;
            case 'n': out[0] = '\n'; break;
            case 'r': out[0] = '\r'; break;
            case 't': out[0] = '\t'; break;
            case 'u': {
                if (p->pos + 4 > p->len) {
                    free(d);
                    jfail(p, "bad \\u escape");
                    return -1;
                }
                unsigned v = 0;
                for (int i = 0; i < 4; i++) {
                    char h = p->s[p->pos++];
                    v = v * 16 + (unsigned)(h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                                            : h >= 'A' && h <= 'F' ? h - 'A' + 10 : 0);
                }
                if (v < 0x80) out[0] = (char)v;
                else if (v < 0x800) {
                    out[0] = (char)(0xC0 | (v >> 6));
                    out[1] = (char)(0x80 | (v & 0x3F));
                    k = 2;
                } else {
                    out[0] = (char)(0xE0 | (v >> 12));
                    out[1] = (char)(0x80 | ((v >> 6) & 0x3F));
                    out[2] = (char)(0x80 | (v & 0x3F));
                    k = 3;
                }
                break;
            }
            default:
                free(d);
                jfail(p, "bad escape \\%c", e);
                return -1;
            }
        }
        if (n + k + 1 > cap) {
            cap *= 2;
            char *nd = realloc(d, cap);
            if (!nd) {
                free(d);
                jfail(p, "out of memory");
                return -1;
            }
            d = nd;
        }
        memcpy(d + n, out, k);
        n += k;
    }
    d[n] = '\0';
    *dec = d;
    *raw = jdup(p->s + start, p->pos - start);
    if (!*raw) {
        free(d);
        *dec = NULL;
        jfail(p, "out of memory");
        return -1;
    }
    return 0;
}

static int jkid_push(jv *o, jv *kid)
{
    if (o->nkid == o->cap) {
        int cap = o->cap ? o->cap * 2 : 8;
        jv *nk = realloc(o->kid, (size_t)cap * sizeof *nk);
        if (!nk) return -1;
        o->kid = nk;
        o->cap = cap;
    }
    o->kid[o->nkid++] = *kid;
    return 0;
}

static void jvalue(jparser *p, jv *v, int depth)
{
    memset(v, 0, sizeof *v);
    jws(p);
    if (depth > 64) {
        jfail(p, "nested too deeply");
        return;
    }
    if (p->pos >= p->len) {
        jfail(p, "unexpected end");
        return;
    }
    char c = p->s[p->pos];
    if (c == '{' || c == '[') {
        v->type = c == '{' ? 'o' : 'a';
        char close = c == '{' ? '}' : ']';
        p->pos++;
        jws(p);
        if (p->pos < p->len && p->s[p->pos] == close) {
            p->pos++;
            return;
        }
        for (;;) {
            jv kid;
            memset(&kid, 0, sizeof kid);
            char *key = NULL;
            if (v->type == 'o') {
                jws(p);
                if (p->pos >= p->len || p->s[p->pos] != '"') {
                    jfail(p, "expected a key");
                    return;
                }
                char *kraw = NULL;
                if (jstring(p, &kraw, &key)) return;
                free(kraw);
                jws(p);
                if (p->pos >= p->len || p->s[p->pos] != ':') {
                    free(key);
                    jfail(p, "expected ':'");
                    return;
                }
                p->pos++;
            }
            jvalue(p, &kid, depth + 1);
            kid.key = key;
            if (jkid_push(v, &kid)) {
                jv_free(&kid);
                jfail(p, "out of memory");
                return;
            }
            if (p->failed) return;
            jws(p);
            if (p->pos < p->len && p->s[p->pos] == ',') {
                p->pos++;
                continue;
            }
            if (p->pos < p->len && p->s[p->pos] == close) {
                p->pos++;
                return;
            }
            jfail(p, "expected ',' or '%c'", close);
            return;
        }
    }
    if (c == '"') {
        v->type = 's';
        jstring(p, &v->raw, &v->str);
        return;
    }
    size_t start = p->pos;
    if (c == '-' || (c >= '0' && c <= '9')) {
        v->type = 'n';
        while (p->pos < p->len && strchr("+-0123456789.eE", p->s[p->pos])) p->pos++;
    } else {
        static const char *const words[] = {"true", "false", "null"};
        for (int w = 0; w < 3; w++) {
            size_t wl = strlen(words[w]);
            if (p->len - p->pos >= wl && strncmp(p->s + p->pos, words[w], wl) == 0) {
                v->type = w < 2 ? 'b' : 'z';
                p->pos += wl;
                break;
            }
        }
        if (!v->type) {
            jfail(p, "unexpected character '%c'", c);
            return;
        }
    }
    v->raw = jdup(p->s + start, p->pos - start);
    if (!v->raw) jfail(p, "out of memory");
}

int jv_parse(const char *text, size_t len, jv *out, char *err, size_t errcap)
{
    jparser p = {.s = text, .len = len, .err = err, .errcap = errcap};
    jvalue(&p, out, 0);
    jws(&p);
    if (!p.failed && p.pos != p.len) jfail(&p, "text after the JSON value");
    if (p.failed) {
        jv_free(out);
        return -1;
    }
    return 0;
}

void jv_free(jv *v)
{
    if (!v) return;
    for (int i = 0; i < v->nkid; i++) jv_free(&v->kid[i]);
    free(v->kid);
    free(v->key);
    free(v->raw);
    free(v->str);
    memset(v, 0, sizeof *v);
}

const jv *jv_get(const jv *o, const char *key)
{
    if (!o || o->type != 'o') return NULL;
    for (int i = 0; i < o->nkid; i++)
        if (o->kid[i].key && strcmp(o->kid[i].key, key) == 0) return &o->kid[i];
    return NULL;
}

jv *jv_get_mut(jv *o, const char *key) { return (jv *)jv_get(o, key); }

int jv_int(const jv *v, int64_t *out)
{
    if (!v || v->type != 'n') return -1;
    char *end;
    errno = 0;
    long long x = strtoll(v->raw, &end, 10);
    if (*end || errno) return -1;
    *out = x;
    return 0;
}

int jv_num(const jv *v, double *out)
{
    if (!v) return -1;
    if (v->type == 'z') { /* the writer's NaN/Inf */
        *out = NAN;
        return 0;
    }
    if (v->type != 'n') return -1;
    char *end;
    *out = strtod(v->raw, &end);
    return *end ? -1 : 0;
}

const char *jv_string(const jv *v) { return v && v->type == 's' ? v->str : NULL; }
int jv_is_true(const jv *v) { return v && v->type == 'b' && strcmp(v->raw, "true") == 0; }

static int in_list(const char *key, const char *const *list)
{
    for (; list && *list; list++)
        if (key && strcmp(key, *list) == 0) return 1;
    return 0;
}

static const char *shown(const jv *v)
{
    if (!v) return "(absent)";
    if (v->type == 'o') return "{...}";
    if (v->type == 'a') return "[...]";
    return v->raw;
}

static int jcmp(const jv *a, const jv *b, const char *const *skip, double tol, char *path, size_t pcap,
                char *where, size_t wcap)
{
    size_t pl = strlen(path);
    if (a->type != b->type) goto differ;
    if (a->type == 'o' || a->type == 'a') {
        int worst = 0, i = 0, k = 0;
        for (;;) {
            while (i < a->nkid && a->type == 'o' && in_list(a->kid[i].key, skip)) i++;
            while (k < b->nkid && b->type == 'o' && in_list(b->kid[k].key, skip)) k++;
            if (i >= a->nkid && k >= b->nkid) break;
            const jv *x = i < a->nkid ? &a->kid[i] : NULL, *y = k < b->nkid ? &b->kid[k] : NULL;
            if (a->type == 'o') snprintf(path + pl, pcap - pl, ".%s", x ? x->key : y->key);
            else snprintf(path + pl, pcap - pl, "[%d]", i);
            if (!x || !y || (a->type == 'o' && strcmp(x->key, y->key) != 0)) {
                snprintf(where, wcap, "%s: %s vs %s", path, x ? shown(x) : "(absent)", y ? shown(y) : "(absent)");
                path[pl] = '\0';
                return 2;
            }
            int c = jcmp(x, y, NULL, tol, path, pcap, where, wcap);
            path[pl] = '\0';
            if (c == 2) return 2;
            if (c > worst) worst = c;
            i++;
            k++;
        }
        return worst;
    }
    if (strcmp(a->raw, b->raw) == 0) return 0;
    if (a->type == 'n' && tol > 0) {
        double x = strtod(a->raw, NULL), y = strtod(b->raw, NULL);
        double m = fabs(x) > fabs(y) ? fabs(x) : fabs(y);
        if (fabs(x - y) <= tol * m) {
            if (!where[0]) snprintf(where, wcap, "%s: %s vs %s", path, a->raw, b->raw);
            return 1;
        }
    }
differ:
    snprintf(where, wcap, "%s: %s vs %s", path, shown(a), shown(b));
    return 2;
}

int jv_compare(const jv *a, const jv *b, const char *const *skip, double tol, const char *prefix, char *where,
               size_t wcap)
{
    char path[1024];
    snprintf(path, sizeof path, "%s", prefix);
    where[0] = '\0';
    if (!a || !b) {
        if (!a && !b) return 0;
        snprintf(where, wcap, "%s: %s vs %s", prefix, shown(a), shown(b));
        return 2;
    }
    return jcmp(a, b, skip, tol, path, sizeof path, where, wcap);
}

void jv_remove(jv *o, const char *key)
{
    if (!o || o->type != 'o') return;
    for (int i = 0; i < o->nkid; i++)
        if (o->kid[i].key && strcmp(o->kid[i].key, key) == 0) {
            jv_free(&o->kid[i]);
            memmove(&o->kid[i], &o->kid[i + 1], (size_t)(o->nkid - i - 1) * sizeof *o->kid);
            o->nkid--;
            return;
        }
}

jv *jv_add(jv *parent, const char *key, char type, const char *raw)
{
    jv kid;
    memset(&kid, 0, sizeof kid);
    kid.type = type;
    if (key && !(kid.key = jdup(key, strlen(key)))) return NULL;
    if (raw && !(kid.raw = jdup(raw, strlen(raw)))) {
        jv_free(&kid);
        return NULL;
    }
    if (jkid_push(parent, &kid)) {
        jv_free(&kid);
        return NULL;
    }
    return &parent->kid[parent->nkid - 1];
}

int jv_set_raw(jv *o, const char *key, char type, const char *raw)
{
    jv *v = jv_get_mut(o, key);
    if (!v) return jv_add(o, key, type, raw) ? 0 : -1;
    char *r = jdup(raw, strlen(raw));
    if (!r) return -1;
    char *k = v->key;
    v->key = NULL;
    jv_free(v);
    v->key = k;
    v->type = type;
    v->raw = r;
    return 0;
}

static void escape_into(mio_buf *b, const char *s)
{
    mio_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char tmp[8];
        if (*p == '"' || *p == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)*p;
            mio_append(b, tmp, 2);
        } else if (*p < 0x20) {
            snprintf(tmp, sizeof tmp, "\\u%04x", *p);
            mio_puts(b, tmp);
        } else {
            mio_append(b, p, 1);
        }
    }
    mio_puts(b, "\"");
}

jv *jv_add_string(jv *parent, const char *key, const char *s)
{
    mio_buf b = {0};
    escape_into(&b, s);
    jv *v = b.failed ? NULL : jv_add(parent, key, 's', b.buf);
    if (v) v->str = jdup(s, strlen(s));
    free(b.buf);
    return v;
}

static int clone_kids(jv *dst, const jv *src)
{
    for (int i = 0; i < src->nkid; i++)
        if (jv_clone_into(dst, src->kid[i].key, &src->kid[i])) return -1;
    return 0;
}

int jv_clone_into(jv *parent, const char *key, const jv *src)
{
    jv *v = jv_add(parent, key, src->type, src->raw);
    if (!v) return -1;
    if (src->str && !(v->str = jdup(src->str, strlen(src->str)))) return -1;
    return clone_kids(v, src);
}

static void jprint(mio_buf *b, const jv *v, int depth)
{
    if (v->type == 'o' || v->type == 'a') {
        mio_puts(b, v->type == 'o' ? "{" : "[");
        for (int i = 0; i < v->nkid; i++) {
            mio_puts(b, i ? ",\n" : "\n");
            for (int d = 0; d <= depth; d++) mio_puts(b, "  ");
            if (v->type == 'o') {
                escape_into(b, v->kid[i].key ? v->kid[i].key : "");
                mio_puts(b, ": ");
            }
            jprint(b, &v->kid[i], depth + 1);
        }
        if (v->nkid) {
            mio_puts(b, "\n");
            for (int d = 0; d < depth; d++) mio_puts(b, "  ");
        }
        mio_puts(b, v->type == 'o' ? "}" : "]");
        return;
    }
    mio_puts(b, v->raw ? v->raw : "null");
}

void jv_print(mio_buf *b, const jv *v)
{
    jprint(b, v, 0);
    mio_puts(b, "\n");
}

/* ------------------------------------------------------------------ npz */

static uint32_t le16(const unsigned char *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t le64(const unsigned char *p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }

#define NPZ_FAIL(...)                               \
    do {                                            \
        snprintf(err, errcap, __VA_ARGS__);         \
        goto fail;                                  \
    } while (0)

/* One .npy image (held in buf, len bytes) into a. */
static int parse_npy(const unsigned char *buf, uint64_t len, mio_array *a, char *err, size_t errcap)
{
    if (len < 10 || memcmp(buf, "\x93NUMPY", 6) != 0) NPZ_FAIL("not an .npy member");
    uint64_t hl, h0;
    if (buf[6] == 1) {
        hl = le16(buf + 8);
        h0 = 10;
    } else {
        if (len < 12) NPZ_FAIL("truncated .npy header");
        hl = le32(buf + 8);
        h0 = 12;
    }
    if (h0 + hl > len || hl > 65536) NPZ_FAIL("truncated .npy header");
    char hdr[65537];
    memcpy(hdr, buf + h0, (size_t)hl);
    hdr[hl] = '\0';
    const char *d = strstr(hdr, "'descr':");
    if (!d) NPZ_FAIL("no descr in the .npy header");
    d += 8;
    while (*d == ' ') d++;
    if (strncmp(d, "'<f8'", 5) == 0) a->kind = 'f';
    else if (strncmp(d, "'<i8'", 5) == 0) a->kind = 'i';
    else NPZ_FAIL("dtype %.8s (bnspike writes <f8 and <i8 only)", d);
    const char *fo = strstr(hdr, "'fortran_order':");
    if (!fo || strncmp(fo + 16 + strspn(fo + 16, " "), "False", 5) != 0) NPZ_FAIL("not in C order");
    const char *sh = strstr(hdr, "'shape':");
    if (!sh) NPZ_FAIL("no shape in the .npy header");
    sh = strchr(sh, '(');
    if (!sh) NPZ_FAIL("bad shape in the .npy header");
    sh++;
    a->ndim = 0;
    a->count = 1;
    for (;;) {
        while (*sh == ' ' || *sh == ',') sh++;
        if (*sh == ')') break;
        char *end;
        long long v = strtoll(sh, &end, 10);
        if (end == sh || v < 0 || a->ndim == 8) NPZ_FAIL("bad shape in the .npy header");
        a->shape[a->ndim++] = v;
        if (v && a->count > INT64_MAX / 8 / v) NPZ_FAIL("shape too large");
        a->count *= v;
        sh = end;
    }
    if ((uint64_t)a->count * 8 > len - h0 - hl) NPZ_FAIL("data shorter than its shape");
    a->data = malloc((size_t)a->count * 8 + 1);
    if (!a->data) NPZ_FAIL("out of memory");
    memcpy(a->data, buf + h0 + hl, (size_t)a->count * 8);
    return 0;
fail:
    return -1;
}

int mio_npz_load(const char *path, mio_npz *z, char *err, size_t errcap)
{
    memset(z, 0, sizeof *z);
    char *file = NULL;
    size_t flen = 0;
    unsigned char *tmp = NULL;
    char sub[512];
    if (mio_read_file(path, &file, &flen)) {
        snprintf(err, errcap, "cannot read: %s", strerror(errno));
        return -1;
    }
    const unsigned char *f = (const unsigned char *)file;
    /* End of central directory (the archive comment may follow it). */
    int64_t eo = -1;
    for (int64_t i = (int64_t)flen - 22; i >= 0 && i >= (int64_t)flen - 22 - 65535; i--)
        if (le32(f + i) == 0x06054b50u) {
            eo = i;
            break;
        }
    if (eo < 0) NPZ_FAIL("not a ZIP archive (no end record)");
    uint64_t nent = le16(f + eo + 10), cdsize = le32(f + eo + 12), cdoff = le32(f + eo + 16);
    if (nent == 0xFFFF || cdsize == 0xFFFFFFFFu || cdoff == 0xFFFFFFFFu) {
        if (eo < 20 || le32(f + eo - 20) != 0x07064b50u) NPZ_FAIL("ZIP64 locator missing");
        uint64_t e64 = le64(f + eo - 20 + 8);
        if (e64 + 56 > flen || le32(f + e64) != 0x06064b50u) NPZ_FAIL("bad ZIP64 end record");
        nent = le64(f + e64 + 32);
        cdsize = le64(f + e64 + 40);
        cdoff = le64(f + e64 + 48);
    }
    if (cdoff > flen || cdsize > flen - cdoff || nent > cdsize / 46) NPZ_FAIL("bad central directory");
    z->a = calloc(nent ? nent : 1, sizeof *z->a);
    if (!z->a) NPZ_FAIL("out of memory");
    uint64_t p = cdoff;
    for (uint64_t e = 0; e < nent; e++) {
        if (p + 46 > cdoff + cdsize || le32(f + p) != 0x02014b50u) NPZ_FAIL("bad central directory entry");
        uint32_t method = le16(f + p + 10), crc = le32(f + p + 16);
        uint64_t csize = le32(f + p + 20), usize = le32(f + p + 24), off = le32(f + p + 42);
        uint32_t nl = le16(f + p + 28), xl = le16(f + p + 30), cl = le16(f + p + 32);
        if (p + 46 + nl + xl + cl > cdoff + cdsize) NPZ_FAIL("bad central directory entry");
        const unsigned char *x = f + p + 46 + nl, *xe = x + xl;
        while (x + 4 <= xe) {
            uint32_t id = le16(x), sz = le16(x + 2);
            const unsigned char *q = x + 4, *qe = q + sz;
            if (qe > xe) break;
            if (id == 1) {
                if (usize == 0xFFFFFFFFu && q + 8 <= qe) usize = le64(q), q += 8;
                if (csize == 0xFFFFFFFFu && q + 8 <= qe) csize = le64(q), q += 8;
                if (off == 0xFFFFFFFFu && q + 8 <= qe) off = le64(q), q += 8;
            }
            x = qe;
        }
        if (nl < 5 || memcmp(f + p + 46 + nl - 4, ".npy", 4) != 0) NPZ_FAIL("member is not an .npy file");
        mio_array *a = &z->a[z->n];
        a->name = malloc(nl - 3);
        if (!a->name) NPZ_FAIL("out of memory");
        memcpy(a->name, f + p + 46, nl - 4);
        a->name[nl - 4] = '\0';
        z->n++;
        if (off + 30 > flen || le32(f + off) != 0x04034b50u) NPZ_FAIL("%s: bad local header", a->name);
        uint64_t data = off + 30 + le16(f + off + 26) + le16(f + off + 28);
        if (data > flen || csize > flen - data) NPZ_FAIL("%s: truncated member", a->name);
        const unsigned char *img = f + data;
        if (method == 8) {
            if (usize > ((uint64_t)1 << 40)) NPZ_FAIL("%s: member too large", a->name);
            tmp = malloc((size_t)usize + 1);
            if (!tmp) NPZ_FAIL("%s: out of memory", a->name);
            z_stream s;
            memset(&s, 0, sizeof s);
            if (inflateInit2(&s, -MAX_WBITS) != Z_OK) NPZ_FAIL("%s: zlib failed", a->name);
            uint64_t in_done = 0, out_done = 0;
            int zr = Z_OK;
            while (zr == Z_OK) {
                uint64_t in_left = csize - in_done, out_left = usize + 1 - out_done;
                s.next_in = (unsigned char *)img + in_done;
                s.avail_in = in_left > (1u << 30) ? (1u << 30) : (uInt)in_left;
                s.next_out = tmp + out_done;
                s.avail_out = out_left > (1u << 30) ? (1u << 30) : (uInt)out_left;
                uInt ai = s.avail_in, ao = s.avail_out;
                zr = inflate(&s, Z_NO_FLUSH);
                in_done += ai - s.avail_in;
                out_done += ao - s.avail_out;
                if (zr == Z_OK && ai == s.avail_in && ao == s.avail_out) zr = Z_DATA_ERROR;
            }
            inflateEnd(&s);
            if (zr != Z_STREAM_END || out_done != usize) NPZ_FAIL("%s: corrupt deflate data", a->name);
            img = tmp;
        } else if (method != 0 || csize != usize) {
            NPZ_FAIL("%s: unsupported compression method %u", a->name, (unsigned)method);
        }
        uLong c = crc32(0L, Z_NULL, 0);
        for (uint64_t k = 0; k < usize;) {
            uInt chunk = usize - k > (1u << 30) ? (1u << 30) : (uInt)(usize - k);
            c = crc32(c, img + k, chunk);
            k += chunk;
        }
        if ((uint32_t)c != crc) NPZ_FAIL("%s: CRC mismatch (corrupt file)", a->name);
        if (parse_npy(img, usize, a, sub, sizeof sub)) NPZ_FAIL("%s: %s", a->name, sub);
        free(tmp);
        tmp = NULL;
        p += 46 + nl + xl + cl;
    }
    free(file);
    return 0;
fail:
    free(tmp);
    free(file);
    mio_npz_free(z);
    return -1;
}

void mio_npz_free(mio_npz *z)
{
    for (int i = 0; z->a && i < z->n; i++) {
        free(z->a[i].name);
        free(z->a[i].data);
    }
    free(z->a);
    memset(z, 0, sizeof *z);
}

const mio_array *mio_npz_find(const mio_npz *z, const char *name)
{
    for (int i = 0; i < z->n; i++)
        if (strcmp(z->a[i].name, name) == 0) return &z->a[i];
    return NULL;
}
