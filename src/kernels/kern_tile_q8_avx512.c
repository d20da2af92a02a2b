/* AVX-512 tile kernels (struct kern_tile) for Q8_0 and Q4_0 weights against
 * Q8_0 activations. Compiled with the AVX-512 flags of the Makefile
 * (F/BW/VL/DQ + VNNI); called by kern_init() only when the CPU has them.
 *
 * Tiles are 64 weight rows (4 groups of 16) x up to 32 tokens. One 512-bit
 * register holds one int32 lane per row of a group, so a whole output is
 * one lane and needs no horizontal sum. For each block column b the
 * group's 16 rows' quants are transposed in registers (lane r = 4 bytes of
 * row r) and then meet each token of the tile: 8 vpdpbusd with the token's
 * 4-byte groups broadcast give the 16 exact integer block dots at once. The
 * transpose is paid once per weight block per tile, the broadcasts are
 * plain loads, and the float work (convert, scale, add) is one operation
 * per 16 outputs instead of one per output, which is what made the per-row
 * dot products (8 lanes per block, one scale and one horizontal sum per
 * output) slow for batches. The 4 row groups share one staging of the
 * tokens (below), which would otherwise cost a fifth of the time.
 * Q8_0, 512 tokens x 2048 x 2048, one thread (Xeon SPR VM, CPU time): 275
 * GFLOP/s vs 50 for the vec_dot_x4 path; one token through kern_matmul:
 * 1.1x (2048 columns) / 1.45x (5632) vec_dot GB/s.
 *
 * vpdpbusd multiplies unsigned by signed bytes: the weights (Q8_0 as
 * stored, Q4_0 as nibble - 8) are the signed side, and the tile's
 * activations are copied once per call biased to unsigned (x ^ 0x80 = x +
 * 128); 128 times each row's block sum is subtracted exactly by starting
 * each integer accumulation at -128 * sum(w), computed once per weight block
 * per tile. Every integer product and sum is exact (no saturation).
 *
 * Each output (row r, token t) is computed as
 *     acc = 0; for each block b in order: acc = fma((float)isum_b, d_w * d_x, acc)
 * with isum_b the exact integer block dot and d_w * d_x exact (two halves
 * multiply exactly in float). Lanes and tokens never mix, so the bits do not
 * depend on n_r, n_t or where the output sits in the tile: a token's result
 * is the same alone (decode, n_t = 1) or in any batch. */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <string.h>

#include "kernels/kern_impl.h"

#define TQ_R 16 /* weight rows per group: the 16 int32 lanes */
#define TQ_G 4  /* row groups per tile (they share the staged tokens) */
#define TQ_T 32 /* tokens per tile (accumulators partly spill; still pays) */
/* How many rows ahead a one-token tile prefetches (kern_matmul leaves the
 * prefetching to tile kernels, see struct kern_tile). Two row groups
 * ahead: 1B Q8_0 model, 1 thread, tg32 11.8 t/s against 11.7 (16 rows),
 * 11.3 (64) and 10.7 (128). */
#define TQ_PF_ROWS (2 * TQ_R)
#define TQ_CHUNK 16 /* block columns whose tokens are staged at once (16 KiB) */

enum tq_kind { TQ_Q8_0, TQ_Q4_0 };

static inline int32_t load_i32(const void *p)
{
	int32_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

/* Q8_0: 16 rows x 32 quants of block column |b| -> v[k] (lane r = bytes
 * 4k..4k+3 of row r). */
static inline __attribute__((always_inline)) void prep_q8_0(const char *const rp[TQ_R], int64_t b,
                                                            __m512i v[8])
{
	const size_t off = (size_t)b * sizeof(struct kern_block_q8_0) + 2;
	__m512i z[8];
	/* z[i] = rows i | i+4 for i < 4, rows 8+i | 12+i for 4 <= i < 8, so the
	 * 128-bit lane shuffle at the end leaves the rows in natural order */
#pragma GCC unroll 32
	for (int i = 0; i < 4; i++) {
		z[i] = _mm512_inserti64x4(
		    _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(rp[i] + off))),
		    _mm256_loadu_si256((const __m256i *)(rp[i + 4] + off)), 1);
		z[4 + i] = _mm512_inserti64x4(
		    _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(rp[8 + i] + off))),
		    _mm256_loadu_si256((const __m256i *)(rp[12 + i] + off)), 1);
	}
	__m512i t[8], u[8];
