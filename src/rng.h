/* Counter-based random numbers (Philox4x32-10 from Random123).  Value k of
 * stream (key, stream) is a pure function of (key, stream, k): seed s gets the
 * same w0 whether it runs alone or among 10,000, on any thread count. */
#ifndef BN_RNG_H
#define BN_RNG_H

#include <stdint.h>

/* Streams: one per purpose, so adding a draw in one never shifts another. */
enum {
    BN_STREAM_W0 = 1,      /* initial w of a trajectory (key = seed id) */
    BN_STREAM_DATA_X = 2,  /* generator features                        */
    BN_STREAM_DATA_Y = 3,  /* generator targets / labels / noise        */
    BN_STREAM_DATA_ROT = 4,/* generator rotations                       */
    BN_STREAM_DATA_AUX = 5 /* anything else a generator needs           */
};

/* Uniform in (0, 1) with 53 random bits, never exactly 0 or 1: values k of the stream. */
void bn_rng_uniform(uint64_t key, uint64_t stream, uint64_t k0, int64_t count, double *out);
/* Standard normals (Box–Muller on pairs), values k0 .. k0+count-1 of the stream. */
void bn_rng_normal(uint64_t key, uint64_t stream, uint64_t k0, int64_t count, double *out);

#endif
