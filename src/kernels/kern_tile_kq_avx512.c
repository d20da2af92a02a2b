/* AVX-512 tile kernels (struct kern_tile) for K-quant weights (Q4_K, Q6_K)
 * against Q8_K activations. Compiled with the AVX-512 flags of the Makefile
 * (F/BW/VL/DQ + VNNI); called by kern_init() only when the CPU has them.
 *
 * Integer part. A weight row's super-block (256 quants) is unpacked once per
 * tile into four registers of 64 unsigned bytes in element order, plus its
 * sub-block scales widened to int16 and laid out to match. Against one
 * token, each 64-byte chunk costs vpmaddubsw (u8 x s8 -> pairs in int16,
 * no saturation: 2 * 63 * 127 < 32767) and vpdpwssd (times the scales, into
 * int32). The result s(r, t) is exact; its four 128-bit lanes each hold the
 * partial dot of a fixed quarter of every chunk.
 *
 * Float part. The four int32 of 128-bit lane l of s(r, t) are summed
 * (exact, integer) into lane 4l + k of one register, k the output's place
 * among four (reduce4): four tokens of one row when the tile has several
 * tokens, four rows of one token for decode (n_t = 1). Each lane then gets
 *     acc = fma(d_w * d_x, (float)sum, acc)
 * per super-block, Q4_K also acc = fnma(dmin_w * d_x, (float)mins, acc),
 * and the output is the fixed tree (l0 + l2) + (l1 + l3) of its four lanes.
 * Every output sees exactly those operations whatever n_r, n_t or its place
 * in the tile, so a token's logits are the same alone or in a batch. The
 * float work is one operation per four outputs and the horizontal sum is
 * paid once per output, not per super-block.
 *
 * Q6_K quants are u - 32 with u in 0..63; the -32 is applied exactly in the
 * integer sum through the activation's 16-element block sums. Q4_K's mins
 * likewise come from the block sums. */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <string.h>

#include "kernels/kern_impl.h"

#define KQ_R 4 /* weight rows per tile */
#define KQ_T 8 /* tokens per tile: two groups of four */
#define KQ_G (KQ_T / 4)

#define KQ_INLINE static inline __attribute__((always_inline))
/* -O2 leaves small constant loops rolled, which puts register arrays on the stack */
#define KQ_UNROLL _Pragma("GCC unroll 8")

/* lane 4l + k of the result = sum of the four int32 of 128-bit lane l of s_k */
KQ_INLINE __m512i reduce4(__m512i s0, __m512i s1, __m512i s2, __m512i s3)
{
	const __m512i a = _mm512_add_epi32(_mm512_unpacklo_epi32(s0, s1), _mm512_unpackhi_epi32(s0, s1));
	const __m512i b = _mm512_add_epi32(_mm512_unpacklo_epi32(s2, s3), _mm512_unpackhi_epi32(s2, s3));
	return _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));
}

/* lane k of the result = (acc[k] + acc[8 + k]) + (acc[4 + k] + acc[12 + k]) */
KQ_INLINE __m128 hsum4(__m512 acc)
{
	const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(acc), _mm512_extractf32x8_ps(acc, 1));
	return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* Stores the |n| first lanes of |v| at |y|, |stride| floats apart. */
KQ_INLINE void store_n(float *y, int64_t stride, __m128 v, int n)
{
	float f[4];
	_mm_storeu_ps(f, v);
	for (int k = 0; k < n; k++)
		y[k * stride] = f[k];
}

static inline __m512i idx16(const int16_t *v)
{
	return _mm512_loadu_si512(v);
}

/* ---------------- Q4_K ---------------- */

/* Scale/min words of a Q4_K super-block (see k4_words): scale of chunk c's
 * first 32 quants in words 0..15, second 32 in 16..31. */
