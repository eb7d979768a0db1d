/* GroupNorm followed by SiLU on a CPU, float32, for (N, C, P) tensors (P = H*W pixels) with G groups of C/G
 * neighbouring channels, contiguous (each (sample, group) one block of C/G planes, one task each) or channels-last
 * ("_cl": (N, P, C), one task per sample). Tasks are independent, so results do not depend on the thread count.
 * An optional shift s (N, C) is added to x first (the U-Net's time embedding; NULL: none), so that the sum is never
 * written to memory: x' = x + s_nc.
 * Forward: out = silu(y), y = (x' - mean_g) * rstd_g * w_c + b_c, the statistics in double from x minus each
 * channel's first pixel (against cancellation); the groups' mean and 1/std are returned for the backward.
 * Backward: one pass computes g = dL/dy, keeps it in dx (a task's block fits the cache) and sums g and g*x per
 * channel; a second turns g into dx and sums dx per (sample, channel), which is dL/ds ("dsh"). The per-(sample,
 * channel) sums for dw and db are returned for the caller to add up.
 * Compiled with -ffast-math (not linked with it: see hwlib/models/c_kernels.py). */
#include <math.h>

#include "channel_blocks.h"

/* e^x to about 1 ulp (Cephes' expf: x = k ln2 + r, |r| <= ln2/2, a degree-6 polynomial in r, times 2^k), inlined
 * so that the loops below vectorise without a call per vector; x is clamped to [-87.3, 88.7] (the normal range). */
static inline float exp_f(float x) {
    x = fminf(fmaxf(x, -87.3f), 88.7f);
    float k = rintf(x * 1.44269504088896341f);
    float r = fmaf(k, -0.693359375f, x);
    r = fmaf(k, 2.12194440e-4f, r);
    float p = 1.9875691500e-4f;
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    p = fmaf(p * r, r, r) + 1.0f;
    union { float f; int i; } two_k = { .i = ((int)k + 127) << 23 };
    return p * two_k.f;
}

static inline float silu(float y) { return y / (1.0f + exp_f(-y)); }

/* a task's shifts (count values from s + offset), zeros without a shift (s NULL) */
static inline void load_shift(const float *s, long offset, long count, float *sh) {
    for (long i = 0; i < count; i++) sh[i] = s ? s[offset + i] : 0.0f;
}

/* the group's mean and 1/std from its channels' sums of (x - pilot) and squares over P pixels */
static inline void group_stats(const double *s1, const double *s2, const float *pilot, long cg, long P, float eps,
                               float *mean, float *rstd) {
    double m = 0.0, q = 0.0;
    for (long j = 0; j < cg; j++) m += s1[j] / P + (double)pilot[j];
    m /= cg;
    for (long j = 0; j < cg; j++) {
        double mc = s1[j] / P + (double)pilot[j], vc = s2[j] / P - (s1[j] / P) * (s1[j] / P);
        q += vc + (mc - m) * (mc - m);
    }
    double var = q / cg > 0.0 ? q / cg : 0.0;
    *mean = (float)m;
    *rstd = (float)(1.0 / sqrt(var + (double)eps));
}

static inline float silu_grad(float y, float dout) {
    float s = 1.0f / (1.0f + exp_f(-y));
    return dout * s * (1.0f + y * (1.0f - s));
}
/* a group's per-channel sums of g and g*xhat (to sum_g, sum_gx) from those of g and g*x, and the two coefficients
 * of dx = rstd w g + cb x + cc, i.e. rstd (w g - mean(w g) - xhat mean(w g xhat)) over the group's cg channels */
static inline void group_grad(const float *a1, const float *a2, const float *w, float r, float m, long cg, long P,
                              float *sum_g, float *sum_gx, float *cb, float *cc) {
    double m1 = 0.0, m2 = 0.0;  /* group sums of w*g and w*g*xhat */
    for (long j = 0; j < cg; j++) {
        float t = r * (a2[j] - m * a1[j]);  /* sum of g * xhat */
        sum_g[j] = a1[j];
        sum_gx[j] = t;
        m1 += (double)w[j] * a1[j];
        m2 += (double)w[j] * t;
    }
    float f1 = (float)(m1 / ((double)P * cg)), f2 = (float)(m2 / ((double)P * cg));
    *cb = -r * r * f2;
    *cc = r * (r * m * f2 - f1);
}