#pragma GCC unroll 32
	for (int h = 0; h < 2; h++) {
		__m512i *zz = z + 4 * h, *tt = t + 4 * h, *uu = u + 4 * h;
		tt[0] = _mm512_unpacklo_epi32(zz[0], zz[1]);
		tt[1] = _mm512_unpackhi_epi32(zz[0], zz[1]);
		tt[2] = _mm512_unpacklo_epi32(zz[2], zz[3]);
		tt[3] = _mm512_unpackhi_epi32(zz[2], zz[3]);
		uu[0] = _mm512_unpacklo_epi64(tt[0], tt[2]); /* dword 0 | 4 */
		uu[1] = _mm512_unpackhi_epi64(tt[0], tt[2]); /* dword 1 | 5 */
		uu[2] = _mm512_unpacklo_epi64(tt[1], tt[3]); /* dword 2 | 6 */
		uu[3] = _mm512_unpackhi_epi64(tt[1], tt[3]); /* dword 3 | 7 */
	}
	/* u[k] 128-bit lanes: (rows 0-3, dw k), (rows 0-3, dw k+4), (rows 4-7, dw k), (rows 4-7, dw
	 * k+4); u[4+k] likewise for rows 8-15 */
#pragma GCC unroll 32
	for (int k = 0; k < 4; k++) {
		v[k] = _mm512_shuffle_i32x4(u[k], u[4 + k], 0x88);
		v[k + 4] = _mm512_shuffle_i32x4(u[k], u[4 + k], 0xDD);
	}
}

/* Q4_0: 16 rows x 16 packed bytes of block column |b| -> v[k] (low nibbles,
 * elements 4k..4k+3) and v[4+k] (high nibbles, elements 16+4k..16+4k+3),
 * as signed values (nibble - 8). */
static inline __attribute__((always_inline)) void prep_q4_0(const char *const rp[TQ_R], int64_t b,
                                                            __m512i v[8])
{
	const size_t off = (size_t)b * sizeof(struct kern_block_q4_0) + 2;
	__m512i z[4];
#pragma GCC unroll 32
	for (int i = 0; i < 4; i++) {
		__m512i a = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(rp[i] + off)));
		a = _mm512_inserti32x4(a, _mm_loadu_si128((const __m128i *)(rp[i + 4] + off)), 1);
		a = _mm512_inserti32x4(a, _mm_loadu_si128((const __m128i *)(rp[i + 8] + off)), 2);
		z[i] =
		    _mm512_inserti32x4(a, _mm_loadu_si128((const __m128i *)(rp[i + 12] + off)), 3);
	}
	const __m512i t0 = _mm512_unpacklo_epi32(z[0], z[1]);
	const __m512i t1 = _mm512_unpackhi_epi32(z[0], z[1]);
	const __m512i t2 = _mm512_unpacklo_epi32(z[2], z[3]);
	const __m512i t3 = _mm512_unpackhi_epi32(z[2], z[3]);
	const __m512i u[4] = {_mm512_unpacklo_epi64(t0, t2), _mm512_unpackhi_epi64(t0, t2),
	                      _mm512_unpacklo_epi64(t1, t3), _mm512_unpackhi_epi64(t1, t3)};
	const __m512i m4 = _mm512_set1_epi8(0x0F), eight = _mm512_set1_epi8(8);
#pragma GCC unroll 32
	for (int k = 0; k < 4; k++) {
		v[k] = _mm512_sub_epi8(_mm512_and_si512(u[k], m4), eight);
		v[k + 4] = _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(u[k], 4), m4), eight);
	}
}

/* The 16 rows' f16 scales at byte |off|, in float. Assembled in general
 * registers: 16 narrow stores and one wide load would stall on store
 * forwarding for every block. */
