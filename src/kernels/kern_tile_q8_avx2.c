/* AVX2 tile kernels (struct kern_tile) for Q8_0 and Q4_0 weights against
 * Q8_0 activations. Compiled with the AVX2 flags of the Makefile; called by
 * kern_init() only when the CPU has them.
 *
 * Same layout as kern_tile_q8_avx512.c with 256-bit registers: one int32
 * lane per weight row (groups of 8 rows; tiles of 8 rows for Q8_0, 32 for
 * Q4_0, x up to 8 tokens), the 8 rows' quants of a block column transposed
 * in registers once per tile (lane r = 4 bytes of row r), each token's
 * 4-byte groups broadcast from memory. 512 tokens x 2048 x 2048, one
 * thread (Xeon SPR VM, CPU time): Q8_0 ~82, Q4_0 ~130 GFLOP/s vs ~48 for the
 * vec_dot_x4 path; one token ~1.1x (Q8_0) and 1.4x-2x (Q4_0) vec_dot GB/s.
 * Without VNNI the byte products go through vpmaddubsw (unsigned x signed
 * -> int16 pairs):
 *  - Q4_0: the nibbles (0..15) are the unsigned side as stored; 8 pair sums
 *    of 15 * 128 * 2 fit int16, so a block's 8 groups add in int16 and
 *    widen once; -8 * sum(x) (tabled per token and block) removes the
 *    nibble offset.
 *  - Q8_0: |w| against sign(x, w) (ggml's trick), widened per group since
 *    two pairs of 128 * 127 products may not fit int16. Exact as long as
 *    no activation quant is -128, which the Q8_0 converters never produce.
 *
 * Each output (row r, token t) is computed as
 *     acc = 0; for each block b in order: acc = fma((float)isum_b, d_w * d_x, acc)
 * (isum_b exact, d_w * d_x exact), independent of n_r, n_t and the output's
 * place in the tile, so a token's result is the same alone or in a batch. */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <string.h>

#include "kernels/kern_impl.h"

#define TA_R 8 /* weight rows per tile: the 8 int32 lanes */
#define TA_T 8 /* tokens per tile */
/* Row groups per tile (they share the tokens' tabled scales and sums):
 * Q4_0 tables a sum per token and block, worth sharing over 32 rows; Q8_0
 * tables only the scales and keeps 8-row tiles, whose one-token calls
 * stream best through kern_matmul. */
#define TA_G 4
#define TA_G_OF(kind) ((kind) == TA_Q4_0 ? TA_G : 1)
#define TA_CHUNK 32 /* block columns whose token scales/sums are tabled at once */

enum ta_kind { TA_Q8_0, TA_Q4_0 };

static inline int32_t load_i32(const void *p)
{
	int32_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

/* 8x8 int32 transpose: in[i] = row i -> out[k] = dword k of rows 0..7. */
static inline __attribute__((always_inline)) void transpose_8x8(const __m256i in[8], __m256i out[8])
{
	__m256i t[8], u[8];
#pragma GCC unroll 4
	for (int h = 0; h < 2; h++) {
		const __m256i *a = in + 4 * h;
		t[4 * h + 0] = _mm256_unpacklo_epi32(a[0], a[1]);
		t[4 * h + 1] = _mm256_unpackhi_epi32(a[0], a[1]);
		t[4 * h + 2] = _mm256_unpacklo_epi32(a[2], a[3]);
		t[4 * h + 3] = _mm256_unpackhi_epi32(a[2], a[3]);
		u[4 * h + 0] = _mm256_unpacklo_epi64(t[4 * h + 0], t[4 * h + 2]); /* dw 0 | 4 */
		u[4 * h + 1] = _mm256_unpackhi_epi64(t[4 * h + 0], t[4 * h + 2]); /* dw 1 | 5 */
		u[4 * h + 2] = _mm256_unpacklo_epi64(t[4 * h + 1], t[4 * h + 3]); /* dw 2 | 6 */
		u[4 * h + 3] = _mm256_unpackhi_epi64(t[4 * h + 1], t[4 * h + 3]); /* dw 3 | 7 */
	}
	/* u[k] = (rows 0-3 dw k | rows 0-3 dw k+4), u[4+k] likewise rows 4-7 */
#pragma GCC unroll 4
	for (int k = 0; k < 4; k++) {
		out[k] = _mm256_permute2x128_si256(u[k], u[4 + k], 0x20);
		out[k + 4] = _mm256_permute2x128_si256(u[k], u[4 + k], 0x31);
	}
}

/* Q8_0: 8 rows x 32 quants of block column |b| -> a[k] = |dword k| and
 * sg[k] = dword k (the signs) of rows 0..7. */
static inline __attribute__((always_inline)) void prep_q8_0(const char *const rp[TA_R], int64_t b,
                                                            __m256i a[8], __m256i sg[8])
{
	const size_t off = (size_t)b * sizeof(struct kern_block_q8_0) + 2;
	__m256i in[8];
#pragma GCC unroll 8
	for (int r = 0; r < 8; r++)
		in[r] = _mm256_loadu_si256((const __m256i *)(rp[r] + off));
	transpose_8x8(in, sg);
#pragma GCC unroll 8
	for (int k = 0; k < 8; k++)
		a[k] = _mm256_sign_epi8(sg[k], sg[k]);
}

/* Q4_0: 8 rows x 16 packed bytes -> a[k] low nibbles (elements 4k..4k+3)
 * and a[4+k] high nibbles (elements 16+4k..), unsigned 0..15. */
static inline __attribute__((always_inline)) void prep_q4_0(const char *const rp[TA_R], int64_t b,
                                                            __m256i a[8])
{
	const size_t off = (size_t)b * sizeof(struct kern_block_q4_0) + 2;
	__m256i z[4];
#pragma GCC unroll 4
	for (int i = 0; i < 4; i++)
		z[i] = _mm256_inserti128_si256(
		    _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(rp[i] + off))),
		    _mm_loadu_si128((const __m128i *)(rp[i + 4] + off)), 1);
	const __m256i t0 = _mm256_unpacklo_epi32(z[0], z[1]);
	const __m256i t1 = _mm256_unpackhi_epi32(z[0], z[1]);
	const __m256i t2 = _mm256_unpacklo_epi32(z[2], z[3]);
	const __m256i t3 = _mm256_unpackhi_epi32(z[2], z[3]);
	const __m256i u[4] = {_mm256_unpacklo_epi64(t0, t2), _mm256_unpackhi_epi64(t0, t2),
	                      _mm256_unpacklo_epi64(t1, t3), _mm256_unpackhi_epi64(t1, t3)};
	const __m256i m4 = _mm256_set1_epi8(0x0F);
