/* NumPy .npy format: a parser for untrusted files (versions 1.0-3.0,
 * float32/float64 in either byte order, C or Fortran order) and a writer of
 * little-endian float64 C-order files.
 *
 * Format: "\x93NUMPY", major, minor, header length (u16 for 1.0, u32 for
 * 2.0/3.0), then a Python dict literal
 *   {'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }
 * padded with spaces and a newline, then the raw elements. */
#include "io_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NPY_MAX_RANK 8
#define TWO_POW_53 9007199254740992.0

static const unsigned char npy_magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

void bn_npy_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape)
{
    size_t k = 0;
    if (cap == 0) return;
    buf[0] = '\0';
    k += (size_t)snprintf(buf + k, cap - k, "(");
    for (int i = 0; i < ndim && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, ndim == 1 ? ",)" : ")");
}

static int host_is_big_endian(void)
{
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 0;
}

/* ---------------------------------------------------------------- header */

typedef struct {
    const char *what;   /* file name for messages */
    const char *start;  /* header dict text      */
    const char *p, *end;
} lexer;

/* The header text, made printable and short, for error messages. */
static void header_excerpt(const lexer *lx, char *buf, size_t cap)
{
    size_t n = 0;
    for (const char *q = lx->start; q < lx->end && n + 4 < cap; q++) {
        unsigned char c = (unsigned char)*q;
        buf[n++] = (c >= 32 && c < 127) ? (char)c : '?';
    }
    while (n > 0 && (buf[n - 1] == ' ' || buf[n - 1] == '?')) n--; /* padding */
    if (n + 4 >= cap) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = '\0';
}

static bn_status syntax_error(const lexer *lx, const char *expected)
{
    char text[160];
    header_excerpt(lx, text, sizeof text);
    return bn_fail(BN_ERR_FORMAT, "%s: malformed .npy header: expected %s at offset %ld of the header dict %s",
                   lx->what, expected, (long)(lx->p - lx->start), text);
}

static void skip_ws(lexer *lx)
{
    while (lx->p < lx->end && (*lx->p == ' ' || *lx->p == '\t' || *lx->p == '\n' || *lx->p == '\r'))
        lx->p++;
}

static int accept(lexer *lx, char c)
{
    skip_ws(lx);
    if (lx->p < lx->end && *lx->p == c) {
        lx->p++;
        return 1;
    }
    return 0;
}

/* A quoted Python string without escapes (dtype strings never need them). */
static bn_status lex_string(lexer *lx, char *out, size_t cap)
{
    skip_ws(lx);
    if (lx->p >= lx->end || (*lx->p != '\'' && *lx->p != '"')) return syntax_error(lx, "a quoted string");
    char q = *lx->p++;
    size_t n = 0;
    while (lx->p < lx->end && *lx->p != q) {
        if (n + 1 < cap) out[n++] = *lx->p;
        lx->p++;
    }
    if (lx->p >= lx->end) return syntax_error(lx, "a closing quote");
    lx->p++;
    out[n] = '\0';
    return BN_OK;
}

static bn_status lex_bool(lexer *lx, int *out)
{
    skip_ws(lx);
    size_t left = (size_t)(lx->end - lx->p);
    if (left >= 4 && memcmp(lx->p, "True", 4) == 0) {
        lx->p += 4;
        *out = 1;
    } else if (left >= 5 && memcmp(lx->p, "False", 5) == 0) {
        lx->p += 5;
        *out = 0;
    } else {
        return syntax_error(lx, "True or False for 'fortran_order'");
    }
    return BN_OK;
}

