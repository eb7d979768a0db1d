/* Loops over channels-last (N, P, C) float32 tensors in blocks of CB = 16 channels (one 64-byte line of floats; 8
 * and the rest where C is not a multiple of 16): for each block a loop runs down a sample's P rows with the block's
 * accumulators in registers, so each channel's sums are taken in row order, as a loop over whole rows would take
 * them. Shared by hwlib/csrc/group_norm_silu.c and hwlib/csrc/batch_norm_act.c. */
#ifndef HWLIB_CHANNEL_BLOCKS_H
#define HWLIB_CHANNEL_BLOCKS_H

#define CB 16

/* Runs `call` for each block of channels c0 .. c0+cw-1; the constant widths (CB, 8) let its loops unroll. */
#define BLOCKS(C, c0, call) \
    for (long c0 = 0; c0 < (C); c0 += CB) { \
        if ((C) - c0 >= CB) { long cw = CB; call; } \
        else if ((C) - c0 == 8) { long cw = 8; call; } \
        else { long cw = (C) - c0; call; } \
    }

/* one sample's sums of (x - pilot) and their squares over its P rows, in double, channels c0 .. c0+cw-1: defines
 * `name` for elements of type T read as float by LOAD (float: as they are; batch_norm_act.c also makes a bf16 one) */
#define DEFINE_STATS_BLOCK(name, T, LOAD) \
static inline void name(const T *xs, const T *pilot, long P, long C, long c0, long cw, double *s1, double *s2) { \
    double a[CB] = {0}, q[CB] = {0}; \
    float pl[CB]; \
    for (long k = 0; k < cw; k++) pl[k] = LOAD(pilot[c0 + k]); \
    for (long p = 0; p < P; p++) { \
        const T *row = xs + p * C + c0; \
        _Pragma("omp simd") \
        for (long k = 0; k < cw; k++) { \
            double d = (double)LOAD(row[k]) - (double)pl[k]; \
            a[k] += d; \
            q[k] += d * d; \
        } \
    } \
    for (long k = 0; k < cw; k++) s1[c0 + k] = a[k], s2[c0 + k] = q[k]; \
}

#define AS_IS(v) (v)
DEFINE_STATS_BLOCK(stats_block, float, AS_IS)

#endif
