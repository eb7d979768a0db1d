/* DiffAugment's translation and cutout (hwlib.gan.diff_augment) in one pass over a float32 batch (B, C, H, W),
 * contiguous or channels-last ("cl": (B, H, W, C) in memory), one task per image row:
 *   forward (dir = +1):  out[b, :, y, x] = x[b, :, y + ty_b, x + tx_b] * m_b(y, x), 0 where (y + ty_b, x + tx_b)
 *                        is outside the image,
 *   backward (dir = -1): dx[b, :, y, x] = g[b, :, y - ty_b, x - tx_b] * m_b(y - ty_b, x - tx_b), 0 outside,
 * with m_b(y, x) = 0 inside the cutout square [oy_b, oy_b + ch) x [ox_b, ox_b + cw), else 1 (oy NULL: no cutout,
 * nothing multiplied). These are the values of PyTorch's operators in diff_augment (a window copy, zeros, a product
 * with a 0/1 mask), bit for bit: each output element is one input element times one mask value. */
#include <string.h>

/* IEEE products even under the library's -ffast-math: a negative value cut out is -0, as PyTorch's product gives */
#pragma GCC optimize("no-fast-math")

/* one image row of W pixels of E floats each (E = C channels-last, 1 contiguous): destination pixel x takes source
 * pixel x + dx0 of srow (NULL: the source row is outside the image), zero where that is outside the row, times 0
 * for x in the cut columns [c0, c1) (cut: this row crosses the square), a copy elsewhere */
static void row(const float *srow, float *drow, long W, long E, long dx0, int cut, long c0, long c1) {
    long lo = dx0 < 0 ? -dx0 : 0, hi = dx0 > 0 ? W - dx0 : W;
    if (!srow || lo >= hi) { memset(drow, 0, W * E * sizeof(float)); return; }
    memset(drow, 0, lo * E * sizeof(float));
    memset(drow + hi * E, 0, (W - hi) * E * sizeof(float));
    long a = hi, z = hi;  /* the cut part of [lo, hi) */
    if (cut) {
        a = c0 < lo ? lo : (c0 > hi ? hi : c0);
        z = c1 < a ? a : (c1 > hi ? hi : c1);
    }
    const float *s = srow + dx0 * E;
    memcpy(drow + lo * E, s + lo * E, (a - lo) * E * sizeof(float));
    for (long i = a * E; i < z * E; i++) drow[i] = s[i] * 0.0f;
    memcpy(drow + z * E, s + z * E, (hi - z) * E * sizeof(float));
}

void shift_cutout(const float *src, float *dst, long B, long C, long H, long W, int cl, int dir, const long *ty,
                  const long *tx, const long *oy, const long *ox, long ch, long cw, int threads) {
    long planes = cl ? 1 : C, E = cl ? C : 1;  /* rows: (b, y) channels-last, (b, c, y) contiguous */
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (long r = 0; r < B * planes * H; r++) {
        long b = r / (planes * H), y = r % H;
        long sy = y + dir * ty[b], dx0 = dir * tx[b];
        /* the square is on the forward output's pixels: (y, x) forward, the source (sy, x + dx0) backward */
        long my = dir > 0 ? y : sy, shift = dir > 0 ? 0 : dx0;
        int cut = oy && my >= oy[b] && my < oy[b] + ch;
        const float *srow = (sy >= 0 && sy < H) ? src + ((r - y) + sy) * W * E : 0;
        row(srow, dst + r * W * E, W, E, dx0, cut, cut ? ox[b] - shift : 0, cut ? ox[b] + cw - shift : 0);
    }
}
