/* Compute thread pool: N-1 persistent workers plus the calling thread.
 * ml_pool_run() runs one function on all N threads (ith = 0..N-1, the
 * caller is ith 0) and returns when all have finished. Workers spin briefly
 * and then sleep between jobs, so back-to-back jobs (one per matmul) cost
 * microseconds, not thread creation. One caller at a time per pool. */
#ifndef ML_POOL_H
#define ML_POOL_H

struct ml_pool;

typedef void (*ml_pool_fn)(void *arg, int ith, int nth);

/* Creates a pool of |n_threads| (>= 1) threads in total. */
int ml_pool_init(struct ml_pool **out, int n_threads);
/* Stops and joins the workers. Accepts NULL. */
void ml_pool_free(struct ml_pool *pool);
int ml_pool_size(const struct ml_pool *pool);
/* Runs fn(arg, ith, nth) on every thread; returns after all return. */
void ml_pool_run(struct ml_pool *pool, ml_pool_fn fn, void *arg);

#endif