static const int16_t Q4K_SC_IDX[4][32] = {
	{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
	{2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3},
	{8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9},
	{10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10,
	 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11},
};
/* Mins against the tokens' block sums, batch layout (dword 4l + t holds
 * min l twice / min 4 + l twice) ... */
static const int16_t Q4K_M0_IDX[32] = {4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5,
				       6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7};
static const int16_t Q4K_M1_IDX[32] = {12, 12, 12, 12, 12, 12, 12, 12, 13, 13, 13, 13, 13, 13, 13, 13,
				       14, 14, 14, 14, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15, 15};
/* ... and decode layout (128-bit lane l: min l twice, min 4 + l twice, 0). */
static const int16_t Q4K_MZ_IDX[32] = {4, 4, 12, 12, 16, 16, 16, 16, 5, 5, 13, 13, 16, 16, 16, 16,
				       6, 6, 14, 14, 16, 16, 16, 16, 7, 7, 15, 15, 16, 16, 16, 16};
/* Token block sums as dwords (pairs of 16-element sums): batch layout dword
 * 4l + t = pair l (B0) / 4 + l (B1) of token t, from [tok0 tok1] [tok2 tok3]. */
static const int32_t Q4K_B0_IDX[16] = {0, 8, 16, 24, 1, 9, 17, 25, 2, 10, 18, 26, 3, 11, 19, 27};
static const int32_t Q4K_B1_IDX[16] = {4, 12, 20, 28, 5, 13, 21, 29, 6, 14, 22, 30, 7, 15, 23, 31};
/* decode layout: 128-bit lane l = pair l, pair 4 + l, (unused) */
static const int32_t Q4K_BZ_IDX[16] = {0, 4, 0, 0, 1, 5, 1, 1, 2, 6, 2, 2, 3, 7, 3, 3};

/* The 12 packed bytes of 6-bit scales and mins -> 16 words: sc0-3, mn0-3,
 * sc4-7, mn4-7, then 16 zero words. */
KQ_INLINE __m512i k4_words(const uint8_t *s)
{
	uint64_t a;
	uint32_t b;
	memcpy(&a, s, 8);
	memcpy(&b, s + 8, 4);
	const uint64_t m6 = 0x3f3f3f3f3f3f3f3full, m4 = 0x0f0f0f0f0f0f0f0full, m2 = 0x0303030303030303ull;
	const uint64_t lo = a & m6;
	const uint64_t bb = (uint64_t)b | ((uint64_t)(b >> 4) << 32);
	const uint64_t hi = (bb & m4) | (((a >> 6) & m2) << 4);
	return _mm512_zextsi256_si512(_mm256_cvtepu8_epi16(_mm_set_epi64x((long long)hi, (long long)lo)));
}

struct q4k_row {
	__m512i q[4];  /* quants 64c..64c+63 as bytes 0..15 */
	__m512i sc[4]; /* their scales, one word per pair of quants */
	__m512i sw;    /* k4_words */
};

KQ_INLINE void q4k_unpack(const struct kern_block_q4_K *b, struct q4k_row *w)
{
	const __m512i m4 = _mm512_set1_epi8(0x0F);
	KQ_UNROLL
	for (int h = 0; h < 2; h++) {
		const __m512i v = _mm512_loadu_si512(b->qs + 64 * h);
		const __m512i s = _mm512_srli_epi16(v, 4);
		w->q[2 * h] = _mm512_and_si512(_mm512_shuffle_i64x2(v, s, 0x44), m4);
		w->q[2 * h + 1] = _mm512_and_si512(_mm512_shuffle_i64x2(v, s, 0xEE), m4);
	}
	w->sw = k4_words(b->scales);
	KQ_UNROLL
	for (int c = 0; c < 4; c++)
		w->sc[c] = _mm512_permutexvar_epi16(idx16(Q4K_SC_IDX[c]), w->sw);
}

/* Exact integer dot of an unpacked super-block with 256 activation quants. */
KQ_INLINE __m512i q4k_dot(const struct q4k_row *w, const int8_t *a)
{
	__m512i s = _mm512_madd_epi16(_mm512_maddubs_epi16(w->q[0], _mm512_loadu_si512(a)), w->sc[0]);
	KQ_UNROLL
	for (int c = 1; c < 4; c++)
		s = _mm512_dpwssd_epi32(s, _mm512_maddubs_epi16(w->q[c], _mm512_loadu_si512(a + 64 * c)),
					w->sc[c]);
	return s;
}

/* Rows [0, n_r) x one group of |nt| (1..4) tokens |yb|, accumulating into
 * acc[r] (lane 4l + t). */
KQ_INLINE void q4k_group(const struct kern_block_q8_K *const yb[4], int nt, const struct q4k_row *w,
			 __m512i b0, __m512i b1, __m512 ydv, float xd, float xdmin, __m512 *acc)
{
	__m512i s[4];
	KQ_UNROLL
	for (int t = 0; t < 4; t++)
		s[t] = t < nt ? q4k_dot(w, yb[t]->qs) : _mm512_setzero_si512();
	const __m512i u = reduce4(s[0], s[1], s[2], s[3]);
	const __m512i m0 = _mm512_permutexvar_epi16(idx16(Q4K_M0_IDX), w->sw);
	const __m512i m1 = _mm512_permutexvar_epi16(idx16(Q4K_M1_IDX), w->sw);
	const __m512i m = _mm512_add_epi32(_mm512_madd_epi16(m0, b0), _mm512_madd_epi16(m1, b1));
	const __m512 dv = _mm512_mul_ps(_mm512_set1_ps(xd), ydv);
	const __m512 dmv = _mm512_mul_ps(_mm512_set1_ps(xdmin), ydv);
	*acc = _mm512_fmadd_ps(dv, _mm512_cvtepi32_ps(u), *acc);
	*acc = _mm512_fnmadd_ps(dmv, _mm512_cvtepi32_ps(m), *acc);
}

/* Token-group constants for super-block i: the tokens' scales (lane 4l + t
 * = d of token t) and block-sum dwords in batch layout. */
KQ_INLINE void tok_group(const struct kern_block_q8_K *const yb[4], __m512 *ydv, __m512i *b0, __m512i *b1)
{
	*ydv = _mm512_broadcast_f32x4(_mm_set_ps(yb[3]->d, yb[2]->d, yb[1]->d, yb[0]->d));
	const __m512i z01 = _mm512_inserti64x4(
		_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)yb[0]->bsums)),
		_mm256_loadu_si256((const __m256i *)yb[1]->bsums), 1);
	const __m512i z23 = _mm512_inserti64x4(
		_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)yb[2]->bsums)),
		_mm256_loadu_si256((const __m256i *)yb[3]->bsums), 1);
	*b0 = _mm512_permutex2var_epi32(z01, _mm512_loadu_si512(Q4K_B0_IDX), z23);
	*b1 = _mm512_permutex2var_epi32(z01, _mm512_loadu_si512(Q4K_B1_IDX), z23);
}

