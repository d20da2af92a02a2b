/* Tests for ml_pool: every share / item runs exactly once per job, many
 * back-to-back jobs, workers that fall asleep wake up again, size 1, item
 * jobs mixed with all-thread jobs, a worker delayed inside an item never
 * sees a later job's argument, and the cost of an empty job. */
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

/* Item jobs: |seen| counts the runs of each item; |active| holds the ith
 * values running now (two threads with the same ith at once is a bug);
 * |stamp| is the job's own number, checked against the pool-wide counter
 * |job_now| to catch a thread running a job after it returned. */
struct item_job {
	_Atomic int *seen;
	_Atomic int active[8];
	_Atomic int bad;
	int n_items, n_threads;
	int stamp;
	_Atomic int *job_now;
	int slow_every; /* > 0: items k % slow_every == 1 sleep 50 us */
	int64_t sum;    /* plain: written by item 0 only, read after the run */
};

static void item_fn(void *arg, int item, int n_items, int ith)
{
	struct item_job *j = arg;
	if (j->stamp != atomic_load(j->job_now) || n_items != j->n_items || item < 0 || item >= n_items ||
	    ith < 0 || ith >= j->n_threads) {
		atomic_fetch_add(&j->bad, 1);
		return;
	}
	if (atomic_fetch_add(&j->active[ith], 1) != 0)
		atomic_fetch_add(&j->bad, 1);
	atomic_fetch_add(&j->seen[item], 1);
	if (item == 0)
		j->sum += 7;
	if (j->slow_every > 0 && item % j->slow_every == 1) {
		struct timespec ts = {0, 50 * 1000};
		nanosleep(&ts, NULL);
	}
	atomic_fetch_sub(&j->active[ith], 1);
}

static void check_items(int n, int jobs, int slow_every, int sleep_every)
{
	struct ml_pool *pool;
	assert_int_equal(ml_pool_init(&pool, n), 0);
	_Atomic int job_now = 0;
	_Atomic int seen[64];
	struct count_job all;
	memset(&all, 0, sizeof(all));
	all.expect_nth = n;
	int n_all = 0;
	for (int k = 0; k < jobs; k++) {
		/* A fresh job on the stack each time, poisoned after the return:
		 * a late worker that ran it would see a wrong stamp. */
		struct item_job j;
		memset(&j, 0, sizeof(j));
		j.n_items = k % 64 + 1;
		j.n_threads = n;
		j.stamp = k + 1;
		j.job_now = &job_now;
		j.slow_every = slow_every;
		j.seen = seen;
		for (int i = 0; i < 64; i++)
			atomic_init(&seen[i], 0);
		atomic_store(&job_now, k + 1);
		ml_pool_run_items(pool, item_fn, &j, j.n_items);
		atomic_store(&job_now, -1);
		assert_int_equal(atomic_load(&j.bad), 0);
		for (int i = 0; i < j.n_items; i++)
			assert_int_equal(atomic_load(&seen[i]), 1);
		for (int i = j.n_items; i < 64; i++)
			assert_int_equal(atomic_load(&seen[i]), 0);
		assert_int_equal(j.sum, 7);
		j.stamp = -2;
		j.n_items = -2;
		if (k % 7 == 3) { /* all-thread jobs in between */
			ml_pool_run(pool, count_fn, &all);
			n_all++;
		}
		if (sleep_every && k % sleep_every == 0) {
			struct timespec ts = {0, 3 * 1000 * 1000};
			nanosleep(&ts, NULL);
		}
	}
	assert_int_equal(atomic_load(&all.bad_nth), 0);
	for (int i = 0; i < n; i++)
		assert_int_equal(atomic_load(&all.calls[i]), n_all);
	ml_pool_free(pool);
}

static void test_items_sizes(void **state)
{
	(void)state;
	for (int n = 1; n <= 4; n++)
		check_items(n, 3000, 0, 0);
}

static void test_items_slow_and_sleeping(void **state)
{
	(void)state;
	check_items(2, 300, 5, 0);
	check_items(3, 60, 3, 4);
}

static void test_items_none(void **state)
{
	(void)state;
	struct ml_pool *pool;
	assert_int_equal(ml_pool_init(&pool, 2), 0);
	ml_pool_run_items(pool, item_fn, NULL, 0); /* must not call item_fn */
	ml_pool_run_items(pool, item_fn, NULL, -3);
	ml_pool_free(pool);
}

static void noop_item_fn(void *arg, int item, int n_items, int ith)
{
	(void)arg;
	(void)item;
	(void)n_items;
	(void)ith;
}

static void test_items_overhead(void **state)
{
	(void)state;
	struct ml_pool *pool;
	assert_int_equal(ml_pool_init(&pool, 2), 0);
	for (int i = 0; i < 100; i++)
		ml_pool_run_items(pool, noop_item_fn, NULL, 2);
	const int n = 20000;
	for (int items = 2; items <= 16; items *= 8) {
		uint64_t t0 = ml_time_ns();
		for (int i = 0; i < n; i++)
			ml_pool_run_items(pool, noop_item_fn, NULL, items);
		double us = (double)(ml_time_ns() - t0) / n / 1000.0;
		print_message("ml_pool_run_items (2 threads, %d empty items): %.2f us per job\n", items, us);
	}
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
		cmocka_unit_test(test_items_sizes),
		cmocka_unit_test(test_items_slow_and_sleeping),
		cmocka_unit_test(test_items_none),
		cmocka_unit_test(test_items_overhead),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
