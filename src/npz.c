/* .npz archives: a ZIP file whose members NAME.npy are .npy images.
 *
 * Writing: each member is deflated when it is added (so the archive never
 * holds a second uncompressed copy of big record arrays), and bn_npz_write
 * lays out local headers, central directory and end record in one buffer,
 * switching to ZIP64 fields where a size, offset or count no longer fits.
 * Timestamps are fixed (1980-01-01) so equal inputs give equal files.
 *
 * Reading: only the end record, the central directory and the one member
 * asked for are read, so fetching a small array from a large archive is
 * cheap. */
#include "io_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

uint64_t bn_npz_zip64_size_limit = 0xFFFFFFFFu;
uint64_t bn_npz_zip64_count_limit = 0xFFFFu;

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_END 0x06054b50u
#define SIG_END64 0x06064b50u
#define SIG_LOC64 0x07064b50u
#define LOCAL_LEN 30
#define CENTRAL_LEN 46
#define END_LEN 22
#define END64_LEN 56
#define LOC64_LEN 20
#define ZIP_MAX_COMMENT 0xFFFF
#define DOS_DATE_1980 0x0021 /* 1980-01-01: day 1, month 1, year 0 */
#define CHUNK ((size_t)1 << 16)

typedef struct {
    char *name; /* as stored: "NAME.npy" */
    unsigned char *comp;
    uint64_t csize, usize;
    uint32_t crc;
} npz_member;

struct bn_npz {
    npz_member *m;
    size_t n, cap;
    size_t *slot; /* open-addressing set of member indices + 1 (0 = empty) */
    size_t nslot; /* power of two, kept over twice n */
};

/* ------------------------------------------------------- name lookup set */

