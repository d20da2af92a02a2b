/* AVX-512 tile kernels (struct kern_tile) for K-quant weights (Q4_K, Q5_K,
 * Q6_K) against Q8_K activations. Compiled with the AVX-512 flags of the
 * Makefile (F/BW/VL/DQ + VNNI); called by kern_init() only when the CPU has
 * them.
 *
 * Rows in lanes. Lane r of a 512-bit register is weight row r of a 16-row
 * tile. A super-block (256 quants) of the 16 rows is transposed once per
 * tile into 64 registers of unsigned quants (Q4_K 0..15, Q5_K 0..31, Q6_K
 * quant + 32 in 0..63), lane r holding 4 quants of row r, and meets each
 * token's 4 activation quants broadcast from memory in one vpdpbusd: 64
 * multiply-adds per instruction with no shuffles in the token loop. Sub-
 * block scales are applied with vpdpwssd to int32 partial dots that fit
 * int16 (Q4_K 16 quants, Q5_K 8, Q6_K 4 per partial), the Q4_K/Q5_K mins and
 * the Q6_K -32 through the tokens' 16-quant sums; all integer sums exact.
 *
 * Float part. Per super-block, lane r of token t's accumulator gets
 *     Q4_K/Q5_K: acc = fma(d_x, fnma(dmin_w, (float)imins, d_w * (float)isum), acc)
 *     Q6_K:      acc = fma(d_x, d_w * (float)isum, acc)
 * and is the output: no horizontal sums, and every output sees exactly
 * these operations whatever n_r, n_t or its place in the tile, so a
 * token's logits are the same alone or in a batch.
 *
 * Decode (n_t = 1) is bound by memory, not by the transpose: it walks 4
 * rows in lockstep (4 weight streams), computes each row's exact integers
 * with per-row dots (kq_dot1: a vpdpbusd per 64 quants, scales through
 * vpackssdw + vpdpwssd), moves them into lanes and applies the same float
 * operations. The 512-bit operations are full-width ones, which also suits
 * Zen 4's double-pumped units. */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <stddef.h>
#include <string.h>

#include "kernels/kern_impl.h"

#define KQ_INLINE static inline __attribute__((always_inline))
/* -O2 leaves small constant loops rolled, which puts register arrays on the stack */
#define KQ_UNROLL _Pragma("GCC unroll 8")
#ifdef __clang__
/* clang takes the unroll pragma as a hint and warns where it keeps a loop
 * with an early exit rolled */
#pragma clang diagnostic ignored "-Wpass-failed"
#endif

enum kq_kind { KQ_Q4_K, KQ_Q5_K, KQ_Q6_K };

/* ---------------- per-row dots (decode) ---------------- */

/* A row's super-block unpacked (kq_unpack) is four registers of 64 quants
 * in element order; 128-bit lane l of a chunk's vpdpbusd covers quants
 * 16l..16l+15 of the chunk, all under one scale. Scale words |sw| per kind:
 * Q4_K/Q5_K (k4_words) sc0-3 mn0-3 sc4-7 mn4-7; Q6_K the 16 scales. Words
 * 16..31 are zero. The mins (Q4_K/Q5_K) and the -32 * scale corrections
 * (Q6_K) are in |mw|, indexed alike. vpermw index tables: */

/* Scales for packs(chunk 0, chunk 1) and packs(chunk 2, chunk 3). */
static const int16_t Q4K_S1[2][32] = {
    {0, 0, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 2, 2,
     1, 1, 1, 1, 3, 3, 3, 3, 1, 1, 1, 1, 3, 3, 3, 3},
    {8, 8, 8, 8, 10, 10, 10, 10, 8, 8, 8, 8, 10, 10, 10, 10,
     9, 9, 9, 9, 11, 11, 11, 11, 9, 9, 9, 9, 11, 11, 11, 11},
};
static const int16_t Q6K_S1[2][32] = {
    {0, 0, 0, 0, 4, 4, 4, 4, 1, 1, 1, 1, 5, 5, 5, 5,
     2, 2, 2, 2, 6, 6, 6, 6, 3, 3, 3, 3, 7, 7, 7, 7},
    {8,  8,  8,  8,  12, 12, 12, 12, 9,  9,  9,  9,  13, 13, 13, 13,
     10, 10, 10, 10, 14, 14, 14, 14, 11, 11, 11, 11, 15, 15, 15, 15},
};
/* Min (Q4_K/Q5_K) or -32 * scale (Q6_K) words against the token's block
 * sums in KQ_BZ layout: 128-bit lane l collects groups 2l, 2l+1 (sub-block
 * l) and 8+2l, 9+2l (sub-block 4+l); summed over lanes, a row's total. */
static const int16_t Q4K_MZ[32] = {4, 4, 12, 12, 16, 16, 16, 16, 5, 5, 13, 13, 16, 16, 16, 16,
                                   6, 6, 14, 14, 16, 16, 16, 16, 7, 7, 15, 15, 16, 16, 16, 16};
static const int16_t Q6K_MZ[32] = {0, 1, 8,  9,  16, 16, 16, 16, 2, 3, 10, 11, 16, 16, 16, 16,
                                   4, 5, 12, 13, 16, 16, 16, 16, 6, 7, 14, 15, 16, 16, 16, 16};
