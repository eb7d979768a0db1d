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
 * Compiled with -ffast-math (not linked with it: see hwlib/models/c_kernels.py). */
#include <math.h>
#include <stdlib.h>

#include "channel_blocks.h"

static inline float act(float z, float slope) { return z > 0.0f ? z : slope * z; }

/* dL/dz from dL/dout at z */
static inline float act_grad(float z, float dout, float slope) { return z > 0.0f ? dout : slope * dout; }

static inline void out_block(const float *xs, float *os, long P, long C, long c0, long cw, const float *scale,
                             const float *shift, float slope) {
    float sc[CB], sf[CB];
    for (long k = 0; k < cw; k++) sc[k] = scale[c0 + k], sf[k] = shift[c0 + k];
    for (long p = 0; p < P; p++) {
        const float *row = xs + p * C + c0;
        float *orow = os + p * C + c0;
#pragma omp simd
        for (long k = 0; k < cw; k++) orow[k] = act(row[k] * sc[k] + sf[k], slope);
    }
}

/* one sample's sums of g = dL/dz and g (x - mean) */
static inline void grad_block(const float *xs, const float *ds, long P, long C, long c0, long cw, const float *scale,
                              const float *shift, const float *mean, float slope, double *s1, double *s2) {
    float sc[CB], sf[CB], mu[CB];
    double a[CB] = {0}, q[CB] = {0};
    for (long k = 0; k < cw; k++) sc[k] = scale[c0 + k], sf[k] = shift[c0 + k], mu[k] = mean[c0 + k];
    for (long p = 0; p < P; p++) {
        const float *row = xs + p * C + c0, *drow = ds + p * C + c0;
#pragma omp simd
        for (long k = 0; k < cw; k++) {
            float g = act_grad(row[k] * sc[k] + sf[k], drow[k], slope);
            a[k] += (double)g;
            q[k] += (double)(g * (row[k] - mu[k]));
        }
    }
    for (long k = 0; k < cw; k++) s1[c0 + k] = a[k], s2[c0 + k] = q[k];
}

/* dx = ca g + cb (x - mean) + cc */
static inline void dx_block(const float *xs, const float *ds, float *dxs, long P, long C, long c0, long cw,
                            const float *scale, const float *shift, const float *mean, const float *ca,
                            const float *cb, const float *cc, float slope) {
    float sc[CB], sf[CB], mu[CB], fa[CB], fb[CB], fc[CB];
    for (long k = 0; k < cw; k++) {
        long c = c0 + k;
        sc[k] = scale[c], sf[k] = shift[c], mu[k] = mean[c], fa[k] = ca[c], fb[k] = cb[c], fc[k] = cc[c];
    }
    for (long p = 0; p < P; p++) {
        const float *row = xs + p * C + c0, *drow = ds + p * C + c0;
        float *dxrow = dxs + p * C + c0;
#pragma omp simd
        for (long k = 0; k < cw; k++) {
            float g = act_grad(row[k] * sc[k] + sf[k], drow[k], slope);
            dxrow[k] = fa[k] * g + fb[k] * (row[k] - mu[k]) + fc[k];
        }
    }
}

/* sample n's scale and shift: the channel's, or with FiLM (fs, fb (N, C), or NULL) (bn * fs + fb) folded in */
static inline void sample_affine(const float *scale, const float *shift, const float *fs, const float *fb, long n,
                                 long C, float *sn, float *hn) {
    for (long c = 0; c < C; c++) {
        float g = fs ? fs[n * C + c] : 1.0f, f = fb ? fb[n * C + c] : 0.0f;
        sn[c] = scale[c] * g, hn[c] = shift[c] * g + f;
    }
}

/* mean and rstd per channel out; running_mean and running_var (NULL: not tracked) updated; out = act(bn(x)), or
 * act(bn(x) * fs + fb) with FiLM (fs, fb (N, C); NULL: none).
 * Returns 0, or -1 where the work memory could not be allocated (nothing written). */
