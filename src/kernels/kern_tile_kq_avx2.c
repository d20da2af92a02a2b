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
 * tokens, 4 rows x 1 token for decode. Q5_K and Q6_K use this layout; Q4_K
 * has its own rows-in-lanes tile below (8 rows x 32 tokens). */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <stddef.h>
#include <string.h>

#include "kernels/kern_impl.h"

#define KQ_R 4 /* weight rows per tile */
#define KQ_T 4 /* tokens per tile */

#define KQ_INLINE static inline __attribute__((always_inline))
/* -O2 leaves small constant loops rolled, which puts register arrays on the stack */
#define KQ_UNROLL _Pragma("GCC unroll 8")
#ifdef __clang__
/* clang takes the unroll pragma as a hint and warns where it keeps a loop
 * with an early exit rolled */
#pragma clang diagnostic ignored "-Wpass-failed"
#endif

enum kq_kind { KQ_Q4_K, KQ_Q5_K, KQ_Q6_K };

/* lane 4l + k of the result = sum of the four int32 of 128-bit lane l of s_k */
KQ_INLINE __m256i reduce4(__m256i s0, __m256i s1, __m256i s2, __m256i s3)
{
	const __m256i a =
	    _mm256_add_epi32(_mm256_unpacklo_epi32(s0, s1), _mm256_unpackhi_epi32(s0, s1));
	const __m256i b =
	    _mm256_add_epi32(_mm256_unpacklo_epi32(s2, s3), _mm256_unpackhi_epi32(s2, s3));
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

/* Decode streams the weights once; asking for each block's counterpart 16
 * rows ahead as it is read spreads the requests for the next tiles over the
 * walk instead of a burst at each tile (kern_matmul leaves one-token
 * prefetching to the tiles; see kern_tile_kq_avx512.c). Prefetches do
 * not fault past the matrix. */
#define KQ_PF_ROWS 16

KQ_INLINE void kq_prefetch_ahead(const char *blk, size_t bs, size_t w_row)
{
	const char *p = blk + KQ_PF_ROWS * w_row;
	KQ_UNROLL
	for (size_t o = 0; o < bs; o += 64)
		_mm_prefetch(p + o, _MM_HINT_T0);
	_mm_prefetch(p + bs - 1, _MM_HINT_T0);
}

/* One weight row's super-block: what the chunks need besides the quants. */
struct kq_row {
	int16_t sc[16]; /* Q4_K/Q5_K: scale of chunk c in sc[c]; Q6_K: the 16 group scales */
	__m256i mw;     /* Q4_K/Q5_K: min j in words 2j, 2j+1; Q6_K: -32 * scale j in word j */
	const void *blk;
};

KQ_INLINE size_t kq_block_size(enum kq_kind k)
{
	return k == KQ_Q4_K   ? sizeof(struct kern_block_q4_K)
	       : k == KQ_Q5_K ? sizeof(struct kern_block_q5_K)
	                      : sizeof(struct kern_block_q6_K);
}

KQ_INLINE void kq_prepare(enum kq_kind kind, const void *blk, struct kq_row *w)
{
	w->blk = blk;
	if (kind == KQ_Q6_K) {
		const __m256i sw = _mm256_cvtepi8_epi16(_mm_loadu_si128(
		    (const __m128i *)((const struct kern_block_q6_K *)blk)->scales));
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
	const uint64_t m6 = 0x3f3f3f3f3f3f3f3full, m4 = 0x0f0f0f0f0f0f0f0full,
	               m2 = 0x0303030303030303ull;
	const uint64_t lo = a & m6; /* sc0-3, mn0-3 */
	const uint64_t bb = (uint64_t)b | ((uint64_t)(b >> 4) << 32);
	const uint64_t hi = (bb & m4) | (((a >> 6) & m2) << 4); /* sc4-7, mn4-7 */
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
		const __m256i l =
		    _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32 * (k & 1)));
		const __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
		const __m256i lo = k < 2 ? _mm256_and_si256(l, m0f)
		                         : _mm256_and_si256(_mm256_srli_epi16(l, 4), m0f);
		const __m256i hb = k == 0   ? _mm256_slli_epi16(qh, 4)
		                   : k == 1 ? _mm256_slli_epi16(qh, 2)
		                   : k == 2 ? qh
		                            : _mm256_srli_epi16(qh, 2);
		return _mm256_or_si256(lo, _mm256_and_si256(hb, _mm256_set1_epi8(0x30)));
	}
	const uint8_t *qs = kind == KQ_Q4_K ? ((const struct kern_block_q4_K *)w->blk)->qs
	                                    : ((const struct kern_block_q5_K *)w->blk)->qs;
	const __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * (c / 2)));
	__m256i q =
	    c % 2 == 0 ? _mm256_and_si256(v, m0f) : _mm256_and_si256(_mm256_srli_epi16(v, 4), m0f);
	if (kind == KQ_Q5_K) {
		/* 5th bit of quant 32c + l is bit c of qh[l] */
		const __m256i qh = _mm256_loadu_si256(
		    (const __m256i *)((const struct kern_block_q5_K *)w->blk)->qh);
		const __m256i hb =
		    c <= 4 ? _mm256_slli_epi16(qh, 4 - c) : _mm256_srli_epi16(qh, c - 4);
		q = _mm256_or_si256(q, _mm256_and_si256(hb, _mm256_set1_epi8(0x10)));
	}
	return q;
}