/* Decode: up to 4 rows (missing ones repeat the last) x 1 token. */
static void q4k_rows4(int64_t nb, const char *w, size_t w_row, int n_r, const void *x, float *y)
{
	const struct kern_block_q4_K *rb[4];
	KQ_UNROLL
	for (int r = 0; r < 4; r++)
		rb[r] = (const struct kern_block_q4_K *)(w + (size_t)(r < n_r ? r : n_r - 1) * w_row);
	const struct kern_block_q8_K *xb = x;
	__m512 acc = _mm512_setzero_ps();
	for (int64_t i = 0; i < nb; i++) {
		const __m512i bz = _mm512_permutexvar_epi32(
			_mm512_loadu_si512(Q4K_BZ_IDX),
			_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)xb[i].bsums)));
		__m512i s[4], m[4];
		uint32_t dd[4];
		KQ_UNROLL
		for (int r = 0; r < 4; r++) {
			struct q4k_row q;
			q4k_unpack(&rb[r][i], &q);
			s[r] = q4k_dot(&q, xb[i].qs);
			m[r] = _mm512_madd_epi16(_mm512_permutexvar_epi16(idx16(Q4K_MZ_IDX), q.sw), bz);
			memcpy(&dd[r], &rb[r][i].d, 4);
		}
		const __m512i u = reduce4(s[0], s[1], s[2], s[3]);
		const __m512i mm = reduce4(m[0], m[1], m[2], m[3]);
		/* d0 dmin0 d1 dmin1 ... as floats */
		const __m256 dm = _mm256_cvtph_ps(_mm_set_epi32((int)dd[3], (int)dd[2], (int)dd[1], (int)dd[0]));
		const __m256 yd = _mm256_set1_ps(xb[i].d);
		const __m256 p = _mm256_mul_ps(dm, yd);
		/* [d0 d1 d2 d3] and [dmin0 ... dmin3] */
		const __m256 pp = _mm256_permutevar8x32_ps(p, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
		const __m512 dv = _mm512_broadcast_f32x4(_mm256_castps256_ps128(pp));
		const __m512 dmv = _mm512_broadcast_f32x4(_mm256_extractf128_ps(pp, 1));
		acc = _mm512_fmadd_ps(dv, _mm512_cvtepi32_ps(u), acc);
		acc = _mm512_fnmadd_ps(dmv, _mm512_cvtepi32_ps(mm), acc);
	}
	const __m128 r4 = hsum4(acc);
	if (n_r == 4)
		_mm_storeu_ps(y, r4);
	else
		store_n(y, 1, r4, n_r);
}

