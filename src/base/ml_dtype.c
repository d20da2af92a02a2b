/* Block geometry of the ggml data types (sizes from the ggml block structs). */
#include "base/ml_dtype.h"

static const struct ml_dtype_info dtypes[ML_DTYPE_COUNT] = {
	[ML_DTYPE_F32] = {"F32", 1, 4},
	[ML_DTYPE_F16] = {"F16", 1, 2},
	[ML_DTYPE_Q4_0] = {"Q4_0", 32, 2 + 16},
	[ML_DTYPE_Q4_1] = {"Q4_1", 32, 2 + 2 + 16},
	[ML_DTYPE_Q5_0] = {"Q5_0", 32, 2 + 4 + 16},
	[ML_DTYPE_Q5_1] = {"Q5_1", 32, 2 + 2 + 4 + 16},
	[ML_DTYPE_Q8_0] = {"Q8_0", 32, 2 + 32},
	[ML_DTYPE_Q8_1] = {"Q8_1", 32, 2 + 2 + 32},
	[ML_DTYPE_Q2_K] = {"Q2_K", 256, 256 / 16 + 256 / 4 + 2 + 2},
	[ML_DTYPE_Q3_K] = {"Q3_K", 256, 256 / 8 + 256 / 4 + 12 + 2},
	[ML_DTYPE_Q4_K] = {"Q4_K", 256, 2 + 2 + 12 + 256 / 2},
	[ML_DTYPE_Q5_K] = {"Q5_K", 256, 2 + 2 + 12 + 256 / 8 + 256 / 2},
	[ML_DTYPE_Q6_K] = {"Q6_K", 256, 256 / 2 + 256 / 4 + 256 / 16 + 2},
	[ML_DTYPE_Q8_K] = {"Q8_K", 256, 4 + 256 + 256 / 16 * 2},
	[ML_DTYPE_IQ2_XXS] = {"IQ2_XXS", 256, 2 + 256 / 8 * 2},
	[ML_DTYPE_IQ2_XS] = {"IQ2_XS", 256, 2 + 256 / 8 * 2 + 256 / 32},
	[ML_DTYPE_IQ3_XXS] = {"IQ3_XXS", 256, 2 + 256 / 4 + 256 / 8},
	[ML_DTYPE_IQ1_S] = {"IQ1_S", 256, 2 + 256 / 8 + 256 / 16},
	[ML_DTYPE_IQ4_NL] = {"IQ4_NL", 32, 2 + 16},
	[ML_DTYPE_IQ3_S] = {"IQ3_S", 256, 2 + 256 / 4 + 256 / 8 + 256 / 32 + 4},
	[ML_DTYPE_IQ2_S] = {"IQ2_S", 256, 2 + 256 / 4 + 256 / 16},
	[ML_DTYPE_IQ4_XS] = {"IQ4_XS", 256, 2 + 2 + 256 / 64 + 256 / 2},
	[ML_DTYPE_I8] = {"I8", 1, 1},
	[ML_DTYPE_I16] = {"I16", 1, 2},
	[ML_DTYPE_I32] = {"I32", 1, 4},
	[ML_DTYPE_I64] = {"I64", 1, 8},
	[ML_DTYPE_F64] = {"F64", 1, 8},
	[ML_DTYPE_IQ1_M] = {"IQ1_M", 256, 256 / 8 + 256 / 16 + 256 / 32},
	[ML_DTYPE_BF16] = {"BF16", 1, 2},
	[ML_DTYPE_TQ1_0] = {"TQ1_0", 256, (256 - 4 * 256 / 64) / 5 + 256 / 64 + 2},
	[ML_DTYPE_TQ2_0] = {"TQ2_0", 256, 2 + 256 / 4},
	[ML_DTYPE_MXFP4] = {"MXFP4", 32, 1 + 16},
};

const struct ml_dtype_info *ml_dtype_get(uint32_t t)
{
	if (t >= ML_DTYPE_COUNT || dtypes[t].name == NULL)
		return NULL;
	return &dtypes[t];
}

const char *ml_dtype_name(uint32_t t)
{
	const struct ml_dtype_info *d = ml_dtype_get(t);
	return d ? d->name : "unknown";
}

size_t ml_dtype_row_size(uint32_t t, int64_t n)
{
	const struct ml_dtype_info *d = ml_dtype_get(t);
	if (d == NULL || n < 0 || n % d->block_size != 0)
		return 0;
	return (size_t)(n / d->block_size) * d->type_size;
}
