/* Scalar reference ("generic") kernels for every supported ggml type:
 * dequantize (to_f32), quantize (from_f32, reference quality: the same
 * algorithms as ggml's quantize_row_*_ref, so files we write look like the
 * ones llama.cpp writes), activation quantizers and dot products.
 *
 * Dequantization reproduces ggml bit for bit (checked against llama.cpp's
 * dequantized tensors in tests/kernels). Dot products follow ggml's
 * arithmetic: integer sums inside a block, then the block scales applied in
 * float in the same order as ggml. SIMD variants elsewhere are checked
 * against these. */
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "kernels/kern_impl.h"

#define KMIN(a, b) ((a) < (b) ? (a) : (b))
#define KMAX(a, b) ((a) > (b) ? (a) : (b))
#define GROUP_MAX_EPS 1e-15f

#define F16(h) kern_f16_to_f32(h)

/* Round half to even via the float mantissa trick (|fval| < 2^22), like
 * ggml's nearest_int: independent of the FPU rounding mode. */
static inline int nearest_int(float fval)
{
	float val = fval + 12582912.f;
	int32_t i;
	memcpy(&i, &val, sizeof(i));
	return (i & 0x007fffff) - 0x00400000;
}

/* ===================== plain types ===================== */

static void to_f32_f32(const void *x, float *y, int64_t n)
{
	memcpy(y, x, (size_t)n * sizeof(float));
}

static void from_f32_f32(const float *x, void *y, int64_t n)
{
	memcpy(y, x, (size_t)n * sizeof(float));
}

static void to_f32_f16(const void *vx, float *y, int64_t n)
{
	const kern_f16 *x = vx;
	for (int64_t i = 0; i < n; i++)
		y[i] = kern_f16_to_f32(x[i]);
}

static void from_f32_f16(const float *x, void *vy, int64_t n)
{
	kern_f16 *y = vy;
	for (int64_t i = 0; i < n; i++)
		y[i] = kern_f32_to_f16(x[i]);
}

static void to_f32_bf16(const void *vx, float *y, int64_t n)
{
	const kern_bf16 *x = vx;
	for (int64_t i = 0; i < n; i++)
		y[i] = kern_bf16_to_f32(x[i]);
}

static void from_f32_bf16(const float *x, void *vy, int64_t n)
{
	kern_bf16 *y = vy;
	for (int64_t i = 0; i < n; i++)
		y[i] = kern_f32_to_bf16(x[i]);
}

/* ggml's generic float dot products accumulate in double. */
void kern_vec_dot_f32_f32_generic(int64_t n, float *s, const void *vx, const void *vy)
{
	const float *x = vx, *y = vy;
	double sum = 0.0;
	for (int64_t i = 0; i < n; i++)
		sum += (double)(x[i] * y[i]);
	*s = (float)sum;
}

void kern_vec_dot_f16_f16_generic(int64_t n, float *s, const void *vx, const void *vy)
{
	const kern_f16 *x = vx, *y = vy;
	double sum = 0.0;
	for (int64_t i = 0; i < n; i++)
		sum += (double)(kern_f16_to_f32(x[i]) * kern_f16_to_f32(y[i]));
	*s = (float)sum;
}

void kern_vec_dot_bf16_bf16_generic(int64_t n, float *s, const void *vx, const void *vy)
{
	const kern_bf16 *x = vx, *y = vy;
	double sum = 0.0;
	for (int64_t i = 0; i < n; i++)
		sum += (double)(kern_bf16_to_f32(x[i]) * kern_bf16_to_f32(y[i]));
	*s = (float)sum;
}

/* ===================== 32-element blocks ===================== */

static void to_f32_q4_0(const void *vx, float *y, int64_t n)
{
	const struct kern_block_q4_0 *x = vx;
	const int64_t nb = n / KERN_QK4_0;
	for (int64_t i = 0; i < nb; i++) {
		const float d = F16(x[i].d);
		for (int j = 0; j < 16; j++) {
			y[i * 32 + j] = ((x[i].qs[j] & 0x0F) - 8) * d;
			y[i * 32 + j + 16] = ((x[i].qs[j] >> 4) - 8) * d;
		}
	}
}