static inline __attribute__((always_inline)) __m512 scales_16(const char *const rp[TQ_R],
                                                              size_t off)
{
	uint64_t q[4];
#pragma GCC unroll 4
	for (int i = 0; i < 4; i++) {
		uint16_t h[4];
#pragma GCC unroll 4
		for (int k = 0; k < 4; k++)
			memcpy(&h[k], rp[4 * i + k] + off, sizeof(h[k]));
		q[i] = h[0] | (uint64_t)h[1] << 16 | (uint64_t)h[2] << 32 | (uint64_t)h[3] << 48;
	}
	return _mm512_cvtph_ps(
	    _mm256_set_epi64x((long long)q[3], (long long)q[2], (long long)q[1], (long long)q[0]));
}

static inline __attribute__((always_inline)) void tile_body(const enum tq_kind kind, const int nt,
                                                            int64_t n, const char *w, size_t w_row,
                                                            int n_r, const char *x, size_t x_row,
                                                            int n_t, float *y, int64_t y_stride)
{
	const size_t wb =
	    kind == TQ_Q8_0 ? sizeof(struct kern_block_q8_0) : sizeof(struct kern_block_q4_0);
	const int64_t nb = n / KERN_QK8_0;
	const int n_g = (n_r + TQ_R - 1) / TQ_R;
	/* partial sums of each row group between chunks (exact: stored and
	 * reloaded, not re-rounded) */
	__m512 part[TQ_G][TQ_T];
	const __m512i bias = _mm512_set1_epi8((char)0x80);
	/* one token stages whole rows of up to 16384 columns at once, so each
	 * row group streams its rows from start to end */
	const int cs = nt == 1 ? TQ_T * TQ_CHUNK : TQ_CHUNK;
	for (int64_t b0 = 0; b0 < nb; b0 += cs) {
		const int nc = (int)(nb - b0 < cs ? nb - b0 : cs);
		/* the tile's tokens for this chunk, shared by its row groups:
		 * quants biased to unsigned, scales in float */
		__m256i xu[TQ_T * TQ_CHUNK]; /* [t * cs + j] */
		float dx[TQ_T * TQ_CHUNK];
		for (int t = 0; t < nt; t++) {
			/* tokens past n_t repeat the last one and are not stored */
			const char *xt = x + (size_t)(t < n_t ? t : n_t - 1) * x_row;
			const struct kern_block_q8_0 *xb = (const struct kern_block_q8_0 *)xt + b0;
			for (int j = 0; j < nc; j++) {
				dx[t * cs + j] = _cvtsh_ss(xb[j].d);
				xu[t * cs + j] =
				    _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)xb[j].qs),
				                     _mm512_castsi512_si256(bias));
			}
		}
		for (int g = 0; g < n_g; g++) {
			const int g_r = n_r - g * TQ_R < TQ_R ? n_r - g * TQ_R : TQ_R;
			const char *rp[TQ_R];
			/* missing rows read the group's first and are not stored */
			for (int r = 0; r < TQ_R; r++)
				rp[r] = w + (size_t)(g * TQ_R + (r < g_r ? r : 0)) * w_row;
			__m512 acc[TQ_T];
#pragma GCC unroll 32
			for (int t = 0; t < nt; t++)
				acc[t] = b0 == 0 ? _mm512_setzero_ps() : part[g][t];
			for (int j = 0; j < nc; j++) {
				const int64_t b = b0 + j;
				if (nt == 1 && (j & 1) == 0) {
					/* one token streams the weights once: ask for the same
					 * bytes of the rows TQ_PF_ROWS ahead into L2. Rows of a
					 * few KiB are too short for the hardware prefetcher to
					 * get ahead on 16 streams; prefetches past the matrix are
					 * harmless. */
#pragma GCC unroll 32
					for (int r = 0; r < TQ_R; r++)
						_mm_prefetch(rp[r] + TQ_PF_ROWS * w_row +
						                 (size_t)b * wb,
						             _MM_HINT_T1);
				}
				const __m512 dw = scales_16(rp, (size_t)b * wb);
				__m512i v[8];
				if (kind == TQ_Q8_0)
					prep_q8_0(rp, b, v);
				else
					prep_q4_0(rp, b, v);
				/* -128 * (sum of each row's block): removes the activations' bias
				 */
				__m512i cw = _mm512_setzero_si512();
#pragma GCC unroll 8
				for (int k = 0; k < 8; k++)
					cw = _mm512_dpbusd_epi32(cw, bias, v[k]);
				cw = _mm512_sub_epi32(_mm512_setzero_si512(), cw);
				/* two tokens' dependent vpdpbusd chains interleaved, so the
				 * out-of-order window sees enough independent work */
				const int g_n = nt < 2 ? nt : 2;
#pragma GCC unroll 4
				for (int t0 = 0; t0 < nt; t0 += g_n) {
					__m512i s[2];
#pragma GCC unroll 4
					for (int i = 0; i < g_n; i++)
						s[i] = cw;
#pragma GCC unroll 8
					for (int k = 0; k < 8; k++)
#pragma GCC unroll 4
						for (int i = 0; i < g_n; i++)
							s[i] = _mm512_dpbusd_epi32(
							    s[i],
							    _mm512_set1_epi32(load_i32(
							        (const char
							             *)&xu[(t0 + i) * cs + j] +
							        4 * k)),
							    v[k]);
#pragma GCC unroll 4
					for (int i = 0; i < g_n; i++) {
						const __m512 d = _mm512_mul_ps(
						    dw, _mm512_set1_ps(dx[(t0 + i) * cs + j]));
						acc[t0 + i] = _mm512_fmadd_ps(
						    _mm512_cvtepi32_ps(s[i]), d, acc[t0 + i]);
					}
				}
			}
			if (b0 + nc < nb) {
#pragma GCC unroll 32
				for (int t = 0; t < nt; t++)
					part[g][t] = acc[t];
			} else {
				const __mmask16 m = (__mmask16)((1u << g_r) - 1);
#pragma GCC unroll 32
				for (int t = 0; t < nt; t++)
					if (t < n_t)
						_mm512_mask_storeu_ps(y + t * y_stride + g * TQ_R,
						                      m, acc[t]);
			}
		}
	}
}

