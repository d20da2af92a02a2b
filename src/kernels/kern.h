/* Compute kernels: per-type conversion, dot products and matrix products.
 *
 * Every weight type has a scalar reference ("generic") implementation and
 * optionally SIMD variants (AVX2, AVX-512, later NEON) chosen once at run
 * time by kern_init(), through one type-traits table. The dispatch table is
 * written once, before any compute thread starts, and only read after.
 *
 * Matrix products follow llama.cpp's CPU arithmetic so results can be
 * compared with its reference outputs: activations are first converted
 * ("quantized") to the weight type's vec-dot type (F32 -> F32, F16 -> F16,
 * BF16 -> BF16, Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 -> Q8_0 or Q8_1 as ggml does,
 * K-quants -> Q8_K), then each output is a dot product of one weight row with
 * one converted activation row.
 *
 * Guarantees (tests/kernels checks each):
 *  - to_f32 reproduces ggml's dequantization bit for bit, and from_f32
 *    reproduces llama-quantize's bytes (ggml's *_ref quantizers, no imatrix);
 *  - the activation conversion of kern_quantize_rows() is bit-identical on
 *    every instruction set; for Q8_0/Q8_1 it follows ggml's x86 SIMD
 *    quantize_row_q8_0/q8_1 (scale 127/amax, round half to even), for Q8_K
 *    quantize_row_q8_K_ref;
 *  - SIMD dot products differ from the generic ones only in float summation
 *    order; kern_matmul() gives each output bit-identical results whatever
 *    the number of tokens in the batch and the number of threads. */
#ifndef KERN_H
#define KERN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/ml_dtype.h"

typedef uint16_t kern_f16;  /* IEEE half, raw bits */
typedef uint16_t kern_bf16; /* bfloat16, raw bits */

/* Converts one row of |n| elements of type |t| to float. */
typedef void (*kern_to_f32_fn)(const void *x, float *y, int64_t n);
/* Converts/quantizes one row of |n| floats to type |t| (n a multiple of the block size). */
typedef void (*kern_from_f32_fn)(const float *x, void *y, int64_t n);
/* *s = dot(x, y) over |n| elements, x of the weight type, y of its vec-dot type. */
typedef void (*kern_vec_dot_fn)(int64_t n, float *s, const void *x, const void *y);

struct kern_type_traits {
	bool supported;               /* the engine can compute with this type */
	enum ml_dtype vec_dot_type;   /* type activations are converted to */
	kern_to_f32_fn to_f32;        /* dequantize */
	kern_from_f32_fn from_f32;    /* quantize (reference quality, used by tools/tests too) */
	kern_vec_dot_fn vec_dot;      /* weight row . converted activation row */
};

/* Detects CPU features and fills the dispatch table. Idempotent; call once
 * from the main thread before starting compute threads. Setting the
 * environment variable MESH_LLM_KERNELS=generic forces scalar kernels. */
void kern_init(void);

/* Traits of |t| (valid after kern_init), or NULL when |t| is unknown. */
const struct kern_type_traits *kern_type_traits(uint32_t t);

/* The scalar reference traits of |t|, regardless of CPU (for tests). */
const struct kern_type_traits *kern_type_traits_generic(uint32_t t);

/* Names of the instruction sets the dispatch uses, e.g. "avx2 avx512". */
const char *kern_isa_names(void);

/* Half/bfloat conversions (exact, round-to-nearest-even on the way down). */
float kern_f16_to_f32(kern_f16 h);
kern_f16 kern_f32_to_f16(float f);
float kern_bf16_to_f32(kern_bf16 h);
kern_bf16 kern_f32_to_bf16(float f);

/* Converts |n_rows| rows of |n_cols| floats (row stride |x_stride| floats)
 * into |xq|, rows of ml_dtype_row_size(vdt, n_cols) bytes each, packed.
 * Threads split the rows: thread |ith| of |nth| does its share. */
void kern_quantize_rows(enum ml_dtype vdt, const float *x, int64_t x_stride, void *xq,
			int64_t n_rows, int64_t n_cols, int ith, int nth);

/* Matrix product over a thread's share of weight rows:
 *   y[t * y_stride + r] = dot(W row r, xq row t)  for t < n_tok, r in share
 * W: |n_rows| rows of |n_cols| elements of |wtype|, row stride
 * ml_dtype_row_size(wtype, n_cols). xq: |n_tok| rows converted with
 * kern_quantize_rows() to the vec-dot type of |wtype|. For n_tok > 1 this is
 * a tiled matrix-matrix product. */
void kern_matmul(enum ml_dtype wtype, const void *w, int64_t n_rows, int64_t n_cols,
		 const void *xq, int64_t n_tok, float *y, int64_t y_stride, int ith, int nth);

#endif
