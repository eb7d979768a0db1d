/* Dropout's noise on a CPU as PyTorch draws it, faster: noise[i] = scale where u_i < keep, else 0, with u_i the
 * double in [0, 1) that PyTorch's CPU generator gives bernoulli_(keep) for element i: two 32-bit MT19937 words
 * (first the high half), the low 53 bits of the 64 times 2^-53. The generator's state comes in and goes out in
 * torch.get_rng_state()'s layout (CPUGeneratorImplStateLegacy: the seed (uint64), left (int32), seeded (int32),
 * next (uint64), then the 624 state words, one per uint64), advanced by 2 n words as bernoulli_ advances it.
 * PyTorch's kernel draws element by element in a generic loop; this one tempers a block of the state at a time and
 * compares integers (u < keep exactly when the 53-bit integer is below keep * 2^53), one thread (one stream). */
#include <stdint.h>
#include <string.h>

#define MT_N 624
#define MT_M 397

static inline uint32_t mix(uint32_t u, uint32_t v) {
    uint32_t y = (u & 0x80000000u) | (v & 0x7fffffffu);
    return (y >> 1) ^ ((v & 1u) ? 0x9908b0dfu : 0u);
}

/* the next 624 words of the state (MT19937's twist, as at::mt19937::next_state) */
static void twist(uint32_t *s) {
    int i = 0;
    for (; i < MT_N - MT_M; i++) s[i] = s[i + MT_M] ^ mix(s[i], s[i + 1]);
    for (; i < MT_N - 1; i++) s[i] = s[i + MT_M - MT_N] ^ mix(s[i], s[i + 1]);
    s[MT_N - 1] = s[MT_M - 1] ^ mix(s[MT_N - 1], s[0]);
}

static inline uint32_t temper(uint32_t y) {
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    return y ^ (y >> 18);
}

void bernoulli_noise(unsigned char *rng_state, float *noise, long n, double keep, float scale) {
    uint32_t s[MT_N], words[MT_N];
    int32_t left;
    uint64_t next, wide[MT_N];
    memcpy(&left, rng_state + 8, sizeof left);
    memcpy(&next, rng_state + 16, sizeof next);
    memcpy(wide, rng_state + 24, sizeof wide);
    for (int i = 0; i < MT_N; i++) s[i] = (uint32_t)wide[i];
    /* at::mt19937 returns s[next++] tempered while --left stays above 0, else twists first (left = 624, next = 0) */
    const double limit = keep * 9007199254740992.0; /* keep * 2^53, exact */
    long avail = left - 1, pos = (long)next, i = 0;
    uint32_t high = 0;
    int have_high = 0;
    while (i < n) {
        if (avail == 0) {
            twist(s);
            avail = MT_N, pos = 0;
        }
        long take = avail;
        for (long k = 0; k < take; k++) words[k] = temper(s[pos + k]);
        long k = 0;
        if (have_high && take > 0) { /* the pair began in the block before */
            uint64_t v = ((uint64_t)high << 32) | words[0];
            noise[i++] = (double)(v & 0x1fffffffffffffull) < limit ? scale : 0.0f;
            have_high = 0, k = 1;
        }
        long pairs = (take - k) / 2;
        if (pairs > n - i) pairs = n - i;
        for (long j = 0; j < pairs; j++) {
            uint64_t v = ((uint64_t)words[k + 2 * j] << 32) | words[k + 2 * j + 1];
            noise[i + j] = (double)(v & 0x1fffffffffffffull) < limit ? scale : 0.0f;
        }
        i += pairs, k += 2 * pairs;
        if (i < n && k < take) { /* one word left in this block: the next pair's high half */
            high = words[k++], have_high = 1;
        }
        avail -= k, pos += k;
    }
    /* back to at::mt19937's bookkeeping: avail words remain before the next twist */
    left = (int32_t)(avail + 1), next = (uint64_t)pos;
    for (int j = 0; j < MT_N; j++) wide[j] = s[j];
    memcpy(rng_state + 8, &left, sizeof left);
    memcpy(rng_state + 16, &next, sizeof next);
    memcpy(rng_state + 24, wide, sizeof wide);
}