static void from_f32_q4_0(const float *x, void *vy, int64_t n)
{
	struct kern_block_q4_0 *y = vy;
	const int64_t nb = n / KERN_QK4_0;
	for (int64_t i = 0; i < nb; i++) {
		const float *xb = x + i * 32;
		float amax = 0.0f, max = 0.0f;
		for (int j = 0; j < 32; j++) {
			if (amax < fabsf(xb[j])) {
				amax = fabsf(xb[j]);
				max = xb[j];
			}
		}
		const float d = max / -8;
		const float id = d ? 1.0f / d : 0.0f;
		y[i].d = kern_f32_to_f16(d);
		for (int j = 0; j < 16; j++) {
			const uint8_t q0 = (uint8_t)KMIN(15, (int8_t)(xb[j] * id + 8.5f));
			const uint8_t q1 = (uint8_t)KMIN(15, (int8_t)(xb[j + 16] * id + 8.5f));
			y[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
		}
	}
}

static void to_f32_q4_1(const void *vx, float *y, int64_t n)
{
	const struct kern_block_q4_1 *x = vx;
	const int64_t nb = n / KERN_QK4_1;
	for (int64_t i = 0; i < nb; i++) {
		const float d = F16(x[i].d), m = F16(x[i].m);
		for (int j = 0; j < 16; j++) {
			y[i * 32 + j] = (x[i].qs[j] & 0x0F) * d + m;
			y[i * 32 + j + 16] = (x[i].qs[j] >> 4) * d + m;
		}
	}
}

static void from_f32_q4_1(const float *x, void *vy, int64_t n)
{
	struct kern_block_q4_1 *y = vy;
	const int64_t nb = n / KERN_QK4_1;
	for (int64_t i = 0; i < nb; i++) {
		const float *xb = x + i * 32;
		float min = FLT_MAX, max = -FLT_MAX;
		for (int j = 0; j < 32; j++) {
			if (xb[j] < min)
				min = xb[j];
			if (xb[j] > max)
				max = xb[j];
		}
		const float d = (max - min) / 15;
		const float id = d ? 1.0f / d : 0.0f;
		y[i].d = kern_f32_to_f16(d);
		y[i].m = kern_f32_to_f16(min);
		for (int j = 0; j < 16; j++) {
			const uint8_t q0 = (uint8_t)KMIN(15, (int8_t)((xb[j] - min) * id + 0.5f));
			const uint8_t q1 = (uint8_t)KMIN(15, (int8_t)((xb[j + 16] - min) * id + 0.5f));
			y[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
		}
	}
}

static void to_f32_q5_0(const void *vx, float *y, int64_t n)
{
	const struct kern_block_q5_0 *x = vx;
	const int64_t nb = n / KERN_QK5_0;
	for (int64_t i = 0; i < nb; i++) {
		const float d = F16(x[i].d);
		uint32_t qh;
		memcpy(&qh, x[i].qh, sizeof(qh));
		for (int j = 0; j < 16; j++) {
			const int h0 = ((qh >> j) << 4) & 0x10;
			const int h1 = (qh >> (j + 12)) & 0x10;
			y[i * 32 + j] = (((x[i].qs[j] & 0x0F) | h0) - 16) * d;
			y[i * 32 + j + 16] = (((x[i].qs[j] >> 4) | h1) - 16) * d;
		}
	}
}

static void from_f32_q5_0(const float *x, void *vy, int64_t n)
{
	struct kern_block_q5_0 *y = vy;
	const int64_t nb = n / KERN_QK5_0;
	for (int64_t i = 0; i < nb; i++) {
		const float *xb = x + i * 32;
		float amax = 0.0f, max = 0.0f;
		for (int j = 0; j < 32; j++) {
			if (amax < fabsf(xb[j])) {
				amax = fabsf(xb[j]);
				max = xb[j];
			}
		}
		const float d = max / -16;
		const float id = d ? 1.0f / d : 0.0f;
		y[i].d = kern_f32_to_f16(d);
		uint32_t qh = 0;
		for (int j = 0; j < 16; j++) {
			const uint8_t q0 = (uint8_t)KMIN(31, (int8_t)(xb[j] * id + 16.5f));
			const uint8_t q1 = (uint8_t)KMIN(31, (int8_t)(xb[j + 16] * id + 16.5f));
			y[i].qs[j] = (uint8_t)((q0 & 0x0F) | ((q1 & 0x0F) << 4));
			qh |= ((q0 & 0x10u) >> 4) << j;
			qh |= ((q1 & 0x10u) >> 4) << (j + 16);
		}
		memcpy(y[i].qh, &qh, sizeof(qh));
	}
}

static void to_f32_q5_1(const void *vx, float *y, int64_t n)
{
	const struct kern_block_q5_1 *x = vx;
	const int64_t nb = n / KERN_QK5_1;
	for (int64_t i = 0; i < nb; i++) {
		const float d = F16(x[i].d), m = F16(x[i].m);
		uint32_t qh;
		memcpy(&qh, x[i].qh, sizeof(qh));
		for (int j = 0; j < 16; j++) {
			const int h0 = ((qh >> j) << 4) & 0x10;
			const int h1 = (qh >> (j + 12)) & 0x10;
			y[i * 32 + j] = ((x[i].qs[j] & 0x0F) | h0) * d + m;
			y[i * 32 + j + 16] = ((x[i].qs[j] >> 4) | h1) * d + m;
		}
	}
}

static void from_f32_q5_1(const float *x, void *vy, int64_t n)
{
	struct kern_block_q5_1 *y = vy;
	const int64_t nb = n / KERN_QK5_1;
	for (int64_t i = 0; i < nb; i++) {
		const float *xb = x + i * 32;
		float min = FLT_MAX, max = -FLT_MAX;
		for (int j = 0; j < 32; j++) {
			if (xb[j] < min)
				min = xb[j];
			if (xb[j] > max)
				max = xb[j];
		}
		const float d = (max - min) / 31;
		const float id = d ? 1.0f / d : 0.0f;
		y[i].d = kern_f32_to_f16(d);
		y[i].m = kern_f32_to_f16(min);
		uint32_t qh = 0;
		for (int j = 0; j < 16; j++) {
			const uint8_t q0 = (uint8_t)((xb[j] - min) * id + 0.5f);
			const uint8_t q1 = (uint8_t)((xb[j + 16] - min) * id + 0.5f);
			y[i].qs[j] = (uint8_t)((q0 & 0x0F) | ((q1 & 0x0F) << 4));
			qh |= ((q0 & 0x10u) >> 4) << j;
			qh |= ((q1 & 0x10u) >> 4) << (j + 16);
		}
		memcpy(y[i].qh, &qh, sizeof(qh));
	}
}

static void to_f32_q8_0(const void *vx, float *y, int64_t n)
{
	const struct kern_block_q8_0 *x = vx;
	const int64_t nb = n / KERN_QK8_0;
	for (int64_t i = 0; i < nb; i++) {
		const float d = F16(x[i].d);
		for (int j = 0; j < 32; j++)
			y[i * 32 + j] = x[i].qs[j] * d;
	}
}

/* Reference (file-writing) quantizer: id = 1/d, round half away from zero. */
static void from_f32_q8_0(const float *x, void *vy, int64_t n)
{
	struct kern_block_q8_0 *y = vy;
	const int64_t nb = n / KERN_QK8_0;
	for (int64_t i = 0; i < nb; i++) {
		const float *xb = x + i * 32;
		float amax = 0.0f;
		for (int j = 0; j < 32; j++)
			amax = KMAX(amax, fabsf(xb[j]));
		const float d = amax / 127;
		const float id = d ? 1.0f / d : 0.0f;
		y[i].d = kern_f32_to_f16(d);
		for (int j = 0; j < 32; j++)
			y[i].qs[j] = (int8_t)roundf(xb[j] * id);
	}
}

static void to_f32_q8_1(const void *vx, float *y, int64_t n)
{
	const struct kern_block_q8_1 *x = vx;
	const int64_t nb = n / KERN_QK8_1;
	for (int64_t i = 0; i < nb; i++) {
		const float d = F16(x[i].d);
		for (int j = 0; j < 32; j++)
			y[i * 32 + j] = x[i].qs[j] * d;
	}
}

static void from_f32_q8_1(const float *x, void *vy, int64_t n)
{
	struct kern_block_q8_1 *y = vy;
	const int64_t nb = n / KERN_QK8_1;
	for (int64_t i = 0; i < nb; i++) {
		const float *xb = x + i * 32;
		float amax = 0.0f;
		for (int j = 0; j < 32; j++)
			amax = KMAX(amax, fabsf(xb[j]));
		const float d = amax / 127;
		const float id = d ? 1.0f / d : 0.0f;
		y[i].d = kern_f32_to_f16(d);
		int sum = 0;
		for (int j = 0; j < 32; j++) {
			y[i].qs[j] = (int8_t)roundf(xb[j] * id);
			sum += y[i].qs[j];
		}
		y[i].s = kern_f32_to_f16(sum * d);
	}
}

/* Activation quantizers with the arithmetic of ggml's x86 SIMD path:
 * d = amax/127, id = 127/amax, round half to even. */
static float q8_act_block(const float *xb, int8_t *qs, float *d_out)
{
	float amax = 0.0f;
	for (int j = 0; j < 32; j++)
		amax = KMAX(amax, fabsf(xb[j]));
	const float d = amax / 127.f;
	const float id = amax != 0.0f ? 127.f / amax : 0.0f;
	for (int j = 0; j < 32; j++)
		qs[j] = (int8_t)nearest_int(xb[j] * id);
	*d_out = d;
	return d;
}

void kern_quantize_act_q8_0_generic(const float *x, void *vy, int64_t n)
{
	struct kern_block_q8_0 *y = vy;
	const int64_t nb = n / KERN_QK8_0;
	for (int64_t i = 0; i < nb; i++) {
		float d;
		q8_act_block(x + i * 32, y[i].qs, &d);
		y[i].d = kern_f32_to_f16(d);
	}
}

void kern_quantize_act_q8_1_generic(const float *x, void *vy, int64_t n)
{
	struct kern_block_q8_1 *y = vy;
	const int64_t nb = n / KERN_QK8_1;
	for (int64_t i = 0; i < nb; i++) {
		float d;
		q8_act_block(x + i * 32, y[i].qs, &d);
		int sum = 0;
		for (int j = 0; j < 32; j++)
			sum += y[i].qs[j];
		y[i].d = kern_f32_to_f16(d);
		y[i].s = kern_f32_to_f16(d * (float)sum);
	}
}

void kern_vec_dot_q4_0_q8_0_generic(int64_t n, float *s, const void *vx, const void *vy)
{
	const struct kern_block_q4_0 *x = vx;
	const struct kern_block_q8_0 *y = vy;
	const int64_t nb = n / KERN_QK8_0;
	float sumf = 0.0f;
	for (int64_t i = 0; i < nb; i++) {
		int sumi = 0;
		for (int j = 0; j < 16; j++) {
			sumi += ((x[i].qs[j] & 0x0F) - 8) * y[i].qs[j];
			sumi += ((x[i].qs[j] >> 4) - 8) * y[i].qs[j + 16];
		}
		sumf += sumi * F16(x[i].d) * F16(y[i].d);
	}
	*s = sumf;
}

void kern_vec_dot_q4_1_q8_1_generic(int64_t n, float *s, const void *vx, const void *vy)
{
	const struct kern_block_q4_1 *x = vx;
	const struct kern_block_q8_1 *y = vy;
	const int64_t nb = n / KERN_QK8_1;
	float sumf = 0.0f;
	for (int64_t i = 0; i < nb; i++) {
		int sumi = 0;
		for (int j = 0; j < 16; j++) {
			sumi += (x[i].qs[j] & 0x0F) * y[i].qs[j];
			sumi += (x[i].qs[j] >> 4) * y[i].qs[j + 16];
		}
		sumf += (F16(x[i].d) * F16(y[i].d)) * sumi + F16(x[i].m) * F16(y[i].s);
	}
	*s = sumf;
}

void kern_vec_dot_q5_0_q8_0_generic(int64_t n, float *s, const void *vx, const void *vy)
{
	const struct kern_block_q5_0 *x = vx;
	const struct kern_block_q8_0 *y = vy;
	const int64_t nb = n / KERN_QK8_0;
	float sumf = 0.0f;
	for (int64_t i = 0; i < nb; i++) {
		uint32_t qh;
		memcpy(&qh, x[i].qh, sizeof(qh));
		int sumi = 0;
		for (int j = 0; j < 16; j++) {
			const int h0 = ((qh >> j) << 4) & 0x10;
			const int h1 = (qh >> (j + 12)) & 0x10;
			sumi += (((x[i].qs[j] & 0x0F) | h0) - 16) * y[i].qs[j];
			sumi += (((x[i].qs[j] >> 4) | h1) - 16) * y[i].qs[j + 16];
		}
		sumf += (F16(x[i].d) * F16(y[i].d)) * sumi;
	}
	*s = sumf;
}

void kern_vec_dot_q5_1_q8_1_generic(int64_t n, float *s, const void *vx, const void *vy)
{
	const struct kern_block_q5_1 *x = vx;
	const struct kern_block_q8_1 *y = vy;
	const int64_t nb = n / KERN_QK8_1;
	float sumf = 0.0f;
	for (int64_t i = 0; i < nb; i++) {
		uint32_t qh;
		memcpy(&qh, x[i].qh, sizeof(qh));
		int sumi = 0;
		for (int j = 0; j < 16; j++) {
			const int h0 = ((qh >> j) << 4) & 0x10;
			const int h1 = (qh >> (j + 12)) & 0x10;
			sumi += ((x[i].qs[j] & 0x0F) | h0) * y[i].qs[j];
			sumi += ((x[i].qs[j] >> 4) | h1) * y[i].qs[j + 16];
		}
		sumf += (F16(x[i].d) * F16(y[i].d)) * sumi + F16(x[i].m) * F16(y[i].s);
	}
	*s = sumf;
}

void kern_vec_dot_q8_0_q8_0_generic(int64_t n, float *s, const void *vx, const void *vy)
{
	const struct kern_block_q8_0 *x = vx;
	const struct kern_block_q8_0 *y = vy;
	const int64_t nb = n / KERN_QK8_0;
	float sumf = 0.0f;
	for (int64_t i = 0; i < nb; i++) {
		int sumi = 0;
		for (int j = 0; j < 32; j++)
			sumi += x[i].qs[j] * y[i].qs[j];
		sumf += sumi * (F16(x[i].d) * F16(y[i].d));
	}
	*s = sumf;
}

/* ===================== K-quant helpers (reference quantization) ===================== */

static float make_qx_quants(int n, int nmax, const float *x, int8_t *L, int rmse_type)
{
	float max = 0, amax = 0;
	for (int i = 0; i < n; i++) {
		float ax = fabsf(x[i]);
		if (ax > amax) {
			amax = ax;
			max = x[i];
		}
	}
	if (amax < GROUP_MAX_EPS) {
		for (int i = 0; i < n; i++)
			L[i] = 0;
		return 0.f;
	}
	float iscale = -nmax / max;
	if (rmse_type == 0) {
		for (int i = 0; i < n; i++) {
			int l = nearest_int(iscale * x[i]);
			L[i] = (int8_t)(nmax + KMAX(-nmax, KMIN(nmax - 1, l)));
		}
		return 1 / iscale;
	}
	/* rmse_type 1: weights x^2 (the only variant the _ref quantizers use) */
	float sumlx = 0, suml2 = 0;
	for (int i = 0; i < n; i++) {
		int l = nearest_int(iscale * x[i]);
		l = KMAX(-nmax, KMIN(nmax - 1, l));
		L[i] = (int8_t)(l + nmax);
		float w = x[i] * x[i];
		sumlx += w * x[i] * l;
		suml2 += w * l * l;
	}
	float scale = suml2 ? sumlx / suml2 : 0.0f;
	float best = scale * sumlx;
	for (int is = -9; is <= 9; is++) {
		if (is == 0)
			continue;
		iscale = -(nmax + 0.1f * is) / max;
		sumlx = suml2 = 0;
		for (int i = 0; i < n; i++) {
			int l = nearest_int(iscale * x[i]);
			l = KMAX(-nmax, KMIN(nmax - 1, l));
			float w = x[i] * x[i];
			sumlx += w * x[i] * l;
			suml2 += w * l * l;
		}
		if (suml2 > 0 && sumlx * sumlx > best * suml2) {
			for (int i = 0; i < n; i++) {
				int l = nearest_int(iscale * x[i]);
				L[i] = (int8_t)(nmax + KMAX(-nmax, KMIN(nmax - 1, l)));
			}
			scale = sumlx / suml2;
			best = scale * sumlx;
		}
	}
	return scale;
}

static float make_q3_quants(int n, int nmax, const float *x, int8_t *L)
{
	float max = 0, amax = 0;
	for (int i = 0; i < n; i++) {
		float ax = fabsf(x[i]);
		if (ax > amax) {
			amax = ax;
			max = x[i];
		}
	}
	if (amax < GROUP_MAX_EPS) {
		for (int i = 0; i < n; i++)
			L[i] = 0;
		return 0.f;
	}
	float iscale = -nmax / max;
	float sumlx = 0, suml2 = 0;
	for (int i = 0; i < n; i++) {
		int l = nearest_int(iscale * x[i]);
		l = KMAX(-nmax, KMIN(nmax - 1, l));
		L[i] = (int8_t)l;
		float w = x[i] * x[i];
		sumlx += w * x[i] * l;
		suml2 += w * l * l;
	}
	for (int itry = 0; itry < 5; itry++) {
		int n_changed = 0;
		for (int i = 0; i < n; i++) {
			float w = x[i] * x[i];
			float slx = sumlx - w * x[i] * L[i];
			if (slx > 0) {
				float sl2 = suml2 - w * L[i] * L[i];
				int new_l = nearest_int(x[i] * sl2 / slx);
				new_l = KMAX(-nmax, KMIN(nmax - 1, new_l));
				if (new_l != L[i]) {
					slx += w * x[i] * new_l;
					sl2 += w * new_l * new_l;
					if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
						L[i] = (int8_t)new_l;
						sumlx = slx;
						suml2 = sl2;
						n_changed++;
					}
				}
			}
		}
		if (!n_changed)
			break;
	}
	for (int i = 0; i < n; i++)
		L[i] = (int8_t)(L[i] + nmax);
	return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* Scale and min for an asymmetric sub-block (weighted least squares over a
 * few candidate scales). Returns the scale; *the_min gets -min (>= 0). */
static float make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L,
			      float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep,
			      bool use_mad)
{
	float min = x[0], max = x[0];
	float sum_w = weights[0];
	float sum_x = sum_w * x[0];
	for (int i = 1; i < n; i++) {
		if (x[i] < min)
			min = x[i];
		if (x[i] > max)
			max = x[i];
		float w = weights[i];
		sum_w += w;
		sum_x += w * x[i];
	}
	if (min > 0)
		min = 0;
	if (max == min) {
		for (int i = 0; i < n; i++)
			L[i] = 0;
		*the_min = -min;
		return 0.f;
	}
	float iscale = nmax / (max - min);
	float scale = 1 / iscale;
	float best_error = 0;
	for (int i = 0; i < n; i++) {
		int l = nearest_int(iscale * (x[i] - min));
		L[i] = (uint8_t)KMAX(0, KMIN(nmax, l));
		float diff = scale * L[i] + min - x[i];
		diff = use_mad ? fabsf(diff) : diff * diff;
		best_error += weights[i] * diff;
	}
	if (nstep < 1) {
		*the_min = -min;
		return scale;
	}
	for (int is = 0; is <= nstep; is++) {
		iscale = (rmin + rdelta * is + nmax) / (max - min);
		float sum_l = 0, sum_l2 = 0, sum_xl = 0;
		for (int i = 0; i < n; i++) {
			int l = nearest_int(iscale * (x[i] - min));
			l = KMAX(0, KMIN(nmax, l));
			Laux[i] = (uint8_t)l;
			float w = weights[i];
			sum_l += w * l;
			sum_l2 += w * l * l;
			sum_xl += w * l * x[i];
		}
		float D = sum_w * sum_l2 - sum_l * sum_l;
		if (D > 0) {
			float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
			float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
			if (this_min > 0) {
				this_min = 0;
				this_scale = sum_xl / sum_l2;
			}
			float cur_error = 0;
			for (int i = 0; i < n; i++) {
				float diff = this_scale * Laux[i] + this_min - x[i];
				diff = use_mad ? fabsf(diff) : diff * diff;
				cur_error += weights[i] * diff;
			}
			if (cur_error < best_error) {
				for (int i = 0; i < n; i++)
					L[i] = Laux[i];
				best_error = cur_error;
				scale = this_scale;
				min = this_min;
			}
		}
	}
	*the_min = -min;
	return scale;
}

/* ===================== Q2_K ===================== */

static void to_f32_q2_K(const void *vx, float *y, int64_t n)
{
	const struct kern_block_q2_K *x = vx;
	const int64_t nb = n / KERN_QK_K;
	for (int64_t i = 0; i < nb; i++) {
		const float d = F16(x[i].d), min = F16(x[i].dmin);
		const uint8_t *q = x[i].qs;
		int is = 0;
		for (int k = 0; k < KERN_QK_K; k += 128) {
			for (int shift = 0; shift < 8; shift += 2) {
				for (int half = 0; half < 2; half++) {
					uint8_t sc = x[i].scales[is++];
					const float dl = d * (sc & 0xF), ml = min * (sc >> 4);
					for (int l = 0; l < 16; l++)
						*y++ = dl * ((q[l + 16 * half] >> shift) & 3) - ml;
				}
			}
			q += 32;
		}
	}
}

static void from_f32_q2_K(const float *x, void *vy, int64_t n)
{
	struct kern_block_q2_K *y = vy;
	const int64_t nb = n / KERN_QK_K;
	uint8_t L[KERN_QK_K], Laux[16];
	float weights[16], mins[16], scales[16];
	const float q4scale = 15.f;
	for (int64_t i = 0; i < nb; i++) {
		float max_scale = 0, max_min = 0;
		for (int j = 0; j < 16; j++) {
			for (int l = 0; l < 16; l++)
				weights[l] = fabsf(x[16 * j + l]);
			scales[j] = make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j],
						     Laux, -0.5f, 0.1f, 15, true);
			if (scales[j] > max_scale)
				max_scale = scales[j];
			if (mins[j] > max_min)
				max_min = mins[j];
		}
		if (max_scale > 0) {
			float iscale = q4scale / max_scale;
			for (int j = 0; j < 16; j++)
				y[i].scales[j] = (uint8_t)nearest_int(iscale * scales[j]);
			y[i].d = kern_f32_to_f16(max_scale / q4scale);
		} else {
			for (int j = 0; j < 16; j++)
				y[i].scales[j] = 0;
			y[i].d = kern_f32_to_f16(0.f);
		}
		if (max_min > 0) {
			float iscale = q4scale / max_min;
			for (int j = 0; j < 16; j++) {
				int l = nearest_int(iscale * mins[j]);
				y[i].scales[j] |= (uint8_t)(l << 4);
			}
			y[i].dmin = kern_f32_to_f16(max_min / q4scale);
		} else {
			y[i].dmin = kern_f32_to_f16(0.f);
		}
		for (int j = 0; j < 16; j++) {
			const float d = F16(y[i].d) * (y[i].scales[j] & 0xF);
			if (!d)
				continue;
			const float dm = F16(y[i].dmin) * (y[i].scales[j] >> 4);
			for (int ii = 0; ii < 16; ii++) {
				int l = nearest_int((x[16 * j + ii] + dm) / d);
				L[16 * j + ii] = (uint8_t)KMAX(0, KMIN(3, l));
			}
		}
		for (int j = 0; j < KERN_QK_K; j += 128)
			for (int l = 0; l < 32; l++)
				y[i].qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) |
							       (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
		x += KERN_QK_K;
	}
}