/* Token block sums as dwords (pairs of 16-quant sums): 128-bit lane l =
 * pair l, pair 4 + l, (unused). */
static const int32_t KQ_BZ[16] = {0, 4, 0, 0, 1, 5, 1, 1, 2, 6, 2, 2, 3, 7, 3, 3};

/* A zero register from its own zeroing idiom: vpdpbusd accumulates in
 * place, and from one shared zero GCC would copy it before every vpdpbusd
 * (a move per dot instead of a rename-time idiom). */
KQ_INLINE __m512i zero_idiom(void)
{
	__m512i z;
	__asm__ volatile("vpxord %0, %0, %0" : "=v"(z));
	return z;
}

KQ_INLINE __m512i ld(const void *p)
{
	return _mm512_loadu_si512(p);
}

/* ---------------- helpers ---------------- */

/* lane 4l + k of the result = sum of the four int32 of 128-bit lane l of s_k */
KQ_INLINE __m512i reduce4(__m512i s0, __m512i s1, __m512i s2, __m512i s3)
{
	const __m512i a =
	    _mm512_add_epi32(_mm512_unpacklo_epi32(s0, s1), _mm512_unpackhi_epi32(s0, s1));
	const __m512i b =
	    _mm512_add_epi32(_mm512_unpacklo_epi32(s2, s3), _mm512_unpackhi_epi32(s2, s3));
	return _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));
}

/* Stores the |n| first lanes of |v| at |y|, |stride| floats apart. */
KQ_INLINE void store_n(float *y, int64_t stride, __m128 v, int n)
{
	float f[4];
	_mm_storeu_ps(f, v);
	for (int k = 0; k < n; k++)
		y[k * stride] = f[k];
}

/* The 12 packed bytes of Q4_K/Q5_K 6-bit scales and mins -> 16 words: sc0-3,
 * mn0-3, sc4-7, mn4-7, then 16 zero words. */
KQ_INLINE __m512i k4_words(const uint8_t *s)
{
	uint64_t a;
	uint32_t b;
	memcpy(&a, s, 8);
	memcpy(&b, s + 8, 4);
	const uint64_t m6 = 0x3f3f3f3f3f3f3f3full, m4 = 0x0f0f0f0f0f0f0f0full,
	               m2 = 0x0303030303030303ull;
	const uint64_t lo = a & m6;
	const uint64_t bb = (uint64_t)b | ((uint64_t)(b >> 4) << 32);
	const uint64_t hi = (bb & m4) | (((a >> 6) & m2) << 4);
	return _mm512_zextsi256_si512(
	    _mm256_cvtepu8_epi16(_mm_set_epi64x((long long)hi, (long long)lo)));
}

/* One weight row's super-block, unpacked. */
struct kq_row {
	__m512i q[4]; /* quants 64c..64c+63 as unsigned bytes */
	__m512i sw;   /* scale words */
	__m512i mw;   /* min words (Q4_K/Q5_K) or -32 * scale (Q6_K) */
};

KQ_INLINE size_t kq_block_size(enum kq_kind k)
{
	return k == KQ_Q4_K   ? sizeof(struct kern_block_q4_K)
	       : k == KQ_Q5_K ? sizeof(struct kern_block_q5_K)
	                      : sizeof(struct kern_block_q6_K);
}

KQ_INLINE void kq_unpack(enum kq_kind kind, const void *blk, struct kq_row *w)
{
	const __m512i m0f = _mm512_set1_epi8(0x0F);
	if (kind == KQ_Q6_K) {
		const struct kern_block_q6_K *b = blk;
		const __m512i m30 = _mm512_set1_epi8(0x30);
		KQ_UNROLL
		for (int h = 0; h < 2; h++) {
			const __m512i l = ld(b->ql + 64 * h);
			const __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
			/* 2-bit highs of quants 0..31 in bits 0-1 and 4-5 of bytes
			 * 0..31, of quants 32..63 in bytes 32..63 */
			const __m512i hz = _mm512_inserti64x4(_mm512_castsi256_si512(qh),
			                                      _mm256_srli_epi16(qh, 2), 1);
			/* 0xE4: per bit, c ? a : b with c = 0x0F */
			w->q[2 * h] = _mm512_ternarylogic_epi32(
			    l, _mm512_and_si512(_mm512_slli_epi16(hz, 4), m30), m0f, 0xE4);
			w->q[2 * h + 1] = _mm512_ternarylogic_epi32(
			    _mm512_srli_epi16(l, 4), _mm512_and_si512(hz, m30), m0f, 0xE4);
		}
		w->sw = _mm512_zextsi256_si512(
		    _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales)));
		w->mw = _mm512_sub_epi16(_mm512_setzero_si512(), _mm512_slli_epi16(w->sw, 5));
		return;
	}
	const uint8_t *qs = kind == KQ_Q4_K ? ((const struct kern_block_q4_K *)blk)->qs
	                                    : ((const struct kern_block_q5_K *)blk)->qs;
	KQ_UNROLL
	for (int h = 0; h < 2; h++) {
		const __m512i v = ld(qs + 64 * h);
		const __m512i s = _mm512_srli_epi16(v, 4);
		w->q[2 * h] = _mm512_and_si512(_mm512_shuffle_i64x2(v, s, 0x44), m0f);
		w->q[2 * h + 1] = _mm512_and_si512(_mm512_shuffle_i64x2(v, s, 0xEE), m0f);
	}
	if (kind == KQ_Q5_K) {
		/* 5th bit of quant 64c + l (l < 32) is bit 2c of qh[l], of 64c + 32 + l bit 2c + 1
		 */
		const struct kern_block_q5_K *b = blk;
		const __m256i qh = _mm256_loadu_si256((const __m256i *)b->qh);
		const __m512i hz =
		    _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 1), 1);
		const __m512i m10 = _mm512_set1_epi8(0x10);
		w->q[0] = _mm512_or_si512(w->q[0], _mm512_and_si512(_mm512_slli_epi16(hz, 4), m10));
		w->q[1] = _mm512_or_si512(w->q[1], _mm512_and_si512(_mm512_slli_epi16(hz, 2), m10));
		w->q[2] = _mm512_or_si512(w->q[2], _mm512_and_si512(hz, m10));
		w->q[3] = _mm512_or_si512(w->q[3], _mm512_and_si512(_mm512_srli_epi16(hz, 2), m10));
	}
	w->sw = k4_words(kind == KQ_Q4_K ? ((const struct kern_block_q4_K *)blk)->scales
	                                 : ((const struct kern_block_q5_K *)blk)->scales);
	w->mw = w->sw;
}