int bn_act_forward_cl(const float *x, const float *w, const float *b, const float *fs, const float *fb, float *out,
                      float *mean, float *rstd, float *running_mean, float *running_var, long N, long P, long C,
                      float eps, float momentum, float slope, int threads) {
    double *p1 = malloc(2 * N * C * sizeof(double));
    if (!p1) return -1;
    double *p2 = p1 + N * C;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long n = 0; n < N; n++) {
        const float *xs = x + n * P * C;
        BLOCKS(C, c0, stats_block(xs, x, P, C, c0, cw, p1 + n * C, p2 + n * C))
    }
    double M = (double)N * (double)P;
    float scale[C], shift[C];
    for (long c = 0; c < C; c++) {
        double s1 = 0.0, s2 = 0.0;
        for (long n = 0; n < N; n++) s1 += p1[n * C + c], s2 += p2[n * C + c];
        double m = s1 / M, v = s2 / M - m * m;
        v = v > 0.0 ? v : 0.0;
        mean[c] = (float)(m + (double)x[c]);
        rstd[c] = (float)(1.0 / sqrt(v + (double)eps));
        if (running_mean && running_var) {
            double mom = momentum, unbiased = M > 1.0 ? v * M / (M - 1.0) : v;
            running_mean[c] = (float)(mom * (m + (double)x[c]) + (1.0 - mom) * running_mean[c]);
            running_var[c] = (float)(mom * unbiased + (1.0 - mom) * running_var[c]);
        }
        scale[c] = rstd[c] * w[c];
        shift[c] = b[c] - mean[c] * scale[c];
    }
    free(p1);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long n = 0; n < N; n++) {
        float sn[C], hn[C];
        sample_affine(scale, shift, fs, fb, n, C, sn, hn);
        BLOCKS(C, c0, out_block(x + n * P * C, out + n * P * C, P, C, c0, cw, sn, hn, slope))
    }
    return 0;
}

/* dx (N, P, C), dw and db (C,) from dL/dout, x and the forward's mean and rstd; with FiLM (fs, fb (N, C); NULL:
 * none) also dfs and dfb (N, C). 0, or -1 (no memory). */
int bn_act_backward_cl(const float *dout, const float *x, const float *w, const float *b, const float *fs,
                       const float *fb, const float *mean, const float *rstd, float *dx, float *dw, float *db,
                       float *dfs, float *dfb, long N, long P, long C, float slope, int threads) {
    double *p1 = malloc(2 * N * C * sizeof(double));
    if (!p1) return -1;
    double *p2 = p1 + N * C;
    float scale[C], shift[C], cb[C], cc[C];
    for (long c = 0; c < C; c++) scale[c] = rstd[c] * w[c], shift[c] = b[c] - mean[c] * scale[c];
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long n = 0; n < N; n++) {
        long o = n * P * C;
        float sn[C], hn[C];
        sample_affine(scale, shift, fs, fb, n, C, sn, hn);
        BLOCKS(C, c0, grad_block(x + o, dout + o, P, C, c0, cw, sn, hn, mean, slope, p1 + n * C, p2 + n * C))
    }
    double M = (double)N * (double)P;
    for (long c = 0; c < C; c++) {
        double sg = 0.0, sgx = 0.0;  /* sums of dL/dbn and dL/dbn (x - mean) */
        double r = rstd[c];
        for (long n = 0; n < N; n++) {
            double a = p1[n * C + c], q = p2[n * C + c], g = fs ? fs[n * C + c] : 1.0;
            if (fs) {
                dfs[n * C + c] = (float)(q * r * w[c] + a * b[c]);  /* sum over pixels of dL/dz bn(x) */
                dfb[n * C + c] = (float)a;
            }
            sg += g * a, sgx += g * q;
        }
        db[c] = (float)sg;
        dw[c] = (float)(sgx * r);
        cb[c] = (float)(-(double)scale[c] * r * r * sgx / M);
        cc[c] = (float)(-(double)scale[c] * sg / M);
    }
    free(p1);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long n = 0; n < N; n++) {
        long o = n * P * C;
        float sn[C], hn[C], ca[C];  /* ca: dL/dz -> dx, rstd w fs */
        sample_affine(scale, shift, fs, fb, n, C, sn, hn);
        for (long c = 0; c < C; c++) ca[c] = scale[c] * (fs ? fs[n * C + c] : 1.0f);
        BLOCKS(C, c0, dx_block(x + o, dout + o, dx + o, P, C, c0, cw, sn, hn, mean, ca, cb, cc, slope))
    }
    return 0;
}