/* Rows [0, n_r) x tokens [0, n_t), n_t >= 2; inlined with constant n_r,
 * n_t for full tiles so that the accumulators stay in registers. */
KQ_INLINE void q4k_tile(int64_t nb, const char *w, size_t w_row, const int n_r, const char *x,
			size_t x_row, const int n_t, float *y, int64_t y_stride)
{
	const struct kern_block_q8_K *tb[KQ_T];
	KQ_UNROLL
	for (int t = 0; t < KQ_T; t++)
		tb[t] = (const struct kern_block_q8_K *)(x + (size_t)(t < n_t ? t : n_t - 1) * x_row);
	const int ng = (n_t + 3) / 4;
	__m512 acc[KQ_R][KQ_G];
	KQ_UNROLL
	for (int r = 0; r < KQ_R; r++)
		KQ_UNROLL
		for (int g = 0; g < KQ_G; g++)
			acc[r][g] = _mm512_setzero_ps();
	for (int64_t i = 0; i < nb; i++) {
		const struct kern_block_q8_K *yb[KQ_G][4];
		__m512 ydv[KQ_G];
		__m512i b0[KQ_G], b1[KQ_G];
		/* all groups: those past n_t repeat its last token */
		KQ_UNROLL
		for (int g = 0; g < KQ_G; g++) {
			KQ_UNROLL
			for (int k = 0; k < 4; k++)
				yb[g][k] = &tb[4 * g + k][i];
			tok_group(yb[g], &ydv[g], &b0[g], &b1[g]);
		}
		KQ_UNROLL
		for (int r = 0; r < n_r; r++) {
			const struct kern_block_q4_K *b = (const struct kern_block_q4_K *)(w + (size_t)r * w_row) + i;
			struct q4k_row q;
			q4k_unpack(b, &q);
			const float xd = _cvtsh_ss(b->d), xdmin = _cvtsh_ss(b->dmin);
			KQ_UNROLL
			for (int g = 0; g < ng; g++) {
				const int nt = n_t - 4 * g;
				if (nt >= 4)
					q4k_group(yb[g], 4, &q, b0[g], b1[g], ydv[g], xd, xdmin, &acc[r][g]);
				else if (nt == 3)
					q4k_group(yb[g], 3, &q, b0[g], b1[g], ydv[g], xd, xdmin, &acc[r][g]);
				else if (nt == 2)
					q4k_group(yb[g], 2, &q, b0[g], b1[g], ydv[g], xd, xdmin, &acc[r][g]);
				else
					q4k_group(yb[g], 1, &q, b0[g], b1[g], ydv[g], xd, xdmin, &acc[r][g]);
			}
		}
	}
	KQ_UNROLL
	for (int r = 0; r < n_r; r++)
		KQ_UNROLL
		for (int g = 0; g < ng; g++) {
			const int nt = n_t - 4 * g;
			store_n(y + (4 * g) * y_stride + r, y_stride, hsum4(acc[r][g]), nt < 4 ? nt : 4);
		}
}

static void tile_q4_K(int64_t n, const void *w, size_t w_row, int n_r, const void *x, size_t x_row,
		      int n_t, float *y, int64_t y_stride)
{
	const int64_t nb = n / KERN_QK_K;
	if (n_t == 1)
		q4k_rows4(nb, w, w_row, n_r, x, y);
	else if (n_r == KQ_R && n_t == KQ_T)
		q4k_tile(nb, w, w_row, KQ_R, x, x_row, KQ_T, y, y_stride);
	else
		q4k_tile(nb, w, w_row, n_r, x, x_row, n_t, y, y_stride);
}

/* ---------------- Q6_K ---------------- */