KQ_INLINE __m512i perm_sw(const int16_t *idx, __m512i sw)
{
	return _mm512_permutexvar_epi16(ld(idx), sw);
}

/* One row against one token: the exact integer dot (summed over its lanes). */
KQ_INLINE __m512i kq_dot1(const struct kq_row *w, const __m512i s1[2], const int8_t *a)
{
	__m512i p[4];
	KQ_UNROLL
	for (int c = 0; c < 4; c++)
		p[c] = _mm512_dpbusd_epi32(zero_idiom(), w->q[c], ld(a + 64 * c));
	const __m512i s = _mm512_madd_epi16(_mm512_packs_epi32(p[0], p[1]), s1[0]);
	return _mm512_dpwssd_epi32(s, _mm512_packs_epi32(p[2], p[3]), s1[1]);
}

/* ---------------- Q4_K and Q5_K, rows in lanes ---------------- */

/* Lane r of a register is weight row r of a 16-row tile: the 16 rows' quants are
 * transposed once per super-block (4 quants of a row per int32 lane), each
 * vpdpbusd takes 4 activation quants broadcast from memory, four of them
 * chain over a 16-quant half sub-block (at most 16 * 15 * 127 < 32767) and
 * one vpdpwssd applies the 16 rows' scales to it (Q5_K, quants up to 31:
 * two chains of two per half). Every output is one lane:
 *     isum, imins exact per super-block;
 *     acc = fma(d_x, fnma(dmin_w, (float)imins, d_w * (float)isum), acc)
 * with no horizontal sum, so outputs do not depend on the tile shape.
 * The transpose (the 16 x 16 int32 shuffles and the nibble split) is paid
 * once per super-block for 32 tokens, taken in passes of 8 so that the
 * integer sums stay in registers (16 rows x 8/16/32 tokens, 512 tok x
 * 2048x2048, 1 thread: 240/290/340 GFLOP/s). */
#define Q4T_R 16
#define Q4T_T 32

/* 16 x 16 int32 transpose: on return r[d] lane i = old r[i] lane d. */
KQ_INLINE void transpose16(__m512i r[16])
{
	__m512i t[16], u[16];
	KQ_UNROLL
	for (int i = 0; i < 16; i += 2) {
		t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
		t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
	}
	KQ_UNROLL
	for (int g = 0; g < 16; g += 4) {
		u[g + 0] = _mm512_unpacklo_epi64(t[g + 0], t[g + 2]);
		u[g + 1] = _mm512_unpackhi_epi64(t[g + 0], t[g + 2]);
		u[g + 2] = _mm512_unpacklo_epi64(t[g + 1], t[g + 3]);
		u[g + 3] = _mm512_unpackhi_epi64(t[g + 1], t[g + 3]);
	}
	/* u[4g + c], 128-bit lane k = rows 4g..4g+3 of dword 4k + c */
	KQ_UNROLL
	for (int c = 0; c < 4; c++) {
		const __m512i v0 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x44);
		const __m512i v1 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xEE);
		const __m512i v2 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x44);
		const __m512i v3 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xEE);
		r[c] = _mm512_shuffle_i32x4(v0, v2, 0x88);
		r[4 + c] = _mm512_shuffle_i32x4(v0, v2, 0xDD);
		r[8 + c] = _mm512_shuffle_i32x4(v1, v3, 0x88);
		r[12 + c] = _mm512_shuffle_i32x4(v1, v3, 0xDD);
	}
}

/* Super-block |i| of 16 rows, transposed for the token loop. */
struct q4t_block {
	__m512i q[64];  /* quants 4j..4j+3 of row r in lane r, as the activation's dword j */
	__m512i sc[8];  /* scale of sub-block j, low word of lane r (high word 0) */
	__m512i mn[8];  /* min of sub-block j, both words of lane r */
	__m512 d, dmin; /* row r's d, dmin in lane r */
};