/* Scale words of chunk c against vpmaddubsw's 16 pairs. */
KQ_INLINE __m256i kq_chunk_scales(enum kq_kind kind, const struct kq_row *w, int c)
{
	if (kind == KQ_Q6_K)
		return _mm256_setr_m128i(_mm_set1_epi16(w->sc[2 * c]),
		                         _mm_set1_epi16(w->sc[2 * c + 1]));
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
KQ_INLINE void kq_dots(enum kq_kind kind, const struct kq_row *w,
                       const struct kern_block_q8_K *const a[4], int nt, __m256i s[4], __m256i m[4])
{
	KQ_UNROLL
	for (int k = 0; k < 4; k++) {
		s[k] = _mm256_setzero_si256();
		m[k] = _mm256_setzero_si256();
		if (k < nt) {
			const __m256i mk = _mm256_madd_epi16(
			    w->mw, _mm256_loadu_si256((const __m256i *)a[k]->bsums));
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
				const __m256i p = _mm256_maddubs_epi16(
				    q, _mm256_loadu_si256((const __m256i *)(a[k]->qs + 32 * c)));
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
		tb[t] =
		    (const struct kern_block_q8_K *)(x + (size_t)(t < n_t ? t : n_t - 1) * x_row);
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
			acc[r] = _mm256_fmadd_ps(
			    dv, _mm256_cvtepi32_ps(reduce4(s[0], s[1], s[2], s[3])), acc[r]);
			if (kind != KQ_Q6_K) {
				const __m256 dmv =
				    _mm256_mul_ps(_mm256_set1_ps(kq_dmin(q.blk)), ydv);
				acc[r] = _mm256_fnmadd_ps(
				    dmv, _mm256_cvtepi32_ps(reduce4(m[0], m[1], m[2], m[3])),
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
			kq_prefetch_ahead(rb[r] + (size_t)i * bs, bs, w_row);
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
		acc = _mm256_fmadd_ps(_mm256_setr_m128(d4, d4),
		                      _mm256_cvtepi32_ps(reduce4(s[0], s[1], s[2], s[3])), acc);
		if (kind != KQ_Q6_K) {
			const __m128 dm4 = _mm_mul_ps(_mm_loadu_ps(dmin), yd);
			acc = _mm256_fnmadd_ps(_mm256_setr_m128(dm4, dm4),
			                       _mm256_cvtepi32_ps(reduce4(m[0], m[1], m[2], m[3])),
			                       acc);
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

/* ---------------- Q4_K, rows in lanes ---------------- */

/* As in kern_tile_kq_avx512.c: lane r of a register is weight row r of an
 * 8-row tile; the rows' quants are transposed once per super-block (4
 * quants of a row per int32 lane) and meet each token's 4 activation quants
 * broadcast from memory. Without VNNI a 4-quant dot is vpmaddubsw (two
 * int16 per lane); four of them add up a 16-quant half sub-block in int16
 * (at most 8 * 15 * 127 per word) and one vpmaddwd by the scale (in both
 * words) gives its int32 share. Every output is one lane:
 *     acc = fma(d_x, fnma(dmin_w, (float)imins, d_w * (float)isum), acc)
 * Decode (n_t = 1) walks 4 rows in lockstep through kq_dots and puts each
 * row's integers in its lane before the same float operations. */
#define Q4T_R 8
#define Q4T_T 32
#define Q4T_P 4 /* tokens per pass: their integer sums stay in registers */

/* 8 x 8 int32 transpose: on return r[d] lane i = old r[i] lane d. */
KQ_INLINE void transpose8(__m256i r[8])
{
	__m256i t[8], u[8];
	KQ_UNROLL
	for (int i = 0; i < 8; i += 2) {
		t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);
		t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
	}
	KQ_UNROLL
	for (int g = 0; g < 8; g += 4) {
		u[g + 0] = _mm256_unpacklo_epi64(t[g + 0], t[g + 2]);
		u[g + 1] = _mm256_unpackhi_epi64(t[g + 0], t[g + 2]);
		u[g + 2] = _mm256_unpacklo_epi64(t[g + 1], t[g + 3]);
		u[g + 3] = _mm256_unpackhi_epi64(t[g + 1], t[g + 3]);
	}
	/* u[4g + c], 128-bit lane k = rows 4g..4g+3 of dword 4k + c */
	KQ_UNROLL
	for (int c = 0; c < 4; c++) {
		r[c] = _mm256_permute2x128_si256(u[c], u[4 + c], 0x20);
		r[4 + c] = _mm256_permute2x128_si256(u[c], u[4 + c], 0x31);
	}
}

struct q4t_block {
	__m256i q[64]; /* quants 4j..4j+3 of row r in lane r, as the activation's dword j */
	__m256i sc[8]; /* scale of sub-block j in both words of lane r */
	__m256i mn[8]; /* min of sub-block j in both words of lane r */
	__m256 d, dmin;
};

/* vpshufb control: byte j of each dword to both words, zero-extended. */
KQ_INLINE __m256i q4t_pick(int j)
{
	int32_t v[8];
	for (int m = 0; m < 8; m++) {
		const uint32_t b = (uint32_t)(4 * (m % 4) + j);
		v[m] = (int32_t)(0x80008000u | (b << 16) | b);
	}
	return _mm256_loadu_si256((const __m256i *)v);
}

/* Packs the low words of the 8 int32 of |v| into 8 halves -> floats. */
KQ_INLINE __m256 f16_lo_words(__m256i v)
{
	const __m256i p = _mm256_packus_epi32(_mm256_and_si256(v, _mm256_set1_epi32(0xFFFF)), v);
	return _mm256_cvtph_ps(_mm256_castsi256_si128(_mm256_permute4x64_epi64(p, 0x08)));
}

KQ_INLINE void q4t_prepare(const char *const rp[8], int64_t i, struct q4t_block *b)
{
	const __m256i m0f = _mm256_set1_epi8(0x0F);
	const size_t off = (size_t)i * sizeof(struct kern_block_q4_K);
	KQ_UNROLL
	for (int h = 0; h < 4; h++) {
		__m256i r[8];
		KQ_UNROLL
		for (int k = 0; k < 8; k++)
			r[k] = _mm256_loadu_si256(
			    (const __m256i *)(rp[k] + off + offsetof(struct kern_block_q4_K, qs) +
			                      32 * h));
		transpose8(r);
		/* qs dword D = 8h + d: low nibbles are quants 64(D/8) + 4(D%8),
		 * activation dword 16(D/8) + D%8; high nibbles 32 quants on */
		KQ_UNROLL
		for (int d = 0; d < 8; d++) {
			const int D = 8 * h + d, j = 16 * (D / 8) + D % 8;
			b->q[j] = _mm256_and_si256(r[d], m0f);
			b->q[j + 8] = _mm256_and_si256(_mm256_srli_epi32(r[d], 4), m0f);
		}
	}
	/* d, dmin, scales: 16 bytes per row -> s[c] lane r = dword c of row r */
	__m256i z[4];
	KQ_UNROLL
	for (int k = 0; k < 4; k++)
		z[k] = _mm256_setr_m128i(_mm_loadu_si128((const __m128i *)(rp[k] + off)),
		                         _mm_loadu_si128((const __m128i *)(rp[4 + k] + off)));
	const __m256i t0 = _mm256_unpacklo_epi32(z[0], z[1]),
	              t1 = _mm256_unpackhi_epi32(z[0], z[1]);
	const __m256i t2 = _mm256_unpacklo_epi32(z[2], z[3]),
	              t3 = _mm256_unpackhi_epi32(z[2], z[3]);
	const __m256i s0 = _mm256_unpacklo_epi64(t0, t2), s1 = _mm256_unpackhi_epi64(t0, t2);
	const __m256i s2 = _mm256_unpacklo_epi64(t1, t3), s3 = _mm256_unpackhi_epi64(t1, t3);
	b->d = f16_lo_words(s0);
	b->dmin = f16_lo_words(_mm256_srli_epi32(s0, 16));
	const __m256i m3f = _mm256_set1_epi8(0x3F), m30 = _mm256_set1_epi8(0x30);
	const __m256i sc03 = _mm256_and_si256(s1, m3f), mn03 = _mm256_and_si256(s2, m3f);
	const __m256i sc47 = _mm256_or_si256(_mm256_and_si256(s3, m0f),
	                                     _mm256_and_si256(_mm256_srli_epi32(s1, 2), m30));
	const __m256i mn47 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(s3, 4), m0f),
	                                     _mm256_and_si256(_mm256_srli_epi32(s2, 2), m30));
	KQ_UNROLL
	for (int j = 0; j < 4; j++) {
		b->sc[j] = _mm256_shuffle_epi8(sc03, q4t_pick(j));
		b->sc[4 + j] = _mm256_shuffle_epi8(sc47, q4t_pick(j));
		b->mn[j] = _mm256_shuffle_epi8(mn03, q4t_pick(j));
		b->mn[4 + j] = _mm256_shuffle_epi8(mn47, q4t_pick(j));
	}
}

KQ_INLINE __m256i bcast32(const void *p)
{
	int32_t v;
	memcpy(&v, p, 4);
	return _mm256_set1_epi32(v);
}

/* Rows rp[0..7] x tokens [0, n_t) (n_t <= Q4T_T), all super-blocks. */
KQ_INLINE void q4t_tile(int64_t nb, const char *const rp[8], const char *x, size_t x_row,
                        const int n_t, __m256 acc[Q4T_T])
{
	struct q4t_block b;
	for (int64_t i = 0; i < nb; i++) {
		q4t_prepare(rp, i, &b);
		KQ_UNROLL
		for (int p = 0; p < Q4T_T; p += Q4T_P) {
			if (p >= n_t)
				break;
			const int np = n_t - p;
			const struct kern_block_q8_K *yb[Q4T_P];
			__m256i s[Q4T_P];
			KQ_UNROLL
			for (int t = 0; t < Q4T_P; t++) {
				yb[t] =
				    (const struct kern_block_q8_K *)(x + (size_t)(p + t) * x_row) +
				    i;
				s[t] = _mm256_setzero_si256();
			}
			KQ_UNROLL
			for (int h = 0; h < 16; h++) {
				const __m256i w0 = b.q[4 * h], w1 = b.q[4 * h + 1],
				              w2 = b.q[4 * h + 2], w3 = b.q[4 * h + 3];
				KQ_UNROLL
				for (int t = 0; t < Q4T_P; t++) {
					if (t >= np)
						break;
					const int8_t *a = yb[t]->qs + 16 * h;
					__m256i c = _mm256_maddubs_epi16(w0, bcast32(a));
					c = _mm256_add_epi16(
					    c, _mm256_maddubs_epi16(w1, bcast32(a + 4)));
					c = _mm256_add_epi16(
					    c, _mm256_maddubs_epi16(w2, bcast32(a + 8)));
					c = _mm256_add_epi16(
					    c, _mm256_maddubs_epi16(w3, bcast32(a + 12)));
					s[t] = _mm256_add_epi32(s[t],
					                        _mm256_madd_epi16(c, b.sc[h / 2]));
				}
			}
			KQ_UNROLL
			for (int t = 0; t < Q4T_P; t++) {
				if (t >= np)
					break;
				__m256i m = _mm256_setzero_si256();
				KQ_UNROLL
				for (int j = 0; j < 8; j++)
					m = _mm256_add_epi32(
					    m, _mm256_madd_epi16(b.mn[j],
					                         bcast32(yb[t]->bsums + 2 * j)));
				const __m256 f =
				    _mm256_fnmadd_ps(b.dmin, _mm256_cvtepi32_ps(m),
				                     _mm256_mul_ps(b.d, _mm256_cvtepi32_ps(s[t])));
				acc[p + t] =
				    _mm256_fmadd_ps(_mm256_set1_ps(yb[t]->d), f, acc[p + t]);
			}
		}
	}
}

/* One token: 4 rows in lockstep, each row's integers from kq_dots. */
static void q4t_decode(int64_t nb, const char *w, size_t w_row, int n_r, const void *x, float *y)
{
	const struct kern_block_q8_K *xb = x;
	const size_t bs = sizeof(struct kern_block_q4_K);
	for (int g = 0; 4 * g < n_r; g++) {
		const char *rb[4];
		KQ_UNROLL
		for (int r = 0; r < 4; r++)
			rb[r] = w + (size_t)(4 * g + r < n_r ? 4 * g + r : n_r - 1) * w_row;
		__m128 acc = _mm_setzero_ps();
		for (int64_t i = 0; i < nb; i++) {
			const struct kern_block_q8_K *const a[4] = {&xb[i], &xb[i], &xb[i], &xb[i]};
			__m256i s[4], m[4];
			uint32_t dd[4];
			KQ_UNROLL
			for (int r = 0; r < 4; r++) {
				struct kq_row q;
				kq_prefetch_ahead(rb[r] + (size_t)i * bs, bs, w_row);
				kq_prepare(KQ_Q4_K, rb[r] + (size_t)i * bs, &q);
				__m256i sr[4], mr[4];
				kq_dots(KQ_Q4_K, &q, a, 1, sr, mr);
				s[r] = sr[0];
				m[r] = mr[0];
				memcpy(&dd[r], q.blk, 4);
			}
			const __m256i s4 = reduce4(s[0], s[1], s[2], s[3]),
			              m4 = reduce4(m[0], m[1], m[2], m[3]);
			const __m128i si = _mm_add_epi32(_mm256_castsi256_si128(s4),
			                                 _mm256_extracti128_si256(s4, 1));
			const __m128i mi = _mm_add_epi32(_mm256_castsi256_si128(m4),
			                                 _mm256_extracti128_si256(m4, 1));
			const __m256 dm = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)dd));
			const __m256 dp =
			    _mm256_permutevar8x32_ps(dm, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
			const __m128 f = _mm_fnmadd_ps(
			    _mm256_extractf128_ps(dp, 1), _mm_cvtepi32_ps(mi),
			    _mm_mul_ps(_mm256_castps256_ps128(dp), _mm_cvtepi32_ps(si)));
			acc = _mm_fmadd_ps(_mm_set1_ps(xb[i].d), f, acc);
		}
		const int nr = n_r - 4 * g < 4 ? n_r - 4 * g : 4;
		if (nr == 4)
			_mm_storeu_ps(y + 4 * g, acc);
		else
			store_n(y + 4 * g, 1, acc, nr);
	}
}

static void tile_q4_K_rows(int64_t n, const void *w, size_t w_row, int n_r, const void *x,
                           size_t x_row, int n_t, float *y, int64_t y_stride)
{
	const int64_t nb = n / KERN_QK_K;
	if (n_t == 1) {
		q4t_decode(nb, w, w_row, n_r, x, y);
		return;
	}
	const char *rp[8];
	KQ_UNROLL
	for (int r = 0; r < 8; r++)
		rp[r] = (const char *)w + (size_t)(r < n_r ? r : n_r - 1) * w_row;
	__m256 acc[Q4T_T];
	KQ_UNROLL
	for (int t = 0; t < Q4T_T; t++)
		acc[t] = _mm256_setzero_ps();
	if (n_t == Q4T_T)
		q4t_tile(nb, rp, x, x_row, Q4T_T, acc);
	else
		q4t_tile(nb, rp, x, x_row, n_t, acc);
	const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
	const __m256i k = _mm256_cmpgt_epi32(_mm256_set1_epi32(n_r), lane);
	for (int t = 0; t < n_t; t++)
		_mm256_maskstore_ps(y + t * y_stride, k, acc[t]);
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
	d->tile[ML_DTYPE_Q4_K] = (struct kern_tile){tile_q4_K_rows, Q4T_R, Q4T_T};
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
