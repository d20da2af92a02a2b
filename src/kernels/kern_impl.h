/* Internal to src/kernels: ggml block layouts, the scalar ("generic")
 * kernels and the hooks through which each instruction-set file (AVX2,
 * AVX-512, later NEON) overrides entries of the dispatch table.
 *
 * Block layouts are byte-for-byte those of ggml (ggml-common.h), since the
 * weights are views into GGUF files; static_asserts pin their sizes to the
 * geometry table in base/ml_dtype.c. */
#ifndef KERN_IMPL_H
#define KERN_IMPL_H

#include <assert.h>
#include <stdint.h>

#include "kernels/kern.h"

#define KERN_QK4_0 32
#define KERN_QK4_1 32
#define KERN_QK5_0 32
#define KERN_QK5_1 32
#define KERN_QK8_0 32
#define KERN_QK8_1 32
#define KERN_QK_K 256
#define KERN_K_SCALE_SIZE 12

struct kern_block_q4_0 {
	kern_f16 d;                   /* scale */
	uint8_t qs[KERN_QK4_0 / 2];   /* nibbles: low = elements 0..15, high = 16..31 */
};
static_assert(sizeof(struct kern_block_q4_0) == 18, "q4_0 block size");

struct kern_block_q4_1 {
	kern_f16 d;                   /* scale */
	kern_f16 m;                   /* min */
	uint8_t qs[KERN_QK4_1 / 2];
};
static_assert(sizeof(struct kern_block_q4_1) == 20, "q4_1 block size");

struct kern_block_q5_0 {
	kern_f16 d;
	uint8_t qh[4];                /* 5th bit of each element */
	uint8_t qs[KERN_QK5_0 / 2];
};
static_assert(sizeof(struct kern_block_q5_0) == 22, "q5_0 block size");

struct kern_block_q5_1 {
	kern_f16 d;
	kern_f16 m;
	uint8_t qh[4];
	uint8_t qs[KERN_QK5_1 / 2];
};
static_assert(sizeof(struct kern_block_q5_1) == 24, "q5_1 block size");

struct kern_block_q8_0 {
	kern_f16 d;
	int8_t qs[KERN_QK8_0];
};
static_assert(sizeof(struct kern_block_q8_0) == 34, "q8_0 block size");

struct kern_block_q8_1 {
	kern_f16 d;                   /* scale */
	kern_f16 s;                   /* d * sum(qs) */
	int8_t qs[KERN_QK8_1];
};
static_assert(sizeof(struct kern_block_q8_1) == 36, "q8_1 block size");

/* 2-bit super-block: 16 sub-blocks of 16; 4-bit scale and min per sub-block. */
struct kern_block_q2_K {
	uint8_t scales[KERN_QK_K / 16]; /* low nibble scale, high nibble min */
	uint8_t qs[KERN_QK_K / 4];
	kern_f16 d;                     /* super-block scale for the scales */
	kern_f16 dmin;                  /* super-block scale for the mins */
};
static_assert(sizeof(struct kern_block_q2_K) == 84, "q2_K block size");

/* 3-bit super-block: 16 sub-blocks of 16; 6-bit signed scales. */
struct kern_block_q3_K {
	uint8_t hmask[KERN_QK_K / 8];   /* high bit */
	uint8_t qs[KERN_QK_K / 4];      /* low 2 bits */
	uint8_t scales[12];             /* 16 scales, 6 bits each */
	kern_f16 d;
};
static_assert(sizeof(struct kern_block_q3_K) == 110, "q3_K block size");

/* 4-bit super-block: 8 sub-blocks of 32; 6-bit scale and min each. */
struct kern_block_q4_K {
	kern_f16 d;
	kern_f16 dmin;
	uint8_t scales[KERN_K_SCALE_SIZE];
	uint8_t qs[KERN_QK_K / 2];
};
static_assert(sizeof(struct kern_block_q4_K) == 144, "q4_K block size");