/* "(3, 4)", "(5,)", "()"; Python 2 files may write "3L". */
static bn_status lex_shape(lexer *lx, int *ndim, int64_t *shape)
{
    if (!accept(lx, '(')) return syntax_error(lx, "'(' opening the shape tuple");
    int n = 0;
    for (;;) {
        if (accept(lx, ')')) break;
        skip_ws(lx);
        if (lx->p >= lx->end || !isdigit((unsigned char)*lx->p))
            return syntax_error(lx, "a non-negative integer in the shape tuple");
        uint64_t v = 0;
        while (lx->p < lx->end && isdigit((unsigned char)*lx->p)) {
            unsigned dgt = (unsigned)(*lx->p++ - '0');
            if (v > ((uint64_t)INT64_MAX - dgt) / 10)
                return bn_fail(BN_ERR_FORMAT, "%s: .npy header shape has a dimension that overflows 64 bits",
                               lx->what);
            v = v * 10 + dgt;
        }
        if (lx->p < lx->end && *lx->p == 'L') lx->p++;
        if (n == NPY_MAX_RANK)
            return bn_fail(BN_ERR_FORMAT, "%s: .npy header shape has more than %d dimensions (not supported)",
                           lx->what, NPY_MAX_RANK);
        shape[n++] = (int64_t)v;
        if (accept(lx, ',')) continue;
        if (accept(lx, ')')) break;
        return syntax_error(lx, "',' or ')' in the shape tuple");
    }
    *ndim = n;
    return BN_OK;
}

typedef struct {
    char descr[64];
    int fortran;
    int ndim;
    int64_t shape[NPY_MAX_RANK];
} npy_header;

static bn_status parse_dict(lexer *lx, npy_header *h)
{
    int have_descr = 0, have_fortran = 0, have_shape = 0;
    if (!accept(lx, '{')) return syntax_error(lx, "'{'");
    for (;;) {
        if (accept(lx, '}')) break;
        char key[32];
        BN_TRY(lex_string(lx, key, sizeof key));
        if (!accept(lx, ':')) return syntax_error(lx, "':' after a key");
        int *seen;
        if (strcmp(key, "descr") == 0) {
            skip_ws(lx);
            if (lx->p < lx->end && *lx->p == '[')
                return bn_fail(BN_ERR_FORMAT, "%s: structured dtype (a list of fields) is not supported: "
                               "only float32 and float64 arrays can be read", lx->what);
            BN_TRY(lex_string(lx, h->descr, sizeof h->descr));
            seen = &have_descr;
        } else if (strcmp(key, "fortran_order") == 0) {
            BN_TRY(lex_bool(lx, &h->fortran));
            seen = &have_fortran;
        } else if (strcmp(key, "shape") == 0) {
            BN_TRY(lex_shape(lx, &h->ndim, h->shape));
            seen = &have_shape;
        } else {
            return bn_fail(BN_ERR_FORMAT, "%s: malformed .npy header: unexpected key '%s' "
                           "(expected descr, fortran_order, shape)", lx->what, key);
        }
        if (*seen)
            return bn_fail(BN_ERR_FORMAT, "%s: malformed .npy header: key '%s' appears twice", lx->what, key);
        *seen = 1;
        if (accept(lx, ',')) continue;
        if (accept(lx, '}')) break;
        return syntax_error(lx, "',' or '}' after a value");
    }
    skip_ws(lx);
    if (lx->p != lx->end) return syntax_error(lx, "only padding after the closing '}'");
    if (!have_descr || !have_fortran || !have_shape)
        return bn_fail(BN_ERR_FORMAT, "%s: malformed .npy header: missing key '%s'", lx->what,
                       !have_descr ? "descr" : !have_fortran ? "fortran_order" : "shape");
    return BN_OK;
}

/* ----------------------------------------------------------------- dtype */

typedef enum { EL_F8, EL_F4, EL_I8, EL_I4 } elem_kind;

typedef struct {
    elem_kind kind;
    size_t size;
    int big;
    const char *name;
} elem_type;

static const char *dtype_family(char kind)
{
    switch (kind) {
    case 'i': return "signed integer";
    case 'u': return "unsigned integer";
    case 'f': return "floating point of this size";
    case 'c': return "complex";
    case 'b': case '?': return "boolean";
    case 'O': return "Python object";
    case 'U': return "unicode string";
    case 'S': case 'a': return "byte string";
    case 'V': return "void/structured";
    case 'M': return "datetime";
    case 'm': return "timedelta";
    default: return "unknown";
    }
}