#pragma GCC unroll 4
	for (int k = 0; k < 4; k++) {
		a[k] = _mm256_and_si256(u[k], m4);
		a[k + 4] = _mm256_and_si256(_mm256_srli_epi16(u[k], 4), m4);
	}
}

/* Sum of the 32 signed quants of an activation block. */
static inline int32_t q8_sum(const int8_t *qs)
{
	const __m256i q =
	    _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)qs), _mm256_set1_epi8((char)0x80));
	const __m256i s = _mm256_sad_epu8(q, _mm256_setzero_si256());
	__m128i h = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
	h = _mm_add_epi64(h, _mm_unpackhi_epi64(h, h));
	return (int32_t)_mm_cvtsi128_si64(h) - 32 * 128;
}

/* The 8 rows' f16 scales at byte |off|, in float, assembled in general
 * registers (8 narrow stores and one wide load would stall on store
 * forwarding for every block). */
static inline __attribute__((always_inline)) __m256 scales_8(const char *const rp[TA_R], size_t off)
{
	uint64_t q[2];
#pragma GCC unroll 2
	for (int i = 0; i < 2; i++) {
		uint16_t h[4];
#pragma GCC unroll 4
		for (int k = 0; k < 4; k++)
			memcpy(&h[k], rp[4 * i + k] + off, sizeof(h[k]));
		q[i] = h[0] | (uint64_t)h[1] << 16 | (uint64_t)h[2] << 32 | (uint64_t)h[3] << 48;
	}
	return _mm256_cvtph_ps(_mm_set_epi64x((long long)q[1], (long long)q[0]));
}