/* Scales of chunk c (quants 64c..64c+63): word w -> scale 4c + w / 8. */
static const int16_t Q6K_SC_IDX[4][32] = {
	{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3},
	{4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7},
	{8, 8, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 9, 10, 10, 10, 10, 10, 10, 10, 10, 11, 11, 11, 11, 11, 11, 11, 11},
	{12, 12, 12, 12, 12, 12, 12, 12, 13, 13, 13, 13, 13, 13, 13, 13,
	 14, 14, 14, 14, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15, 15},
};

struct q6k_row {
	__m512i q[4];  /* u = quant + 32 (0..63), quants 64c..64c+63 */
	__m512i sc[4]; /* their scales, one word per pair of quants */
	__m512i neg;   /* -32 * scale j in word j (j < 16), then zeros */
};

KQ_INLINE void q6k_unpack(const struct kern_block_q6_K *b, struct q6k_row *w)
{
	const __m512i m0f = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
	KQ_UNROLL
	for (int h = 0; h < 2; h++) {
		const __m512i l = _mm512_loadu_si512(b->ql + 64 * h);
		const __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
		/* high bits of quants 0..31 in bits 0-1 (and 4-5) of bytes 0..31,
		 * of quants 32..63 in bytes 32..63 */
		const __m512i hz = _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
		/* (c ? a : b) per bit, c = 0x0F */
		w->q[2 * h] = _mm512_ternarylogic_epi32(
			l, _mm512_and_si512(_mm512_slli_epi16(hz, 4), m30), m0f, 0xE4);
		w->q[2 * h + 1] = _mm512_ternarylogic_epi32(_mm512_srli_epi16(l, 4), _mm512_and_si512(hz, m30),
							    m0f, 0xE4);
	}
	const __m512i sw =
		_mm512_zextsi256_si512(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales)));
	KQ_UNROLL
	for (int c = 0; c < 4; c++)
		w->sc[c] = _mm512_permutexvar_epi16(idx16(Q6K_SC_IDX[c]), sw);
	w->neg = _mm512_sub_epi16(_mm512_setzero_si512(), _mm512_slli_epi16(sw, 5));
}

KQ_INLINE __m512i q6k_dot(const struct q6k_row *w, const struct kern_block_q8_K *yb)
{
	const __m512i bs = _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)yb->bsums));
	__m512i s = _mm512_madd_epi16(w->neg, bs);
	KQ_UNROLL
	for (int c = 0; c < 4; c++)
		s = _mm512_dpwssd_epi32(s, _mm512_maddubs_epi16(w->q[c], _mm512_loadu_si512(yb->qs + 64 * c)),
					w->sc[c]);
	return s;
}

KQ_INLINE void q6k_group(const struct kern_block_q8_K *const yb[4], int nt, const struct q6k_row *w,
			 __m512 ydv, float xd, __m512 *acc)
{
	__m512i s[4];
	KQ_UNROLL
	for (int t = 0; t < 4; t++)
		s[t] = t < nt ? q6k_dot(w, yb[t]) : _mm512_setzero_si512();
	const __m512i u = reduce4(s[0], s[1], s[2], s[3]);
	*acc = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(xd), ydv), _mm512_cvtepi32_ps(u), *acc);
}

static void q6k_rows4(int64_t nb, const char *w, size_t w_row, int n_r, const void *x, float *y)
{
	const struct kern_block_q6_K *rb[4];
	KQ_UNROLL
	for (int r = 0; r < 4; r++)
		rb[r] = (const struct kern_block_q6_K *)(w + (size_t)(r < n_r ? r : n_r - 1) * w_row);
	const struct kern_block_q8_K *xb = x;
	__m512 acc = _mm512_setzero_ps();
	for (int64_t i = 0; i < nb; i++) {
		__m512i s[4];
		KQ_UNROLL
		for (int r = 0; r < 4; r++) {
			struct q6k_row q;
			q6k_unpack(&rb[r][i], &q);
			s[r] = q6k_dot(&q, &xb[i]);
		}
		const __m512i u = reduce4(s[0], s[1], s[2], s[3]);
		const __m128 xd = _mm_cvtph_ps(_mm_set_epi16(0, 0, 0, 0, (short)rb[3][i].d, (short)rb[2][i].d,
							     (short)rb[1][i].d, (short)rb[0][i].d));
		const __m512 dv = _mm512_broadcast_f32x4(_mm_mul_ps(xd, _mm_set1_ps(xb[i].d)));
		acc = _mm512_fmadd_ps(dv, _mm512_cvtepi32_ps(u), acc);
	}
	const __m128 r4 = hsum4(acc);
	if (n_r == 4)
		_mm_storeu_ps(y, r4);
	else
		store_n(y, 1, r4, n_r);
}

