/* Tests for src/sampler: greedy ties, penalties, truncations, seeded draws. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/ml_rng.h"
#include "sampler/smp.h"

static struct smp_params greedy_params(void)
{
	struct smp_params p = smp_default_params();
	p.temp = 0.0f;
	return p;
}

static void test_smp_defaults(void **state)
{
	(void)state;
	struct smp_params p = smp_default_params();
	assert_true(p.temp == 0.8f && p.top_k == 40 && p.top_p == 0.95f && p.min_p == 0.05f);
	assert_true(p.repeat_penalty == 1.0f && p.freq_penalty == 0.0f && p.presence_penalty == 0.0f);
	assert_true(p.seed == 0);
}

static void test_smp_greedy_ties_lowest_id(void **state)
{
	(void)state;
	struct smp *s;
	struct smp_params p = greedy_params();
	float logits[6] = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f, 2.0f};
	assert_int_equal(smp_init(&s, &p, 6), 0);
	assert_int_equal(smp_sample(s, logits, NULL, 0), 1);
	logits[0] = 3.0f;
	assert_int_equal(smp_sample(s, logits, NULL, 0), 0);
	smp_free(s);
	smp_free(NULL);
}

static void test_smp_penalties(void **state)
{
	(void)state;
	struct smp *s;
	struct smp_params p = greedy_params();
	const float logits[4] = {1.0f, 3.0f, 2.9f, -2.0f};
	const int32_t hist[3] = {1, 1, 3};

	/* repetition penalty 1.5: 3.0 -> 2.0, below id 2's 2.9 */
	p.repeat_penalty = 1.5f;
	p.repeat_last_n = 64;
	assert_int_equal(smp_init(&s, &p, 4), 0);
	assert_int_equal(smp_sample(s, logits, hist, 3), 2);
	assert_int_equal(smp_sample(s, logits, NULL, 0), 1);
	/* the window excludes older ids: last 1 id is 3, so id 1 is not penalized */
	p.repeat_last_n = 1;
	smp_reset(s, &p);
	assert_int_equal(smp_sample(s, logits, hist, 3), 1);
	/* repeat_last_n 0 turns all penalties off */
	p.repeat_last_n = 0;
	smp_reset(s, &p);
	assert_int_equal(smp_sample(s, logits, hist, 3), 1);
	smp_free(s);

	/* frequency penalty counts occurrences: 3.0 - 2 * 0.06 = 2.88 < 2.9 */
	p = greedy_params();
	p.repeat_last_n = -1;
	p.freq_penalty = 0.06f;
	assert_int_equal(smp_init(&s, &p, 4), 0);
	assert_int_equal(smp_sample(s, logits, hist, 3), 2);
	/* presence penalty counts once: 3.0 - 0.06 = 2.94 > 2.9 */
	p.freq_penalty = 0.0f;
	p.presence_penalty = 0.06f;
	smp_reset(s, &p);
	assert_int_equal(smp_sample(s, logits, hist, 3), 1);
	/* ids outside the vocabulary in the history are ignored */
	const int32_t bad[2] = {-5, 99};
	assert_int_equal(smp_sample(s, logits, bad, 2), 1);
	smp_free(s);
}

static void test_smp_seeded_repeatable(void **state)
{
	(void)state;
	struct smp *a, *b;
	struct smp_params p = smp_default_params();
	p.temp = 1.0f;
	p.top_k = 0;
	p.top_p = 1.0f;
	p.min_p = 0.0f;
	p.seed = 1234;
	float logits[50];
	for (int i = 0; i < 50; i++)
		logits[i] = (float)((i * 37) % 11) * 0.1f;
	assert_int_equal(smp_init(&a, &p, 50), 0);
	assert_int_equal(smp_init(&b, &p, 50), 0);
	int32_t first[64];
	bool varied = false;
	for (int i = 0; i < 64; i++) {
		first[i] = smp_sample(a, logits, NULL, 0);
		assert_int_equal(first[i], smp_sample(b, logits, NULL, 0));
		assert_true(first[i] >= 0 && first[i] < 50);
		varied |= first[i] != first[0];
	}
	assert_true(varied);
	/* reset replays the same sequence */
	smp_reset(a, &p);
	for (int i = 0; i < 64; i++)
		assert_int_equal(first[i], smp_sample(a, logits, NULL, 0));
	smp_free(a);
	smp_free(b);
}

/* At temp 1 with no truncation, frequencies follow softmax(logits). */
static void test_smp_distribution(void **state)
{
	(void)state;
	struct smp *s;
	struct smp_params p = smp_default_params();
	p.temp = 1.0f;
	p.top_k = 0;
	p.top_p = 1.0f;
	p.min_p = 0.0f;
	p.seed = 7;
	const float logits[4] = {0.0f, 1.0f, 2.0f, -1.0f};
	double z = 0, expect[4];
	for (int i = 0; i < 4; i++)
		z += exp(logits[i]);
	for (int i = 0; i < 4; i++)
		expect[i] = exp(logits[i]) / z;
	int hits[4] = {0};
	const int n = 40000;
	assert_int_equal(smp_init(&s, &p, 4), 0);
	for (int i = 0; i < n; i++)
		hits[smp_sample(s, logits, NULL, 0)]++;
	for (int i = 0; i < 4; i++)
		assert_true(fabs((double)hits[i] / n - expect[i]) < 0.01);
	/* temperature 0.25 sharpens: id 2 dominates */
	p.temp = 0.25f;
	smp_reset(s, &p);
	memset(hits, 0, sizeof(hits));
	for (int i = 0; i < 1000; i++)
		hits[smp_sample(s, logits, NULL, 0)]++;
	assert_true(hits[2] > 950);
	smp_free(s);
}

