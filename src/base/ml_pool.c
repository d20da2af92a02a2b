/* Compute thread pool: persistent workers woken by a generation counter.
 *
 * Each job bumps |gen|; its low bit says which kind of job it is. Workers
 * spin on |gen| for a short while after each job (so back-to-back jobs, one
 * per matmul, start in well under a microsecond) and then sleep on a
 * condition variable.
 *
 * Item jobs (ml_pool_run_items): the caller publishes fn/arg, then one
 * 64-bit word |claim| = (n_items << 32 | next item). Every thread, the
 * caller included, takes items with fetch_add on |claim| and adds what it
 * finished to |done|; the caller returns when |done| reaches n_items, never
 * waiting for a worker that took nothing. A worker that wakes late, for a
 * job that has finished, finds next >= n_items and goes back to waiting; it
 * reads fn/arg only after winning an item, and the job cannot finish (and
 * the caller cannot reuse the fields) before that item is done. A late
 * fetch_add that lands on the next job's word takes an item of that job,
 * which is live and whose fields it then reads: there is no stale claim.
 * The fetch_add is acquire and part of the release sequence headed by the
 * caller's store of |claim|, so the fields written before that store are
 * visible; each thread's add to |done| is release and the caller's load of
 * it acquire, so the items' writes are visible after the return.
 *
 * All-thread jobs (ml_pool_run): the caller publishes fn/arg, sets
 * |pending| to N-1, runs share 0 and waits for |pending| to reach zero,
 * spinning briefly and then yielding. */
#include "base/ml_pool.h"

#include <errno.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "base/ml_err.h"

/* Spin iterations before a worker sleeps / the caller yields. Kept modest:
 * this machine's cores are often shared. */
#define POOL_SPIN_WORKER 20000
#define POOL_SPIN_CALLER 2000

/* Low bit of |gen|: the current job is an item job. */
#define POOL_GEN_ITEMS 1u

struct ml_pool_worker {
	struct ml_pool *pool;
	int ith;
	pthread_t thread;
};

struct ml_pool {
	int n_threads;
	struct ml_pool_worker *workers; /* n_threads - 1 */
	/* all-thread job: read by every worker before it decrements |pending| */
	ml_pool_fn fn;
	void *arg;
	/* item job: read only by a thread that has won an item */
	ml_pool_item_fn item_fn;
	void *item_arg;
	_Atomic uint64_t claim; /* item job: n_items << 32 | next item to take */
	_Atomic int done;       /* item job: items finished */
	_Atomic unsigned gen;   /* (job count << 1) | POOL_GEN_ITEMS if an item job */
	_Atomic int pending;    /* all-thread job: workers still running it */
	_Atomic int n_sleeping; /* workers blocked (or about to block) on |cv| */
	_Atomic int stop;
	pthread_mutex_t mu;
	pthread_cond_t cv;
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	_mm_pause();
#endif
}

/* Takes and runs items of the live item job until none is left; returns
 * how many this thread ran. */
static int run_items(struct ml_pool *pool, int ith)
{
	int ran = 0;
	for (;;) {
		const uint64_t c = atomic_fetch_add_explicit(&pool->claim, 1, memory_order_acquire);
		const uint32_t k = (uint32_t)c, n = (uint32_t)(c >> 32);
		if (k >= n)
			return ran;
		pool->item_fn(pool->item_arg, (int)k, (int)n, ith);
		ran++;
	}
}

static void *worker_main(void *p)
{
	struct ml_pool_worker *w = p;
	struct ml_pool *pool = w->pool;
	unsigned seen = 0;
	for (;;) {
		unsigned g;
		int spins = 0;
		while ((g = atomic_load_explicit(&pool->gen, memory_order_acquire)) == seen &&
		       !atomic_load_explicit(&pool->stop, memory_order_relaxed)) {
			if (++spins < POOL_SPIN_WORKER) {
				cpu_relax();
				continue;
			}
			pthread_mutex_lock(&pool->mu);
			atomic_fetch_add(&pool->n_sleeping, 1);
			while (atomic_load(&pool->gen) == seen && !atomic_load(&pool->stop))
				pthread_cond_wait(&pool->cv, &pool->mu);
			atomic_fetch_sub(&pool->n_sleeping, 1);
			pthread_mutex_unlock(&pool->mu);
			spins = 0;
		}
		if (atomic_load(&pool->stop))
			return NULL;
		seen = g;
		if (g & POOL_GEN_ITEMS) {
			/* The job may be long finished: then this takes nothing. */
			const int ran = run_items(pool, w->ith);
			if (ran > 0)
				atomic_fetch_add_explicit(&pool->done, ran, memory_order_release);
		} else {
			/* The caller waits for this worker, so the job is still live. */
			pool->fn(pool->arg, w->ith, pool->n_threads);
			atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_release);
		}
	}
}

