/* Tests for ml_pool: every share runs exactly once per job, many
 * back-to-back jobs, workers that fall asleep wake up again, size 1. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "base/ml_cpu.h"
#include "base/ml_pool.h"
#include "base/ml_time.h"

struct count_job {
	_Atomic int calls[8];
	_Atomic int bad_nth;
	int expect_nth;
	int64_t data[8];
};

static void count_fn(void *arg, int ith, int nth)
{
	struct count_job *j = arg;
	if (nth != j->expect_nth || ith < 0 || ith >= nth)
		atomic_fetch_add(&j->bad_nth, 1);
	else
		atomic_fetch_add(&j->calls[ith], 1);
	j->data[ith] += ith + 1; /* plain write: visible to the caller after run */
}

static void check_pool(int n, int jobs, int sleep_every)
{
	struct ml_pool *pool;
	assert_int_equal(ml_pool_init(&pool, n), 0);
	assert_int_equal(ml_pool_size(pool), n);
	struct count_job job;
	memset(&job, 0, sizeof(job));
	job.expect_nth = n;
	for (int k = 0; k < jobs; k++) {
		ml_pool_run(pool, count_fn, &job);
		if (sleep_every && k % sleep_every == 0) {
			struct timespec ts = {0, 3 * 1000 * 1000}; /* let workers fall asleep */
			nanosleep(&ts, NULL);
		}
	}
	assert_int_equal(atomic_load(&job.bad_nth), 0);
	for (int i = 0; i < n; i++) {
		assert_int_equal(atomic_load(&job.calls[i]), jobs);
		assert_int_equal(job.data[i], (int64_t)jobs * (i + 1));
	}
	ml_pool_free(pool);
}

static void test_pool_sizes(void **state)
{
	(void)state;
	for (int n = 1; n <= 4; n++)
		check_pool(n, 2000, 0);
}

static void test_pool_sleep_wake(void **state)
{
	(void)state;
	check_pool(3, 40, 2);
}

static void test_pool_invalid(void **state)
{
	(void)state;
	struct ml_pool *pool = (struct ml_pool *)1;
	assert_true(ml_pool_init(&pool, 0) < 0);
	assert_null(pool);
	ml_pool_free(NULL);
}

static void test_cpu_info(void **state)
{
	(void)state;
	assert_true(ml_cpu_count_logical() >= 1);
	assert_true(ml_cpu_count_physical() >= 1);
	assert_true(ml_cpu_count_physical() <= ml_cpu_count_logical());
	const struct ml_cpu_features *f = ml_cpu_features();
	assert_non_null(f);
	if (f->avx512bw)
		assert_true(f->avx512f);
	print_message("cpu: %s; %d logical, %d physical\n", ml_cpu_feature_string(),
		      ml_cpu_count_logical(), ml_cpu_count_physical());
}

static void noop_fn(void *arg, int ith, int nth)
{
	(void)arg;
	(void)ith;
	(void)nth;
}

static void test_pool_overhead(void **state)
{
	(void)state;
	struct ml_pool *pool;
	assert_int_equal(ml_pool_init(&pool, 2), 0);
	for (int i = 0; i < 100; i++)
		ml_pool_run(pool, noop_fn, NULL);
	const int n = 20000;
	uint64_t t0 = ml_time_ns();
	for (int i = 0; i < n; i++)
		ml_pool_run(pool, noop_fn, NULL);
	double us = (double)(ml_time_ns() - t0) / n / 1000.0;
	print_message("ml_pool_run (2 threads, empty job): %.2f us per job\n", us);
	ml_pool_free(pool);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pool_sizes),
		cmocka_unit_test(test_pool_sleep_wake),
		cmocka_unit_test(test_pool_invalid),
		cmocka_unit_test(test_cpu_info),
		cmocka_unit_test(test_pool_overhead),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