static bn_status parse_descr(const char *what, const char *descr, int allow_int, elem_type *t)
{
    const char *s = descr;
    char order = '=';
    if (*s == '<' || *s == '>' || *s == '|' || *s == '=') order = *s++;
    /* '|' ("not applicable") and '=' (or no marker) mean the writer's native
     * order, which the file does not record: assume it matches ours. */
    int big = order == '>' || (order != '<' && host_is_big_endian());
    if (strcmp(s, "f8") == 0) *t = (elem_type){EL_F8, 8, big, "float64"};
    else if (strcmp(s, "f4") == 0) *t = (elem_type){EL_F4, 4, big, "float32"};
    else if (allow_int && strcmp(s, "i8") == 0) *t = (elem_type){EL_I8, 8, big, "int64"};
    else if (allow_int && strcmp(s, "i4") == 0) *t = (elem_type){EL_I4, 4, big, "int32"};
    else
        return bn_fail(BN_ERR_FORMAT, "%s: dtype '%s' (%s) is not supported: only %s arrays can be read "
                       "('<f8', '<f4', or big-endian '>f8', '>f4')", what, descr, dtype_family(*s),
                       allow_int ? "float32, float64, int32 and int64" : "float32 and float64");
    return BN_OK;
}

static uint64_t load_uint(const unsigned char *p, size_t n, int big)
{
    uint64_t v = 0;
    if (big)
        for (size_t i = 0; i < n; i++) v = v << 8 | p[i];
    else
        for (size_t i = n; i > 0; i--) v = v << 8 | p[i - 1];
    return v;
}

/* One element as a double; integers must be exact (|v| <= 2^53). */
static int load_elem(const unsigned char *p, const elem_type *t, double *out)
{
    uint64_t v = load_uint(p, t->size, t->big);
    switch (t->kind) {
    case EL_F8: memcpy(out, &v, 8); return 1;
    case EL_F4: {
        uint32_t u = (uint32_t)v;
        float f;
        memcpy(&f, &u, 4);
        *out = f;
        return 1;
    }
    case EL_I8: {
        int64_t i;
        memcpy(&i, &v, 8);
        *out = (double)i;
        /* Compare the integer, not its rounded double (2^53 + 1 -> 2^53). */
        return i <= (int64_t)TWO_POW_53 && i >= -(int64_t)TWO_POW_53;
    }
    case EL_I4: {
        uint32_t u = (uint32_t)v;
        int32_t i;
        memcpy(&i, &u, 4);
        *out = i;
        return 1;
    }
    }
    return 0;
}

/* ----------------------------------------------------------------- parse */

static bn_status bad_magic(const unsigned char *buf, size_t len, const char *what)
{
    char seen[40];
    size_t n = 0;
    for (size_t i = 0; i < len && i < 6; i++) {
        unsigned char c = buf[i];
        n += (size_t)snprintf(seen + n, sizeof seen - n, (c >= 32 && c < 127 && c != '\\') ? "%c" : "\\x%02x", c);
    }
    int zip = len >= 4 && memcmp(buf, "PK\x03\x04", 4) == 0;
    return bn_fail(BN_ERR_FORMAT, "%s is not a .npy file (bad magic: starts with \"%s\", expected \"\\x93NUMPY\")%s",
                   what, seen, zip ? "; it looks like an .npz (zip) archive" : "");
}

