/* AVX2 tile kernels (struct kern_tile) for K-quant weights (Q4_K, Q5_K, Q6_K)
 * against Q8_K activations. Compiled with the AVX2 flags of the Makefile
 * (AVX2, FMA, F16C; no VNNI); called by kern_init() only when the CPU has
 * them.
 *
 * The same scheme as kern_tile_kq_avx512.c on 256-bit registers. Each
 * 32-quant chunk of a weight row is unpacked once per tile into unsigned
 * bytes (Q4_K 0..15, Q5_K 0..31, Q6_K quant + 32 in 0..63) and meets each
 * token with vpmaddubsw (pairs in int16, at most 2 * 63 * 127 < 32767) and
 * vpmaddwd by its scales into int32: exact. 128-bit lane l of an output's
 * integer collects quants 16l..16l+15 of every chunk, plus Q6_K's exact
 * -32 * scale * block-sum correction of groups 8l..8l+7; Q4_K/Q5_K's mins
 * of sub-blocks 4l..4l+3 form a second integer.
 *
 * Lane 4l + k of one register then holds lane l's integer of output k (four
 * tokens of a row in the batched tile, four rows of one token for decode),
 * and per super-block
 *     acc = fma(d_w * d_x, (float)isum, acc)
 *     acc = fnma(dmin_w * d_x, (float)imins, acc)     (Q4_K, Q5_K)
 * with the output = lane k + lane 4 + k at the end: one fixed sequence per
 * output whatever n_r, n_t or its place in the tile. Tiles: 4 rows x 4
 * tokens, 4 rows x 1 token for decode. */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <string.h>

#include "kernels/kern_impl.h"

#define KQ_R 4 /* weight rows per tile */
#define KQ_T 4 /* tokens per tile */

#define KQ_INLINE static inline __attribute__((always_inline))
/* -O2 leaves small constant loops rolled, which puts register arrays on the stack */
#define KQ_UNROLL _Pragma("GCC unroll 8")

enum kq_kind { KQ_Q4_K, KQ_Q5_K, KQ_Q6_K };

/* lane 4l + k of the result = sum of the four int32 of 128-bit lane l of s_k */
KQ_INLINE __m256i reduce4(__m256i s0, __m256i s1, __m256i s2, __m256i s3)
{
	const __m256i a = _mm256_add_epi32(_mm256_unpacklo_epi32(s0, s1), _mm256_unpackhi_epi32(s0, s1));
	const __m256i b = _mm256_add_epi32(_mm256_unpacklo_epi32(s2, s3), _mm256_unpackhi_epi32(s2, s3));
	return _mm256_add_epi32(_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b));
}

/* lane k of the result = acc[k] + acc[4 + k] */
KQ_INLINE __m128 hsum2(__m256 acc)
{
	return _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
}

KQ_INLINE void store_n(float *y, int64_t stride, __m128 v, int n)
{
	float f[4];
	_mm_storeu_ps(f, v);
	for (int k = 0; k < n; k++)
		y[k * stride] = f[k];
}

/* One weight row's super-block: what the chunks need besides the quants. */
struct kq_row {
	int16_t sc[16];  /* Q4_K/Q5_K: scale of chunk c in sc[c]; Q6_K: the 16 group scales */
	__m256i mw;      /* Q4_K/Q5_K: min j in words 2j, 2j+1; Q6_K: -32 * scale j in word j */
	const void *blk;
};

KQ_INLINE size_t kq_block_size(enum kq_kind k)
{
	return k == KQ_Q4_K ? sizeof(struct kern_block_q4_K)
	       : k == KQ_Q5_K ? sizeof(struct kern_block_q5_K)
			      : sizeof(struct kern_block_q6_K);
}

