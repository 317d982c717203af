/* Philox4x32-10 → uniforms → Box–Muller normals; see rng.h. */
#include "rng.h"

#include <math.h>
#include <Random123/philox.h>

/* Block b of the stream: 4 × 32 bits → two 53-bit uniforms in (0,1). */
static void philox_block(uint64_t key, uint64_t stream, uint64_t b, double u[2])
{
    philox4x32_ctr_t ctr = {{(uint32_t)b, (uint32_t)(b >> 32), (uint32_t)stream,
                             (uint32_t)(stream >> 32)}};
    philox4x32_key_t k = {{(uint32_t)key, (uint32_t)(key >> 32)}};
    philox4x32_ctr_t r = philox4x32(ctr, k);
    for (int i = 0; i < 2; i++) {
        uint64_t bits = ((uint64_t)r.v[2 * i] << 32 | r.v[2 * i + 1]) >> 11; /* 53 bits */
        u[i] = ((double)bits + 0.5) * (1.0 / 9007199254740992.0);
    }
}

void bn_rng_uniform(uint64_t key, uint64_t stream, uint64_t k0, int64_t count, double *out)
{
    for (int64_t i = 0; i < count; i++) {
        uint64_t k = k0 + (uint64_t)i;
        double u[2];
        philox_block(key, stream, k / 2, u);
        out[i] = u[k % 2];
    }
}

void bn_rng_normal(uint64_t key, uint64_t stream, uint64_t k0, int64_t count, double *out)
{
    for (int64_t i = 0; i < count; i++) {
        uint64_t k = k0 + (uint64_t)i;
        double u[2];
        philox_block(key, stream, k / 2, u);
        double rad = sqrt(-2.0 * log(u[0]));
        double ang = 6.283185307179586476925286766559 * u[1];
        out[i] = (k % 2 == 0) ? rad * cos(ang) : rad * sin(ang);
    }
}