void gn_silu_forward(const float *x, const float *s, const float *w, const float *b, float *out, float *mean,
                     float *rstd, long N, long P, long C, long G, float eps, int threads) {
    long cg = C / G;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long ng = 0; ng < N * G; ng++) {
        long g = ng % G, n = ng / G;
        const float *xs = x + ng * cg * P;
        float *os = out + ng * cg * P;
        double s1[cg], s2[cg];
        float pilot[cg], sh[cg];
        load_shift(s, n * C + g * cg, cg, sh);
        for (long j = 0; j < cg; j++) {
            const float *plane = xs + j * P;
            double a = 0.0, q = 0.0;
            pilot[j] = plane[0];
#pragma omp simd reduction(+ : a, q)
            for (long p = 0; p < P; p++) {
                double d = (double)plane[p] - (double)pilot[j];
                a += d;
                q += d * d;
            }
            s1[j] = a, s2[j] = q;
            pilot[j] += sh[j];  /* the statistics of x' = x + s: the same sums around a shifted pilot */
        }
        group_stats(s1, s2, pilot, cg, P, eps, mean + ng, rstd + ng);
        for (long j = 0; j < cg; j++) {
            float scale = rstd[ng] * w[g * cg + j];
            float shift = b[g * cg + j] + (sh[j] - mean[ng]) * scale;
            const float *plane = xs + j * P;
            float *oplane = os + j * P;
#pragma omp simd
            for (long p = 0; p < P; p++) oplane[p] = silu(plane[p] * scale + shift);
        }
    }
}

void gn_silu_backward(const float *dout, const float *x, const float *s, const float *w, const float *b,
                      const float *mean, const float *rstd, float *dx, float *dsh, float *sum_g, float *sum_gx, long N,
                      long P, long C, long G, int threads) {
    long cg = C / G;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long ng = 0; ng < N * G; ng++) {
        long g = ng % G, n = ng / G;
        const float *xs = x + ng * cg * P, *ds = dout + ng * cg * P;
        float *dxs = dx + ng * cg * P;
        float r = rstd[ng], m = mean[ng], a1[cg], a2[cg], sh[cg], cb, cc;
        load_shift(s, n * C + g * cg, cg, sh);
        for (long j = 0; j < cg; j++) {  /* pass 1: sums of g = dL/dy and g * x per channel */
            long c = g * cg + j;
            float scale = r * w[c], shift = b[c] + (sh[j] - m) * scale;
            const float *plane = xs + j * P, *dplane = ds + j * P;
            float *gplane = dxs + j * P;  /* g, kept in dx (a block small enough for the cache) for pass 2 */
            float s1 = 0.0f, s2 = 0.0f;
#pragma omp simd reduction(+ : s1, s2)
            for (long p = 0; p < P; p++) {
                float y = plane[p] * scale + shift;
                float gr = silu_grad(y, dplane[p]);
                gplane[p] = gr;
                s1 += gr;
                s2 += gr * plane[p];
            }
            a1[j] = s1, a2[j] = s2 + sh[j] * s1;  /* sum of g * x' */
        }
        group_grad(a1, a2, w + g * cg, r, m, cg, P, sum_g + n * C + g * cg, sum_gx + n * C + g * cg, &cb, &cc);
        for (long j = 0; j < cg; j++) {  /* pass 2: dx = rstd (w g - mean(w g) - xhat mean(w g xhat)); dL/ds */
            long c = g * cg + j;
            float ca = r * w[c], cj = cc + sh[j] * cb, t = 0.0f;
            const float *plane = xs + j * P;
            float *dxplane = dxs + j * P;
#pragma omp simd reduction(+ : t)
            for (long p = 0; p < P; p++) {
                float d = dxplane[p] * ca + plane[p] * cb + cj;
                dxplane[p] = d;
                t += d;
            }
            dsh[n * C + c] = t;
        }
    }
}

/* The same for channels-last (N, P, C) tensors: one task per sample, the channels in blocks of 16
 * (channel_blocks.h). */
static inline void out_block(const float *xs, float *os, long P, long C, long c0, long cw, const float *scale,
                             const float *shift) {
    float sc[CB], sf[CB];
    for (long k = 0; k < cw; k++) sc[k] = scale[c0 + k], sf[k] = shift[c0 + k];
    for (long p = 0; p < P; p++) {
        const float *row = xs + p * C + c0;
        float *orow = os + p * C + c0;
#pragma omp simd
        for (long k = 0; k < cw; k++) orow[k] = silu(row[k] * sc[k] + sf[k]);
    }
}