void kern_vec_dot_q2_K_q8_K_generic(int64_t n, float *s, const void *vx, const void *vy)
{
	const struct kern_block_q2_K *x = vx;
	const struct kern_block_q8_K *y = vy;
	const int64_t nb = n / KERN_QK_K;
	float sumf = 0.0f;
	for (int64_t i = 0; i < nb; i++) {
		const uint8_t *q2 = x[i].qs;
		const int8_t *q8 = y[i].qs;
		const uint8_t *sc = x[i].scales;
		int summs = 0;
		for (int j = 0; j < 16; j++)
			summs += y[i].bsums[j] * (sc[j] >> 4);
		const float dall = y[i].d * F16(x[i].d);
		const float dmin = y[i].d * F16(x[i].dmin);
		int isum = 0, is = 0;
		for (int k = 0; k < KERN_QK_K / 128; k++) {
			for (int shift = 0; shift < 8; shift += 2) {
				for (int half = 0; half < 2; half++) {
					int d = sc[is++] & 0xF, isuml = 0;
					for (int l = 0; l < 16; l++)
						isuml += q8[l] * ((q2[l + 16 * half] >> shift) & 3);
					isum += d * isuml;
					q8 += 16;
				}
			}
			q2 += 32;
		}
		sumf += dall * isum - dmin * summs;
	}
	*s = sumf;
}

