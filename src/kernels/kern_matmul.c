/* Activation conversion and matrix products over a thread's share of rows.
 *
 * kern_matmul() splits the weight rows into contiguous shares by ith/nth.
 * For one token it streams each weight row once (a matrix-vector product,
 * bound by memory bandwidth). For several tokens it tiles: a block of
 * weight rows small enough to stay in L2 is multiplied with a block of
 * tokens, so each weight byte is fetched from memory once per token block
 * instead of once per token. */
#include "kernels/kern_impl.h"

/* Weight bytes per row block (stays in L2 while the token block passes over
 * it) and activation bytes per token block (stays in L2/L3). */
#define MM_ROW_BLOCK_BYTES (48 * 1024)
#define MM_TOK_BLOCK_BYTES (256 * 1024)

/* How far ahead of the rows being multiplied the one-token product asks for
 * weight bytes. The hardware prefetcher stops at every 4 KiB page, so a
 * matrix-vector product streaming from the file's 4 KiB pages stalls on
 * each new page; prefetching a few KiB ahead keeps misses in flight across
 * page boundaries (Q8_0 rows of 2048, one thread, Xeon SPR VM: 6.4 ->
 * 10.9 GB/s from a file mapping, 10.4 -> 15 GB/s from huge pages). */
#define MM_PREFETCH_AHEAD (4 * 1024)
#define MM_CACHE_LINE 64

static inline int64_t min_i64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

/* Contiguous share of |n| items for thread |ith| of |nth|, rounded to
 * multiples of |align| so neighbouring threads do not split cache lines of y
 * more than needed. */
static void share(int64_t n, int ith, int nth, int64_t align, int64_t *lo, int64_t *hi)
{
	int64_t per = (n + nth - 1) / nth;
	per = (per + align - 1) / align * align;
	*lo = min_i64(per * ith, n);
	*hi = min_i64(*lo + per, n);
}

void kern_quantize_rows(enum ml_dtype vdt, const float *x, int64_t x_stride, void *xq,
			int64_t n_rows, int64_t n_cols, int ith, int nth)
{
	kern_from_f32_fn conv = kern_act_from_f32(vdt);
	const size_t row_size = ml_dtype_row_size(vdt, n_cols);
	if (conv == NULL || row_size == 0)
		return; /* programmer error: unsupported vec-dot type or bad n_cols */
	int64_t lo, hi;
	share(n_rows, ith, nth, 1, &lo, &hi);
	for (int64_t r = lo; r < hi; r++)
		conv(x + r * x_stride, (char *)xq + (size_t)r * row_size, n_cols);
}

/* Issues prefetches for the bytes in [*next, upto), at most up to |limit|,
 * and advances *next. */
static inline void prefetch_to(const char **next, const char *upto, const char *limit)
{
	if (upto > limit)
		upto = limit;
	for (const char *p = *next; p < upto; p += MM_CACHE_LINE)
		__builtin_prefetch(p, 0, 3);
	if (upto > *next)
		*next = upto;
}

/* Rows [lo, hi) times tokens [0, n_tok) through the type's tile kernel. */
static void matmul_tiles(struct kern_tile tl, const char *wb, size_t w_row, int64_t lo, int64_t hi,
			 int64_t n_cols, const char *xb, size_t x_row, int64_t n_tok, float *y,
			 int64_t y_stride)
{
	/* one token: the same loops call the tiles over the rows in order (the
	 * tile kernel prefetches its rows itself, see struct kern_tile) */
	int64_t rb = (int64_t)(MM_ROW_BLOCK_BYTES / w_row);
	rb = rb < tl.r ? tl.r : rb / tl.r * tl.r;
	int64_t tb = (int64_t)(MM_TOK_BLOCK_BYTES / x_row);
	tb = tb < tl.t ? tl.t : tb / tl.t * tl.t;
	for (int64_t t0 = 0; t0 < n_tok; t0 += tb) {
		const int64_t t1 = min_i64(t0 + tb, n_tok);
		for (int64_t r0 = lo; r0 < hi; r0 += rb) {
			const int64_t r1 = min_i64(r0 + rb, hi);
			for (int64_t t = t0; t < t1; t += tl.t) {
				const int n_t = (int)min_i64(tl.t, t1 - t);
				for (int64_t r = r0; r < r1; r += tl.r)
					tl.fn(n_cols, wb + (size_t)r * w_row, w_row, (int)min_i64(tl.r, r1 - r),
					      xb + (size_t)t * x_row, x_row, n_t, y + t * y_stride + r, y_stride);
			}
		}
	}
}