int ml_pool_init(struct ml_pool **out, int n_threads)
{
	*out = NULL;
	if (n_threads < 1 || n_threads > 1024)
		return ml_error(ML_ERR_INVALID, "ml_pool_init: %d threads (want 1..1024)", n_threads);
	struct ml_pool *pool = calloc(1, sizeof(*pool));
	if (pool == NULL)
		return ML_ERR_NOMEM;
	pool->n_threads = n_threads;
	atomic_init(&pool->claim, 0);
	atomic_init(&pool->done, 0);
	atomic_init(&pool->gen, 0);
	atomic_init(&pool->pending, 0);
	atomic_init(&pool->n_sleeping, 0);
	atomic_init(&pool->stop, 0);
	if (pthread_mutex_init(&pool->mu, NULL) != 0)
		goto fail_mutex;
	if (pthread_cond_init(&pool->cv, NULL) != 0)
		goto fail_cond;
	if (n_threads > 1) {
		pool->workers = calloc((size_t)n_threads - 1, sizeof(*pool->workers));
		if (pool->workers == NULL)
			goto fail_workers;
	}
	for (int i = 0; i < n_threads - 1; i++) {
		pool->workers[i].pool = pool;
		pool->workers[i].ith = i + 1;
		int rc = pthread_create(&pool->workers[i].thread, NULL, worker_main, &pool->workers[i]);
		if (rc != 0) {
			pool->n_threads = i + 1; /* join what was started */
			ml_pool_free(pool);
			return ml_error(ML_ERR_IO, "ml_pool_init: pthread_create: errno %d", rc);
		}
	}
	*out = pool;
	return 0;

fail_workers:
	pthread_cond_destroy(&pool->cv);
fail_cond:
	pthread_mutex_destroy(&pool->mu);
fail_mutex:
	free(pool);
	return ML_ERR_NOMEM;
}

void ml_pool_free(struct ml_pool *pool)
{
	if (pool == NULL)
		return;
	pthread_mutex_lock(&pool->mu);
	atomic_store(&pool->stop, 1);
	pthread_cond_broadcast(&pool->cv);
	pthread_mutex_unlock(&pool->mu);
	for (int i = 0; i < pool->n_threads - 1; i++)
		pthread_join(pool->workers[i].thread, NULL);
	pthread_cond_destroy(&pool->cv);
	pthread_mutex_destroy(&pool->mu);
	free(pool->workers);
	free(pool);
}

int ml_pool_size(const struct ml_pool *pool)
{
	return pool->n_threads;
}

/* Publishes a new job generation (the caller is the only writer of |gen|)
 * and wakes sleeping workers. */
static void publish(struct ml_pool *pool, unsigned kind)
{
	const unsigned g = atomic_load_explicit(&pool->gen, memory_order_relaxed);
	/* seq_cst: pairs with the worker's n_sleeping increment + gen check */
	atomic_store(&pool->gen, (((g >> 1) + 1) << 1) | kind);
	if (atomic_load(&pool->n_sleeping) > 0) {
		pthread_mutex_lock(&pool->mu);
		pthread_cond_broadcast(&pool->cv);
		pthread_mutex_unlock(&pool->mu);
	}
}

void ml_pool_run(struct ml_pool *pool, ml_pool_fn fn, void *arg)
{
	if (pool->n_threads == 1) {
		fn(arg, 0, 1);
		return;
	}
	pool->fn = fn;
	pool->arg = arg;
	atomic_store_explicit(&pool->pending, pool->n_threads - 1, memory_order_relaxed);
	publish(pool, 0);
	fn(arg, 0, pool->n_threads);
	int spins = 0;
	while (atomic_load_explicit(&pool->pending, memory_order_acquire) != 0) {
		if (++spins < POOL_SPIN_CALLER)
			cpu_relax();
		else
			sched_yield();
	}
}

void ml_pool_run_items(struct ml_pool *pool, ml_pool_item_fn fn, void *arg, int n_items)
{
	if (n_items <= 0)
		return;
	if (pool->n_threads == 1 || n_items == 1) {
		for (int i = 0; i < n_items; i++)
			fn(arg, i, n_items, 0);
		return;
	}
	pool->item_fn = fn;
	pool->item_arg = arg;
	atomic_store_explicit(&pool->done, 0, memory_order_relaxed);
	atomic_store_explicit(&pool->claim, (uint64_t)(uint32_t)n_items << 32, memory_order_release);
	publish(pool, POOL_GEN_ITEMS);
	const int ran = run_items(pool, 0);
	if (ran == n_items)
		return; /* no worker took anything: nothing to wait for */
	atomic_fetch_add_explicit(&pool->done, ran, memory_order_relaxed);
	int spins = 0;
	while (atomic_load_explicit(&pool->done, memory_order_acquire) != n_items) {
		if (++spins < POOL_SPIN_CALLER)
			cpu_relax();
		else
			sched_yield();
	}
}
