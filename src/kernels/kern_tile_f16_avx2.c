/* AVX2 tile kernels (struct kern_tile) for F32, F16 and BF16 weights.
 * Compiled with the AVX2 flags of the Makefile; called by kern_init()
 * only when the CPU has them.
 *
 * A register tile is up to MICRO_R weight rows times MICRO_T activation
 * rows, one 8-lane f32 accumulator per output (12 of the 16 ymm registers,
 * the rest hold the tile's converted activation vectors and one weight
 * vector). Each step of 8 columns converts every weight vector and every
 * activation vector of the tile to f32 once (vcvtph2ps, or a shift for
 * BF16) and does MICRO_R * MICRO_T FMAs with them. A call takes up to
 * TILE_R rows and BIG_T tokens: one token is an 8 x 1 tile, a batch
 * converts the weights once per call (below).
 *
 * Measured with the AVX2 kernels called directly on a Xeon (Sapphire
 * Rapids) VM, one thread, F16, 64 tokens x 2048 x 2048: 38 GFLOP/s with the
 * row dots, 73 with the register tiles, 88 with the converted weights;
 * decode 11 GB/s like the row dot. Not measured on an AVX2-only CPU.
 *
 * Fidelity: products are exact in f32 and accumulate with FMA, like the
 * vec_dot kernels. Each output has its own accumulator, the same lane
 * layout (column i in lane i % 8), a zero-padded final step for the columns
 * past the last multiple of 8 and one fixed horizontal sum, so its bits do
 * not depend on the tile shape it was computed in. */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <string.h>

#include "kernels/kern_impl.h"

/* Register tile of the products (4 x 3: 12 accumulators, 3 activation
 * vectors, 1 weight vector; measured against 3 x 4, 3 x 3, 4 x 2 and 2 x 4,
 * 512 tokens x 2048 x 2048 F16, one thread, Xeon SPR VM: 73 vs 67-72
 * GFLOP/s). A call takes up to TILE_R rows: one token (decode) runs them as
 * one 8 x 1 register tile, since fewer rows in flight stream weights more
 * slowly (4 x 1: 10.3-10.7 GB/s, 8 x 1 as fast as the row dot, ~11). */
/* Bytes ahead of the current column a one-token tile prefetches in each
 * row (1B F16 model, 1 thread, tg: 5.75 t/s with kern_matmul's whole-tile
 * prefetch, 6.45 with none, 6.8 with 1 KiB in-loop, 6.2 with 2 KiB). */
#define TILE_PF_BYTES 1024
#define MICRO_R 4
#define MICRO_T 3
#define TILE_R 8
#define TILE_T MICRO_T

/* Batches of tokens: a call of up to BIG_T tokens converts each chunk of KC
 * columns of its TILE_R weight rows to f32 once, into |wf| (16 KiB, stays in
 * L1), and runs the register tiles over all its tokens from there, keeping
 * their accumulators in memory between chunks; per 8 columns a tile then
 * converts 3 activation vectors instead of 7. Each output still sees the
 * same FMAs in the same order (conversions are exact, the accumulator only
 * passes through memory), so these outputs are the bits tile_rt() gives. */
#define BIG_T 63
#define BIG_MIN_T 6 /* fewer tokens: tile_rt() directly */
#define KC 512

enum tile_kind { TILE_F32, TILE_F16, TILE_BF16 };

#define ALWAYS_INLINE inline __attribute__((always_inline))