/* ===================== Q3_K ===================== */

static void to_f32_q3_K(const void *vx, float *y, int64_t n)
{
	const struct kern_block_q3_K *x = vx;
	const int64_t nb = n / KERN_QK_K;
	int8_t scales[16];
	for (int64_t i = 0; i < nb; i++) {
		const float d_all = F16(x[i].d);
		const uint8_t *q = x[i].qs, *hm = x[i].hmask;
		uint8_t m = 1;
		kern_q3_K_scales(x[i].scales, scales);
		int is = 0;
		for (int k = 0; k < KERN_QK_K; k += 128) {
			for (int shift = 0; shift < 8; shift += 2) {
				for (int half = 0; half < 2; half++) {
					const float dl = d_all * (scales[is++] - 32);
					for (int l = 16 * half; l < 16 * half + 16; l++)
						*y++ = dl * (((q[l] >> shift) & 3) - ((hm[l] & m) ? 0 : 4));
				}
				m <<= 1;
			}
			q += 32;
		}
	}
}

static void from_f32_q3_K(const float *x, void *vy, int64_t n)
{
	struct kern_block_q3_K *y = vy;
	const int64_t nb = n / KERN_QK_K;
	int8_t L[KERN_QK_K];
	float scales[16];
	for (int64_t i = 0; i < nb; i++) {
		float max_scale = 0, amax = 0;
		for (int j = 0; j < 16; j++) {
			scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
			float scale = fabsf(scales[j]);
			if (scale > amax) {
				amax = scale;
				max_scale = scales[j];
			}
		}
		memset(y[i].scales, 0, 12);
		if (max_scale) {
			float iscale = -32.f / max_scale;
			for (int j = 0; j < 16; j++) {
				int l = nearest_int(iscale * scales[j]);
				l = KMAX(-32, KMIN(31, l)) + 32;
				if (j < 8)
					y[i].scales[j] = (uint8_t)(l & 0xF);
				else
					y[i].scales[j - 8] |= (uint8_t)((l & 0xF) << 4);
				l >>= 4;
				y[i].scales[j % 4 + 8] |= (uint8_t)(l << (2 * (j / 4)));
			}
			y[i].d = kern_f32_to_f16(1 / iscale);
		} else {
			y[i].d = kern_f32_to_f16(0.f);
		}
		int8_t sc[16];
		kern_q3_K_scales(y[i].scales, sc);
		for (int j = 0; j < 16; j++) {
			float d = F16(y[i].d) * (sc[j] - 32);
			if (!d)
				continue;
			for (int ii = 0; ii < 16; ii++) {
				int l = nearest_int(x[16 * j + ii] / d);
				L[16 * j + ii] = (int8_t)(KMAX(-4, KMIN(3, l)) + 4);
			}
		}
		memset(y[i].hmask, 0, 32);
		int m = 0;
		uint8_t hm = 1;
		for (int j = 0; j < KERN_QK_K; j++) {
			if (L[j] > 3) {
				y[i].hmask[m] |= hm;
				L[j] -= 4;
			}
			if (++m == 32) {
				m = 0;
				hm <<= 1;
			}
		}
		for (int j = 0; j < KERN_QK_K; j += 128)
			for (int l = 0; l < 32; l++)
				y[i].qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) |
							       (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
		x += KERN_QK_K;
	}
}