/* Token counts are rounded up to 1, 2, 4, 8, 16 or 32 (one specialization
 * each); the extra token slots repeat the last token and are not stored,
 * which changes no output's bits. */
#define TILE_FN(name, kind)                                                                        \
	static void name(int64_t n, const void *w, size_t w_row, int n_r, const void *x,           \
	                 size_t x_row, int n_t, float *y, int64_t y_stride)                        \
	{                                                                                          \
		if (n_t <= 1)                                                                      \
			tile_body(kind, 1, n, w, w_row, n_r, x, x_row, n_t, y, y_stride);          \
		else if (n_t <= 2)                                                                 \
			tile_body(kind, 2, n, w, w_row, n_r, x, x_row, n_t, y, y_stride);          \
		else if (n_t <= 4)                                                                 \
			tile_body(kind, 4, n, w, w_row, n_r, x, x_row, n_t, y, y_stride);          \
		else if (n_t <= 8)                                                                 \
			tile_body(kind, 8, n, w, w_row, n_r, x, x_row, n_t, y, y_stride);          \
		else if (n_t <= 16)                                                                \
			tile_body(kind, 16, n, w, w_row, n_r, x, x_row, n_t, y, y_stride);         \
		else                                                                               \
			tile_body(kind, 32, n, w, w_row, n_r, x, x_row, n_t, y, y_stride);         \
	}

TILE_FN(tile_q8_0_q8_0, TQ_Q8_0)
TILE_FN(tile_q4_0_q8_0, TQ_Q4_0)

int kern_tiles_q8_avx512(struct kern_dispatch *d)
{
	d->tile[ML_DTYPE_Q8_0] = (struct kern_tile){tile_q8_0_q8_0, TQ_G * TQ_R, TQ_T};
	d->tile[ML_DTYPE_Q4_0] = (struct kern_tile){tile_q4_0_q8_0, TQ_G * TQ_R, TQ_T};
	return 2;
}

#else /* not x86: kern.c never calls this; keeps the build portable */
#include "kernels/kern_impl.h"

int kern_tiles_q8_avx512(struct kern_dispatch *d)
{
	(void)d;
	return 0;
}
#endif