void kern_matmul(enum ml_dtype wtype, const void *w, int64_t n_rows, int64_t n_cols,
		 const void *xq, int64_t n_tok, float *y, int64_t y_stride, int ith, int nth)
{
	const struct kern_type_traits *tr = kern_type_traits(wtype);
	if (tr == NULL || tr->vec_dot == NULL)
		return; /* programmer error: callers check traits->supported */
	const kern_vec_dot_fn dot = tr->vec_dot;
	const size_t w_row = ml_dtype_row_size(wtype, n_cols);
	const size_t x_row = ml_dtype_row_size(tr->vec_dot_type, n_cols);
	const char *wb = w;
	const char *xb = xq;
	if (w_row == 0 || x_row == 0)
		return; /* programmer error: n_cols not a multiple of the block size */

	int64_t lo, hi;
	share(n_rows, ith, nth, 16, &lo, &hi);
	if (lo >= hi)
		return;

	const struct kern_tile tl = kern_tile_of(wtype);
	if (tl.fn != NULL && tl.r > 0 && tl.t > 0) {
		matmul_tiles(tl, wb, w_row, lo, hi, n_cols, xb, x_row, n_tok, y, y_stride);
		return;
	}
	if (n_tok == 1) {
		const char *pf = wb + (size_t)lo * w_row, *end = wb + (size_t)hi * w_row;
		for (int64_t r = lo; r < hi; r++) {
			prefetch_to(&pf, wb + (size_t)(r + 1) * w_row + MM_PREFETCH_AHEAD, end);
			dot(n_cols, &y[r], wb + (size_t)r * w_row, xb);
		}
		return;
	}

	int64_t rb = w_row > 0 ? (int64_t)(MM_ROW_BLOCK_BYTES / w_row) : 1;
	rb = rb < 4 ? 4 : rb;
	int64_t tb = x_row > 0 ? (int64_t)(MM_TOK_BLOCK_BYTES / x_row) : 1;
	tb = tb < 1 ? 1 : tb;

	const kern_vec_dot_x4_fn dot4 = kern_vec_dot_x4(wtype);
	for (int64_t t0 = 0; t0 < n_tok; t0 += tb) {
		const int64_t t1 = min_i64(t0 + tb, n_tok);
		for (int64_t r0 = lo; r0 < hi; r0 += rb) {
			const int64_t r1 = min_i64(r0 + rb, hi);
			int64_t t = t0;
			/* four tokens at a time share each unpacked weight block */
			for (; dot4 != NULL && t + 4 <= t1; t += 4) {
				const char *xt = xb + (size_t)t * x_row;
				for (int64_t r = r0; r < r1; r++) {
					float s4[4];
					dot4(n_cols, s4, wb + (size_t)r * w_row, xt, x_row);
					for (int k = 0; k < 4; k++)
						y[(t + k) * y_stride + r] = s4[k];
				}
			}
			for (; t < t1; t++) {
				const char *xt = xb + (size_t)t * x_row;
				float *yt = y + t * y_stride;
				for (int64_t r = r0; r < r1; r++)
					dot(n_cols, &yt[r], wb + (size_t)r * w_row, xt);
			}
		}
	}
}