void kern_vec_dot_q3_K_q8_K_generic(int64_t n, float *s, const void *vx, const void *vy)
{
	const struct kern_block_q3_K *x = vx;
	const struct kern_block_q8_K *y = vy;
	const int64_t nb = n / KERN_QK_K;
	int8_t scales[16];
	float sumf = 0.0f;
	for (int64_t i = 0; i < nb; i++) {
		const uint8_t *q = x[i].qs, *hm = x[i].hmask;
		const int8_t *q8 = y[i].qs;
		kern_q3_K_scales(x[i].scales, scales);
		uint8_t m = 1;
		int is = 0, isum = 0;
		for (int k = 0; k < KERN_QK_K; k += 128) {
			for (int shift = 0; shift < 8; shift += 2) {
				for (int half = 0; half < 2; half++) {
					int dot = 0;
					for (int l = 16 * half; l < 16 * half + 16; l++) {
						int v = ((q[l] >> shift) & 3) - ((hm[l] & m) ? 0 : 4);
						dot += v * q8[l - 16 * half];
					}
					isum += (scales[is++] - 32) * dot;
					q8 += 16;
				}
				m <<= 1;
			}
			q += 32;
		}
		sumf += F16(x[i].d) * y[i].d * isum;
	}
	*s = sumf;
}