/* 8 elements at |p| as f32. */
static ALWAYS_INLINE __m256 load8(enum tile_kind kind, const char *p)
{
	switch (kind) {
	case TILE_F32:
		return _mm256_loadu_ps((const float *)p);
	case TILE_F16:
		return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
	default:
		return _mm256_castsi256_ps(
			_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
	}
}

/* The |k| < 8 elements at |p| as f32, zeros after them (nothing else read). */
static ALWAYS_INLINE __m256 load8_part(enum tile_kind kind, const char *p, int k)
{
	const size_t es = kind == TILE_F32 ? 4 : 2;
	char buf[32] = {0};
	memcpy(buf, p, (size_t)k * es);
	return load8(kind, buf);
}

/* Fixed-order horizontal sum (that of the AVX2 vec_dot kernels). */
static ALWAYS_INLINE float hsum8(__m256 x)
{
	__m128 r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
	r = _mm_add_ps(r, _mm_movehl_ps(r, r));
	r = _mm_add_ss(r, _mm_movehdup_ps(r));
	return _mm_cvtss_f32(r);
}

/* The R x T tile; R and T are constants in each instantiation below, so the
 * unrolled accumulator arrays live in registers. */
static ALWAYS_INLINE void tile_rt(enum tile_kind kind, int R, int T, int64_t n, const char *w,
				  size_t w_row, const char *x, size_t x_row, float *y,
				  int64_t y_stride)
{
	const size_t es = kind == TILE_F32 ? 4 : 2;
	__m256 acc[TILE_R][TILE_T];
	_Pragma("GCC unroll 8")
	for (int r = 0; r < R; r++)
		_Pragma("GCC unroll 8")
		for (int t = 0; t < T; t++)
			acc[r][t] = _mm256_setzero_ps();
	int64_t i = 0;
	for (; i + 8 <= n; i += 8) {
		__m256 xv[TILE_T];
		_Pragma("GCC unroll 8")
		for (int t = 0; t < T; t++)
			xv[t] = load8(kind, x + t * x_row + (size_t)i * es);
		_Pragma("GCC unroll 8")
		for (int r = 0; r < R; r++) {
			/* one token streams the rows once: keep a KiB of each in
			 * flight */
			if (T == 1 && ((size_t)i * es) % 64 == 0)
				_mm_prefetch(w + r * w_row + (size_t)i * es + TILE_PF_BYTES, _MM_HINT_T0);
			const __m256 wv = load8(kind, w + r * w_row + (size_t)i * es);
			_Pragma("GCC unroll 8")
			for (int t = 0; t < T; t++)
				acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
		}
	}
	if (i < n) {
		const int k = (int)(n - i);
		__m256 xv[TILE_T];
		_Pragma("GCC unroll 8")
		for (int t = 0; t < T; t++)
			xv[t] = load8_part(kind, x + t * x_row + (size_t)i * es, k);
		_Pragma("GCC unroll 8")
		for (int r = 0; r < R; r++) {
			const __m256 wv = load8_part(kind, w + r * w_row + (size_t)i * es, k);
			_Pragma("GCC unroll 8")
			for (int t = 0; t < T; t++)
				acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
		}
	}
	_Pragma("GCC unroll 8")
	for (int r = 0; r < R; r++)
		_Pragma("GCC unroll 8")
		for (int t = 0; t < T; t++)
			y[t * y_stride + r] = hsum8(acc[r][t]);
}

/* Tokens [0, T) of a MICRO_R-row register tile over one chunk of |nc|
 * columns: |wf| the chunk's converted rows (KC floats apart), |x| the tokens
 * at the chunk's first column, |acc_mem| the tile's accumulators (read and
 * written back). */
static ALWAYS_INLINE void tile_pre(enum tile_kind kind, int T, int64_t nc, const float *wf,
				   const char *x, size_t x_row, __m256 acc_mem[MICRO_R][MICRO_T])
{
	const size_t es = kind == TILE_F32 ? 4 : 2;
	__m256 acc[MICRO_R][MICRO_T];
	_Pragma("GCC unroll 8")
	for (int r = 0; r < MICRO_R; r++)
		_Pragma("GCC unroll 8")
		for (int t = 0; t < T; t++)
			acc[r][t] = acc_mem[r][t];
	int64_t i = 0;
	for (; i + 8 <= nc; i += 8) {
		__m256 xv[MICRO_T];
		_Pragma("GCC unroll 8")
		for (int t = 0; t < T; t++)
			xv[t] = load8(kind, x + t * x_row + (size_t)i * es);
		_Pragma("GCC unroll 8")
		for (int r = 0; r < MICRO_R; r++) {
			const __m256 wv = _mm256_load_ps(wf + r * KC + i);
			_Pragma("GCC unroll 8")
			for (int t = 0; t < T; t++)
				acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
		}
	}
	if (i < nc) {
		const int k = (int)(nc - i);
		__m256 xv[MICRO_T];
		_Pragma("GCC unroll 8")
		for (int t = 0; t < T; t++)
			xv[t] = load8_part(kind, x + t * x_row + (size_t)i * es, k);
		_Pragma("GCC unroll 8")
		for (int r = 0; r < MICRO_R; r++) {
			const __m256 wv = _mm256_load_ps(wf + r * KC + i);
			_Pragma("GCC unroll 8")
			for (int t = 0; t < T; t++)
				acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
		}
	}
	_Pragma("GCC unroll 8")
	for (int r = 0; r < MICRO_R; r++)
		_Pragma("GCC unroll 8")
		for (int t = 0; t < T; t++)
			acc_mem[r][t] = acc[r][t];
}

typedef void (*tile_pre_fn)(int64_t nc, const float *wf, const char *x, size_t x_row,
			    __m256 acc[MICRO_R][MICRO_T]);

/* TILE_R rows times n_t <= BIG_T tokens through tile_pre(); |pre| holds its
 * instantiations for 1..MICRO_T tokens. */
static ALWAYS_INLINE void tile_big(enum tile_kind kind, const tile_pre_fn pre[MICRO_T], int64_t n,
				   const char *w, size_t w_row, const char *x, size_t x_row,
				   int n_t, float *y, int64_t y_stride)
{
	enum { GROUPS = TILE_R / MICRO_R };
	const size_t es = kind == TILE_F32 ? 4 : 2;
	float wf[TILE_R * KC] __attribute__((aligned(32)));
	__m256 accs[BIG_T / MICRO_T][GROUPS][MICRO_R][MICRO_T];
	const int n_mt = (n_t + MICRO_T - 1) / MICRO_T;
	for (int k = 0; k < n_mt; k++)
		for (int g = 0; g < GROUPS; g++)
			for (int r = 0; r < MICRO_R; r++)
				for (int t = 0; t < MICRO_T; t++)
					accs[k][g][r][t] = _mm256_setzero_ps();
	for (int64_t c0 = 0; c0 < n; c0 += KC) {
		const int64_t nc = n - c0 < KC ? n - c0 : KC;
		for (int r = 0; r < TILE_R; r++) {
			const char *wr = w + r * w_row + (size_t)c0 * es;
			int64_t i = 0;
			for (; i + 8 <= nc; i += 8)
				_mm256_store_ps(wf + r * KC + i, load8(kind, wr + (size_t)i * es));
			if (i < nc)
				_mm256_store_ps(wf + r * KC + i,
						load8_part(kind, wr + (size_t)i * es, (int)(nc - i)));
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
			const int nt = n_t - k * MICRO_T < MICRO_T ? n_t - k * MICRO_T : MICRO_T;
			const char *xk = x + (size_t)k * MICRO_T * x_row + (size_t)c0 * es;
			for (int g = 0; g < GROUPS; g++)
				pre[nt - 1](nc, wf + g * MICRO_R * KC, xk, x_row, accs[k][g]);
		}
	}
	for (int k = 0; k < n_mt; k++) {
		const int nt = n_t - k * MICRO_T < MICRO_T ? n_t - k * MICRO_T : MICRO_T;
		for (int g = 0; g < GROUPS; g++)
			for (int r = 0; r < MICRO_R; r++)
				for (int t = 0; t < nt; t++)
					y[(k * MICRO_T + t) * y_stride + g * MICRO_R + r] =
						hsum8(accs[k][g][r][t]);
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
#define TILE_FNS_R(kind, K, R) TILE_FN(kind, K, R, 1) TILE_FN(kind, K, R, 2) TILE_FN(kind, K, R, 3)
#define TILE_PRE_FN(kind, K, T)                                                                   \
	static void tile_pre_##K##_##T(int64_t nc, const float *wf, const char *x, size_t x_row, \
				       __m256 acc[MICRO_R][MICRO_T])                              \
	{                                                                                         \
		tile_pre(kind, T, nc, wf, x, x_row, acc);                                          \
	}
#define TILE_FNS(kind, K)                                                                         \
	TILE_FNS_R(kind, K, 1) TILE_FNS_R(kind, K, 2) TILE_FNS_R(kind, K, 3)                      \
	TILE_FNS_R(kind, K, 4) TILE_FN(kind, K, 8, 1)                                             \
	TILE_PRE_FN(kind, K, 1) TILE_PRE_FN(kind, K, 2) TILE_PRE_FN(kind, K, 3)
#define TILE_ROW(K, R) {tile_##K##_##R##x1, tile_##K##_##R##x2, tile_##K##_##R##x3}
#define TILE_TABLE(kind, K)                                                                       \
	static const tile_rt_fn tiles_##K[MICRO_R][MICRO_T] = {                                   \
		TILE_ROW(K, 1), TILE_ROW(K, 2), TILE_ROW(K, 3), TILE_ROW(K, 4),                   \
	};                                                                                        \
	static const tile_pre_fn tiles_pre_##K[MICRO_T] = {tile_pre_##K##_1, tile_pre_##K##_2,    \
							    tile_pre_##K##_3};                    \
	static void tile_##K(int64_t n, const void *w, size_t w_row, int n_r, const void *x,      \
			     size_t x_row, int n_t, float *y, int64_t y_stride)                   \
	{                                                                                         \
		const char *wb = w, *xb = x;                                                      \
		if (n_t == 1 && n_r == TILE_R) {                                                  \
			tile_##K##_8x1(n, wb, w_row, xb, x_row, y, y_stride);                     \
			return;                                                                   \
		}                                                                                 \
		if (n_t >= BIG_MIN_T && n_r == TILE_R) {                                          \
			tile_big(kind, tiles_pre_##K, n, wb, w_row, xb, x_row, n_t, y, y_stride); \
			return;                                                                   \
		}                                                                                 \
		for (int t = 0; t < n_t; t += MICRO_T) {                                          \
			const int nt = n_t - t < MICRO_T ? n_t - t : MICRO_T;                     \
			for (int r = 0; r < n_r; r += MICRO_R) {                                  \
				const int nr = n_r - r < MICRO_R ? n_r - r : MICRO_R;             \
				tiles_##K[nr - 1][nt - 1](n, wb + r * w_row, w_row,               \
							  xb + t * x_row, x_row,                  \
							  y + t * y_stride + r, y_stride);        \
			}                                                                         \
		}                                                                                 \
	}