KQ_INLINE void kq_prepare(enum kq_kind kind, const void *blk, struct kq_row *w)
{
	w->blk = blk;
	if (kind == KQ_Q6_K) {
		const __m256i sw = _mm256_cvtepi8_epi16(
			_mm_loadu_si128((const __m128i *)((const struct kern_block_q6_K *)blk)->scales));
		_mm256_storeu_si256((__m256i *)w->sc, sw);
		w->mw = _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16(sw, 5));
		return;
	}
	const uint8_t *s = kind == KQ_Q4_K ? ((const struct kern_block_q4_K *)blk)->scales
					   : ((const struct kern_block_q5_K *)blk)->scales;
	uint64_t a;
	uint32_t b;
	memcpy(&a, s, 8);
	memcpy(&b, s + 8, 4);
	const uint64_t m6 = 0x3f3f3f3f3f3f3f3full, m4 = 0x0f0f0f0f0f0f0f0full, m2 = 0x0303030303030303ull;
	const uint64_t lo = a & m6;                                         /* sc0-3, mn0-3 */
	const uint64_t bb = (uint64_t)b | ((uint64_t)(b >> 4) << 32);
	const uint64_t hi = (bb & m4) | (((a >> 6) & m2) << 4);             /* sc4-7, mn4-7 */
	const uint64_t sc = (lo & 0xffffffffull) | (hi << 32);
	const uint64_t mn = (lo >> 32) | (hi & 0xffffffff00000000ull);
	_mm_storeu_si128((__m128i *)w->sc, _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)sc)));
	const __m128i m = _mm_cvtsi64_si128((long long)mn);
	w->mw = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, m));
}

/* Chunk c (quants 32c..32c+31) of the row as unsigned bytes. */
KQ_INLINE __m256i kq_chunk(enum kq_kind kind, const struct kq_row *w, int c)
{
	const __m256i m0f = _mm256_set1_epi8(0x0F);
	if (kind == KQ_Q6_K) {
		const struct kern_block_q6_K *b = w->blk;
		const int h = c / 4, k = c % 4;
		const __m256i l = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32 * (k & 1)));
		const __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
		const __m256i lo = k < 2 ? _mm256_and_si256(l, m0f) : _mm256_and_si256(_mm256_srli_epi16(l, 4), m0f);
		const __m256i hb = k == 0 ? _mm256_slli_epi16(qh, 4)
				   : k == 1 ? _mm256_slli_epi16(qh, 2)
				   : k == 2 ? qh
					    : _mm256_srli_epi16(qh, 2);
		return _mm256_or_si256(lo, _mm256_and_si256(hb, _mm256_set1_epi8(0x30)));
	}
	const uint8_t *qs = kind == KQ_Q4_K ? ((const struct kern_block_q4_K *)w->blk)->qs
					    : ((const struct kern_block_q5_K *)w->blk)->qs;
	const __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * (c / 2)));
	__m256i q = c % 2 == 0 ? _mm256_and_si256(v, m0f) : _mm256_and_si256(_mm256_srli_epi16(v, 4), m0f);
	if (kind == KQ_Q5_K) {
		/* 5th bit of quant 32c + l is bit c of qh[l] */
		const __m256i qh = _mm256_loadu_si256((const __m256i *)((const struct kern_block_q5_K *)w->blk)->qh);
		const __m256i hb = c <= 4 ? _mm256_slli_epi16(qh, 4 - c) : _mm256_srli_epi16(qh, c - 4);
		q = _mm256_or_si256(q, _mm256_and_si256(hb, _mm256_set1_epi8(0x10)));
	}
	return q;
}

/* Scale words of chunk c against vpmaddubsw's 16 pairs. */
KQ_INLINE __m256i kq_chunk_scales(enum kq_kind kind, const struct kq_row *w, int c)
{
	if (kind == KQ_Q6_K)
		return _mm256_setr_m128i(_mm_set1_epi16(w->sc[2 * c]), _mm_set1_epi16(w->sc[2 * c + 1]));
	return _mm256_set1_epi16(w->sc[c]);
}

KQ_INLINE float kq_d(enum kq_kind kind, const void *blk)
{
	return kind == KQ_Q6_K ? _cvtsh_ss(((const struct kern_block_q6_K *)blk)->d)
			       : _cvtsh_ss(*(const kern_f16 *)blk);
}

KQ_INLINE float kq_dmin(const void *blk)
{
	return _cvtsh_ss(((const kern_f16 *)blk)[1]);
}