/* ===================== Q4_K / Q5_K ===================== */

static void to_f32_q4_K(const void *vx, float *y, int64_t n)
{
	const struct kern_block_q4_K *x = vx;
	const int64_t nb = n / KERN_QK_K;
	for (int64_t i = 0; i < nb; i++) {
		const uint8_t *q = x[i].qs;
		const float d = F16(x[i].d), min = F16(x[i].dmin);
		uint8_t sc, m;
		for (int j = 0, is = 0; j < KERN_QK_K; j += 64, is += 2) {
			kern_get_scale_min_k4(is + 0, x[i].scales, &sc, &m);
			const float d1 = d * sc, m1 = min * m;
			kern_get_scale_min_k4(is + 1, x[i].scales, &sc, &m);
			const float d2 = d * sc, m2 = min * m;
			for (int l = 0; l < 32; l++)
				*y++ = d1 * (q[l] & 0xF) - m1;
			for (int l = 0; l < 32; l++)
				*y++ = d2 * (q[l] >> 4) - m2;
			q += 32;
		}
	}
}

/* Shared by Q4_K (nmax 15) and Q5_K (nmax 31): sub-block scales/mins and
 * the packed 6-bit scale bytes. Fills L with the final quants. */
static void quantize_k_scales_mins(const float *x, int nmax, float rmin, int nstep,
				   uint8_t scales_out[12], kern_f16 *d_out, kern_f16 *dmin_out,
				   uint8_t L[KERN_QK_K])
{
	uint8_t Laux[32];
	float weights[32], mins[8], scales[8];
	float max_scale = 0, max_min = 0;
	for (int j = 0; j < 8; j++) {
		float sum_x2 = 0;
		for (int l = 0; l < 32; l++)
			sum_x2 += x[32 * j + l] * x[32 * j + l];
		float av_x = sqrtf(sum_x2 / 32);
		for (int l = 0; l < 32; l++)
			weights[l] = av_x + fabsf(x[32 * j + l]);
		scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux,
					     rmin, 0.1f, nstep, false);
		if (scales[j] > max_scale)
			max_scale = scales[j];
		if (mins[j] > max_min)
			max_min = mins[j];
	}
	float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
	float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
	for (int j = 0; j < 8; j++) {
		uint8_t ls = (uint8_t)nearest_int(inv_scale * scales[j]);
		uint8_t lm = (uint8_t)nearest_int(inv_min * mins[j]);
		ls = KMIN(63, ls);
		lm = KMIN(63, lm);
		if (j < 4) {
			scales_out[j] = ls;
			scales_out[j + 4] = lm;
		} else {
			scales_out[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
			scales_out[j - 4] |= (uint8_t)((ls >> 4) << 6);
			scales_out[j - 0] |= (uint8_t)((lm >> 4) << 6);
		}
	}
	*d_out = kern_f32_to_f16(max_scale / 63.f);
	*dmin_out = kern_f32_to_f16(max_min / 63.f);
	uint8_t sc, m;
	for (int j = 0; j < 8; j++) {
		kern_get_scale_min_k4(j, scales_out, &sc, &m);
		const float d = F16(*d_out) * sc;
		if (!d)
			continue;
		const float dm = F16(*dmin_out) * m;
		for (int ii = 0; ii < 32; ii++) {
			int l = nearest_int((x[32 * j + ii] + dm) / d);
			L[32 * j + ii] = (uint8_t)KMAX(0, KMIN(nmax, l));
		}
	}
}

static void from_f32_q4_K(const float *x, void *vy, int64_t n)
{
	struct kern_block_q4_K *y = vy;
	const int64_t nb = n / KERN_QK_K;
	uint8_t L[KERN_QK_K];
	for (int64_t i = 0; i < nb; i++) {
		memset(y[i].scales, 0, sizeof(y[i].scales));
		quantize_k_scales_mins(x, 15, -1.f, 20, y[i].scales, &y[i].d, &y[i].dmin, L);
		uint8_t *q = y[i].qs;
		for (int j = 0; j < KERN_QK_K; j += 64) {
			for (int l = 0; l < 32; l++)
				q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
			q += 32;
		}
		x += KERN_QK_K;
	}
}

/* Unpacks Q4_K/Q5_K scales and mins into 8 bytes each. */
static void k4_unpack(const uint8_t packed[12], uint8_t sc[8], uint8_t mn[8])
{
	for (int j = 0; j < 8; j++)
		kern_get_scale_min_k4(j, packed, &sc[j], &mn[j]);
}

void kern_vec_dot_q4_K_q8_K_generic(int64_t n, float *s, const void *vx, const void *vy)
{
	const struct kern_block_q4_K *x = vx;
	const struct kern_block_q8_K *y = vy;
	const int64_t nb = n / KERN_QK_K;
	float sumf = 0.0f;
	uint8_t sc[8], mn[8];
	for (int64_t i = 0; i < nb; i++) {
		const uint8_t *q4 = x[i].qs;
		const int8_t *q8 = y[i].qs;
		k4_unpack(x[i].scales, sc, mn);
		int summs = 0;
		for (int j = 0; j < 16; j++)
			summs += y[i].bsums[j] * mn[j / 2];
		int isum = 0;
		for (int j = 0; j < 4; j++) {
			int dlo = 0, dhi = 0;
			for (int l = 0; l < 32; l++) {
				dlo += (q4[l] & 0xF) * q8[l];
				dhi += (q4[l] >> 4) * q8[l + 32];
			}
			isum += sc[2 * j] * dlo + sc[2 * j + 1] * dhi;
			q4 += 32;
			q8 += 64;
		}
		const float d = F16(x[i].d) * y[i].d;
		const float dmin = F16(x[i].dmin) * y[i].d;
		sumf += d * isum - dmin * summs;
	}
	*s = sumf;
}