/* vpshufb control: byte j of each dword to its low word, zero-extended
 * (dup: to both words). */
KQ_INLINE __m512i q4t_pick(int j, int dup)
{
	int32_t v[16];
	for (int m = 0; m < 16; m++) {
		const uint32_t b = (uint32_t)(4 * (m % 4) + j);
		v[m] = (int32_t)(dup ? (0x80008000u | (b << 16) | b) : (0x80808000u | b));
	}
	return _mm512_loadu_si512(v);
}

KQ_INLINE void q4t_prepare(enum kq_kind kind, const char *const rp[16], int64_t i,
                           struct q4t_block *b)
{
	const __m512i m0f = _mm512_set1_epi8(0x0F);
	const size_t off = (size_t)i * kq_block_size(kind);
	const size_t qs_off = kind == KQ_Q4_K ? offsetof(struct kern_block_q4_K, qs)
	                                      : offsetof(struct kern_block_q5_K, qs);
	KQ_UNROLL
	for (int h = 0; h < 2; h++) {
		__m512i r[16];
		KQ_UNROLL
		for (int k = 0; k < 16; k++)
			r[k] = ld(rp[k] + off + qs_off + 64 * h);
		transpose16(r);
		/* qs dword D = 16h + d: low nibbles are quants 64(D/8) + 4(D%8),
		 * activation dword 16(D/8) + D%8; high nibbles 32 quants on */
		KQ_UNROLL
		for (int d = 0; d < 16; d++) {
			const int D = 16 * h + d, j = 16 * (D / 8) + D % 8;
			b->q[j] = _mm512_and_si512(r[d], m0f);
			b->q[j + 8] = _mm512_and_si512(_mm512_srli_epi32(r[d], 4), m0f);
		}
	}
	if (kind == KQ_Q5_K) {
		/* 5th bit of quant 32c + l is bit c of qh[l]: qh dword e of a row
		 * holds those of quant dwords 8c + e */
		__m512i r[16];
		KQ_UNROLL
		for (int k = 0; k < 16; k++)
			r[k] = _mm512_zextsi256_si512(_mm256_loadu_si256(
			    (const __m256i *)(rp[k] + off + offsetof(struct kern_block_q5_K, qh))));
		transpose16(r);
		const __m512i m10 = _mm512_set1_epi8(0x10);
		KQ_UNROLL
		for (int m = 0; m < 64; m++) {
			const int c = m / 8;
			const __m512i hb = c <= 4 ? _mm512_slli_epi32(r[m % 8], 4 - c)
			                          : _mm512_srli_epi32(r[m % 8], c - 4);
			b->q[m] =
			    _mm512_ternarylogic_epi32(b->q[m], hb, m10, 0xF8); /* a | (b & c) */
		}
	}
	/* d, dmin, scales: 16 bytes per row -> s[c] lane r = dword c of row r */
	__m512i z[4];
	KQ_UNROLL
	for (int k = 0; k < 4; k++) {
		__m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(rp[k] + off)));
		v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(rp[4 + k] + off)), 1);
		v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(rp[8 + k] + off)), 2);
		z[k] =
		    _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(rp[12 + k] + off)), 3);
	}
	const __m512i t0 = _mm512_unpacklo_epi32(z[0], z[1]),
	              t1 = _mm512_unpackhi_epi32(z[0], z[1]);
	const __m512i t2 = _mm512_unpacklo_epi32(z[2], z[3]),
	              t3 = _mm512_unpackhi_epi32(z[2], z[3]);
	const __m512i s0 = _mm512_unpacklo_epi64(t0, t2), s1 = _mm512_unpackhi_epi64(t0, t2);
	const __m512i s2 = _mm512_unpacklo_epi64(t1, t3), s3 = _mm512_unpackhi_epi64(t1, t3);
	b->d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(s0));
	b->dmin = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(s0, 16)));
	const __m512i m3f = _mm512_set1_epi8(0x3F), m30 = _mm512_set1_epi8(0x30);
	const __m512i sc03 = _mm512_and_si512(s1, m3f), mn03 = _mm512_and_si512(s2, m3f);
	/* 0xE4: per bit, c ? a : b with c = 0x0F */
	const __m512i sc47 = _mm512_ternarylogic_epi32(
	    s3, _mm512_and_si512(_mm512_srli_epi32(s1, 2), m30), m0f, 0xE4);
	const __m512i mn47 = _mm512_ternarylogic_epi32(
	    _mm512_srli_epi32(s3, 4), _mm512_and_si512(_mm512_srli_epi32(s2, 2), m30), m0f, 0xE4);
	KQ_UNROLL
	for (int j = 0; j < 4; j++) {
		b->sc[j] = _mm512_shuffle_epi8(sc03, q4t_pick(j, 0));
		b->sc[4 + j] = _mm512_shuffle_epi8(sc47, q4t_pick(j, 0));
		b->mn[j] = _mm512_shuffle_epi8(mn03, q4t_pick(j, 1));
		b->mn[4 + j] = _mm512_shuffle_epi8(mn47, q4t_pick(j, 1));
	}
}