struct kern_block_q5_K {
	kern_f16 d;
	kern_f16 dmin;
	uint8_t scales[KERN_K_SCALE_SIZE];
	uint8_t qh[KERN_QK_K / 8];      /* 5th bit */
	uint8_t qs[KERN_QK_K / 2];      /* low 4 bits */
};
static_assert(sizeof(struct kern_block_q5_K) == 176, "q5_K block size");

/* 6-bit super-block: 16 sub-blocks of 16; 8-bit signed scales. */
struct kern_block_q6_K {
	uint8_t ql[KERN_QK_K / 2];      /* low 4 bits */
	uint8_t qh[KERN_QK_K / 4];      /* high 2 bits */
	int8_t scales[KERN_QK_K / 16];
	kern_f16 d;
};
static_assert(sizeof(struct kern_block_q6_K) == 210, "q6_K block size");

/* Activation block of the K-quants' dot products. */
struct kern_block_q8_K {
	float d;
	int8_t qs[KERN_QK_K];
	int16_t bsums[KERN_QK_K / 16];  /* sums of groups of 16 qs */
};
static_assert(sizeof(struct kern_block_q8_K) == 292, "q8_K block size");

/* One dispatch table entry per type id, plus the activation converter
 * kern_quantize_rows() uses for that (vec-dot) type. The activation
 * converters of Q8_0/Q8_1 follow the arithmetic of ggml's x86 SIMD
 * quantize_row_q8_0/q8_1 (id = 127/amax, round half to even), which is what
 * produced the reference logits; the from_f32 entries of the traits follow
 * ggml's *_ref functions (used to write model files). */
/* s[k] = dot(x, y + k * y_row) for k < 4: one weight row against four
 * converted activation rows. Each s[k] must be bit-identical to the type's
 * vec_dot of the same table, so results do not depend on batch size. */
typedef void (*kern_vec_dot_x4_fn)(int64_t n, float *s, const void *x, const void *y, size_t y_row);

/* A tile of a matrix product: for r < n_r and t < n_t,
 *   y[t * y_stride + r] = dot(row r of w, row t of x)
 * with weight rows |w_row| bytes apart and converted activation rows |x_row|
 * bytes apart; 1 <= n_r <= the type's tile_r, 1 <= n_t <= its tile_t. Each
 * output must be the same bits whatever n_r and n_t are and wherever it sits
 * in the tile (kern_matmul() cuts tiles differently for different batch
 * sizes and thread counts), and must stay within the vec_dot tolerance of
 * the generic kernel. */
typedef void (*kern_tile_fn)(int64_t n, const void *w, size_t w_row, int n_r, const void *x,
			     size_t x_row, int n_t, float *y, int64_t y_stride);

/* With n_t = 1 (decode) a tile kernel prefetches its own weight stream,
 * interleaved with the work: rows of a few KiB are too short for the
 * hardware prefetcher, which stops at every 4 KiB page, and prefetching a
 * whole tile's rows in one burst from outside stalls a large tile. */
struct kern_tile {
	kern_tile_fn fn; /* NULL: kern_matmul() uses vec_dot / vec_dot_x4 */
	int r, t;        /* largest n_r, n_t it takes */
};

struct kern_dispatch {
	struct kern_type_traits traits[ML_DTYPE_COUNT];
	kern_from_f32_fn act_from_f32[ML_DTYPE_COUNT];
	kern_vec_dot_x4_fn vec_dot_x4[ML_DTYPE_COUNT]; /* optional (NULL: use vec_dot) */
	struct kern_tile tile[ML_DTYPE_COUNT];         /* optional, preferred when set */
};

/* Fills |d| with the scalar kernels. */
void kern_dispatch_generic(struct kern_dispatch *d);
/* Override entries with SIMD versions (each file compiled for its ISA);
 * return how many entries they replaced. */
