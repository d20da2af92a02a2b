/* AVX-512 tile kernels (struct kern_tile) for F32, F16 and BF16 weights.
 * Compiled with the AVX512 flags of the Makefile; called by kern_init()
 * only when the CPU has them.
 *
 * A register tile is up to TILE_R weight rows times TILE_T activation
 * rows, one 16-lane f32 accumulator per output (24 of the 32 zmm
 * registers). Each step of 16 columns converts every weight vector and
 * every activation vector of the tile to f32 once (vcvtph2ps, or a shift
 * for BF16) and does TILE_R * TILE_T FMAs with them, so conversion costs
 * (TILE_R + TILE_T) per TILE_R * TILE_T products instead of 2 per product
 * as in a row dot. One token (decode) is a 6 x 1 tile streaming 6 rows; a
 * batch converts the weights once per call of up to BIG_T tokens (below).
 *
 * Measured on a Xeon (Sapphire Rapids) VM, one thread, F16: 512 tokens x
 * 2048 x 2048 through kern_matmul 38 GFLOP/s with the row dots, 110 with
 * the register tiles, 130 with the converted weights (F32 in L1 tops out
 * at about 135 on this machine); decode from memory 11 GB/s like the row
 * dot (11.1 vs 10.0-10.4 on rows of 5632). Not measured on AMD Zen 4, where
 * 512-bit operations are split in two: the tile shape there is a guess
 * (FMA-bound shapes carry over; the conversions are cheaper relative to
 * FMAs, so the gain from converting weights once should be smaller).
 *
 * Fidelity: products are exact in f32 and accumulate with FMA, like the
 * AVX2 vec_dot (no vdpbf16ps, no F16 arithmetic). Each output has its own
 * accumulator, the same lane layout (column i in lane i % 16), a masked
 * final step for the columns past the last multiple of 16 and one fixed
 * horizontal sum, so its bits do not depend on the tile shape it was
 * computed in. */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "kernels/kern_impl.h"

/* 6 x 4 measured against 5 x 5, 4 x 6, 8 x 3, 7 x 3 and 4 x 4 (64 tokens x
 * 2048 x 2048 F16, one thread, register tiles only: 109-113 vs 99-115
 * GFLOP/s, within noise of 5 x 5 and 4 x 6) and, with the weights converted
 * once per call, against 8 x 3 (125-130 vs 106). */
/* Bytes ahead of the current column a one-token tile prefetches in each
 * row (1B F16 model, 1 thread, tg: 5.75 t/s with kern_matmul's whole-tile
 * prefetch, 6.45 with none, 6.8 with 1 KiB in-loop, 6.2 with 2 KiB). */
#define TILE_PF_BYTES 1024
#define TILE_R 6
#define TILE_T 4

enum tile_kind { TILE_F32, TILE_F16, TILE_BF16 };

#define ALWAYS_INLINE inline __attribute__((always_inline))