static uint64_t hash_name(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* Slot holding `name`, or the empty slot where it would go. */
static size_t *find_slot(const bn_npz *z, const char *name)
{
    size_t mask = z->nslot - 1, i = (size_t)hash_name(name) & mask;
    while (z->slot[i] && strcmp(z->m[z->slot[i] - 1].name, name) != 0) i = (i + 1) & mask;
    return &z->slot[i];
}

static int grow_slots(bn_npz *z)
{
    size_t nslot = z->nslot ? z->nslot * 2 : 64;
    size_t *slot = calloc(nslot, sizeof *slot);
    if (!slot) return -1;
    size_t *old = z->slot;
    z->slot = slot;
    z->nslot = nslot;
    for (size_t i = 0; i < z->n; i++) *find_slot(z, z->m[i].name) = i + 1;
    free(old);
    return 0;
}

bn_status bn_npz_create(bn_npz **out)
{
    if (!out) return bn_fail(BN_ERR_ARG, "bn_npz_create: out is NULL");
    *out = calloc(1, sizeof **out);
    if (!*out || grow_slots(*out) != 0) {
        free(*out);
        *out = NULL;
        return bn_fail(BN_ERR_NOMEM, "cannot allocate an .npz archive");
    }
    return BN_OK;
}

void bn_npz_free(bn_npz *z)
{
    if (!z) return;
    for (size_t i = 0; i < z->n; i++) {
        free(z->m[i].name);
        free(z->m[i].comp);
    }
    free(z->m);
    free(z->slot);
    free(z);
}

/* -------------------------------------------------------------- deflate */

/* Runs deflate until the input is consumed (or the stream ends, for
 * Z_FINISH).  out has room for deflateBound bytes, so running out of room
 * means zlib misbehaved. */
static int pump(z_stream *s, unsigned char *out, size_t cap, int flush)
{
    for (;;) {
        size_t done = (size_t)s->total_out, room = cap - done;
        s->next_out = out + done;
        s->avail_out = room > UINT_MAX ? UINT_MAX : (uInt)room;
        int rc = deflate(s, flush);
        if (rc == Z_STREAM_END) return 0;
        if (rc != Z_OK && rc != Z_BUF_ERROR) return -1;
        if (flush == Z_NO_FLUSH && s->avail_in == 0) return 0;
        if ((size_t)s->total_out == cap) return -1;
    }
}

static int feed(z_stream *s, uint32_t *crc, unsigned char *out, size_t cap, const unsigned char *p,
                size_t len)
{
    *crc = (uint32_t)crc32(*crc, p, (uInt)len);
    s->next_in = (Bytef *)(uintptr_t)p; /* zlib's API lacks const */
    s->avail_in = (uInt)len;
    return pump(s, out, cap, Z_NO_FLUSH);
}

/* Deflates header + data (8-byte elements, stored little-endian) into m. */
static bn_status compress_member(npz_member *m, const unsigned char *hdr, size_t hl, const void *data,
                                 int64_t count)
{
    size_t dbytes = (size_t)count * 8;
    m->usize = (uint64_t)hl + dbytes;
    z_stream s;
    memset(&s, 0, sizeof s);
    /* Raw deflate (no zlib wrapper): windowBits -15, as ZIP requires.  Level
     * 1: on float64 records it is ~3x faster than the default level 6 and
     * compresses about as well, and sweeps can write gigabytes. */
    if (deflateInit2(&s, Z_BEST_SPEED, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return bn_fail(BN_ERR_NOMEM, "cannot start zlib deflate for member '%s'", m->name);
    size_t cap = (size_t)deflateBound(&s, (uLong)m->usize);
    unsigned char *out = malloc(cap ? cap : 1);
    if (!out) {
        deflateEnd(&s);
        return bn_fail(BN_ERR_NOMEM, "cannot allocate %zu bytes to compress member '%s'", cap, m->name);
    }
    uint32_t crc = (uint32_t)crc32(0, NULL, 0);
    unsigned char chunk[CHUNK];
    int bad = feed(&s, &crc, out, cap, hdr, hl);
    const unsigned char *src = data;
    for (size_t off = 0; !bad && off < dbytes; off += CHUNK) {
        size_t len = dbytes - off < CHUNK ? dbytes - off : CHUNK;
        for (size_t k = 0; k < len; k += 8) {
            uint64_t v;
            memcpy(&v, src + off + k, 8);
            bn_put_le64(chunk + k, v);
        }
        bad = feed(&s, &crc, out, cap, chunk, len);
    }
    if (!bad) {
        s.avail_in = 0;
        bad = pump(&s, out, cap, Z_FINISH);
    }
    m->csize = s.total_out;
    deflateEnd(&s);
    if (bad) {
        free(out);
        return bn_fail(BN_ERR_BACKEND, "zlib deflate failed for member '%s'", m->name);
    }
    unsigned char *shrunk = realloc(out, m->csize ? (size_t)m->csize : 1);
    m->comp = shrunk ? shrunk : out;
    m->crc = crc;
    return BN_OK;
}

static bn_status add_member(bn_npz *z, const char *name, const char *descr, const void *data, int ndim,
                            const int64_t *shape)
{
    if (!z || !name) return bn_fail(BN_ERR_ARG, "bn_npz_add: archive or name is NULL");
    size_t nl = strlen(name);
    if (nl == 0) return bn_fail(BN_ERR_ARG, "an .npz member needs a non-empty name");
    if (nl > 0xFFFF - 4) return bn_fail(BN_ERR_ARG, "an .npz member name is too long (%zu bytes)", nl);
    unsigned char hdr[BN_NPY_HEADER_MAX];
    size_t hl;
    int64_t count;
    bn_status st = bn_npy_header(descr, ndim, shape, hdr, &hl, &count);
    if (st != BN_OK) { /* copy first: bn_fail overwrites the text it would quote */
        char why[512];
        snprintf(why, sizeof why, "%s", bn_last_error());
        return bn_fail(st, ".npz member '%s': %s", name, why);
    }
    if (count > 0 && !data) return bn_fail(BN_ERR_ARG, ".npz member '%s': data is NULL", name);

    npz_member m = {0};
    m.name = malloc(nl + 5);
    if (!m.name) return bn_fail(BN_ERR_NOMEM, "cannot allocate an .npz member name");
    memcpy(m.name, name, nl);
    memcpy(m.name + nl, ".npy", 5);
    if (*find_slot(z, m.name)) {
        free(m.name);
        return bn_fail(BN_ERR_ARG, "the .npz archive already has a member named '%s'", name);
    }
    if (z->n == z->cap) {
        size_t ncap = z->cap ? z->cap * 2 : 16;
        npz_member *nm = realloc(z->m, ncap * sizeof *nm);
        if (!nm) {
            free(m.name);
            return bn_fail(BN_ERR_NOMEM, "cannot grow the .npz member list");
        }
        z->m = nm;
        z->cap = ncap;
    }
    if (2 * (z->n + 1) > z->nslot && grow_slots(z) != 0) {
        free(m.name);
        return bn_fail(BN_ERR_NOMEM, "cannot grow the .npz name index");
    }
    st = compress_member(&m, hdr, hl, data, count);
    if (st != BN_OK) {
        free(m.name);
        return st;
    }
    z->m[z->n++] = m;
    *find_slot(z, m.name) = z->n; /* index + 1 */
    return BN_OK;
}

bn_status bn_npz_add_f64(bn_npz *z, const char *name, const double *data, int ndim, const int64_t *shape)
{
    return add_member(z, name, "<f8", data, ndim, shape);
}

bn_status bn_npz_add_i64(bn_npz *z, const char *name, const int64_t *data, int ndim, const int64_t *shape)
{
    return add_member(z, name, "<i8", data, ndim, shape);
}

/* ---------------------------------------------------------------- write */

/* Local header of member m: both sizes go to the ZIP64 extra field when
 * either is too big (the format requires both there). */
static int local_zip64(const npz_member *m)
{
    return m->usize >= bn_npz_zip64_size_limit || m->csize >= bn_npz_zip64_size_limit;
}

static size_t local_len(const npz_member *m)
{
    return LOCAL_LEN + strlen(m->name) + (local_zip64(m) ? 20 : 0);
}

/* Central entries carry in the ZIP64 extra only the fields whose 32-bit
 * slot holds the 0xFFFFFFFF marker: usize, csize, offset, in that order. */
static int central_zip64_fields(const npz_member *m, uint64_t off, int big[3])
{
    const uint64_t lim = bn_npz_zip64_size_limit;
    big[0] = m->usize >= lim;
    big[1] = m->csize >= lim;
    big[2] = off >= lim;
    return big[0] + big[1] + big[2];
}

static size_t central_len(const npz_member *m, uint64_t off)
{
    int big[3];
    int nx = central_zip64_fields(m, off, big);
    return CENTRAL_LEN + strlen(m->name) + (nx ? 4 + 8 * (size_t)nx : 0);
}

static uint32_t clamp32(uint64_t v, int big) { return big ? 0xFFFFFFFFu : (uint32_t)v; }

static uint16_t name_flags(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80) return 1u << 11; /* bit 11: the name is UTF-8 */
    return 0;
}

static unsigned char *put_local(unsigned char *p, const npz_member *m)
{
    int z64 = local_zip64(m);
    size_t nl = strlen(m->name);
    bn_put_le32(p, SIG_LOCAL);
    bn_put_le16(p + 4, z64 ? 45 : 20); /* version needed: 4.5 for ZIP64 */
    bn_put_le16(p + 6, name_flags(m->name));
    bn_put_le16(p + 8, 8); /* deflate */
    bn_put_le16(p + 10, 0);
    bn_put_le16(p + 12, DOS_DATE_1980);
    bn_put_le32(p + 14, m->crc);
    bn_put_le32(p + 18, clamp32(m->csize, z64));
    bn_put_le32(p + 22, clamp32(m->usize, z64));
    bn_put_le16(p + 26, (uint16_t)nl);
    bn_put_le16(p + 28, z64 ? 20 : 0);
    memcpy(p + LOCAL_LEN, m->name, nl);
    p += LOCAL_LEN + nl;
    if (z64) {
        bn_put_le16(p, 1); /* ZIP64 extended information */
        bn_put_le16(p + 2, 16);
        bn_put_le64(p + 4, m->usize);
        bn_put_le64(p + 12, m->csize);
        p += 20;
    }
    memcpy(p, m->comp, (size_t)m->csize);
    return p + m->csize;
}

static unsigned char *put_central(unsigned char *p, const npz_member *m, uint64_t off)
{
    int big[3];
    int nx = central_zip64_fields(m, off, big);
    int ver = nx ? 45 : 20; /* a ZIP64 local header implies nx > 0 */
    size_t nl = strlen(m->name);
    bn_put_le32(p, SIG_CENTRAL);
    bn_put_le16(p + 4, (uint16_t)(3 << 8 | ver)); /* made by Unix, so the mode below counts */
    bn_put_le16(p + 6, (uint16_t)ver);
    bn_put_le16(p + 8, name_flags(m->name));
    bn_put_le16(p + 10, 8);
    bn_put_le16(p + 12, 0);
    bn_put_le16(p + 14, DOS_DATE_1980);
    bn_put_le32(p + 16, m->crc);
    bn_put_le32(p + 20, clamp32(m->csize, big[1]));
    bn_put_le32(p + 24, clamp32(m->usize, big[0]));
    bn_put_le16(p + 28, (uint16_t)nl);
    bn_put_le16(p + 30, (uint16_t)(nx ? 4 + 8 * nx : 0));
    bn_put_le16(p + 32, 0);                       /* comment */
    bn_put_le16(p + 34, 0);                       /* disk */
    bn_put_le16(p + 36, 0);                       /* internal attributes */
    bn_put_le32(p + 38, (uint32_t)0100644 << 16); /* regular file, rw-r--r-- */
    bn_put_le32(p + 42, clamp32(off, big[2]));
    memcpy(p + CENTRAL_LEN, m->name, nl);
    p += CENTRAL_LEN + nl;
    if (nx) {
        const uint64_t vals[3] = {m->usize, m->csize, off};
        bn_put_le16(p, 1);
        bn_put_le16(p + 2, (uint16_t)(8 * nx));
        p += 4;
        for (int k = 0; k < 3; k++) {
            if (!big[k]) continue;
            bn_put_le64(p, vals[k]);
            p += 8;
        }
    }
    return p;
}

/* End of central directory, preceded by the ZIP64 end record and locator
 * when a count, size or offset does not fit its 16/32-bit slot. */
static int end_needs_zip64(uint64_t n, uint64_t cd_off, uint64_t cd_size)
{
    const uint64_t lim = bn_npz_zip64_size_limit;
    return n >= bn_npz_zip64_count_limit || cd_off >= lim || cd_size >= lim;
}

static unsigned char *put_end(unsigned char *p, uint64_t n, uint64_t cd_off, uint64_t cd_size)
{
    const uint64_t lim = bn_npz_zip64_size_limit;
    if (end_needs_zip64(n, cd_off, cd_size)) {
        uint64_t end64_off = cd_off + cd_size;
        bn_put_le32(p, SIG_END64);
        bn_put_le64(p + 4, END64_LEN - 12); /* size of the rest of this record */
        bn_put_le16(p + 12, 3 << 8 | 45);
        bn_put_le16(p + 14, 45);
        bn_put_le32(p + 16, 0); /* this disk, disk with the directory */
        bn_put_le32(p + 20, 0);
        bn_put_le64(p + 24, n);
        bn_put_le64(p + 32, n);
        bn_put_le64(p + 40, cd_size);
        bn_put_le64(p + 48, cd_off);
        p += END64_LEN;
        bn_put_le32(p, SIG_LOC64);
        bn_put_le32(p + 4, 0);
        bn_put_le64(p + 8, end64_off);
        bn_put_le32(p + 16, 1); /* total disks */
        p += LOC64_LEN;
    }
    int many = n >= bn_npz_zip64_count_limit;
    bn_put_le32(p, SIG_END);
    bn_put_le16(p + 4, 0);
    bn_put_le16(p + 6, 0);
    bn_put_le16(p + 8, many ? 0xFFFF : (uint16_t)n);
    bn_put_le16(p + 10, many ? 0xFFFF : (uint16_t)n);
    bn_put_le32(p + 12, clamp32(cd_size, cd_size >= lim));
    bn_put_le32(p + 16, clamp32(cd_off, cd_off >= lim));
    bn_put_le16(p + 20, 0); /* comment */
    return p + END_LEN;
}

bn_status bn_npz_write(const bn_npz *z, const char *path)
{
    if (!z || !path) return bn_fail(BN_ERR_ARG, "bn_npz_write: archive or path is NULL");
    uint64_t *off = malloc((z->n ? z->n : 1) * sizeof *off);
    if (!off) return bn_fail(BN_ERR_NOMEM, "cannot allocate the .npz layout");

    /* Sizes in uint64_t so a 32-bit size_t cannot wrap silently. */
    uint64_t pos = 0, cd_size = 0;
    for (size_t i = 0; i < z->n; i++) {
        off[i] = pos;
        pos += local_len(&z->m[i]) + z->m[i].csize;
        cd_size += central_len(&z->m[i], off[i]);
    }
    uint64_t cd_off = pos;
    uint64_t total = cd_off + cd_size + (end_needs_zip64(z->n, cd_off, cd_size) ? END64_LEN + LOC64_LEN : 0) +
                     END_LEN;
    unsigned char *buf = total <= SIZE_MAX ? malloc((size_t)total) : NULL;
    if (!buf) {
        free(off);
        return bn_fail(BN_ERR_NOMEM, "cannot allocate %llu bytes to assemble '%s'", (unsigned long long)total,
                       path);
    }
    unsigned char *p = buf;
    for (size_t i = 0; i < z->n; i++) p = put_local(p, &z->m[i]);
    for (size_t i = 0; i < z->n; i++) p = put_central(p, &z->m[i], off[i]);
    p = put_end(p, z->n, cd_off, cd_size);
    free(off);

    bn_status st = (uint64_t)(p - buf) == total
                       ? bn_write_file_atomic(path, buf, (size_t)total)
                       : bn_fail(BN_ERR_BACKEND, "internal error: .npz layout of '%s' is inconsistent", path);
    free(buf);
    return st;
}

/* ----------------------------------------------------------------- read */

/* An archive being read: an open file (fd), or an image in memory (mem,
 * for bn_npz_parse and the fuzz target). */
typedef struct {
    const char *path;
    int fd;
    uint64_t size;
    const unsigned char *mem;
} zip_file;

/* Checked before allocating, so a lying size cannot make us allocate more
 * than the file could hold. */
static bn_status in_file(const zip_file *f, uint64_t off, uint64_t len, const char *what)
{
    if (off > f->size || len > f->size - off)
        return bn_fail(BN_ERR_FORMAT, "%s is truncated or corrupt: the %s (%llu bytes at offset %llu) lies past "
                       "the end of the file (%llu bytes)", f->path, what, (unsigned long long)len,
                       (unsigned long long)off, (unsigned long long)f->size);
    return BN_OK;
}

static bn_status read_at(const zip_file *f, uint64_t off, void *buf, size_t len, const char *what)
{
    BN_TRY(in_file(f, off, len, what));
    if (f->mem) {
        if (len) memcpy(buf, f->mem + off, len);
        return BN_OK;
    }
    unsigned char *p = buf;
    while (len > 0) {
        ssize_t k = pread(f->fd, p, len > ((size_t)1 << 30) ? (size_t)1 << 30 : len, (off_t)off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0)
            return bn_fail(BN_ERR_IO, "cannot read the %s of '%s': %s", what, f->path,
                           k < 0 ? strerror(errno) : "unexpected end of file");
        p += k;
        off += (uint64_t)k;
        len -= (size_t)k;
    }
    return BN_OK;
}

/* Where the central directory is and how many entries it has. */
typedef struct {
    uint64_t entries, cd_off, cd_size;
} zip_end;

static bn_status find_end(const zip_file *f, zip_end *e)
{
    unsigned char head[6] = {0};
    size_t tail = f->size < END_LEN + ZIP_MAX_COMMENT ? (size_t)f->size : END_LEN + ZIP_MAX_COMMENT;
    unsigned char *t = malloc(tail ? tail : 1);
    if (!t) return bn_fail(BN_ERR_NOMEM, "cannot allocate %zu bytes to read '%s'", tail, f->path);
    bn_status st = read_at(f, f->size - tail, t, tail, "end of the archive");
    if (st != BN_OK) {
        free(t);
        return st;
    }
    /* The end record is followed only by its comment; search backwards. */
    size_t at = SIZE_MAX;
    for (size_t i = tail >= END_LEN ? tail - END_LEN + 1 : 0; i-- > 0;) {
        if (bn_get_le32(t + i) == SIG_END && i + END_LEN + bn_get_le16(t + i + 20) <= tail) {
            at = i;
            break;
        }
    }
    if (at == SIZE_MAX) {
        free(t);
        if (f->size >= 6) (void)read_at(f, 0, head, 6, "start");
        return bn_fail(BN_ERR_FORMAT, "%s is not an .npz (zip) archive: no end-of-central-directory record%s",
                       f->path, memcmp(head, "\x93NUMPY", 6) == 0 ? " (it looks like a single .npy file)" : "");
    }
    const unsigned char *r = t + at;
    uint64_t end_pos = f->size - tail + at;
    if (bn_get_le16(r + 4) != 0 || bn_get_le16(r + 6) != 0) {
        free(t);
        return bn_fail(BN_ERR_FORMAT, "%s: multi-disk zip archives are not supported", f->path);
    }
    e->entries = bn_get_le16(r + 10);
    e->cd_size = bn_get_le32(r + 12);
    e->cd_off = bn_get_le32(r + 16);
    free(t);

    /* A ZIP64 locator right before the end record points at the ZIP64 end
     * record, whose 64-bit values replace the (possibly clamped) ones. */
    if (end_pos >= LOC64_LEN) {
        unsigned char loc[LOC64_LEN], r64[END64_LEN];
        BN_TRY(read_at(f, end_pos - LOC64_LEN, loc, LOC64_LEN, "ZIP64 locator"));
        if (bn_get_le32(loc) == SIG_LOC64) {
            BN_TRY(read_at(f, bn_get_le64(loc + 8), r64, END64_LEN, "ZIP64 end record"));
            if (bn_get_le32(r64) != SIG_END64)
                return bn_fail(BN_ERR_FORMAT, "%s: corrupt zip archive: the ZIP64 locator points at no ZIP64 "
                               "end record", f->path);
            e->entries = bn_get_le64(r64 + 32);
            e->cd_size = bn_get_le64(r64 + 40);
            e->cd_off = bn_get_le64(r64 + 48);
        }
    }
    if (e->cd_off > f->size || e->cd_size > f->size - e->cd_off)
        return bn_fail(BN_ERR_FORMAT, "%s is truncated or corrupt: its central directory (%llu bytes at offset "
                       "%llu) lies past the end of the file (%llu bytes)", f->path,
                       (unsigned long long)e->cd_size, (unsigned long long)e->cd_off,
                       (unsigned long long)f->size);
    return BN_OK;
}

typedef struct {
    uint16_t flags, method;
    uint32_t crc;
    uint64_t csize, usize, off;
} zip_entry;

/* Replaces the 0xFFFFFFFF fields of *z with the ZIP64 extra field values. */
static bn_status apply_zip64_extra(const zip_file *f, const unsigned char *x, size_t xlen, zip_entry *z)
{
    uint64_t *fields[3] = {&z->usize, &z->csize, &z->off};
    int want = 0;
    for (int k = 0; k < 3; k++) want += *fields[k] == 0xFFFFFFFFu;
    if (!want) return BN_OK;
    for (size_t i = 0; i + 4 <= xlen;) {
        size_t id = bn_get_le16(x + i), len = bn_get_le16(x + i + 2);
        if (i + 4 + len > xlen) break;
        if (id == 1) {
            const unsigned char *q = x + i + 4;
            if (len < 8 * (size_t)want) break;
            for (int k = 0; k < 3; k++)
                if (*fields[k] == 0xFFFFFFFFu) {
                    *fields[k] = bn_get_le64(q);
                    q += 8;
                }
            return BN_OK;
        }
        i += 4 + len;
    }
    return bn_fail(BN_ERR_FORMAT, "%s: corrupt zip archive: an entry needs a ZIP64 extra field but has none "
                   "(or a short one)", f->path);
}

/* Finds name.npy (or name itself) in the central directory.  On a miss the
 * error lists the members there are. */
static bn_status find_entry(const zip_file *f, const unsigned char *cd, const zip_end *e, const char *name,
                            zip_entry *z)
{
    size_t nl = strlen(name);
    char list[400];
    size_t ll = 0, shown = 0;
    list[0] = '\0';
    size_t pos = 0;
    for (uint64_t k = 0; k < e->entries; k++) {
        if (e->cd_size - pos < CENTRAL_LEN || bn_get_le32(cd + pos) != SIG_CENTRAL)
            return bn_fail(BN_ERR_FORMAT, "%s: corrupt zip archive: central directory entry %llu is malformed",
                           f->path, (unsigned long long)k);
        const unsigned char *c = cd + pos;
        size_t en = bn_get_le16(c + 28), xl = bn_get_le16(c + 30), cl = bn_get_le16(c + 32);
        if (e->cd_size - pos - CENTRAL_LEN < en + xl + cl)
            return bn_fail(BN_ERR_FORMAT, "%s: corrupt zip archive: central directory entry %llu runs past "
                           "the directory's end", f->path, (unsigned long long)k);
        const char *en_name = (const char *)c + CENTRAL_LEN;
        int hit = (en == nl + 4 && memcmp(en_name, name, nl) == 0 && memcmp(en_name + nl, ".npy", 4) == 0) ||
                  (en == nl && memcmp(en_name, name, nl) == 0);
        if (hit) {
            z->flags = bn_get_le16(c + 8);
            z->method = bn_get_le16(c + 10);
            z->crc = bn_get_le32(c + 16);
            z->csize = bn_get_le32(c + 20);
            z->usize = bn_get_le32(c + 24);
            z->off = bn_get_le32(c + 42);
            return apply_zip64_extra(f, c + CENTRAL_LEN + en, xl, z);
        }
        size_t show = en >= 4 && memcmp(en_name + en - 4, ".npy", 4) == 0 ? en - 4 : en;
        if (ll + show + 8 < sizeof list) {
            ll += (size_t)snprintf(list + ll, sizeof list - ll, "%s%.*s", shown ? ", " : "", (int)show, en_name);
            shown++;
        }
        pos += CENTRAL_LEN + en + xl + cl;
    }
    if (e->entries == 0) return bn_fail(BN_ERR_ARG, "%s has no member '%s': the archive is empty", f->path, name);
    if (shown < e->entries)
        return bn_fail(BN_ERR_ARG, "%s has no member '%s' (it has %llu members: %s, ...)", f->path, name,
                       (unsigned long long)e->entries, list);
    return bn_fail(BN_ERR_ARG, "%s has no member '%s' (members: %s)", f->path, name, list);
}

static bn_status inflate_member(const char *what, const unsigned char *in, uint64_t csize, unsigned char *out,
                                uint64_t usize)
{
    z_stream s;
    memset(&s, 0, sizeof s);
    if (inflateInit2(&s, -15) != Z_OK) return bn_fail(BN_ERR_NOMEM, "%s: cannot start zlib inflate", what);
    int rc = Z_OK;
    while (rc == Z_OK) {
        uint64_t in_left = csize - s.total_in, out_left = usize - s.total_out;
        s.next_in = (Bytef *)(uintptr_t)(in + s.total_in);
        s.avail_in = in_left > UINT_MAX ? UINT_MAX : (uInt)in_left;
        s.next_out = out + s.total_out;
        s.avail_out = out_left > UINT_MAX ? UINT_MAX : (uInt)out_left;
        rc = inflate(&s, Z_NO_FLUSH);
        if (rc == Z_BUF_ERROR && s.avail_out == 0 && s.total_out == usize) {
            /* Full output buffer, stream not ended: the data is longer than the
             * directory claims -- unless only the end-of-block marker is left. */
            unsigned char extra;
            s.next_out = &extra;
            s.avail_out = 1;
            rc = inflate(&s, Z_NO_FLUSH);
            if (rc == Z_STREAM_END && s.avail_out == 1) break;
            inflateEnd(&s);
            return bn_fail(BN_ERR_FORMAT, "%s is corrupt: it decompresses to more than the %llu bytes the zip "
                           "directory says", what, (unsigned long long)usize);
        }
    }
    uint64_t got = s.total_out;
    const char *msg = s.msg;
    inflateEnd(&s);
    if (rc != Z_STREAM_END)
        return bn_fail(BN_ERR_FORMAT, "%s is corrupt: deflate data %s", what,
                       rc == Z_BUF_ERROR ? "is truncated" : msg ? msg : "is invalid");
    if (got != usize)
        return bn_fail(BN_ERR_FORMAT, "%s is truncated: it decompresses to %llu bytes but the zip directory says "
                       "%llu", what, (unsigned long long)got, (unsigned long long)usize);
    return BN_OK;
}

static uint32_t crc_of(const unsigned char *p, uint64_t len)
{
    uint32_t crc = (uint32_t)crc32(0, NULL, 0);
    while (len > 0) {
        uInt k = len > UINT_MAX ? UINT_MAX : (uInt)len;
        crc = (uint32_t)crc32(crc, p, k);
        p += k;
        len -= k;
    }
    return crc;
}

static bn_status read_member(const zip_file *f, const zip_entry *z, const char *what, bn_array *out)
{
    if (z->flags & 1) return bn_fail(BN_ERR_FORMAT, "%s is encrypted (not supported)", what);
    if (z->method != 0 && z->method != 8)
        return bn_fail(BN_ERR_FORMAT, "%s uses zip compression method %u (only stored and deflate are supported)",
                       what, z->method);
    /* Deflate cannot expand more than ~1032:1; larger claims are lies that
     * would otherwise make us allocate absurd amounts of memory. */
    if ((z->method == 0 && z->usize != z->csize) || (z->method == 8 && z->usize / 1032 > z->csize + 1))
        return bn_fail(BN_ERR_FORMAT, "%s is corrupt: the zip directory claims %llu bytes from %llu compressed",
                       what, (unsigned long long)z->usize, (unsigned long long)z->csize);
    unsigned char loc[LOCAL_LEN];
    BN_TRY(read_at(f, z->off, loc, LOCAL_LEN, "local file header"));
    if (bn_get_le32(loc) != SIG_LOCAL)
        return bn_fail(BN_ERR_FORMAT, "%s: corrupt zip archive: no local file header at offset %llu", what,
                       (unsigned long long)z->off);
    uint64_t data_off = z->off + LOCAL_LEN + bn_get_le16(loc + 26) + bn_get_le16(loc + 28);
    BN_TRY(in_file(f, data_off, z->csize, "member data"));
    if (z->csize > SIZE_MAX || z->usize > SIZE_MAX - 1)
        return bn_fail(BN_ERR_NOMEM, "%s is too large for this machine", what);
    unsigned char *comp = malloc(z->csize ? (size_t)z->csize : 1);
    if (!comp) return bn_fail(BN_ERR_NOMEM, "cannot allocate %llu bytes to read %s", (unsigned long long)z->csize, what);
    bn_status st = read_at(f, data_off, comp, (size_t)z->csize, "member data");
    unsigned char *raw = comp;
    if (st == BN_OK && z->method == 8) {
        raw = malloc((size_t)z->usize + 1);
        st = raw ? inflate_member(what, comp, z->csize, raw, z->usize)
                 : bn_fail(BN_ERR_NOMEM, "cannot allocate %llu bytes to decompress %s", (unsigned long long)z->usize,
                           what);
        free(comp);
    }
    if (st == BN_OK && crc_of(raw, z->usize) != z->crc)
        st = bn_fail(BN_ERR_FORMAT, "%s is corrupt: CRC-32 mismatch", what);
    if (st == BN_OK) st = bn_npy_parse(raw, (size_t)z->usize, what, 1, out);
    free(raw);
    return st;
}

/* Member `name` of the archive f (file or memory). */
static bn_status read_archive(const zip_file *f, const char *name, bn_array *out)
{
    zip_end e = {0};
    zip_entry z = {0};
    unsigned char *cd = NULL;
    bn_status st = find_end(f, &e);
    if (st == BN_OK) {
        cd = malloc(e.cd_size ? (size_t)e.cd_size : 1);
        st = cd ? read_at(f, e.cd_off, cd, (size_t)e.cd_size, "central directory")
                : bn_fail(BN_ERR_NOMEM, "cannot allocate the central directory of '%s'", f->path);
    }
    if (st == BN_OK) st = find_entry(f, cd, &e, name, &z);
    free(cd);
    if (st == BN_OK) {
        char what[1100];
        snprintf(what, sizeof what, "%s member '%s'", f->path, name);
        st = read_member(f, &z, what, out);
    }
    return st;
}

bn_status bn_npz_parse(const unsigned char *buf, size_t len, const char *what, const char *name, bn_array *out)
{
    if (!out) return bn_fail(BN_ERR_ARG, "bn_npz_parse: out is NULL");
    memset(out, 0, sizeof *out);
    if ((!buf && len) || !what || !name || !*name) return bn_fail(BN_ERR_ARG, "bn_npz_parse: bad arguments");
    static const unsigned char empty[1];
    zip_file f = {what, -1, (uint64_t)len, buf ? buf : empty};
    return read_archive(&f, name, out);
}

bn_status bn_npz_read(const char *path, const char *name, bn_array *out)
{
    if (!out) return bn_fail(BN_ERR_ARG, "bn_npz_read: out is NULL");
    memset(out, 0, sizeof *out);
    if (!path || !*path || !name || !*name) return bn_fail(BN_ERR_ARG, "bn_npz_read: empty path or member name");
    zip_file f = {path, open(path, O_RDONLY | O_CLOEXEC), 0, NULL};
    if (f.fd < 0) return bn_fail(BN_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    struct stat sb;
    if (fstat(f.fd, &sb) != 0) {
        int err = errno;
        close(f.fd);
        return bn_fail(BN_ERR_IO, "cannot stat '%s': %s", path, strerror(err));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(f.fd);
        return bn_fail(BN_ERR_IO, "cannot read '%s': %s", path,
                       S_ISDIR(sb.st_mode) ? "it is a directory" : "not a regular file");
    }
    f.size = (uint64_t)sb.st_size;
    bn_status st = read_archive(&f, name, out);
    close(f.fd);
    return st;
}
