/* Readers for `bnspike merge` (merge_io.c): a small JSON tree that keeps every
 * scalar as written (so run.json is copied without re-rounding), and the
 * members of an .npz with their dtype (float64 or int64) and exact bytes. */
#ifndef BN_CLI_MERGE_IO_H
#define BN_CLI_MERGE_IO_H

#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------- files */

/* Reads all of path (malloc'ed, NUL appended, not counted in *len); 0 or -1
 * with errno set. */
int mio_read_file(const char *path, char **buf, size_t *len);

/* A growable byte buffer (layout-compatible with cli_text). */
typedef struct {
    char *buf;
    size_t len, cap;
    int failed;
} mio_buf;
void mio_append(mio_buf *b, const void *p, size_t n);
void mio_puts(mio_buf *b, const char *s);

/* ----------------------------------------------------------------- JSON */

typedef struct jv jv;
struct jv {
    char type;  /* 'o' object, 'a' array, 's' string, 'n' number, 'b' true/false, 'z' null */
    char *key;  /* inside an object: the decoded key */
    char *raw;  /* scalars: the token as written (strings with their quotes) */
    char *str;  /* strings: the decoded text */
    jv *kid;
    int nkid, cap;
};

/* Parses text into *out; on failure returns -1 with a message in err. */
int jv_parse(const char *text, size_t len, jv *out, char *err, size_t errcap);
void jv_free(jv *v);
const jv *jv_get(const jv *o, const char *key);      /* object member or NULL */
jv *jv_get_mut(jv *o, const char *key);
int jv_int(const jv *v, int64_t *out);               /* 0 when v is an integer */
int jv_num(const jv *v, double *out);                /* 0 when v is a number */
const char *jv_string(const jv *v);                  /* decoded text or NULL */
int jv_is_true(const jv *v);
/* Deep comparison of a and b (keys in order).  Members named in skip (at the
 * top level of a and b only) are ignored.  Numbers whose text differs count
 * as "close" (return 1) when tol > 0 and they agree within tol relatively,
 * else as different (return 2); 0: equal.  where gets the path of the first
 * difference (prefix + ".key[i]..."), with both values. */
int jv_compare(const jv *a, const jv *b, const char *const *skip, double tol, const char *prefix,
               char *where, size_t wcap);
/* Editing: remove a member, set a member to a scalar token (appended when
 * absent), append a new empty object/array/scalar child (NULL key in arrays).
 * Pointers to children are invalidated by appends to the same parent. */
void jv_remove(jv *o, const char *key);
int jv_set_raw(jv *o, const char *key, char type, const char *raw);
jv *jv_add(jv *parent, const char *key, char type, const char *raw);
jv *jv_add_string(jv *parent, const char *key, const char *s);
int jv_clone_into(jv *parent, const char *key, const jv *src);
/* Pretty-prints like the CLI's JSON writer (two-space indents). */
void jv_print(mio_buf *b, const jv *v);

/* ------------------------------------------------------------------ npz */

typedef struct {
    char *name;     /* without ".npy" */
    char kind;      /* 'f' float64, 'i' int64 */
    int ndim;
    int64_t shape[8];
    int64_t count;
    unsigned char *data; /* count × 8 bytes, little-endian, C order */
} mio_array;

typedef struct {
    mio_array *a;
    int n;
} mio_npz;

/* Every member of an .npz written by bnspike (stored or deflated, ZIP64
 * allowed; dtypes <f8 and <i8, C order).  -1 with a message on failure. */
int mio_npz_load(const char *path, mio_npz *z, char *err, size_t errcap);
void mio_npz_free(mio_npz *z);
const mio_array *mio_npz_find(const mio_npz *z, const char *name);

#endif