static void test_smp_truncation(void **state)
{
	(void)state;
	struct smp *s;
	struct smp_params p = smp_default_params();
	float logits[100];
	for (int i = 0; i < 100; i++)
		logits[i] = (float)(i % 10) * 0.01f + (i == 42 ? 0.5f : 0.0f) + (i == 17 ? 0.44f : 0.0f);
	p.temp = 1.0f;
	p.top_p = 1.0f;
	p.min_p = 0.0f;
	p.seed = 3;

	/* top_k 1 is greedy */
	p.top_k = 1;
	assert_int_equal(smp_init(&s, &p, 100), 0);
	for (int i = 0; i < 50; i++)
		assert_int_equal(smp_sample(s, logits, NULL, 0), 42);

	/* top_k 2 picks only 42 or 17 */
	p.top_k = 2;
	smp_reset(s, &p);
	int seen17 = 0;
	for (int i = 0; i < 200; i++) {
		int32_t t = smp_sample(s, logits, NULL, 0);
		assert_true(t == 42 || t == 17);
		seen17 += t == 17;
	}
	assert_true(seen17 > 20 && seen17 < 180);

	/* top_p tiny keeps only the best */
	p.top_k = 0;
	p.top_p = 0.001f;
	smp_reset(s, &p);
	for (int i = 0; i < 50; i++)
		assert_int_equal(smp_sample(s, logits, NULL, 0), 42);

	/* min_p 0.9: only tokens within 10% of the best probability (42, and 17 at
	 * exp(-0.01) ~ 0.99 of it) */
	p.top_p = 1.0f;
	p.min_p = 0.9f;
	smp_reset(s, &p);
	for (int i = 0; i < 200; i++) {
		int32_t t = smp_sample(s, logits, NULL, 0);
		assert_true(t == 42 || t == 17);
	}
	smp_free(s);
}

/* Quickselect top-k over a large vocabulary agrees with a brute force. */
static void test_smp_top_k_large(void **state)
{
	(void)state;
	enum { NV = 5000 };
	static float logits[NV];
	struct smp *s;
	struct smp_params p = smp_default_params();
	for (int i = 0; i < NV; i++)
		logits[i] = (float)((i * 7919) % 1000) / 100.0f; /* many ties */
	p.temp = 1.0f;
	p.top_k = 5;
	p.top_p = 1.0f;
	p.min_p = 0.0f;
	assert_int_equal(smp_init(&s, &p, NV), 0);
	for (int i = 0; i < 300; i++) {
		int32_t t = smp_sample(s, logits, NULL, 0);
		/* the 5 best are the lowest ids with logit 9.99 */
		assert_true(logits[t] == logits[0] || logits[t] >= 9.99f - 1e-4f);
		int better = 0;
		for (int j = 0; j < NV; j++)
			if (logits[j] > logits[t] || (logits[j] == logits[t] && j < t))
				better++;
		assert_true(better < 5);
	}
	smp_free(s);
}

/* top-p then min-p over a large vocabulary: every sample lies in the set a
 * brute force computes (softmax at temp, sort, top-p prefix, min-p cut). */
static int by_desc(const void *a, const void *b)
{
	const double *x = a, *y = b;
	return x[0] < y[0] ? 1 : x[0] > y[0] ? -1 : 0;
}

static void test_smp_top_p_min_p_set(void **state)
{
	(void)state;
	enum { NV = 1000 };
	static float logits[NV];
	static double pr[NV][2];
	struct ml_rng r;
	ml_rng_seed(&r, 99);
	for (int i = 0; i < NV; i++)
		logits[i] = (float)(ml_rng_normal(&r) * 2.0);
	const float temp = 0.7f, top_p = 0.8f, min_p = 0.02f;
	double z = 0, mx = -1e30;
	for (int i = 0; i < NV; i++)
		mx = logits[i] / temp > mx ? logits[i] / temp : mx;
	for (int i = 0; i < NV; i++)
		z += exp(logits[i] / temp - mx);
	for (int i = 0; i < NV; i++) {
		pr[i][0] = exp(logits[i] / temp - mx) / z;
		pr[i][1] = i;
	}
	qsort(pr, NV, sizeof(pr[0]), by_desc);
	int n = 0;
	double cum = 0;
	while (n < NV && cum < top_p)
		cum += pr[n++][0];
	int keep = 1;
	while (keep < n && pr[keep][0] >= pr[0][0] * min_p)
		keep++;
	static bool allowed[NV];
	for (int i = 0; i < keep; i++)
		allowed[(int)pr[i][1]] = true;

	struct smp *s;
	struct smp_params p = smp_default_params();
	p.temp = temp;
	p.top_k = 0;
	p.top_p = top_p;
	p.min_p = min_p;
	p.seed = 5;
	assert_int_equal(smp_init(&s, &p, NV), 0);
	int seen_best = 0;
	for (int i = 0; i < 2000; i++) {
		int32_t t = smp_sample(s, logits, NULL, 0);
		assert_true(allowed[t]);
		seen_best += t == (int)pr[0][1];
	}
	assert_true(keep > 1 && seen_best > 0 && seen_best < 2000);
	smp_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_smp_defaults),
		cmocka_unit_test(test_smp_greedy_ties_lowest_id),
		cmocka_unit_test(test_smp_penalties),
		cmocka_unit_test(test_smp_seeded_repeatable),
		cmocka_unit_test(test_smp_distribution),
		cmocka_unit_test(test_smp_truncation),
		cmocka_unit_test(test_smp_top_k_large),
		cmocka_unit_test(test_smp_top_p_min_p_set),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