/* pass 1 of the backward for a block: g = dL/dy kept in dx, its sums a1 and sums of g * x a2 */
static inline void grad_block(const float *xs, const float *ds, float *dxs, long P, long C, long c0, long cw,
                              const float *scale, const float *shift, float *a1, float *a2) {
    float sc[CB], sf[CB], s1[CB] = {0}, s2[CB] = {0};
    for (long k = 0; k < cw; k++) sc[k] = scale[c0 + k], sf[k] = shift[c0 + k];
    for (long p = 0; p < P; p++) {
        const float *row = xs + p * C + c0, *drow = ds + p * C + c0;
        float *grow = dxs + p * C + c0;
#pragma omp simd
        for (long k = 0; k < cw; k++) {
            float y = row[k] * sc[k] + sf[k];
            float gr = silu_grad(y, drow[k]);
            grow[k] = gr;
            s1[k] += gr;
            s2[k] += gr * row[k];
        }
    }
    for (long k = 0; k < cw; k++) a1[c0 + k] = s1[k], a2[c0 + k] = s2[k];
}

/* pass 2 for a block: dx = g ca + x cb + cc in place, and its sums per channel (dL/ds) */
static inline void dx_block(const float *xs, float *dxs, long P, long C, long c0, long cw, const float *ca,
                            const float *cb, const float *cc, float *dss) {
    float fa[CB], fb[CB], fc[CB], t[CB] = {0};
    for (long k = 0; k < cw; k++) fa[k] = ca[c0 + k], fb[k] = cb[c0 + k], fc[k] = cc[c0 + k];
    for (long p = 0; p < P; p++) {
        const float *row = xs + p * C + c0;
        float *dxrow = dxs + p * C + c0;
#pragma omp simd
        for (long k = 0; k < cw; k++) {
            float d = dxrow[k] * fa[k] + row[k] * fb[k] + fc[k];
            dxrow[k] = d;
            t[k] += d;
        }
    }
    for (long k = 0; k < cw; k++) dss[c0 + k] = t[k];
}

void gn_silu_forward_cl(const float *x, const float *s, const float *w, const float *b, float *out, float *mean,
                        float *rstd, long N, long P, long C, long G, float eps, int threads) {
    long cg = C / G;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long n = 0; n < N; n++) {
        const float *xs = x + n * P * C;
        float *os = out + n * P * C;
        double s1[C], s2[C];
        float pilot[C], scale[C], shift[C], sh[C];
        load_shift(s, n * C, C, sh);
        BLOCKS(C, c0, stats_block(xs, xs, P, C, c0, cw, s1, s2))
        for (long c = 0; c < C; c++) pilot[c] = xs[c] + sh[c];  /* the statistics of x' = x + s */
        for (long g = 0; g < G; g++) {
            long k = n * G + g;
            group_stats(s1 + g * cg, s2 + g * cg, pilot + g * cg, cg, P, eps, mean + k, rstd + k);
            for (long c = g * cg; c < (g + 1) * cg; c++) {
                scale[c] = rstd[k] * w[c];
                shift[c] = b[c] + (sh[c] - mean[k]) * scale[c];
            }
        }
        BLOCKS(C, c0, out_block(xs, os, P, C, c0, cw, scale, shift))
    }
}

void gn_silu_backward_cl(const float *dout, const float *x, const float *s, const float *w, const float *b,
                         const float *mean, const float *rstd, float *dx, float *dsh, float *sum_g, float *sum_gx,
                         long N, long P, long C, long G, int threads) {
    long cg = C / G;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long n = 0; n < N; n++) {
        float scale[C], shift[C], ca[C], cb[C], cc[C], a1[C], a2[C], sh[C];
        const float *xs = x + n * P * C, *ds = dout + n * P * C;
        float *dxs = dx + n * P * C;
        const float *mu = mean + n * G, *rs = rstd + n * G;
        load_shift(s, n * C, C, sh);
        for (long c = 0; c < C; c++) {
            scale[c] = rs[c / cg] * w[c];
            shift[c] = b[c] + (sh[c] - mu[c / cg]) * scale[c];
        }
        BLOCKS(C, c0, grad_block(xs, ds, dxs, P, C, c0, cw, scale, shift, a1, a2))  /* pass 1 */
        for (long c = 0; c < C; c++) a2[c] += sh[c] * a1[c];  /* sums of g * x' */
        for (long g = 0; g < G; g++) {
            long c0 = g * cg;
            float gb, gc;
            group_grad(a1 + c0, a2 + c0, w + c0, rs[g], mu[g], cg, P, sum_g + n * C + c0, sum_gx + n * C + c0,
                       &gb, &gc);
            for (long c = c0; c < c0 + cg; c++) ca[c] = rs[g] * w[c], cb[c] = gb, cc[c] = gc + sh[c] * gb;
        }
        BLOCKS(C, c0, dx_block(xs, dxs, P, C, c0, cw, ca, cb, cc, dsh + n * C))  /* pass 2 */
    }
}
