/* Helpers shared by the file readers and writers (fileio.c, npy.c, npz.c,
 * csv.c, dataset_load.c).  Not part of the public API. */
#ifndef BN_IO_INTERNAL_H
#define BN_IO_INTERNAL_H

#include "internal.h"

#include <stddef.h>
#include <stdint.h>

/* Largest .npy header this code writes: rank <= 8 keeps it far below this. */
#define BN_NPY_HEADER_MAX 512

/* Reads all of path into a malloc'ed buffer with a NUL byte appended (not
 * counted in *len), so text parsers can use C string functions on it. */
bn_status bn_read_whole_file(const char *path, unsigned char **buf, size_t *len);

/* The last component of a path ("a/b/c.csv" -> "c.csv"); points into path. */
const char *bn_path_basename(const char *path);

/* Parses a complete .npy image held in memory into a float64, row-major
 * bn_array.  `what` names the source in error messages.  allow_int also
 * accepts int32/int64 (exact only up to 2^53): .npz outputs carry integer
 * step indices, but integer X/y files are refused as a likely mistake. */
bn_status bn_npy_parse(const unsigned char *buf, size_t len, const char *what, int allow_int,
                       bn_array *out);

/* Member `name` (without .npy, or the stored name) of an .npz image held in
 * memory; `what` names the archive in messages.  Same checks as bn_npz_read. */
bn_status bn_npz_parse(const unsigned char *buf, size_t len, const char *what, const char *name, bn_array *out);

/* Parses a numeric CSV data set held in memory (bn_dataset_load_csv's format;
 * `path` names it in messages and its basename names the data set).  The
 * parser writes temporary NUL bytes into buf, up to and including buf[len]:
 * buf must be writable and hold len + 1 bytes. */
bn_status bn_csv_parse(char *buf, size_t len, const char *path, bn_dataset **out);

/* The data set of an X array (n×d) and a y array (n or n×1), with
 * bn_dataset_load_npy's shape checks; x_what/y_what name them in messages. */
bn_status bn_dataset_from_arrays(const bn_array *X, const bn_array *y, const char *x_what, const char *y_what,
                                 const char *name, bn_dataset **out);

/* Builds the magic, version, length and padded dict of a C-order .npy file
 * for `descr` (e.g. "<f8") into hdr (BN_NPY_HEADER_MAX bytes).  Checks the
 * shape and returns the element count in *count. */
bn_status bn_npy_header(const char *descr, int ndim, const int64_t *shape, unsigned char *hdr,
                        size_t *hdr_len, int64_t *count);

/* Python-style shape text: "()", "(5,)", "(64, 256)". */
void bn_npy_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape);

/* Sizes and counts from which bn_npz_write switches to ZIP64 fields: the
 * format's own limits (0xFFFFFFFF bytes, 0xFFFF entries).  Tests lower them
 * so the ZIP64 paths can be checked without writing 4 GiB. */
extern uint64_t bn_npz_zip64_size_limit;
extern uint64_t bn_npz_zip64_count_limit;

/* Little-endian stores, independent of the host byte order. */
static inline void bn_put_le16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}
static inline void bn_put_le32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static inline void bn_put_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static inline uint16_t bn_get_le16(const unsigned char *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t bn_get_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t bn_get_le64(const unsigned char *p)
{
    return (uint64_t)bn_get_le32(p) | (uint64_t)bn_get_le32(p + 4) << 32;
}

#endif