KQ_INLINE __m512i bcast32(const void *p)
{
	int32_t v;
	memcpy(&v, p, 4);
	return _mm512_set1_epi32(v);
}

/* Rows rp[0..15] x tokens [0, n_t) (n_t <= Q4T_T), all super-blocks. */
KQ_INLINE void q4t_tile(enum kq_kind kind, int64_t nb, const char *const rp[16], const char *x,
                        size_t x_row, const int n_t, __m512 acc[Q4T_T])
{
	struct q4t_block b;
	for (int64_t i = 0; i < nb; i++) {
		q4t_prepare(kind, rp, i, &b);
		KQ_UNROLL
		for (int p = 0; p < Q4T_T; p += 8) {
			if (p >= n_t)
				break;
			const int np = n_t - p;
			const struct kern_block_q8_K *yb[8];
			__m512i s[8], m[8];
			KQ_UNROLL
			for (int t = 0; t < 8; t++) {
				yb[t] =
				    (const struct kern_block_q8_K *)(x + (size_t)(p + t) * x_row) +
				    i;
				s[t] = _mm512_setzero_si512();
				m[t] = _mm512_setzero_si512();
			}
			KQ_UNROLL
			for (int h = 0; h < 16; h++) {
				const __m512i w0 = b.q[4 * h], w1 = b.q[4 * h + 1],
				              w2 = b.q[4 * h + 2], w3 = b.q[4 * h + 3];
				KQ_UNROLL
				for (int t = 0; t < 8; t++) {
					if (t >= np)
						break;
					const int8_t *a = yb[t]->qs + 16 * h;
					__m512i c =
					    _mm512_dpbusd_epi32(zero_idiom(), w0, bcast32(a));
					c = _mm512_dpbusd_epi32(c, w1, bcast32(a + 4));
					if (kind == KQ_Q5_K) {
						/* 8 quants up to 31: 8 * 31 * 127 < 32767 */
						s[t] = _mm512_dpwssd_epi32(s[t], c, b.sc[h / 2]);
						c = _mm512_dpbusd_epi32(zero_idiom(), w2,
						                        bcast32(a + 8));
					} else {
						c = _mm512_dpbusd_epi32(c, w2, bcast32(a + 8));
					}
					c = _mm512_dpbusd_epi32(c, w3, bcast32(a + 12));
					s[t] = _mm512_dpwssd_epi32(s[t], c, b.sc[h / 2]);
				}
			}
			KQ_UNROLL
			for (int j = 0; j < 8; j++) {
				const __m512i mn = b.mn[j];
				KQ_UNROLL
				for (int t = 0; t < 8; t++) {
					if (t >= np)
						break;
					m[t] = _mm512_dpwssd_epi32(m[t], mn,
					                           bcast32(yb[t]->bsums + 2 * j));
				}
			}
			KQ_UNROLL
			for (int t = 0; t < 8; t++) {
				if (t >= np)
					break;
				const __m512 f =
				    _mm512_fnmadd_ps(b.dmin, _mm512_cvtepi32_ps(m[t]),
				                     _mm512_mul_ps(b.d, _mm512_cvtepi32_ps(s[t])));
				acc[p + t] =
				    _mm512_fmadd_ps(_mm512_set1_ps(yb[t]->d), f, acc[p + t]);
			}
		}
	}
}

/* Decode streams the weights once. Asking for the same block of the row
 * one 16-row tile ahead as each block is read spreads the requests over the
 * walk, where kern_matmul()'s prefetch of a whole tile before calling it
 * comes in one burst (Q4_K rows of 2048 / 5632 columns from memory, 1
 * thread: 8.7 -> 10.0 / 8.4 -> 11.4 GB/s; and then 2-10% more with that
 * burst gone: kern_matmul leaves one-token prefetching to the tiles). Prefetches do not
 * fault, so the last tile may point past the matrix. */
KQ_INLINE void kq_prefetch_next_tile(const char *blk, size_t bs, size_t w_row)
{
	const char *p = blk + Q4T_R * w_row;
	KQ_UNROLL
	for (size_t o = 0; o < bs; o += 64)
		_mm_prefetch(p + o, _MM_HINT_T0);
	_mm_prefetch(p + bs - 1, _MM_HINT_T0);
}

/* One token (decode): the same per-lane float operations as q4t_tile, but
 * 4 rows at a time in lockstep (4 weight streams, as the hardware
 * prefetcher likes) with each row's exact integers from kq_dot1. */
