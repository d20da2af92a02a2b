/* CPU feature detection through cpuid/xgetbv, and core counts from the
 * affinity mask plus sysfs topology. */
#include "base/ml_cpu.h"

#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

static struct ml_cpu_features g_feat;
static char g_feat_str[256];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

#if defined(__x86_64__) || defined(__i386__)
static uint64_t read_xcr0(void)
{
	uint32_t lo, hi;
	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	return ((uint64_t)hi << 32) | lo;
}

static void detect_x86(struct ml_cpu_features *f)
{
	unsigned a, b, c, d;
	if (!__get_cpuid(1, &a, &b, &c, &d))
		return;
	const bool osxsave = (c >> 27) & 1;
	f->sse3 = c & 1;
	f->ssse3 = (c >> 9) & 1;
	const bool fma = (c >> 12) & 1;
	const bool avx = (c >> 28) & 1;
	const bool f16c = (c >> 29) & 1;
	uint64_t xcr0 = osxsave ? read_xcr0() : 0;
	const bool ymm_ok = (xcr0 & 0x6) == 0x6;   /* SSE + AVX state */
	const bool zmm_ok = (xcr0 & 0xe6) == 0xe6; /* + opmask, ZMM_Hi256, Hi16_ZMM */
	f->avx = avx && ymm_ok;
	f->fma = fma && ymm_ok;
	f->f16c = f16c && ymm_ok;
	unsigned max_leaf = __get_cpuid_max(0, NULL);
	if (max_leaf < 7)
		return;
	__cpuid_count(7, 0, a, b, c, d);
	f->avx2 = ((b >> 5) & 1) && ymm_ok;
	f->avx512f = ((b >> 16) & 1) && zmm_ok;
	f->avx512dq = ((b >> 17) & 1) && zmm_ok;
	f->avx512bw = ((b >> 30) & 1) && zmm_ok;
	f->avx512vl = ((b >> 31) & 1) && zmm_ok;
	f->avx512vnni = ((c >> 11) & 1) && zmm_ok;
	__cpuid_count(7, 1, a, b, c, d);
	f->avx_vnni = ((a >> 4) & 1) && ymm_ok;
	f->avx512bf16 = ((a >> 5) & 1) && zmm_ok;
}
#endif

static void add_name(bool on, const char *name)
{
	if (!on)
		return;
	size_t len = strlen(g_feat_str);
	snprintf(g_feat_str + len, sizeof(g_feat_str) - len, "%s%s", len ? " " : "", name);
}

static void detect(void)
{
#if defined(__x86_64__) || defined(__i386__)
	detect_x86(&g_feat);
#elif defined(__aarch64__)
	g_feat.neon = true;
#endif
	const struct ml_cpu_features *f = &g_feat;
	add_name(f->sse3, "sse3");
	add_name(f->ssse3, "ssse3");
	add_name(f->avx, "avx");
	add_name(f->avx2, "avx2");
	add_name(f->fma, "fma");
	add_name(f->f16c, "f16c");
	add_name(f->avx512f, "avx512f");
	add_name(f->avx512bw, "avx512bw");
	add_name(f->avx512vl, "avx512vl");
	add_name(f->avx512dq, "avx512dq");
	add_name(f->avx512vnni, "avx512vnni");
	add_name(f->avx512bf16, "avx512bf16");
	add_name(f->avx_vnni, "avx_vnni");
	add_name(f->neon, "neon");
	add_name(f->dotprod, "dotprod");
	if (g_feat_str[0] == '\0')
		strcpy(g_feat_str, "none");
}

const struct ml_cpu_features *ml_cpu_features(void)
{
	pthread_once(&g_once, detect);
	return &g_feat;
}

const char *ml_cpu_feature_string(void)
{
	pthread_once(&g_once, detect);
	return g_feat_str;
}

int ml_cpu_count_logical(void)
{
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof(set), &set) == 0) {
		int n = CPU_COUNT(&set);
		if (n > 0)
			return n;
	}
	return 1;
}

static int read_int_file(const char *path, int *out)
{
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return -1;
	int ok = fscanf(f, "%d", out) == 1;
	fclose(f);
	return ok ? 0 : -1;
}

int ml_cpu_count_physical(void)
{
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof(set), &set) != 0)
		return ml_cpu_count_logical();
	/* distinct (package, core) pairs; bounded table, small machines first */
	enum { MAX_PAIRS = 1024 };
	int pairs[MAX_PAIRS][2];
	int n_pairs = 0;
	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
		if (!CPU_ISSET(cpu, &set))
			continue;
		char path[128];
		int core, pkg;
		snprintf(path, sizeof(path), "/sys/devices/system/cpu/cpu%d/topology/core_id", cpu);
		if (read_int_file(path, &core) != 0)
			return ml_cpu_count_logical();
		snprintf(path, sizeof(path),
			 "/sys/devices/system/cpu/cpu%d/topology/physical_package_id", cpu);
		if (read_int_file(path, &pkg) != 0)
			pkg = 0;
		bool seen = false;
		for (int i = 0; i < n_pairs && !seen; i++)
			seen = pairs[i][0] == pkg && pairs[i][1] == core;
		if (!seen && n_pairs < MAX_PAIRS) {
			pairs[n_pairs][0] = pkg;
			pairs[n_pairs][1] = core;
			n_pairs++;
		}
	}
	return n_pairs > 0 ? n_pairs : ml_cpu_count_logical();
}