bn_status bn_npy_parse(const unsigned char *buf, size_t len, const char *what, int allow_int,
                       bn_array *out)
{
    memset(out, 0, sizeof *out);
    if (len < 10) {
        if (len >= 6 && memcmp(buf, npy_magic, 6) != 0) return bad_magic(buf, len, what);
        return bn_fail(BN_ERR_FORMAT, "%s is truncated: %zu bytes, shorter than the 10-byte .npy preamble",
                       what, len);
    }
    if (memcmp(buf, npy_magic, 6) != 0) return bad_magic(buf, len, what);

    int major = buf[6], minor = buf[7];
    size_t hlen, hoff;
    if (major == 1 && minor == 0) {
        hlen = bn_get_le16(buf + 8);
        hoff = 10;
    } else if ((major == 2 || major == 3) && minor == 0) {
        if (len < 12)
            return bn_fail(BN_ERR_FORMAT, "%s is truncated: %zu bytes, shorter than the 12-byte .npy %d.0 preamble",
                           what, len, major);
        hlen = bn_get_le32(buf + 8);
        hoff = 12;
    } else {
        return bn_fail(BN_ERR_FORMAT, "%s: unsupported .npy format version %d.%d (1.0, 2.0 and 3.0 are)",
                       what, major, minor);
    }
    if (hlen > len - hoff)
        return bn_fail(BN_ERR_FORMAT, "%s is truncated: the .npy header says it is %zu bytes long "
                       "but only %zu bytes follow the preamble", what, hlen, len - hoff);

    npy_header h;
    memset(&h, 0, sizeof h);
    lexer lx = {what, (const char *)buf + hoff, (const char *)buf + hoff, (const char *)buf + hoff + hlen};
    BN_TRY(parse_dict(&lx, &h));
    elem_type t = {0};
    BN_TRY(parse_descr(what, h.descr, allow_int, &t));

    char shp[200];
    bn_npy_shape_str(shp, sizeof shp, h.ndim, h.shape);
    int64_t count = 1;
    for (int i = 0; i < h.ndim; i++)
        if (h.shape[i] == 0) count = 0;
    for (int i = 0; i < h.ndim && count; i++) {
        if (count > INT64_MAX / h.shape[i])
            return bn_fail(BN_ERR_FORMAT, "%s: .npy header shape %s has more elements than fit in 64 bits",
                           what, shp);
        count *= h.shape[i];
    }
    size_t have = len - hoff - hlen;
    size_t want = bn_mul_size((size_t)count, t.size);
    if (count > 0 && (!want || (uint64_t)count > SIZE_MAX / sizeof(double)))
        return bn_fail(BN_ERR_FORMAT, "%s: .npy header shape %s is too large for this machine", what, shp);
    if (have < want)
        return bn_fail(BN_ERR_FORMAT, "%s is truncated: header says shape %s %s = %zu bytes but only %zu bytes follow",
                       what, shp, t.name, want, have);
    if (have > want)
        return bn_fail(BN_ERR_FORMAT, "%s: header says shape %s %s = %zu bytes but %zu bytes follow "
                       "(%zu extra bytes at the end: the header does not match the data)",
                       what, shp, t.name, want, have, have - want);

    /* One element at least, so a successful read never hands back NULL. */
    double *data = malloc((count ? (size_t)count : 1) * sizeof(double));
    if (!data)
        return bn_fail(BN_ERR_NOMEM, "%s: cannot allocate %lld float64 values for shape %s", what,
                       (long long)count, shp);

    const unsigned char *src = buf + hoff + hlen;
    if (!h.fortran || h.ndim < 2) {
        for (int64_t i = 0; i < count; i++) {
            if (!load_elem(src + (size_t)i * t.size, &t, &data[i])) goto inexact;
        }
    } else {
        /* Walk the file in its own (first index fastest) order and scatter
         * into row-major positions. */
        int64_t cstride[NPY_MAX_RANK], idx[NPY_MAX_RANK] = {0};
        cstride[h.ndim - 1] = 1;
        for (int k = h.ndim - 2; k >= 0; k--) cstride[k] = cstride[k + 1] * h.shape[k + 1];
        int64_t dst = 0;
        for (int64_t i = 0; i < count; i++) {
            if (!load_elem(src + (size_t)i * t.size, &t, &data[dst])) goto inexact;
            for (int k = 0; k < h.ndim; k++) {
                dst += cstride[k];
                if (++idx[k] < h.shape[k]) break;
                dst -= cstride[k] * h.shape[k];
                idx[k] = 0;
            }
        }
    }
    out->data = data;
    out->ndim = h.ndim;
    memcpy(out->shape, h.shape, sizeof h.shape);
    out->size = count;
    return BN_OK;

inexact:
    free(data);
    return bn_fail(BN_ERR_DATA, "%s: an %s value exceeds 2^53 and cannot be converted to float64 exactly",
                   what, t.name);
}