/* s[k] = exact integer dot of row |w| with token block a[k] for k < nt
 * (Q6_K including its correction), m[k] the mins integer (Q4_K/Q5_K). */
KQ_INLINE void kq_dots(enum kq_kind kind, const struct kq_row *w, const struct kern_block_q8_K *const a[4],
		       int nt, __m256i s[4], __m256i m[4])
{
	KQ_UNROLL
	for (int k = 0; k < 4; k++) {
		s[k] = _mm256_setzero_si256();
		m[k] = _mm256_setzero_si256();
		if (k < nt) {
			const __m256i mk = _mm256_madd_epi16(w->mw, _mm256_loadu_si256((const __m256i *)a[k]->bsums));
			if (kind == KQ_Q6_K)
				s[k] = mk;
			else
				m[k] = mk;
		}
	}
	KQ_UNROLL
	for (int c = 0; c < 8; c++) {
		const __m256i q = kq_chunk(kind, w, c);
		const __m256i sc = kq_chunk_scales(kind, w, c);
		KQ_UNROLL
		for (int k = 0; k < 4; k++)
			if (k < nt) {
				const __m256i p = _mm256_maddubs_epi16(q, _mm256_loadu_si256((const __m256i *)(a[k]->qs + 32 * c)));
				s[k] = _mm256_add_epi32(s[k], _mm256_madd_epi16(p, sc));
			}
	}
}

/* Rows [0, n_r) x tokens [0, n_t), n_t >= 2. */
KQ_INLINE void kq_tile(enum kq_kind kind, int64_t nb, const char *w, size_t w_row, const int n_r,
		       const char *x, size_t x_row, const int n_t, float *y, int64_t y_stride)
{
	const size_t bs = kq_block_size(kind);
	const struct kern_block_q8_K *tb[KQ_T];
	KQ_UNROLL
	for (int t = 0; t < KQ_T; t++)
		tb[t] = (const struct kern_block_q8_K *)(x + (size_t)(t < n_t ? t : n_t - 1) * x_row);
	__m256 acc[KQ_R];
	KQ_UNROLL
	for (int r = 0; r < KQ_R; r++)
		acc[r] = _mm256_setzero_ps();
	for (int64_t i = 0; i < nb; i++) {
		const struct kern_block_q8_K *yb[4];
		KQ_UNROLL
		for (int k = 0; k < 4; k++)
			yb[k] = &tb[k][i];
		const __m128 yd4 = _mm_set_ps(yb[3]->d, yb[2]->d, yb[1]->d, yb[0]->d);
		const __m256 ydv = _mm256_setr_m128(yd4, yd4);
		KQ_UNROLL
		for (int r = 0; r < n_r; r++) {
			struct kq_row q;
			kq_prepare(kind, w + (size_t)r * w_row + (size_t)i * bs, &q);
			__m256i s[4], m[4];
			kq_dots(kind, &q, yb, n_t, s, m);
			const __m256 dv = _mm256_mul_ps(_mm256_set1_ps(kq_d(kind, q.blk)), ydv);
			acc[r] = _mm256_fmadd_ps(dv, _mm256_cvtepi32_ps(reduce4(s[0], s[1], s[2], s[3])), acc[r]);
			if (kind != KQ_Q6_K) {
				const __m256 dmv = _mm256_mul_ps(_mm256_set1_ps(kq_dmin(q.blk)), ydv);
				acc[r] = _mm256_fnmadd_ps(dmv, _mm256_cvtepi32_ps(reduce4(m[0], m[1], m[2], m[3])),
							  acc[r]);
			}
		}
	}
	KQ_UNROLL
	for (int r = 0; r < n_r; r++)
		store_n(y + r, y_stride, hsum2(acc[r]), n_t);
}

