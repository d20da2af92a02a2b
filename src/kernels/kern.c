/* Kernel dispatch: the one type-traits table, filled once by kern_init()
 * from the scalar kernels and then overridden by the SIMD variants the CPU
 * supports; plus exact half/bfloat conversions. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/ml_cpu.h"
#include "base/ml_log.h"
#include "kernels/kern_impl.h"

static struct kern_dispatch g_generic;  /* scalar reference */
static struct kern_dispatch g_dispatch; /* what kern_type_traits() returns */
static char g_isa_names[64] = "generic";
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void kern_init_once(void)
{
	kern_dispatch_generic(&g_generic);
	g_dispatch = g_generic;

	const char *env = getenv("MESH_LLM_KERNELS");
	if (env != NULL && strcmp(env, "generic") == 0) {
		ML_INFO("kernels: MESH_LLM_KERNELS=generic, using scalar kernels");
		return;
	}
	if (env != NULL && env[0] != '\0' && strcmp(env, "auto") != 0)
		ML_WARN("kernels: MESH_LLM_KERNELS=%s not understood (want generic or auto); "
			"choosing by CPU features", env);
	const struct ml_cpu_features *cpu = ml_cpu_features();
	g_isa_names[0] = '\0';
#if defined(__x86_64__)
	if (cpu->avx2 && cpu->fma && cpu->f16c) {
		if (kern_dispatch_avx2(&g_dispatch) + kern_tiles_q8_avx2(&g_dispatch) +
			    kern_tiles_kq_avx2(&g_dispatch) + kern_tiles_f16_avx2(&g_dispatch) > 0)
			strcat(g_isa_names, "avx2");
	}
	if (cpu->avx2 && cpu->fma && cpu->f16c && cpu->avx512f && cpu->avx512bw && cpu->avx512vl &&
	    cpu->avx512dq && cpu->avx512vnni && cpu->avx512bf16) {
		if (kern_dispatch_avx512(&g_dispatch) + kern_tiles_q8_avx512(&g_dispatch) +
			    kern_tiles_kq_avx512(&g_dispatch) + kern_tiles_f16_avx512(&g_dispatch) > 0)
			strcat(g_isa_names, g_isa_names[0] ? " avx512" : "avx512");
	}
#else
	(void)cpu;
#endif
	if (g_isa_names[0] == '\0')
		strcpy(g_isa_names, "generic");
	ML_DEBUG("kernels: using %s", g_isa_names);
}

void kern_init(void)
{
	pthread_once(&g_once, kern_init_once);
}

const struct kern_type_traits *kern_type_traits(uint32_t t)
{
	kern_init();
	if (ml_dtype_get(t) == NULL)
		return NULL;
	return &g_dispatch.traits[t];
}

const struct kern_type_traits *kern_type_traits_generic(uint32_t t)
{
	kern_init();
	if (ml_dtype_get(t) == NULL)
		return NULL;
	return &g_generic.traits[t];
}

kern_from_f32_fn kern_act_from_f32(enum ml_dtype vdt)
{
	kern_init();
	if ((unsigned)vdt >= ML_DTYPE_COUNT)
		return NULL;
	return g_dispatch.act_from_f32[vdt];
}

kern_vec_dot_x4_fn kern_vec_dot_x4(enum ml_dtype t)
{
	kern_init();
	if ((unsigned)t >= ML_DTYPE_COUNT)
		return NULL;
	return g_dispatch.vec_dot_x4[t];
}

struct kern_tile kern_tile_of(enum ml_dtype t)
{
	kern_init();
	if ((unsigned)t >= ML_DTYPE_COUNT)
		return (struct kern_tile){NULL, 0, 0};
	return g_dispatch.tile[t];
}

kern_from_f32_fn kern_act_from_f32_generic(enum ml_dtype vdt)
{
	kern_init();
	if ((unsigned)vdt >= ML_DTYPE_COUNT)
		return NULL;
	return g_generic.act_from_f32[vdt];
}

const char *kern_isa_names(void)
{
	kern_init();
	return g_isa_names;
}

/* ---- conversions ---- */

static inline uint32_t f32_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof(u));
	return u;
}

static inline float bits_f32(uint32_t u)
{
	float f;
	memcpy(&f, &u, sizeof(f));
	return f;
}

float kern_f16_to_f32(kern_f16 h)
{
	const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	const uint32_t exp = (h >> 10) & 0x1f;
	const uint32_t mant = h & 0x3ff;
	if (exp == 0) {
		/* zero or subnormal: mant * 2^-24, exact in float */
		float f = (float)mant * 0x1p-24f;
		return bits_f32(f32_bits(f) | sign);
	}
	if (exp == 31)
		return bits_f32(sign | 0x7f800000u | (mant << 13));
	return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

kern_f16 kern_f32_to_f16(float f)
{
	const uint32_t u = f32_bits(f);
	const uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
	const uint32_t a = u & 0x7fffffffu;
	if (a > 0x7f800000u) /* NaN: keep the top mantissa bits, force quiet */
		return (kern_f16)(sign | 0x7e00 | ((a >> 13) & 0x3ff));
	if (a >= 0x38800000u) { /* normal in half (or overflows to inf) */
		uint32_t r = a - 0x38000000u;
		r += 0xfffu + ((r >> 13) & 1u);
		r >>= 13;
		if (r >= 0x7c00u)
			r = 0x7c00u;
		return (kern_f16)(sign | r);
	}
	/* subnormal or zero in half: |f| * 2^24 < 1024 is exact; round half to
	 * even (1024 gives the smallest normal, also correct) */
	float v = bits_f32(a) * 0x1p24f;
	float r = v + 8388608.f; /* 2^23: rounds to an integer, ties to even */
	uint32_t q = f32_bits(r) & 0x7fffffu;
	return (kern_f16)(sign | q);
}

float kern_bf16_to_f32(kern_bf16 h)
{
	return bits_f32((uint32_t)h << 16);
}

kern_bf16 kern_f32_to_bf16(float f)
{
	const uint32_t u = f32_bits(f);
	if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: force quiet */
		return (kern_bf16)((u >> 16) | 64);
	return (kern_bf16)((u + (0x7fffu + ((u >> 16) & 1u))) >> 16);
}
