/* ggml tensor data type ids, as stored in GGUF files, with their names and
 * block geometry. Shared by the GGUF reader (to validate sizes) and the
 * kernels (to compute). Ids are append-only and must match ggml. */
#ifndef ML_DTYPE_H
#define ML_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ml_dtype {
	ML_DTYPE_F32 = 0,
	ML_DTYPE_F16 = 1,
	ML_DTYPE_Q4_0 = 2,
	ML_DTYPE_Q4_1 = 3,
	ML_DTYPE_Q5_0 = 6,
	ML_DTYPE_Q5_1 = 7,
	ML_DTYPE_Q8_0 = 8,
	ML_DTYPE_Q8_1 = 9,
	ML_DTYPE_Q2_K = 10,
	ML_DTYPE_Q3_K = 11,
	ML_DTYPE_Q4_K = 12,
	ML_DTYPE_Q5_K = 13,
	ML_DTYPE_Q6_K = 14,
	ML_DTYPE_Q8_K = 15,
	ML_DTYPE_IQ2_XXS = 16,
	ML_DTYPE_IQ2_XS = 17,
	ML_DTYPE_IQ3_XXS = 18,
	ML_DTYPE_IQ1_S = 19,
	ML_DTYPE_IQ4_NL = 20,
	ML_DTYPE_IQ3_S = 21,
	ML_DTYPE_IQ2_S = 22,
	ML_DTYPE_IQ4_XS = 23,
	ML_DTYPE_I8 = 24,
	ML_DTYPE_I16 = 25,
	ML_DTYPE_I32 = 26,
	ML_DTYPE_I64 = 27,
	ML_DTYPE_F64 = 28,
	ML_DTYPE_IQ1_M = 29,
	ML_DTYPE_BF16 = 30,
	ML_DTYPE_TQ1_0 = 34,
	ML_DTYPE_TQ2_0 = 35,
	ML_DTYPE_MXFP4 = 39,
	ML_DTYPE_COUNT = 40,
};

struct ml_dtype_info {
	const char *name;    /* "Q4_K"; NULL for ids that ggml removed or never used */
	uint32_t block_size; /* elements per block (1 for plain types) */
	uint32_t type_size;  /* bytes per block */
};

/* Geometry of |t|, or NULL when |t| is not a known id. */
const struct ml_dtype_info *ml_dtype_get(uint32_t t);

/* Name of |t|, or "unknown" (never NULL). */
const char *ml_dtype_name(uint32_t t);

/* Bytes for |n| elements of |t| (n must be a multiple of the block size).
 * Returns 0 and sets no error when t is unknown or n is not a multiple. */
size_t ml_dtype_row_size(uint32_t t, int64_t n);

#endif