static inline __attribute__((always_inline)) void tile_body(const enum ta_kind kind, const int nt,
                                                            int64_t n, const char *w, size_t w_row,
                                                            int n_r, const char *x, size_t x_row,
                                                            int n_t, float *y, int64_t y_stride)
{
	const size_t wb =
	    kind == TA_Q8_0 ? sizeof(struct kern_block_q8_0) : sizeof(struct kern_block_q4_0);
	const int64_t nb = n / KERN_QK8_0;
	const char *xp[TA_T];
	for (int t = 0; t < nt; t++) /* missing tokens repeat the last and are not stored */
		xp[t] = x + (size_t)(t < n_t ? t : n_t - 1) * x_row;
	const __m256i ones = _mm256_set1_epi16(1);
	const int n_g = (n_r + TA_R - 1) / TA_R;
	/* partial sums of each row group between chunks (exact: stored and
	 * reloaded, not re-rounded) */
	__m256 part[TA_G][TA_T];

	/* one token tables whole rows of up to 8192 columns at once, so each
	 * row group streams its rows from start to end */
	const int cs = nt == 1 ? TA_T * TA_CHUNK : TA_CHUNK;
	for (int64_t b0 = 0; b0 < nb; b0 += cs) {
		const int nc = (int)(nb - b0 < cs ? nb - b0 : cs);
		/* the tokens' scales and sums for this chunk, shared by the row groups */
		float dx[TA_T * TA_CHUNK]; /* [t * cs + j] */
		int32_t corr[TA_T * TA_CHUNK];
		for (int t = 0; t < nt; t++) {
			const struct kern_block_q8_0 *xb =
			    (const struct kern_block_q8_0 *)xp[t] + b0;
			for (int j = 0; j < nc; j++) {
				dx[t * cs + j] = _cvtsh_ss(xb[j].d);
				corr[t * cs + j] = kind == TA_Q4_0 ? -8 * q8_sum(xb[j].qs) : 0;
			}
		}
		for (int g = 0; g < n_g; g++) {
			const int g_r = n_r - g * TA_R < TA_R ? n_r - g * TA_R : TA_R;
			const char *rp[TA_R];
			/* missing rows read the group's first and are not stored */
			for (int r = 0; r < TA_R; r++)
				rp[r] = w + (size_t)(g * TA_R + (r < g_r ? r : 0)) * w_row;
			__m256 acc[TA_T];
#pragma GCC unroll 8
			for (int t = 0; t < nt; t++)
				acc[t] = b0 == 0 ? _mm256_setzero_ps() : part[g][t];
			for (int j = 0; j < nc; j++) {
				const int64_t b = b0 + j;
				if (nt == 1 && (j & 1) == 0) {
					/* one token streams the weights once: ask for the same
					 * bytes of the next 8 rows (the next tile, as kern_matmul
					 * walks them) into L2, a tile ahead; prefetches past the
					 * matrix are harmless */
#pragma GCC unroll 8
					for (int r = 0; r < TA_R; r++)
						_mm_prefetch(rp[r] + TA_G_OF(kind) * TA_R * w_row +
						                 (size_t)b * wb,
						             _MM_HINT_T1);
				}
				const __m256 dw = scales_8(rp, (size_t)b * wb);
				__m256i a[8], sg[8];
				if (kind == TA_Q8_0)
					prep_q8_0(rp, b, a, sg);
				else
					prep_q4_0(rp, b, a);
#pragma GCC unroll 8
				for (int t = 0; t < nt; t++) {
					const char *xq =
					    xp[t] + (size_t)b * sizeof(struct kern_block_q8_0) + 2;
					__m256i s;
					if (kind == TA_Q8_0) {
						s = _mm256_setzero_si256();
#pragma GCC unroll 8
						for (int k = 0; k < 8; k++) {
							const __m256i xk =
							    _mm256_set1_epi32(load_i32(xq + 4 * k));
							const __m256i p = _mm256_maddubs_epi16(
							    a[k], _mm256_sign_epi8(xk, sg[k]));
							s = _mm256_add_epi32(
							    s, _mm256_madd_epi16(p, ones));
						}
					} else {
						__m256i p = _mm256_maddubs_epi16(
						    a[0], _mm256_set1_epi32(load_i32(xq)));
#pragma GCC unroll 8
						for (int k = 1; k < 8; k++)
							p = _mm256_add_epi16(
							    p, _mm256_maddubs_epi16(
							           a[k], _mm256_set1_epi32(load_i32(
							                     xq + 4 * k))));
						s = _mm256_add_epi32(
						    _mm256_madd_epi16(p, ones),
						    _mm256_set1_epi32(corr[t * cs + j]));
					}
					const __m256 d =
					    _mm256_mul_ps(dw, _mm256_set1_ps(dx[t * cs + j]));
					acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), d, acc[t]);
				}
			}
			if (b0 + nc < nb) {
#pragma GCC unroll 8
				for (int t = 0; t < nt; t++)
					part[g][t] = acc[t];
			} else if (g_r == TA_R) {
#pragma GCC unroll 8
				for (int t = 0; t < nt; t++)
					if (t < n_t)
						_mm256_storeu_ps(y + t * y_stride + g * TA_R,
						                 acc[t]);
			} else {
				const __m256i m =
				    _mm256_cmpgt_epi32(_mm256_set1_epi32(g_r),
				                       _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
#pragma GCC unroll 8
				for (int t = 0; t < nt; t++)
					if (t < n_t)
						_mm256_maskstore_ps(y + t * y_stride + g * TA_R, m,
						                    acc[t]);
			}
		}
	}
}

/* Token counts are rounded up to 1, 2, 4 or 8 (one specialization each);
 * the extra token slots repeat the last token and are not stored, which
 * changes no output's bits. */
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
		else                                                                               \
			tile_body(kind, 8, n, w, w_row, n_r, x, x_row, n_t, y, y_stride);          \
	}

TILE_FN(tile_q8_0_q8_0, TA_Q8_0)
TILE_FN(tile_q4_0_q8_0, TA_Q4_0)

int kern_tiles_q8_avx2(struct kern_dispatch *d)
{
	d->tile[ML_DTYPE_Q8_0] = (struct kern_tile){tile_q8_0_q8_0, TA_G_OF(TA_Q8_0) * TA_R, TA_T};
	d->tile[ML_DTYPE_Q4_0] = (struct kern_tile){tile_q4_0_q8_0, TA_G_OF(TA_Q4_0) * TA_R, TA_T};
	return 2;
}

#else /* not x86: kern.c never calls this; keeps the build portable */
#include "kernels/kern_impl.h"

int kern_tiles_q8_avx2(struct kern_dispatch *d)
{
	(void)d;
	return 0;
}
#endif