/* 16 elements at |p| as f32. */
static ALWAYS_INLINE __m512 load16(enum tile_kind kind, const char *p)
{
	switch (kind) {
	case TILE_F32:
		return _mm512_loadu_ps(p);
	case TILE_F16:
		return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
	default:
		return _mm512_castsi512_ps(
			_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
	}
}

/* The elements of |m| at |p| as f32, zeros elsewhere (nothing else read). */
static ALWAYS_INLINE __m512 load16_mask(enum tile_kind kind, const char *p, __mmask16 m)
{
	switch (kind) {
	case TILE_F32:
		return _mm512_maskz_loadu_ps(m, p);
	case TILE_F16:
		return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
	default:
		return _mm512_castsi512_ps(
			_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
	}
}

/* Fixed-order horizontal sum: halves, quarters, then the AVX2 hsum's
 * 128-bit steps. */
static ALWAYS_INLINE float hsum16(__m512 v)
{
	const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
	__m128 r = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
	r = _mm_add_ps(r, _mm_movehl_ps(r, r));
	r = _mm_add_ss(r, _mm_movehdup_ps(r));
	return _mm_cvtss_f32(r);
}

/* The R x T tile; R and T are constants in each instantiation below, so the
 * accumulator arrays live in registers. */
static ALWAYS_INLINE void tile_rt(enum tile_kind kind, int R, int T, int64_t n, const char *w,
				  size_t w_row, const char *x, size_t x_row, float *y,
				  int64_t y_stride)
{
	const size_t es = kind == TILE_F32 ? 4 : 2;
	__m512 acc[TILE_R][TILE_T];
	_Pragma("GCC unroll 8")
	for (int r = 0; r < R; r++)
		_Pragma("GCC unroll 8")
		for (int t = 0; t < T; t++)
			acc[r][t] = _mm512_setzero_ps();
	int64_t i = 0;
	for (; i + 16 <= n; i += 16) {
		__m512 xv[TILE_T];
		_Pragma("GCC unroll 8")
		for (int t = 0; t < T; t++)
			xv[t] = load16(kind, x + t * x_row + (size_t)i * es);
		_Pragma("GCC unroll 8")
		for (int r = 0; r < R; r++) {
			/* one token streams the rows once: keep a KiB of each in
			 * flight */
			if (T == 1 && ((size_t)i * es) % 64 == 0)
				_mm_prefetch(w + r * w_row + (size_t)i * es + TILE_PF_BYTES, _MM_HINT_T0);
			const __m512 wv = load16(kind, w + r * w_row + (size_t)i * es);
			_Pragma("GCC unroll 8")
			for (int t = 0; t < T; t++)
				acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
		}
	}
	if (i < n) {
		const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
		__m512 xv[TILE_T];
		_Pragma("GCC unroll 8")
		for (int t = 0; t < T; t++)
			xv[t] = load16_mask(kind, x + t * x_row + (size_t)i * es, m);
		_Pragma("GCC unroll 8")
		for (int r = 0; r < R; r++) {
			const __m512 wv = load16_mask(kind, w + r * w_row + (size_t)i * es, m);
			_Pragma("GCC unroll 8")
			for (int t = 0; t < T; t++)
				acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
		}
	}
	_Pragma("GCC unroll 8")
	for (int r = 0; r < R; r++)
		_Pragma("GCC unroll 8")
		for (int t = 0; t < T; t++)
			y[t * y_stride + r] = hsum16(acc[r][t]);
}

/* Batches of tokens: the weights of a TILE_R x TILE_T register tile are
 * converted to f32 once per call instead of once per TILE_T tokens. A call
 * of BIG_T tokens converts each chunk of KC columns of its TILE_R rows into
 * |wf| (12 KiB, stays in L1) and runs the register tiles over all its tokens
 * from there, keeping their accumulators in |accs| between chunks. Per 16
 * columns a tile then converts only its 4 activation vectors (10 before).
 * Each output still sees the same FMAs in the same order (conversions are
 * exact, the accumulator only passes through memory), so these outputs are
 * the bits tile_rt() gives. */
#define BIG_T 64
#define BIG_MIN_T 8 /* fewer tokens: tile_rt() directly */
#define KC 512

/* Tokens [0, T) of a TILE_R-row register tile over one chunk of |nc|
 * columns: |wf| the chunk's converted rows, |x| the tokens at the chunk's
 * first column, |acc| the tile's accumulators (read and written back). */
static ALWAYS_INLINE void tile_pre(enum tile_kind kind, int T, int64_t nc, const float *wf,
				   const char *x, size_t x_row, __m512 acc_mem[TILE_R][TILE_T])
{
	const size_t es = kind == TILE_F32 ? 4 : 2;
	__m512 acc[TILE_R][TILE_T];
	_Pragma("GCC unroll 8")
	for (int r = 0; r < TILE_R; r++)
		_Pragma("GCC unroll 8")
		for (int t = 0; t < T; t++)
			acc[r][t] = acc_mem[r][t];
	int64_t i = 0;
	for (; i + 16 <= nc; i += 16) {
		__m512 xv[TILE_T];
		_Pragma("GCC unroll 8")
		for (int t = 0; t < T; t++)
			xv[t] = load16(kind, x + t * x_row + (size_t)i * es);
		_Pragma("GCC unroll 8")
		for (int r = 0; r < TILE_R; r++) {
			const __m512 wv = _mm512_load_ps(wf + r * KC + i);
			_Pragma("GCC unroll 8")
			for (int t = 0; t < T; t++)
				acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
		}
	}
	if (i < nc) {
		const __mmask16 m = (__mmask16)((1u << (nc - i)) - 1);
		__m512 xv[TILE_T];
		_Pragma("GCC unroll 8")
		for (int t = 0; t < T; t++)
			xv[t] = load16_mask(kind, x + t * x_row + (size_t)i * es, m);
		_Pragma("GCC unroll 8")
		for (int r = 0; r < TILE_R; r++) {
			const __m512 wv = _mm512_load_ps(wf + r * KC + i);
			_Pragma("GCC unroll 8")
			for (int t = 0; t < T; t++)
				acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
		}
	}
	_Pragma("GCC unroll 8")
	for (int r = 0; r < TILE_R; r++)
		_Pragma("GCC unroll 8")
		for (int t = 0; t < T; t++)
			acc_mem[r][t] = acc[r][t];
}

typedef void (*tile_pre_fn)(int64_t nc, const float *wf, const char *x, size_t x_row,
			    __m512 acc[TILE_R][TILE_T]);

/* TILE_R rows times n_t <= BIG_T tokens through tile_pre(); |pre| holds its
 * instantiations for 1..TILE_T tokens. */
static ALWAYS_INLINE void tile_big(enum tile_kind kind, const tile_pre_fn pre[TILE_T], int64_t n,
				   const char *w, size_t w_row, const char *x, size_t x_row,
				   int n_t, float *y, int64_t y_stride)
{
	const size_t es = kind == TILE_F32 ? 4 : 2;
	float wf[TILE_R * KC] __attribute__((aligned(64)));
	__m512 accs[BIG_T / TILE_T][TILE_R][TILE_T];
	const int n_mt = (n_t + TILE_T - 1) / TILE_T;
	for (int k = 0; k < n_mt; k++)
		for (int r = 0; r < TILE_R; r++)
			for (int t = 0; t < TILE_T; t++)
				accs[k][r][t] = _mm512_setzero_ps();
	for (int64_t c0 = 0; c0 < n; c0 += KC) {
		const int64_t nc = n - c0 < KC ? n - c0 : KC;
		for (int r = 0; r < TILE_R; r++) {
			const char *wr = w + r * w_row + (size_t)c0 * es;
			int64_t i = 0;
			for (; i + 16 <= nc; i += 16)
				_mm512_store_ps(wf + r * KC + i, load16(kind, wr + (size_t)i * es));
			if (i < nc)
				_mm512_store_ps(wf + r * KC + i,
						load16_mask(kind, wr + (size_t)i * es,
							    (__mmask16)((1u << (nc - i)) - 1)));
		}
		/* The weights are read from memory here for the first time
		 * (once per token block): ask for the next chunk, or the first
		 * chunk of the rows after these (most likely the next call), while
		 * this one is multiplied. Prefetches do not fault past the end. */
		const char *nw = c0 + KC < n ? w + (size_t)(c0 + KC) * es : w + TILE_R * w_row;
		const size_t nb = (size_t)(c0 + KC < n ? (n - c0 - KC < KC ? n - c0 - KC : KC)
						       : (n < KC ? n : KC)) * es;
		for (int r = 0; r < TILE_R; r++)
			for (size_t b = 0; b < nb; b += 64)
				_mm_prefetch(nw + r * w_row + b, _MM_HINT_T0);
		for (int k = 0; k < n_mt; k++) {
			const int nt = n_t - k * TILE_T < TILE_T ? n_t - k * TILE_T : TILE_T;
			pre[nt - 1](nc, wf, x + (size_t)k * TILE_T * x_row + (size_t)c0 * es, x_row,
				    accs[k]);
		}
	}
	for (int k = 0; k < n_mt; k++) {
		const int nt = n_t - k * TILE_T < TILE_T ? n_t - k * TILE_T : TILE_T;
		for (int r = 0; r < TILE_R; r++)
			for (int t = 0; t < nt; t++)
				y[(k * TILE_T + t) * y_stride + r] = hsum16(accs[k][r][t]);
	}
}

typedef void (*tile_rt_fn)(int64_t n, const char *w, size_t w_row, const char *x, size_t x_row,
			   float *y, int64_t y_stride);

#define TILE_FN(kind, K, R, T)                                                                    \
	static void tile_##K##_##R##x##T(int64_t n, const char *w, size_t w_row, const char *x,  \
					 size_t x_row, float *y, int64_t y_stride)                \
	{                                                                                         \
		tile_rt(kind, R, T, n, w, w_row, x, x_row, y, y_stride);                           \
	}
#define TILE_PRE_FN(kind, K, T)                                                                   \
	static void tile_pre_##K##_##T(int64_t nc, const float *wf, const char *x, size_t x_row, \
				       __m512 acc[TILE_R][TILE_T])                                \
	{                                                                                         \
		tile_pre(kind, T, nc, wf, x, x_row, acc);                                          \
	}