/* Up to 4 rows (missing ones repeat the last, never stored) x 1 token. */
KQ_INLINE void kq_rows4(enum kq_kind kind, int64_t nb, const char *w, size_t w_row, int n_r,
			const void *x, float *y)
{
	const size_t bs = kq_block_size(kind);
	const char *rb[4];
	KQ_UNROLL
	for (int r = 0; r < 4; r++)
		rb[r] = w + (size_t)(r < n_r ? r : n_r - 1) * w_row;
	const struct kern_block_q8_K *xb = x;
	__m256 acc = _mm256_setzero_ps();
	for (int64_t i = 0; i < nb; i++) {
		const struct kern_block_q8_K *const a[4] = {&xb[i], &xb[i], &xb[i], &xb[i]};
		__m256i s[4], m[4];
		float d[4], dmin[4];
		KQ_UNROLL
		for (int r = 0; r < 4; r++) {
			struct kq_row q;
			kq_prepare(kind, rb[r] + (size_t)i * bs, &q);
			__m256i sr[4], mr[4];
			kq_dots(kind, &q, a, 1, sr, mr);
			s[r] = sr[0];
			m[r] = mr[0];
			d[r] = kq_d(kind, q.blk);
			dmin[r] = kind == KQ_Q6_K ? 0.0f : kq_dmin(q.blk);
		}
		const __m128 yd = _mm_set1_ps(xb[i].d);
		const __m128 d4 = _mm_mul_ps(_mm_loadu_ps(d), yd);
		acc = _mm256_fmadd_ps(_mm256_setr_m128(d4, d4), _mm256_cvtepi32_ps(reduce4(s[0], s[1], s[2], s[3])),
				      acc);
		if (kind != KQ_Q6_K) {
			const __m128 dm4 = _mm_mul_ps(_mm_loadu_ps(dmin), yd);
			acc = _mm256_fnmadd_ps(_mm256_setr_m128(dm4, dm4),
					       _mm256_cvtepi32_ps(reduce4(m[0], m[1], m[2], m[3])), acc);
		}
	}
	const __m128 r4 = hsum2(acc);
	if (n_r == 4)
		_mm_storeu_ps(y, r4);
	else
		store_n(y, 1, r4, n_r);
}

KQ_INLINE void kq_tile_any(enum kq_kind kind, int64_t n, const void *w, size_t w_row, int n_r,
			   const void *x, size_t x_row, int n_t, float *y, int64_t y_stride)
{
	const int64_t nb = n / KERN_QK_K;
	if (n_t == 1)
		kq_rows4(kind, nb, w, w_row, n_r, x, y);
	else if (n_r == KQ_R && n_t == KQ_T)
		kq_tile(kind, nb, w, w_row, KQ_R, x, x_row, KQ_T, y, y_stride);
	else
		kq_tile(kind, nb, w, w_row, n_r, x, x_row, n_t, y, y_stride);
}

static void tile_q4_K(int64_t n, const void *w, size_t w_row, int n_r, const void *x, size_t x_row,
		      int n_t, float *y, int64_t y_stride)
{
	kq_tile_any(KQ_Q4_K, n, w, w_row, n_r, x, x_row, n_t, y, y_stride);
}

static void tile_q5_K(int64_t n, const void *w, size_t w_row, int n_r, const void *x, size_t x_row,
		      int n_t, float *y, int64_t y_stride)
{
	kq_tile_any(KQ_Q5_K, n, w, w_row, n_r, x, x_row, n_t, y, y_stride);
}

static void tile_q6_K(int64_t n, const void *w, size_t w_row, int n_r, const void *x, size_t x_row,
		      int n_t, float *y, int64_t y_stride)
{
	kq_tile_any(KQ_Q6_K, n, w, w_row, n_r, x, x_row, n_t, y, y_stride);
}

int kern_tiles_kq_avx2(struct kern_dispatch *d)
{
	d->tile[ML_DTYPE_Q4_K] = (struct kern_tile){tile_q4_K, KQ_R, KQ_T};
	d->tile[ML_DTYPE_Q5_K] = (struct kern_tile){tile_q5_K, KQ_R, KQ_T};
	d->tile[ML_DTYPE_Q6_K] = (struct kern_tile){tile_q6_K, KQ_R, KQ_T};
	return 3;
}

#else /* not x86: kern.c never calls this; keeps the build portable */
#include "kernels/kern_impl.h"

int kern_tiles_kq_avx2(struct kern_dispatch *d)
{
	(void)d;
	return 0;
}
#endif