static_assert(MICRO_R == 4 && MICRO_T == 3 && TILE_R == 8, "the tables below spell out 4 x 3 and 8 x 1");
static_assert(TILE_R % MICRO_R == 0 && BIG_T % MICRO_T == 0 && KC % 8 == 0,
	      "whole register tiles and vectors");

TILE_FNS(TILE_F32, f32)
TILE_FNS(TILE_F16, f16)
TILE_FNS(TILE_BF16, bf16)
TILE_TABLE(TILE_F32, f32)
TILE_TABLE(TILE_F16, f16)
TILE_TABLE(TILE_BF16, bf16)

int kern_tiles_f16_avx2(struct kern_dispatch *d)
{
	d->tile[ML_DTYPE_F32] = (struct kern_tile){tile_f32, TILE_R, BIG_T};
	d->tile[ML_DTYPE_F16] = (struct kern_tile){tile_f16, TILE_R, BIG_T};
	d->tile[ML_DTYPE_BF16] = (struct kern_tile){tile_bf16, TILE_R, BIG_T};
	return 3;
}

#else /* not x86: kern.c never calls this; keeps the build portable */
#include "kernels/kern_impl.h"

int kern_tiles_f16_avx2(struct kern_dispatch *d)
{
	(void)d;
	return 0;
}
#endif