#define TILE_FNS_R(kind, K, R)                                                                    \
	TILE_FN(kind, K, R, 1) TILE_FN(kind, K, R, 2) TILE_FN(kind, K, R, 3) TILE_FN(kind, K, R, 4)
#define TILE_FNS(kind, K)                                                                         \
	TILE_FNS_R(kind, K, 1) TILE_FNS_R(kind, K, 2) TILE_FNS_R(kind, K, 3)                      \
	TILE_FNS_R(kind, K, 4) TILE_FNS_R(kind, K, 5) TILE_FNS_R(kind, K, 6)                      \
	TILE_PRE_FN(kind, K, 1) TILE_PRE_FN(kind, K, 2) TILE_PRE_FN(kind, K, 3)                   \
	TILE_PRE_FN(kind, K, 4)
#define TILE_ROW(K, R) {tile_##K##_##R##x1, tile_##K##_##R##x2, tile_##K##_##R##x3, tile_##K##_##R##x4}
#define TILE_TABLE(kind, K)                                                                       \
	static const tile_rt_fn tiles_##K[TILE_R][TILE_T] = {                                     \
		TILE_ROW(K, 1), TILE_ROW(K, 2), TILE_ROW(K, 3),                                   \
		TILE_ROW(K, 4), TILE_ROW(K, 5), TILE_ROW(K, 6),                                   \
	};                                                                                        \
	static const tile_pre_fn tiles_pre_##K[TILE_T] = {tile_pre_##K##_1, tile_pre_##K##_2,     \
							   tile_pre_##K##_3, tile_pre_##K##_4};   \
	static void tile_##K(int64_t n, const void *w, size_t w_row, int n_r, const void *x,      \
			     size_t x_row, int n_t, float *y, int64_t y_stride)                   \
	{                                                                                         \
		const char *xb = x;                                                               \
		if (n_r == TILE_R && n_t >= BIG_MIN_T) {                                          \
			tile_big(kind, tiles_pre_##K, n, w, w_row, xb, x_row, n_t, y, y_stride);  \
			return;                                                                   \
		}                                                                                 \
		for (int t = 0; t < n_t; t += TILE_T) {                                           \
			const int nt = n_t - t < TILE_T ? n_t - t : TILE_T;                       \
			tiles_##K[n_r - 1][nt - 1](n, w, w_row, xb + t * x_row, x_row,            \
						   y + t * y_stride, y_stride);                   \
		}                                                                                 \
	}

static_assert(TILE_R == 6 && TILE_T == 4, "the tables below spell out 6 x 4");
static_assert(BIG_T % TILE_T == 0 && KC % 16 == 0, "whole register tiles and vectors");

TILE_FNS(TILE_F32, f32)
TILE_FNS(TILE_F16, f16)
TILE_FNS(TILE_BF16, bf16)
TILE_TABLE(TILE_F32, f32)
TILE_TABLE(TILE_F16, f16)
TILE_TABLE(TILE_BF16, bf16)

int kern_tiles_f16_avx512(struct kern_dispatch *d)
{
	d->tile[ML_DTYPE_F32] = (struct kern_tile){tile_f32, TILE_R, BIG_T};
	d->tile[ML_DTYPE_F16] = (struct kern_tile){tile_f16, TILE_R, BIG_T};
	d->tile[ML_DTYPE_BF16] = (struct kern_tile){tile_bf16, TILE_R, BIG_T};
	return 3;
}

#else /* not x86: kern.c never calls this; keeps the build portable */
#include "kernels/kern_impl.h"

int kern_tiles_f16_avx512(struct kern_dispatch *d)
{
	(void)d;
	return 0;
}
#endif
