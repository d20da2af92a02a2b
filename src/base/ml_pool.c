/* Compute thread pool: persistent workers woken by a generation counter.
 *
 * ml_pool_run() publishes the job and bumps |gen|; workers spin on |gen|
 * for a short while after each job (so back-to-back jobs, one per matmul,
 * start in well under a microsecond) and then sleep on a condition
 * variable. The caller runs share 0 and then waits for |pending| to reach
 * zero, spinning briefly and then yielding. */
#include "base/ml_pool.h"

#include <errno.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "base/ml_err.h"

/* Spin iterations before a worker sleeps / the caller yields. Kept modest:
 * this machine's cores are often shared. */
#define POOL_SPIN_WORKER 20000
#define POOL_SPIN_CALLER 2000

struct ml_pool_worker {
	struct ml_pool *pool;
	int ith;
	pthread_t thread;
};

struct ml_pool {
	int n_threads;
	struct ml_pool_worker *workers; /* n_threads - 1 */
	ml_pool_fn fn;
	void *arg;
	_Atomic unsigned gen;     /* bumped once per job */
	_Atomic int pending;      /* workers still running the current job */
	_Atomic int n_sleeping;   /* workers blocked (or about to block) on |cv| */
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
		pool->fn(pool->arg, w->ith, pool->n_threads);
		atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_release);
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

void ml_pool_run(struct ml_pool *pool, ml_pool_fn fn, void *arg)
{
	if (pool->n_threads == 1) {
		fn(arg, 0, 1);
		return;
	}
	pool->fn = fn;
	pool->arg = arg;
	atomic_store_explicit(&pool->pending, pool->n_threads - 1, memory_order_relaxed);
	/* seq_cst: pairs with the worker's n_sleeping increment + gen check */
	atomic_fetch_add(&pool->gen, 1);
	if (atomic_load(&pool->n_sleeping) > 0) {
		pthread_mutex_lock(&pool->mu);
		pthread_cond_broadcast(&pool->cv);
		pthread_mutex_unlock(&pool->mu);
	}
	fn(arg, 0, pool->n_threads);
	int spins = 0;
	while (atomic_load_explicit(&pool->pending, memory_order_acquire) != 0) {
		if (++spins < POOL_SPIN_CALLER)
			cpu_relax();
		else
			sched_yield();
	}
}