static void to_f32_q5_K(const void *vx, float *y, int64_t n)
{
	const struct kern_block_q5_K *x = vx;
	const int64_t nb = n / KERN_QK_K;
	for (int64_t i = 0; i < nb; i++) {
		const uint8_t *ql = x[i].qs, *qh = x[i].qh;
		const float d = F16(x[i].d), min = F16(x[i].dmin);
		uint8_t sc, m, u1 = 1, u2 = 2;
		for (int j = 0, is = 0; j < KERN_QK_K; j += 64, is += 2) {
			kern_get_scale_min_k4(is + 0, x[i].scales, &sc, &m);
			const float d1 = d * sc, m1 = min * m;
			kern_get_scale_min_k4(is + 1, x[i].scales, &sc, &m);
			const float d2 = d * sc, m2 = min * m;
			for (int l = 0; l < 32; l++)
				*y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
			for (int l = 0; l < 32; l++)
				*y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
			ql += 32;
			u1 = (uint8_t)(u1 << 2);
			u2 = (uint8_t)(u2 << 2);
		}
	}
}

static void from_f32_q5_K(const float *x, void *vy, int64_t n)
{
	struct kern_block_q5_K *y = vy;
	const int64_t nb = n / KERN_QK_K;
	uint8_t L[KERN_QK_K];
	for (int64_t i = 0; i < nb; i++) {
		memset(y[i].scales, 0, sizeof(y[i].scales));
		quantize_k_scales_mins(x, 31, -0.5f, 15, y[i].scales, &y[i].d, &y[i].dmin, L);
		uint8_t *qh = y[i].qh, *ql = y[i].qs;
		memset(qh, 0, 32);
		uint8_t m1 = 1, m2 = 2;
		for (int k = 0; k < KERN_QK_K; k += 64) {
			for (int j = 0; j < 32; j++) {
				int l1 = L[k + j], l2 = L[k + j + 32];
				if (l1 > 15) {
					l1 -= 16;
					qh[j] |= m1;
				}
				if (l2 > 15) {
					l2 -= 16;
					qh[j] |= m2;
				}
				ql[j] = (uint8_t)(l1 | (l2 << 4));
			}
			m1 = (uint8_t)(m1 << 2);
			m2 = (uint8_t)(m2 << 2);
			ql += 32;
		}
		x += KERN_QK_K;
	}
}

void kern_vec_dot_q5_K_q8_K_generic(int64_t n, float *s, const void *vx, const void *vy)
{
	const struct kern_block_q5_K *x = vx;
	const struct kern_block_q8_K *y = vy;
	const int64_t nb = n / KERN_QK_K;
	float sumf = 0.0f;
	uint8_t sc[8], mn[8];
	for (int64_t i = 0; i < nb; i++) {
		const uint8_t *ql = x[i].qs, *qh = x[i].qh;
		const int8_t *q8 = y[i].qs;
		k4_unpack(x[i].scales, sc, mn);
		int summs = 0;
		for (int j = 0; j < 16; j++)
			summs += y[i].bsums[j] * mn[j / 2];
		int isum = 0;
		uint8_t u1 = 1, u2 = 2;
		for (int j = 0; j < 4; j++) {
			int dlo = 0, dhi = 0;
			for (int l = 0; l < 32; l++) {
				dlo += ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) * q8[l];
				dhi += ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) * q8[l + 32];
			}
			isum += sc[2 * j] * dlo + sc[2 * j + 1] * dhi;
			ql += 32;
			q8 += 64;
			u1 = (uint8_t)(u1 << 2);
			u2 = (uint8_t)(u2 << 2);
		}
		const float d = F16(x[i].d) * y[i].d;
		const float dmin = F16(x[i].dmin) * y[i].d;
		sumf += d * isum - dmin * summs;
	}
	*s = sumf;
}

/* ===================== Q6_K ===================== */

