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

	if (n_tok == 1) {
		for (int64_t r = lo; r < hi; r++)
			dot(n_cols, &y[r], wb + (size_t)r * w_row, xb);
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
