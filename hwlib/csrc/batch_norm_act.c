/* BatchNorm in training (the batch's statistics) followed by an activation act(z) = z > 0 ? z : a z (a = 0: ReLU,
 * 0.2: leaky ReLU, 1: none) on a CPU, float32, channels-last tensors (N, P, C) (P = H*W pixels, channels innermost).
 * Every pass runs one task per sample: per-sample partial sums in double (around a pilot, sample 0's first pixel,
 * against cancellation) are added up over the samples in order, so the results do not depend on the thread count.
 * The channels are taken in blocks of 16 (channel_blocks.h).
 * Forward: mean and 1/std per channel, the running statistics moved towards the batch's mean and unbiased variance
 * (as PyTorch does, in double), then out = act(x * scale + shift). Backward: one pass sums g = dL/dz (recomputed
 * from x) and g (x - mean) per channel, a second writes dx; dL/dw and dL/db come out of the sums.
 * Optionally a per-sample, per-channel affine map between the norm and the activation (FiLM, a conditional batch
 * norm): z = bn(x) * fs[n, c] + fb[n, c], folded into each sample's scale and shift; its gradients come out of the
 * same per-sample sums (d fs = sum over pixels of g bn(x), d fb = sum of g).
 * Each function comes twice (batch_norm_act_body.h): for float32 tensors, and with the suffix _bf16 for bfloat16 x,
 * out, dout and dx (bf16 autocast), read as float and written rounded to the nearest bf16; every other tensor and
 * every sum as in float32.
 * Compiled with -ffast-math (not linked with it: see hwlib/models/c_kernels.py). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "channel_blocks.h"

static inline float act(float z, float slope) { return z > 0.0f ? z : slope * z; }

/* dL/dz from dL/dout at z */
static inline float act_grad(float z, float dout, float slope) { return z > 0.0f ? dout : slope * dout; }

/* bfloat16 (the top half of a float32) to float, and float to the nearest bfloat16, ties to even (NaN kept NaN) */
static inline float bf16_load(uint16_t v) {
    union { uint32_t u; float f; } c = {.u = (uint32_t)v << 16};
    return c.f;
}

static inline uint16_t bf16_store(float f) {
    union { float f; uint32_t u; } c = {.f = f};
    if ((c.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((c.u >> 16) | 0x40u);
    return (uint16_t)((c.u + 0x7fffu + ((c.u >> 16) & 1u)) >> 16);
}

DEFINE_STATS_BLOCK(stats_block_bf16, uint16_t, bf16_load)

/* sample n's scale and shift: the channel's, or with FiLM (fs, fb (N, C), or NULL) (bn * fs + fb) folded in */
static inline void sample_affine(const float *scale, const float *shift, const float *fs, const float *fb, long n,
                                 long C, float *sn, float *hn) {
    for (long c = 0; c < C; c++) {
        float g = fs ? fs[n * C + c] : 1.0f, f = fb ? fb[n * C + c] : 0.0f;
        sn[c] = scale[c] * g, hn[c] = shift[c] * g + f;
    }
}

#define T float
#define LOAD AS_IS
#define STORE AS_IS
#define STATS stats_block
#define SUFFIX
#include "batch_norm_act_body.h"

#define T uint16_t
#define LOAD bf16_load
#define STORE bf16_store
#define STATS stats_block_bf16
#define SUFFIX _bf16
#include "batch_norm_act_body.h"