int kern_dispatch_avx2(struct kern_dispatch *d);
int kern_dispatch_avx512(struct kern_dispatch *d);
/* Tile kernels (struct kern_tile), one file per type family and ISA:
 * kern_tile_q8_* (Q8_0, Q4_0), kern_tile_kq_* (K-quants), kern_tile_f16_*
 * (F32, F16, BF16). Each sets d->tile[] entries and returns how many. */
int kern_tiles_q8_avx2(struct kern_dispatch *d);
int kern_tiles_q8_avx512(struct kern_dispatch *d);
int kern_tiles_kq_avx2(struct kern_dispatch *d);
int kern_tiles_kq_avx512(struct kern_dispatch *d);
int kern_tiles_f16_avx2(struct kern_dispatch *d);
int kern_tiles_f16_avx512(struct kern_dispatch *d);

/* The dispatched activation converter for |vdt| (NULL if none). */
kern_from_f32_fn kern_act_from_f32(enum ml_dtype vdt);
/* The dispatched tile kernel of weight type |t| (fn NULL when none). */
struct kern_tile kern_tile_of(enum ml_dtype t);
/* The dispatched 4-token dot of weight type |t|, or NULL. */
kern_vec_dot_x4_fn kern_vec_dot_x4(enum ml_dtype t);
/* The scalar activation converter for |vdt| (tests). */
kern_from_f32_fn kern_act_from_f32_generic(enum ml_dtype vdt);

/* Generic kernels, also used for scalar tails by SIMD files. */
void kern_vec_dot_f32_f32_generic(int64_t n, float *s, const void *x, const void *y);
void kern_vec_dot_f16_f16_generic(int64_t n, float *s, const void *x, const void *y);
void kern_vec_dot_bf16_bf16_generic(int64_t n, float *s, const void *x, const void *y);
void kern_vec_dot_q4_0_q8_0_generic(int64_t n, float *s, const void *x, const void *y);
void kern_vec_dot_q4_1_q8_1_generic(int64_t n, float *s, const void *x, const void *y);
void kern_vec_dot_q5_0_q8_0_generic(int64_t n, float *s, const void *x, const void *y);
void kern_vec_dot_q5_1_q8_1_generic(int64_t n, float *s, const void *x, const void *y);
void kern_vec_dot_q8_0_q8_0_generic(int64_t n, float *s, const void *x, const void *y);
void kern_vec_dot_q2_K_q8_K_generic(int64_t n, float *s, const void *x, const void *y);
void kern_vec_dot_q3_K_q8_K_generic(int64_t n, float *s, const void *x, const void *y);
void kern_vec_dot_q4_K_q8_K_generic(int64_t n, float *s, const void *x, const void *y);
void kern_vec_dot_q5_K_q8_K_generic(int64_t n, float *s, const void *x, const void *y);
void kern_vec_dot_q6_K_q8_K_generic(int64_t n, float *s, const void *x, const void *y);

void kern_quantize_act_q8_0_generic(const float *x, void *y, int64_t n);
void kern_quantize_act_q8_1_generic(const float *x, void *y, int64_t n);
void kern_quantize_act_q8_K_generic(const float *x, void *y, int64_t n);

/* Unpacks the 8 6-bit scales and 8 6-bit mins of a Q4_K/Q5_K block. */
static inline void kern_get_scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m)
{
	if (j < 4) {
		*d = q[j] & 63;
		*m = q[j + 4] & 63;
	} else {
		*d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
		*m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4);
	}
}

/* Unpacks the 16 6-bit Q3_K scales (still biased by 32). */
static inline void kern_q3_K_scales(const uint8_t *packed, int8_t out[16])
{
	for (int j = 0; j < 16; j++) {
		int lo = j < 8 ? packed[j] & 0xF : packed[j - 8] >> 4;
		int hi = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
		out[j] = (int8_t)(lo | (hi << 4));
	}
}

#endif
