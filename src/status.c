/* Status names and the per-thread error detail behind bn_last_error(). */
#include "internal.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char bn_error_buf[1024];

const char *bn_status_name(bn_status st)
{
    switch (st) {
    case BN_OK: return "ok";
    case BN_ERR_ARG: return "invalid argument";
    case BN_ERR_IO: return "I/O error";
    case BN_ERR_FORMAT: return "malformed file";
    case BN_ERR_NOMEM: return "out of memory";
    case BN_ERR_DATA: return "unusable data";
    case BN_ERR_NOT_SEPARABLE: return "data not separable";
    case BN_ERR_BACKEND: return "backend failure";
    case BN_ERR_UNAVAILABLE: return "unavailable";
    case BN_ERR_INTERRUPTED: return "interrupted";
    }
    return "unknown status";
}

const char *bn_last_error(void) { return bn_error_buf; }

void bn_clear_error(void) { bn_error_buf[0] = '\0'; }

bn_status bn_fail(bn_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(bn_error_buf, sizeof bn_error_buf, fmt, ap);
    va_end(ap);
    return st;
}

size_t bn_mul_size(size_t a, size_t b)
{
    if (a != 0 && b > SIZE_MAX / a) return 0;
    return a * b;
}

const char *bn_loss_name(bn_loss l) { return l == BN_LOSS_LOGISTIC ? "logistic" : "square"; }
const char *bn_precision_name(bn_precision p) { return p == BN_FP32 ? "fp32" : "fp64"; }

const char *bn_backend_name(bn_backend_kind b)
{
    switch (b) {
    case BN_BACKEND_CPU: return "cpu";
    case BN_BACKEND_CUDA: return "cuda";
    default: return "auto";
    }
}

bn_status bn_parse_loss(const char *s, bn_loss *out)
{
    if (s && strcmp(s, "square") == 0) { *out = BN_LOSS_SQUARE; return BN_OK; }
    if (s && strcmp(s, "logistic") == 0) { *out = BN_LOSS_LOGISTIC; return BN_OK; }
    return bn_fail(BN_ERR_ARG, "unknown loss '%s' (expected square or logistic)", s ? s : "");
}

bn_status bn_parse_precision(const char *s, bn_precision *out)
{
    if (s && strcmp(s, "fp64") == 0) { *out = BN_FP64; return BN_OK; }
    if (s && strcmp(s, "fp32") == 0) { *out = BN_FP32; return BN_OK; }
    return bn_fail(BN_ERR_ARG, "unknown precision '%s' (expected fp64 or fp32)", s ? s : "");
}

bn_status bn_parse_backend(const char *s, bn_backend_kind *out)
{
    if (s && strcmp(s, "auto") == 0) { *out = BN_BACKEND_AUTO; return BN_OK; }
    if (s && strcmp(s, "cpu") == 0) { *out = BN_BACKEND_CPU; return BN_OK; }
    if (s && strcmp(s, "cuda") == 0) { *out = BN_BACKEND_CUDA; return BN_OK; }
    return bn_fail(BN_ERR_ARG, "unknown backend '%s' (expected auto, cpu or cuda)", s ? s : "");
}
