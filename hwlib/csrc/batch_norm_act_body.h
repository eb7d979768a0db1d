/* The kernels of hwlib/csrc/batch_norm_act.c for one element type: included there once per type with T (the element
 * type of x, out, dout and dx), LOAD (T -> float), STORE (float -> T), STATS (stats_block for T) and SUFFIX (appended
 * to each function's name) defined; they are undefined again at the end. */
#define NAME_(f, s) f##s
#define NAME2(f, s) NAME_(f, s)
#define NAME(f) NAME2(f, SUFFIX)

static inline void NAME(out_block)(const T *xs, T *os, long P, long C, long c0, long cw, const float *scale,
                             const float *shift, float slope) {
    float sc[CB], sf[CB];
    for (long k = 0; k < cw; k++) sc[k] = scale[c0 + k], sf[k] = shift[c0 + k];
    for (long p = 0; p < P; p++) {
        const T *row = xs + p * C + c0;
        T *orow = os + p * C + c0;
#pragma omp simd
        for (long k = 0; k < cw; k++) orow[k] = STORE(act(LOAD(row[k]) * sc[k] + sf[k], slope));
    }
}

/* one sample's sums of g = dL/dz and g (x - mean) */
static inline void NAME(grad_block)(const T *xs, const T *ds, long P, long C, long c0, long cw, const float *scale,
                              const float *shift, const float *mean, float slope, double *s1, double *s2) {
    float sc[CB], sf[CB], mu[CB];
    double a[CB] = {0}, q[CB] = {0};
    for (long k = 0; k < cw; k++) sc[k] = scale[c0 + k], sf[k] = shift[c0 + k], mu[k] = mean[c0 + k];
    for (long p = 0; p < P; p++) {
        const T *row = xs + p * C + c0, *drow = ds + p * C + c0;
#pragma omp simd
        for (long k = 0; k < cw; k++) {
            float xk = LOAD(row[k]), g = act_grad(xk * sc[k] + sf[k], LOAD(drow[k]), slope);
            a[k] += (double)g;
            q[k] += (double)(g * (xk - mu[k]));
        }
    }
    for (long k = 0; k < cw; k++) s1[c0 + k] = a[k], s2[c0 + k] = q[k];
}

/* dx = ca g + cb (x - mean) + cc */
static inline void NAME(dx_block)(const T *xs, const T *ds, T *dxs, long P, long C, long c0, long cw,
                            const float *scale, const float *shift, const float *mean, const float *ca,
                            const float *cb, const float *cc, float slope) {
    float sc[CB], sf[CB], mu[CB], fa[CB], fb[CB], fc[CB];
    for (long k = 0; k < cw; k++) {
        long c = c0 + k;
        sc[k] = scale[c], sf[k] = shift[c], mu[k] = mean[c], fa[k] = ca[c], fb[k] = cb[c], fc[k] = cc[c];
    }
    for (long p = 0; p < P; p++) {
        const T *row = xs + p * C + c0, *drow = ds + p * C + c0;
        T *dxrow = dxs + p * C + c0;
#pragma omp simd
        for (long k = 0; k < cw; k++) {
            float xk = LOAD(row[k]), g = act_grad(xk * sc[k] + sf[k], LOAD(drow[k]), slope);
            dxrow[k] = STORE(fa[k] * g + fb[k] * (xk - mu[k]) + fc[k]);
        }
    }
}

/* mean and rstd per channel out; running_mean and running_var (NULL: not tracked) updated; out = act(bn(x)), or
 * act(bn(x) * fs + fb) with FiLM (fs, fb (N, C); NULL: none).
 * Returns 0, or -1 where the work memory could not be allocated (nothing written). */
int NAME(bn_act_forward_cl)(const T *x, const float *w, const float *b, const float *fs, const float *fb, T *out,
                      float *mean, float *rstd, float *running_mean, float *running_var, long N, long P, long C,
                      float eps, float momentum, float slope, int threads) {
    double *p1 = malloc(2 * N * C * sizeof(double));
    if (!p1) return -1;
    double *p2 = p1 + N * C;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long n = 0; n < N; n++) {
        const T *xs = x + n * P * C;
        BLOCKS(C, c0, STATS(xs, x, P, C, c0, cw, p1 + n * C, p2 + n * C))
    }
    double M = (double)N * (double)P;
    float scale[C], shift[C];
    for (long c = 0; c < C; c++) {
        double s1 = 0.0, s2 = 0.0;
        for (long n = 0; n < N; n++) s1 += p1[n * C + c], s2 += p2[n * C + c];
        double m = s1 / M, v = s2 / M - m * m;
        v = v > 0.0 ? v : 0.0;
        mean[c] = (float)(m + (double)LOAD(x[c]));
        rstd[c] = (float)(1.0 / sqrt(v + (double)eps));
        if (running_mean && running_var) {
            double mom = momentum, unbiased = M > 1.0 ? v * M / (M - 1.0) : v;
            running_mean[c] = (float)(mom * (m + (double)LOAD(x[c])) + (1.0 - mom) * running_mean[c]);
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
        BLOCKS(C, c0, NAME(out_block)(x + n * P * C, out + n * P * C, P, C, c0, cw, sn, hn, slope))
    }
    return 0;
}

/* dx (N, P, C), dw and db (C,) from dL/dout, x and the forward's mean and rstd; with FiLM (fs, fb (N, C); NULL:
 * none) also dfs and dfb (N, C). 0, or -1 (no memory). */
int NAME(bn_act_backward_cl)(const T *dout, const T *x, const float *w, const float *b, const float *fs,
                       const float *fb, const float *mean, const float *rstd, T *dx, float *dw, float *db,
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
        BLOCKS(C, c0, NAME(grad_block)(x + o, dout + o, P, C, c0, cw, sn, hn, mean, slope, p1 + n * C, p2 + n * C))
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
        BLOCKS(C, c0, NAME(dx_block)(x + o, dout + o, dx + o, P, C, c0, cw, sn, hn, mean, ca, cb, cc, slope))
    }
    return 0;
}

#undef NAME
#undef NAME2
#undef NAME_
#undef T
#undef LOAD
#undef STORE
#undef STATS
#undef SUFFIX
