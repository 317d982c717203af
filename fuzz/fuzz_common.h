/* Shared by the libFuzzer targets (fuzz/fuzz_*.c) and the corpus replay test
 * (tests/test_fuzz_corpus.c): one entry point per target that feeds a byte
 * string through a reader or parser and then through what the program does
 * with the result, freeing everything.
 *
 * Each returns BN_OK when the input was accepted and an error status (with
 * bn_last_error() set) when it was refused; a crash, leak or sanitizer report
 * is the bug the fuzzer looks for.  *info (may be NULL) gets a short
 * description of what was parsed, for the replay test's shape checks. */
#ifndef BN_FUZZ_COMMON_H
#define BN_FUZZ_COMMON_H

#include "bnspike.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int ndim;          /* npy: rank of the array read            */
    int64_t shape[8];  /* npy: its shape; npz: the 'x' member's  */
    int64_t n, d;      /* csv/npy/npz: data set built (0 if none) */
    int members;       /* npz: members read successfully          */
} bn_fuzz_info;

bn_status bn_fuzz_npy(const uint8_t *data, size_t size, bn_fuzz_info *info);
bn_status bn_fuzz_npz(const uint8_t *data, size_t size, bn_fuzz_info *info);
bn_status bn_fuzz_csv(const uint8_t *data, size_t size, bn_fuzz_info *info);

#endif