static void to_f32_q6_K(const void *vx, float *y, int64_t n)
{
	const struct kern_block_q6_K *x = vx;
	const int64_t nb = n / KERN_QK_K;
	for (int64_t i = 0; i < nb; i++) {
		const float d = F16(x[i].d);
		const uint8_t *ql = x[i].ql, *qh = x[i].qh;
		const int8_t *sc = x[i].scales;
		for (int k = 0; k < KERN_QK_K; k += 128) {
			for (int l = 0; l < 32; l++) {
				int is = l / 16;
				const int8_t q1 = (int8_t)((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
				const int8_t q2 = (int8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
				const int8_t q3 = (int8_t)((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
				const int8_t q4 = (int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
				y[l + 0] = d * sc[is + 0] * q1;
				y[l + 32] = d * sc[is + 2] * q2;
				y[l + 64] = d * sc[is + 4] * q3;
				y[l + 96] = d * sc[is + 6] * q4;
			}
			y += 128;
			ql += 64;
			qh += 32;
			sc += 8;
		}
	}
}

static void from_f32_q6_K(const float *x, void *vy, int64_t n)
{
	struct kern_block_q6_K *y = vy;
	const int64_t nb = n / KERN_QK_K;
	int8_t L[KERN_QK_K];
	float scales[16];
	for (int64_t i = 0; i < nb; i++) {
		float max_scale = 0, max_abs_scale = 0;
		for (int ib = 0; ib < 16; ib++) {
			const float scale = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, 1);
			scales[ib] = scale;
			if (fabsf(scale) > max_abs_scale) {
				max_abs_scale = fabsf(scale);
				max_scale = scale;
			}
		}
		if (max_abs_scale < GROUP_MAX_EPS) {
			memset(&y[i], 0, sizeof(y[i]));
			x += KERN_QK_K;
			continue;
		}
		float iscale = -128.f / max_scale;
		y[i].d = kern_f32_to_f16(1 / iscale);
		for (int ib = 0; ib < 16; ib++)
			y[i].scales[ib] = (int8_t)KMIN(127, nearest_int(iscale * scales[ib]));
		for (int j = 0; j < 16; j++) {
			float d = F16(y[i].d) * y[i].scales[j];
			if (!d)
				continue;
			for (int ii = 0; ii < 16; ii++) {
				int l = nearest_int(x[16 * j + ii] / d);
				L[16 * j + ii] = (int8_t)(KMAX(-32, KMIN(31, l)) + 32);
			}
		}
		uint8_t *ql = y[i].ql, *qh = y[i].qh;
		for (int j = 0; j < KERN_QK_K; j += 128) {
			for (int l = 0; l < 32; l++) {
				const uint8_t q1 = L[j + l + 0] & 0xF;
				const uint8_t q2 = L[j + l + 32] & 0xF;
				const uint8_t q3 = L[j + l + 64] & 0xF;
				const uint8_t q4 = L[j + l + 96] & 0xF;
				ql[l + 0] = (uint8_t)(q1 | (q3 << 4));
				ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
				qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
						  ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
			}
			ql += 64;
			qh += 32;
		}
		x += KERN_QK_K;
	}
}

void kern_vec_dot_q6_K_q8_K_generic(int64_t n, float *s, const void *vx, const void *vy)
{
	const struct kern_block_q6_K *x = vx;
	const struct kern_block_q8_K *y = vy;
	const int64_t nb = n / KERN_QK_K;
	float sumf = 0.0f;
	for (int64_t i = 0; i < nb; i++) {
		const uint8_t *ql = x[i].ql, *qh = x[i].qh;
		const int8_t *sc = x[i].scales;
		const int8_t *q8 = y[i].qs;
		int isum = 0;
		for (int k = 0; k < KERN_QK_K; k += 128) {
			int dots[8] = {0};
			for (int l = 0; l < 32; l++) {
				int is = l / 16;
				const int q1 = ((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
				const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
				const int q3 = ((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
				const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
				dots[is + 0] += q1 * q8[l + 0];
				dots[is + 2] += q2 * q8[l + 32];
				dots[is + 4] += q3 * q8[l + 64];
				dots[is + 6] += q4 * q8[l + 96];
			}
			for (int j = 0; j < 8; j++)
				isum += sc[j] * dots[j];
			ql += 64;
			qh += 32;
			sc += 8;
			q8 += 128;
		}
		sumf += F16(x[i].d) * y[i].d * isum;
	}
	*s = sumf;
}

/* ===================== Q8_K ===================== */

static void to_f32_q8_K(const void *vx, float *y, int64_t n)
{
	const struct kern_block_q8_K *x = vx;
	const int64_t nb = n / KERN_QK_K;
	for (int64_t i = 0; i < nb; i++)
		for (int j = 0; j < KERN_QK_K; j++)
			*y++ = x[i].d * x[i].qs[j];
}

/* As ggml's quantize_row_q8_K_ref (used by ggml on x86 for activations too). */
void kern_quantize_act_q8_K_generic(const float *x, void *vy, int64_t n)
{
	struct kern_block_q8_K *y = vy;
	const int64_t nb = n / KERN_QK_K;
	for (int64_t i = 0; i < nb; i++) {
		float max = 0, amax = 0;
		for (int j = 0; j < KERN_QK_K; j++) {
			float ax = fabsf(x[j]);
			if (ax > amax) {
				amax = ax;
				max = x[j];
			}
		}
		if (!amax) {
			memset(&y[i], 0, sizeof(y[i]));
			x += KERN_QK_K;
			continue;
		}
		const float iscale = -127.f / max;
		for (int j = 0; j < KERN_QK_K; j++) {
			int v = nearest_int(iscale * x[j]);
			y[i].qs[j] = (int8_t)KMIN(127, v);
		}
		for (int j = 0; j < 16; j++) {
			int sum = 0;
			for (int ii = 0; ii < 16; ii++)
				sum += y[i].qs[j * 16 + ii];
			y[i].bsums[j] = (int16_t)sum;
		}
		y[i].d = 1 / iscale;
		x += KERN_QK_K;
	}
}

/* ===================== table ===================== */

#define ENTRY(T, VDT, SUP, TOF, FROMF, DOT)                                                  \
	d->traits[T] = (struct kern_type_traits){.supported = SUP, .vec_dot_type = VDT,         \
						 .to_f32 = TOF, .from_f32 = FROMF, .vec_dot = DOT}

void kern_dispatch_generic(struct kern_dispatch *d)
{
	memset(d, 0, sizeof(*d));
	ENTRY(ML_DTYPE_F32, ML_DTYPE_F32, true, to_f32_f32, from_f32_f32, kern_vec_dot_f32_f32_generic);
	ENTRY(ML_DTYPE_F16, ML_DTYPE_F16, true, to_f32_f16, from_f32_f16, kern_vec_dot_f16_f16_generic);
	ENTRY(ML_DTYPE_BF16, ML_DTYPE_BF16, true, to_f32_bf16, from_f32_bf16,
	      kern_vec_dot_bf16_bf16_generic);
	ENTRY(ML_DTYPE_Q4_0, ML_DTYPE_Q8_0, true, to_f32_q4_0, from_f32_q4_0,
	      kern_vec_dot_q4_0_q8_0_generic);
	ENTRY(ML_DTYPE_Q4_1, ML_DTYPE_Q8_1, true, to_f32_q4_1, from_f32_q4_1,
	      kern_vec_dot_q4_1_q8_1_generic);
	ENTRY(ML_DTYPE_Q5_0, ML_DTYPE_Q8_0, true, to_f32_q5_0, from_f32_q5_0,
	      kern_vec_dot_q5_0_q8_0_generic);
	ENTRY(ML_DTYPE_Q5_1, ML_DTYPE_Q8_1, true, to_f32_q5_1, from_f32_q5_1,
	      kern_vec_dot_q5_1_q8_1_generic);
	ENTRY(ML_DTYPE_Q8_0, ML_DTYPE_Q8_0, true, to_f32_q8_0, from_f32_q8_0,
	      kern_vec_dot_q8_0_q8_0_generic);
	/* Q8_1 and Q8_K are activation formats: convertible, not weight types. */
	ENTRY(ML_DTYPE_Q8_1, ML_DTYPE_Q8_1, false, to_f32_q8_1, from_f32_q8_1, NULL);
	ENTRY(ML_DTYPE_Q2_K, ML_DTYPE_Q8_K, true, to_f32_q2_K, from_f32_q2_K,
	      kern_vec_dot_q2_K_q8_K_generic);
	ENTRY(ML_DTYPE_Q3_K, ML_DTYPE_Q8_K, true, to_f32_q3_K, from_f32_q3_K,
	      kern_vec_dot_q3_K_q8_K_generic);
	ENTRY(ML_DTYPE_Q4_K, ML_DTYPE_Q8_K, true, to_f32_q4_K, from_f32_q4_K,
	      kern_vec_dot_q4_K_q8_K_generic);
	ENTRY(ML_DTYPE_Q5_K, ML_DTYPE_Q8_K, true, to_f32_q5_K, from_f32_q5_K,
	      kern_vec_dot_q5_K_q8_K_generic);
	ENTRY(ML_DTYPE_Q6_K, ML_DTYPE_Q8_K, true, to_f32_q6_K, from_f32_q6_K,
	      kern_vec_dot_q6_K_q8_K_generic);
	ENTRY(ML_DTYPE_Q8_K, ML_DTYPE_Q8_K, false, to_f32_q8_K, kern_quantize_act_q8_K_generic, NULL);

	/* Activation converters, keyed by vec-dot type. */
	d->act_from_f32[ML_DTYPE_F32] = from_f32_f32;
	d->act_from_f32[ML_DTYPE_F16] = from_f32_f16;
	d->act_from_f32[ML_DTYPE_BF16] = from_f32_bf16;
	d->act_from_f32[ML_DTYPE_Q8_0] = kern_quantize_act_q8_0_generic;
	d->act_from_f32[ML_DTYPE_Q8_1] = kern_quantize_act_q8_1_generic;
	d->act_from_f32[ML_DTYPE_Q8_K] = kern_quantize_act_q8_K_generic;
}
