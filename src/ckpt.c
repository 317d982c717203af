/* Checkpoint files: see ckpt.h for the layout.  The whole file is built in
 * memory and saved with bn_write_file_atomic, so a kill at any moment leaves
 * either the previous checkpoint or the new one, never a mixture. */
#include "ckpt.h"
#include "io_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAGIC "BNSPIKE-CKPT"
#define MAGIC_LEN 12
#define HEAD_LEN (MAGIC_LEN + 4 + 8 + 8)
#define TAG_LEN 24
/* Payloads are padded to 8 bytes, so every section starts 8-byte aligned and
 * its int64/double arrays can be read in place. */
#define PAD8(x) (((x) + 7) & ~(size_t)7)

struct bn_ckpt {
    unsigned char *buf;
    size_t len, cap;
    int64_t sections;
    /* reading */
    size_t pos;
    int64_t read_sections;
    char path[512];
};

uint64_t bn_fnv1a64(uint64_t h, const void *p, size_t len)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < len; i++) {
        h ^= b[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static bn_status grow(bn_ckpt *c, size_t add)
{
    if (c->len + add <= c->cap) return BN_OK;
    size_t cap = c->cap ? c->cap : 4096;
    while (cap < c->len + add) {
        if (cap > SIZE_MAX / 2) return bn_fail(BN_ERR_NOMEM, "checkpoint larger than memory allows");
        cap *= 2;
    }
    unsigned char *p = realloc(c->buf, cap);
    if (!p) return bn_fail(BN_ERR_NOMEM, "cannot allocate %zu bytes for the checkpoint", cap);
    c->buf = p;
    c->cap = cap;
    return BN_OK;
}

bn_status bn_ckpt_create(const char *config_text, uint64_t data_checksum, bn_ckpt **out)
{
    *out = NULL;
    bn_ckpt *c = calloc(1, sizeof *c);
    if (!c) return bn_fail(BN_ERR_NOMEM, "cannot allocate a checkpoint");
    bn_status st = grow(c, HEAD_LEN);
    if (!st) {
        memcpy(c->buf, MAGIC, MAGIC_LEN);
        bn_put_le32(c->buf + MAGIC_LEN, BN_CKPT_FORMAT);
        bn_put_le64(c->buf + MAGIC_LEN + 4, data_checksum);
        bn_put_le64(c->buf + MAGIC_LEN + 12, 0);
        c->len = HEAD_LEN;
        st = bn_ckpt_put(c, "config", config_text, strlen(config_text));
    }
    if (st) {
        bn_ckpt_free(c);
        return st;
    }
    *out = c;
    return BN_OK;
}

bn_status bn_ckpt_put(bn_ckpt *c, const char *tag, const void *data, size_t bytes)
{
    if (strlen(tag) >= TAG_LEN) return bn_fail(BN_ERR_ARG, "checkpoint tag '%s' is too long", tag);
    if (bytes > SIZE_MAX - TAG_LEN - 16) return bn_fail(BN_ERR_NOMEM, "checkpoint section too large");
    BN_TRY(grow(c, TAG_LEN + 8 + PAD8(bytes)));
    unsigned char *p = c->buf + c->len;
    memset(p, 0, TAG_LEN);
    memcpy(p, tag, strlen(tag));
    bn_put_le64(p + TAG_LEN, (uint64_t)bytes);
    if (bytes) memcpy(p + TAG_LEN + 8, data, bytes);
    memset(p + TAG_LEN + 8 + bytes, 0, PAD8(bytes) - bytes);
    c->len += TAG_LEN + 8 + PAD8(bytes);
    c->sections++;
    return BN_OK;
}

bn_status bn_ckpt_put_i64(bn_ckpt *c, const char *tag, int64_t v)
{
    return bn_ckpt_put(c, tag, &v, sizeof v);
}

bn_status bn_ckpt_write(const bn_ckpt *c, const char *path)
{
    bn_ckpt *w = (bn_ckpt *)c; /* the trailer is appended to a copy of the length */
    BN_TRY(grow(w, 8));
    bn_put_le64(w->buf + MAGIC_LEN + 12, (uint64_t)c->sections);
    uint64_t h = bn_fnv1a64(BN_FNV_OFFSET, c->buf, c->len);
    bn_put_le64(w->buf + c->len, h);
    return bn_write_file_atomic(path, c->buf, c->len + 8);
}

/* The first line where two "key=value\n" texts differ, for the refusal. */
static void first_difference(const char *a, const char *b, char *out, size_t cap)
{
    while (*a || *b) {
        size_t la = strcspn(a, "\n"), lb = strcspn(b, "\n");
        if (la != lb || memcmp(a, b, la) != 0) {
            snprintf(out, cap, "the checkpoint has '%.*s', this run has '%.*s'", (int)la, a, (int)lb, b);
            return;
        }
        a += la + (a[la] == '\n');
        b += lb + (b[lb] == '\n');
    }
    snprintf(out, cap, "the configurations differ");
}

bn_status bn_ckpt_open(const char *path, const char *config_text, uint64_t data_checksum,
                       bn_ckpt **out)
{
    *out = NULL;
    unsigned char *buf = NULL;
    size_t len = 0;
    BN_TRY(bn_read_whole_file(path, &buf, &len));
    bn_ckpt *c = calloc(1, sizeof *c);
    if (!c) {
        free(buf);
        return bn_fail(BN_ERR_NOMEM, "cannot allocate a checkpoint");
    }
    c->buf = buf;
    c->len = c->cap = len;
    snprintf(c->path, sizeof c->path, "%s", path);
    bn_status st = BN_OK;
    if (len < HEAD_LEN + 8 || memcmp(buf, MAGIC, MAGIC_LEN) != 0)
        st = bn_fail(BN_ERR_FORMAT, "'%s' is not a bnspike checkpoint (bad magic or too short)", path);
    else if (bn_get_le32(buf + MAGIC_LEN) != BN_CKPT_FORMAT)
        st = bn_fail(BN_ERR_FORMAT, "checkpoint '%s' has format %u; this bnspike reads format %u", path,
                     bn_get_le32(buf + MAGIC_LEN), BN_CKPT_FORMAT);
    else if (bn_get_le64(buf + len - 8) != bn_fnv1a64(BN_FNV_OFFSET, buf, len - 8))
        st = bn_fail(BN_ERR_FORMAT, "checkpoint '%s' is corrupt: its checksum does not match "
                                    "(cut short or changed after it was written)", path);
    c->len = len - 8;
    c->pos = HEAD_LEN;
    c->sections = st ? 0 : (int64_t)bn_get_le64(buf + MAGIC_LEN + 12);
    /* Data first: other data also changes the start (w0 is projected on it). */
    if (!st && bn_get_le64(buf + MAGIC_LEN + 4) != data_checksum)
        st = bn_fail(BN_ERR_ARG, "checkpoint '%s' was written for different data (checksum %016llx, "
                                 "this data %016llx)", path,
                     (unsigned long long)bn_get_le64(buf + MAGIC_LEN + 4), (unsigned long long)data_checksum);
    const void *cfg = NULL;
    size_t cfg_len = 0;
    if (!st) st = bn_ckpt_get_any(c, "config", &cfg, &cfg_len);
    if (!st && (cfg_len != strlen(config_text) || memcmp(cfg, config_text, cfg_len) != 0)) {
        char *saved = strndup(cfg, cfg_len), diff[600];
        first_difference(saved ? saved : "", config_text, diff, sizeof diff);
        free(saved);
        st = bn_fail(BN_ERR_ARG, "checkpoint '%s' was written for a different configuration: %s", path, diff);
    }
    if (st) {
        bn_ckpt_free(c);
        return st;
    }
    *out = c;
    return BN_OK;
}

bn_status bn_ckpt_get_any(bn_ckpt *c, const char *tag, const void **data, size_t *bytes)
{
    char want[TAG_LEN] = {0};
    snprintf(want, sizeof want, "%s", tag);
    if (c->read_sections >= c->sections || c->len - c->pos < TAG_LEN + 8)
        return bn_fail(BN_ERR_FORMAT, "checkpoint '%s' ends before its '%s' section", c->path, tag);
    const unsigned char *p = c->buf + c->pos;
    if (memcmp(p, want, TAG_LEN) != 0)
        return bn_fail(BN_ERR_FORMAT, "checkpoint '%s': expected section '%s', found '%.*s'", c->path, tag,
                       TAG_LEN, (const char *)p);
    uint64_t n = bn_get_le64(p + TAG_LEN);
    if (n > c->len - c->pos - TAG_LEN - 8 || PAD8((size_t)n) > c->len - c->pos - TAG_LEN - 8)
        return bn_fail(BN_ERR_FORMAT, "checkpoint '%s': section '%s' runs past the end", c->path, tag);
    *data = p + TAG_LEN + 8;
    *bytes = (size_t)n;
    c->pos += TAG_LEN + 8 + PAD8((size_t)n);
    c->read_sections++;
    return BN_OK;
}

bn_status bn_ckpt_get(bn_ckpt *c, const char *tag, void *data, size_t bytes)
{
    const void *p;
    size_t n;
    BN_TRY(bn_ckpt_get_any(c, tag, &p, &n));
    if (n != bytes)
        return bn_fail(BN_ERR_FORMAT, "checkpoint '%s': section '%s' has %zu bytes, expected %zu", c->path,
                       tag, n, bytes);
    if (bytes) memcpy(data, p, bytes);
    return BN_OK;
}

bn_status bn_ckpt_get_i64(bn_ckpt *c, const char *tag, int64_t *v) { return bn_ckpt_get(c, tag, v, sizeof *v); }

int bn_ckpt_next_is(const bn_ckpt *c, const char *tag)
{
    char want[TAG_LEN] = {0};
    snprintf(want, sizeof want, "%s", tag);
    return c->read_sections < c->sections && c->len - c->pos >= TAG_LEN + 8 &&
           memcmp(c->buf + c->pos, want, TAG_LEN) == 0;
}

const char *bn_ckpt_path(const bn_ckpt *c) { return c->path; }

void bn_ckpt_free(bn_ckpt *c)
{
    if (!c) return;
    free(c->buf);
    free(c);
}

void bn_cfgtext_add(bn_cfgtext *t, const char *fmt, ...)
{
    if (t->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(t->s ? t->s + t->len : NULL, t->s ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (k < 0) {
            t->failed = 1;
            return;
        }
        if (t->s && t->len + (size_t)k + 2 <= t->cap) {
            t->len += (size_t)k;
            t->s[t->len++] = '\n';
            t->s[t->len] = 0;
            return;
        }
        size_t cap = (t->cap ? t->cap : 256) * 2 + (size_t)k;
        char *p = realloc(t->s, cap);
        if (!p) {
            t->failed = 1;
            return;
        }
        if (!t->s) p[0] = 0;
        t->s = p;
        t->cap = cap;
    }
}

void bn_cfgtext_array(bn_cfgtext *t, const char *key, const void *p, size_t count, size_t elem)
{
    if (!p) bn_cfgtext_add(t, "%s=none", key);
    else
        bn_cfgtext_add(t, "%s=%zu:%016llx", key, count,
                       (unsigned long long)bn_fnv1a64(BN_FNV_OFFSET, p, count * elem));
}

void bn_cfgtext_lines(bn_cfgtext *t, const char *lines)
{
    if (!lines || !*lines) return;
    size_t k = strlen(lines);
    bn_cfgtext_add(t, "%.*s", (int)(lines[k - 1] == '\n' ? k - 1 : k), lines);
}

void bn_cfgtext_sharpness(bn_cfgtext *t, const bn_run_config *c)
{
    bn_cfgtext_add(t, "sharpness_every=%lld", (long long)c->sharpness_every);
    if (c->sharpness_every <= 0) return;
    bn_cfgtext_add(t, "sharpness_method=%d", c->sharpness_method);
    bn_cfgtext_add(t, "sharpness_tol=%.17g", c->sharpness_tol);
    bn_cfgtext_add(t, "sharpness_maxiter=%lld", (long long)c->sharpness_maxiter);
    bn_cfgtext_add(t, "sharpness_sphere_plain=%d", c->sharpness_sphere_plain);
    bn_cfgtext_add(t, "eigs=%lld", (long long)c->eigs);
    bn_cfgtext_add(t, "eigs_operator=%d", c->eigs_operator);
    bn_cfgtext_add(t, "eigs_maxiter=%lld", (long long)c->eigs_maxiter);
}

void bn_cfgtext_free(bn_cfgtext *t)
{
    free(t->s);
    memset(t, 0, sizeof *t);
}