KQ_INLINE void q6k_tile(int64_t nb, const char *w, size_t w_row, const int n_r, const char *x,
			size_t x_row, const int n_t, float *y, int64_t y_stride)
{
	const struct kern_block_q8_K *tb[KQ_T];
	KQ_UNROLL
	for (int t = 0; t < KQ_T; t++)
		tb[t] = (const struct kern_block_q8_K *)(x + (size_t)(t < n_t ? t : n_t - 1) * x_row);
	const int ng = (n_t + 3) / 4;
	__m512 acc[KQ_R][KQ_G];
	KQ_UNROLL
	for (int r = 0; r < KQ_R; r++)
		KQ_UNROLL
		for (int g = 0; g < KQ_G; g++)
			acc[r][g] = _mm512_setzero_ps();
	for (int64_t i = 0; i < nb; i++) {
		const struct kern_block_q8_K *yb[KQ_G][4];
		__m512 ydv[KQ_G];
		/* all groups: those past n_t repeat its last token */
		KQ_UNROLL
		for (int g = 0; g < KQ_G; g++) {
			KQ_UNROLL
			for (int k = 0; k < 4; k++)
				yb[g][k] = &tb[4 * g + k][i];
			ydv[g] = _mm512_broadcast_f32x4(
				_mm_set_ps(yb[g][3]->d, yb[g][2]->d, yb[g][1]->d, yb[g][0]->d));
		}
		KQ_UNROLL
		for (int r = 0; r < n_r; r++) {
			const struct kern_block_q6_K *b = (const struct kern_block_q6_K *)(w + (size_t)r * w_row) + i;
			struct q6k_row q;
			q6k_unpack(b, &q);
			const float xd = _cvtsh_ss(b->d);
			KQ_UNROLL
			for (int g = 0; g < ng; g++) {
				const int nt = n_t - 4 * g;
				if (nt >= 4)
					q6k_group(yb[g], 4, &q, ydv[g], xd, &acc[r][g]);
				else if (nt == 3)
					q6k_group(yb[g], 3, &q, ydv[g], xd, &acc[r][g]);
				else if (nt == 2)
					q6k_group(yb[g], 2, &q, ydv[g], xd, &acc[r][g]);
				else
					q6k_group(yb[g], 1, &q, ydv[g], xd, &acc[r][g]);
			}
		}
	}
	KQ_UNROLL
	for (int r = 0; r < n_r; r++)
		KQ_UNROLL
		for (int g = 0; g < ng; g++) {
			const int nt = n_t - 4 * g;
			store_n(y + (4 * g) * y_stride + r, y_stride, hsum4(acc[r][g]), nt < 4 ? nt : 4);
		}
}

static void tile_q6_K(int64_t n, const void *w, size_t w_row, int n_r, const void *x, size_t x_row,
		      int n_t, float *y, int64_t y_stride)
{
	const int64_t nb = n / KERN_QK_K;
	if (n_t == 1)
		q6k_rows4(nb, w, w_row, n_r, x, y);
	else if (n_r == KQ_R && n_t == KQ_T)
		q6k_tile(nb, w, w_row, KQ_R, x, x_row, KQ_T, y, y_stride);
	else
		q6k_tile(nb, w, w_row, n_r, x, x_row, n_t, y, y_stride);
}

int kern_tiles_kq_avx512(struct kern_dispatch *d)
{
	d->tile[ML_DTYPE_Q4_K] = (struct kern_tile){tile_q4_K, KQ_R, KQ_T};
	d->tile[ML_DTYPE_Q6_K] = (struct kern_tile){tile_q6_K, KQ_R, KQ_T};
	return 2;
}

#else /* not x86: kern.c never calls this; keeps the build portable */
#include "kernels/kern_impl.h"

int kern_tiles_kq_avx512(struct kern_dispatch *d)
{
	(void)d;
	return 0;
}
#endif