static inline __attribute__((always_inline)) void q4t_decode(enum kq_kind kind, int64_t nb,
                                                             const char *w, size_t w_row, int n_r,
                                                             const void *x, float *y)
{
	const struct kern_block_q8_K *xb = x;
	const size_t bs = kq_block_size(kind);
	for (int g = 0; 4 * g < n_r; g++) {
		const char *rb[4];
		KQ_UNROLL
		for (int r = 0; r < 4; r++)
			rb[r] = w + (size_t)(4 * g + r < n_r ? 4 * g + r : n_r - 1) * w_row;
		__m128 acc = _mm_setzero_ps();
		for (int64_t i = 0; i < nb; i++) {
			const __m512i bz = _mm512_permutexvar_epi32(
			    ld(KQ_BZ), _mm512_castsi256_si512(
			                   _mm256_loadu_si256((const __m256i *)xb[i].bsums)));
			__m512i s[4], m[4];
			uint32_t dd[4];
			KQ_UNROLL
			for (int r = 0; r < 4; r++) {
				const char *blk = rb[r] + (size_t)i * bs;
				kq_prefetch_next_tile(blk, bs, w_row);
				struct kq_row q;
				kq_unpack(kind, blk, &q);
				const __m512i s1[2] = {perm_sw(Q4K_S1[0], q.sw),
				                       perm_sw(Q4K_S1[1], q.sw)};
				s[r] = kq_dot1(&q, s1, xb[i].qs);
				m[r] = _mm512_madd_epi16(perm_sw(Q4K_MZ, q.mw), bz);
				memcpy(&dd[r], blk, 4);
			}
			/* lane r = row r's integers */
			const __m512i s4 = reduce4(s[0], s[1], s[2], s[3]),
			              m4 = reduce4(m[0], m[1], m[2], m[3]);
			const __m256i s8 = _mm256_add_epi32(_mm512_castsi512_si256(s4),
			                                    _mm512_extracti64x4_epi64(s4, 1));
			const __m256i m8 = _mm256_add_epi32(_mm512_castsi512_si256(m4),
			                                    _mm512_extracti64x4_epi64(m4, 1));
			const __m128i si = _mm_add_epi32(_mm256_castsi256_si128(s8),
			                                 _mm256_extracti128_si256(s8, 1));
			const __m128i mi = _mm_add_epi32(_mm256_castsi256_si128(m8),
			                                 _mm256_extracti128_si256(m8, 1));
			/* d0 dmin0 d1 dmin1 ... -> [d0..d3], [dmin0..dmin3] */
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

KQ_INLINE void q4t_rows_any(enum kq_kind kind, int64_t n, const void *w, size_t w_row, int n_r,
                            const void *x, size_t x_row, int n_t, float *y, int64_t y_stride)
{
	const int64_t nb = n / KERN_QK_K;
	const char *rp[16];
	KQ_UNROLL
	for (int r = 0; r < 16; r++)
		rp[r] = (const char *)w + (size_t)(r < n_r ? r : n_r - 1) * w_row;
	__m512 acc[Q4T_T];
	KQ_UNROLL
	for (int t = 0; t < Q4T_T; t++)
		acc[t] = _mm512_setzero_ps();
	if (n_t == 1) {
		q4t_decode(kind, nb, w, w_row, n_r, x, y);
		return;
	}
	if (n_t == Q4T_T)
		q4t_tile(kind, nb, rp, x, x_row, Q4T_T, acc);
	else
		q4t_tile(kind, nb, rp, x, x_row, n_t, acc);
	const __mmask16 k = (__mmask16)((1u << n_r) - 1);
	for (int t = 0; t < n_t; t++)
		_mm512_mask_storeu_ps(y + t * y_stride, k, acc[t]);
}

static void tile_q4_K_rows(int64_t n, const void *w, size_t w_row, int n_r, const void *x,
                           size_t x_row, int n_t, float *y, int64_t y_stride)
{
	q4t_rows_any(KQ_Q4_K, n, w, w_row, n_r, x, x_row, n_t, y, y_stride);
}

static void tile_q5_K_rows(int64_t n, const void *w, size_t w_row, int n_r, const void *x,
                           size_t x_row, int n_t, float *y, int64_t y_stride)
{
	q4t_rows_any(KQ_Q5_K, n, w, w_row, n_r, x, x_row, n_t, y, y_stride);
}

/* ---------------- Q6_K, rows in lanes ---------------- */

/* The same 16-row tile for Q6_K: quants u = quant + 32 (0..63) transposed
 * with their 2-bit highs; a 4-quant vpdpbusd is already up to 4 * 63 * 127,
 * so each one gets its group's scale through a vpdpwssd, and the -32 is
 * applied exactly through the tokens' 16-quant sums. Every output is one
 * lane: acc = fma(d_x, d_w * (float)isum, acc). */
struct q6t_block {
	__m512i q[64];  /* u of quants 4m..4m+3 of row r in lane r */
	__m512i sc[16]; /* scale of group g, sign-extended in the low word of lane r */
	__m512i nsc[8]; /* -32 * scales 2p, 2p+1 in the two words of lane r */
	__m512 d;
};

KQ_INLINE void q6t_prepare(const char *const rp[16], int64_t i, struct q6t_block *b)
{
	const __m512i m0f = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
	const size_t off = (size_t)i * sizeof(struct kern_block_q6_K);
	__m512i qh[16];
	KQ_UNROLL
	for (int k = 0; k < 16; k++)
		qh[k] = ld(rp[k] + off + offsetof(struct kern_block_q6_K, qh));
	transpose16(qh);
	KQ_UNROLL
	for (int h = 0; h < 2; h++) {
		__m512i r[16];
		KQ_UNROLL
		for (int k = 0; k < 16; k++)
			r[k] = ld(rp[k] + off + offsetof(struct kern_block_q6_K, ql) + 64 * h);
		transpose16(r);
		/* ql bytes 64h + 4d.. hold quants 128h + 32k + l (k = kl low
		 * nibbles, kl + 2 high), their highs bits 2k of qh byte 32h + l */
		KQ_UNROLL
		for (int d = 0; d < 16; d++) {
			const int kl = 4 * d < 32 ? 0 : 1, l = (4 * d) % 32, e = 8 * h + l / 4;
			const __m512i hlo =
			    kl == 0 ? _mm512_slli_epi32(qh[e], 4) : _mm512_slli_epi32(qh[e], 2);
			const __m512i hhi = kl == 0 ? qh[e] : _mm512_srli_epi32(qh[e], 2);
			/* 0xE4: per bit, c ? a : b with c = 0x0F */
			b->q[32 * h + 8 * kl + l / 4] =
			    _mm512_ternarylogic_epi32(r[d], _mm512_and_si512(hlo, m30), m0f, 0xE4);
			b->q[32 * h + 8 * (kl + 2) + l / 4] = _mm512_ternarylogic_epi32(
			    _mm512_srli_epi32(r[d], 4), _mm512_and_si512(hhi, m30), m0f, 0xE4);
		}
	}
	/* scales: 16 bytes per row -> s[c] lane r = scales 4c..4c+3 of row r */
	const size_t so = off + offsetof(struct kern_block_q6_K, scales);
	__m512i z[4];
	KQ_UNROLL
	for (int k = 0; k < 4; k++) {
		__m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(rp[k] + so)));
		v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(rp[4 + k] + so)), 1);
		v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(rp[8 + k] + so)), 2);
		z[k] =
		    _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(rp[12 + k] + so)), 3);
	}
	const __m512i t0 = _mm512_unpacklo_epi32(z[0], z[1]),
	              t1 = _mm512_unpackhi_epi32(z[0], z[1]);
	const __m512i t2 = _mm512_unpacklo_epi32(z[2], z[3]),
	              t3 = _mm512_unpackhi_epi32(z[2], z[3]);
	const __m512i s[4] = {_mm512_unpacklo_epi64(t0, t2), _mm512_unpackhi_epi64(t0, t2),
	                      _mm512_unpacklo_epi64(t1, t3), _mm512_unpackhi_epi64(t1, t3)};
	const __m512i lo16 = _mm512_set1_epi32(0xFFFF);
	KQ_UNROLL
	for (int g = 0; g < 16; g++)
		b->sc[g] = _mm512_and_si512(
		    _mm512_srai_epi32(_mm512_slli_epi32(s[g / 4], 24 - 8 * (g % 4)), 24), lo16);
	KQ_UNROLL
	for (int p = 0; p < 8; p++) {
		const __m512i x =
		    _mm512_or_si512(b->sc[2 * p], _mm512_slli_epi32(b->sc[2 * p + 1], 16));
		b->nsc[p] = _mm512_sub_epi16(_mm512_setzero_si512(), _mm512_slli_epi16(x, 5));
	}
	kern_f16 dd[16];
	KQ_UNROLL
	for (int k = 0; k < 16; k++)
		memcpy(&dd[k], rp[k] + off + offsetof(struct kern_block_q6_K, d), 2);
	b->d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)dd));
}