bn_status bn_npy_read(const char *path, bn_array *out)
{
    if (!out) return bn_fail(BN_ERR_ARG, "bn_npy_read: out is NULL");
    memset(out, 0, sizeof *out);
    unsigned char *buf;
    size_t len;
    BN_TRY(bn_read_whole_file(path, &buf, &len));
    bn_status st = bn_npy_parse(buf, len, path, 0, out);
    free(buf);
    return st;
}

void bn_array_free(bn_array *a)
{
    if (!a) return;
    free(a->data);
    memset(a, 0, sizeof *a);
}

/* ----------------------------------------------------------------- write */

bn_status bn_npy_header(const char *descr, int ndim, const int64_t *shape, unsigned char *hdr,
                        size_t *hdr_len, int64_t *count)
{
    if (ndim < 0 || ndim > NPY_MAX_RANK)
        return bn_fail(BN_ERR_ARG, "array rank %d is not supported (0 to %d)", ndim, NPY_MAX_RANK);
    if (ndim > 0 && !shape) return bn_fail(BN_ERR_ARG, "array of rank %d has no shape (NULL)", ndim);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return bn_fail(BN_ERR_ARG, "array shape has a negative dimension (%lld at axis %d)",
                           (long long)shape[i], i);
        if (shape[i] == 0) n = 0;
    }
    for (int i = 0; i < ndim && n; i++) {
        if (n > INT64_MAX / 8 / shape[i]) return bn_fail(BN_ERR_ARG, "array shape is too large (overflow)");
        n *= shape[i];
    }
    if ((uint64_t)n > SIZE_MAX / 8) return bn_fail(BN_ERR_ARG, "array shape is too large for this machine");

    char shp[200], dict[BN_NPY_HEADER_MAX];
    bn_npy_shape_str(shp, sizeof shp, ndim, shape);
    int dl = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, shp);
    if (dl < 0 || (size_t)dl + 1 + 12 + 64 > BN_NPY_HEADER_MAX)
        return bn_fail(BN_ERR_ARG, "npy header too long");
    /* Pad with spaces so the data starts on a 64-byte boundary, as numpy
     * does; version 1.0 unless the length no longer fits in 16 bits. */
    size_t pre = 10;
    size_t total = (pre + (size_t)dl + 1 + 63) / 64 * 64;
    if (total - pre > 0xFFFF) {
        pre = 12;
        total = (pre + (size_t)dl + 1 + 63) / 64 * 64;
    }
    size_t hl = total - pre;
    memcpy(hdr, npy_magic, 6);
    hdr[6] = pre == 10 ? 1 : 2;
    hdr[7] = 0;
    if (pre == 10) bn_put_le16(hdr + 8, (uint16_t)hl);
    else bn_put_le32(hdr + 8, (uint32_t)hl);
    memcpy(hdr + pre, dict, (size_t)dl);
    memset(hdr + pre + dl, ' ', hl - (size_t)dl - 1);
    hdr[total - 1] = '\n';
    *hdr_len = total;
    *count = n;
    return BN_OK;
}

bn_status bn_npy_write_f64(const char *path, const double *data, int ndim, const int64_t *shape)
{
    unsigned char hdr[BN_NPY_HEADER_MAX];
    size_t hl;
    int64_t n;
    BN_TRY(bn_npy_header("<f8", ndim, shape, hdr, &hl, &n));
    if (n > 0 && !data) return bn_fail(BN_ERR_ARG, "cannot write '%s': data is NULL", path ? path : "");
    size_t total = hl + (size_t)n * 8;
    unsigned char *buf = malloc(total);
    if (!buf) return bn_fail(BN_ERR_NOMEM, "cannot allocate %zu bytes to write '%s'", total, path ? path : "");
    memcpy(buf, hdr, hl);
    for (int64_t i = 0; i < n; i++) {
        uint64_t v;
        memcpy(&v, &data[i], 8);
        bn_put_le64(buf + hl + (size_t)i * 8, v);
    }
    bn_status st = bn_write_file_atomic(path, buf, total);
    free(buf);
    return st;
}