KQ_INLINE void q6t_tile(int64_t nb, const char *const rp[16], const char *x, size_t x_row,
                        const int n_t, __m512 acc[Q4T_T])
{
	struct q6t_block b;
	for (int64_t i = 0; i < nb; i++) {
		q6t_prepare(rp, i, &b);
		KQ_UNROLL
		for (int p = 0; p < Q4T_T; p += 8) {
			if (p >= n_t)
				break;
			const int np = n_t - p;
			const struct kern_block_q8_K *yb[8];
			__m512i s[8];
			KQ_UNROLL
			for (int t = 0; t < 8; t++) {
				yb[t] =
				    (const struct kern_block_q8_K *)(x + (size_t)(p + t) * x_row) +
				    i;
				s[t] = _mm512_setzero_si512();
			}
			KQ_UNROLL
			for (int g = 0; g < 16; g++) {
				const __m512i w0 = b.q[4 * g], w1 = b.q[4 * g + 1],
				              w2 = b.q[4 * g + 2], w3 = b.q[4 * g + 3];
				KQ_UNROLL
				for (int t = 0; t < 8; t++) {
					if (t >= np)
						break;
					const int8_t *a = yb[t]->qs + 16 * g;
					s[t] = _mm512_dpwssd_epi32(
					    s[t], _mm512_dpbusd_epi32(zero_idiom(), w0, bcast32(a)),
					    b.sc[g]);
					s[t] = _mm512_dpwssd_epi32(
					    s[t],
					    _mm512_dpbusd_epi32(zero_idiom(), w1, bcast32(a + 4)),
					    b.sc[g]);
					s[t] = _mm512_dpwssd_epi32(
					    s[t],
					    _mm512_dpbusd_epi32(zero_idiom(), w2, bcast32(a + 8)),
					    b.sc[g]);
					s[t] = _mm512_dpwssd_epi32(
					    s[t],
					    _mm512_dpbusd_epi32(zero_idiom(), w3, bcast32(a + 12)),
					    b.sc[g]);
				}
			}
			KQ_UNROLL
			for (int q = 0; q < 8; q++) {
				const __m512i nsc = b.nsc[q];
				KQ_UNROLL
				for (int t = 0; t < 8; t++) {
					if (t >= np)
						break;
					s[t] = _mm512_dpwssd_epi32(s[t], nsc,
					                           bcast32(yb[t]->bsums + 2 * q));
				}
			}
			KQ_UNROLL
			for (int t = 0; t < 8; t++) {
				if (t >= np)
					break;
				acc[p + t] = _mm512_fmadd_ps(
				    _mm512_set1_ps(yb[t]->d),
				    _mm512_mul_ps(b.d, _mm512_cvtepi32_ps(s[t])), acc[p + t]);
			}
		}
	}
}

/* One token: 4 rows in lockstep through kq_dot1, then q6t_tile's lane
 * float operations. */
static void q6t_decode(int64_t nb, const char *w, size_t w_row, int n_r, const void *x, float *y)
{
	const struct kern_block_q8_K *xb = x;
	const size_t bs = sizeof(struct kern_block_q6_K);
	for (int g = 0; 4 * g < n_r; g++) {
		const char *rb[4];
		KQ_UNROLL
		for (int r = 0; r < 4; r++)
			rb[r] = w + (size_t)(4 * g + r < n_r ? 4 * g + r : n_r - 1) * w_row;
		__m128 acc = _mm_setzero_ps();
		for (int64_t i = 0; i < nb; i++) {
			const __m512i bz = _mm512_permutexvar_epi32(
			    ld(KQ_BZ), _mm512_castsi256_si512(
			                   _mm256_loadu_si256((const __m256i *)xb[i].bsums)));
			__m512i s[4];
			kern_f16 dd[8] = {0};
			KQ_UNROLL
			for (int r = 0; r < 4; r++) {
				const char *blk = rb[r] + (size_t)i * bs;
				kq_prefetch_next_tile(blk, bs, w_row);
				struct kq_row q;
				kq_unpack(KQ_Q6_K, blk, &q);
				const __m512i s1[2] = {perm_sw(Q6K_S1[0], q.sw),
				                       perm_sw(Q6K_S1[1], q.sw)};
				s[r] =
				    _mm512_add_epi32(kq_dot1(&q, s1, xb[i].qs),
				                     _mm512_madd_epi16(perm_sw(Q6K_MZ, q.mw), bz));
				memcpy(&dd[r], blk + offsetof(struct kern_block_q6_K, d), 2);
			}
			const __m512i s4 = reduce4(s[0], s[1], s[2], s[3]);
			const __m256i s8 = _mm256_add_epi32(_mm512_castsi512_si256(s4),
			                                    _mm512_extracti64x4_epi64(s4, 1));
			const __m128i si = _mm_add_epi32(_mm256_castsi256_si128(s8),
			                                 _mm256_extracti128_si256(s8, 1));
			const __m128 d4 = _mm_cvtph_ps(_mm_loadu_si128((const __m128i *)dd));
			acc = _mm_fmadd_ps(_mm_set1_ps(xb[i].d),
			                   _mm_mul_ps(d4, _mm_cvtepi32_ps(si)), acc);
		}
		const int nr = n_r - 4 * g < 4 ? n_r - 4 * g : 4;
		if (nr == 4)
			_mm_storeu_ps(y + 4 * g, acc);
		else
			store_n(y + 4 * g, 1, acc, nr);
	}
}

static void tile_q6_K_rows(int64_t n, const void *w, size_t w_row, int n_r, const void *x,
                           size_t x_row, int n_t, float *y, int64_t y_stride)
{
	const int64_t nb = n / KERN_QK_K;
	if (n_t == 1) {
		q6t_decode(nb, w, w_row, n_r, x, y);
		return;
	}
	const char *rp[16];
	KQ_UNROLL
	for (int r = 0; r < 16; r++)
		rp[r] = (const char *)w + (size_t)(r < n_r ? r : n_r - 1) * w_row;
	__m512 acc[Q4T_T];
	KQ_UNROLL
	for (int t = 0; t < Q4T_T; t++)
		acc[t] = _mm512_setzero_ps();
	if (n_t == Q4T_T)
		q6t_tile(nb, rp, x, x_row, Q4T_T, acc);
	else
		q6t_tile(nb, rp, x, x_row, n_t, acc);
	const __mmask16 k = (__mmask16)((1u << n_r) - 1);
	for (int t = 0; t < n_t; t++)
		_mm512_mask_storeu_ps(y + t * y_stride, k, acc[t]);
}

/* ---------------- entry points ---------------- */

int kern_tiles_kq_avx512(struct kern_dispatch *d)
{
	d->tile[ML_DTYPE_Q4_K] = (struct kern_tile){tile_q4_K_rows, Q4T_R, Q4T_T};
	d->tile[ML_DTYPE_Q5_K] = (struct kern_tile){tile_q5_K_rows, Q4T_R, Q4T_T};
	d->tile[ML_DTYPE_Q6_K] = (struct kern_tile){tile_q6_K_rows, Q4T_R, Q4T_T};
	return 3;
}

#else /* not x86: kern.c never calls this; keeps the build portable */
#include "kernels/kern_impl.h"

int kern_tiles_kq_avx512(struct kern_dispatch *d)
{
	(void)d;
	return 0;
}
#endif
