/* Compute thread pool: N-1 persistent workers plus the calling thread.
 *
 * ml_pool_run_items() hands out |n_items| work items from a shared counter
 * to whichever threads show up (the caller included) and returns as soon
 * as every item is done: a worker that the OS has descheduled costs the
 * items it did not take, not the whole job. This is what compute code
 * should use.
 *
 * ml_pool_run() runs one function on all N threads (ith = 0..N-1, the
 * caller is ith 0) and returns when all have finished; it waits for every
 * worker, so one late thread delays the job. Use it only where each thread
 * must run (e.g. measuring N-thread memory bandwidth).
 *
 * Workers spin briefly and then sleep between jobs, so back-to-back jobs
 * (one per matmul) cost microseconds, not thread creation. One caller at a
 * time per pool. */
#ifndef ML_POOL_H
#define ML_POOL_H

struct ml_pool;

typedef void (*ml_pool_fn)(void *arg, int ith, int nth);
/* One work item: |item| of |n_items|, run by thread |ith| (0 = the caller,
 * 1..N-1 the workers; unique among the threads running at the same time,
 * so it can index per-thread scratch). */
typedef void (*ml_pool_item_fn)(void *arg, int item, int n_items, int ith);

/* Creates a pool of |n_threads| (>= 1) threads in total. */
int ml_pool_init(struct ml_pool **out, int n_threads);
/* Stops and joins the workers. Accepts NULL. */
void ml_pool_free(struct ml_pool *pool);
int ml_pool_size(const struct ml_pool *pool);
/* Runs fn(arg, ith, nth) on every thread; returns after all return. */
void ml_pool_run(struct ml_pool *pool, ml_pool_fn fn, void *arg);
/* Runs fn(arg, item, n_items, ith) once for each item in 0..n_items-1 on
 * whichever threads take them; returns when all items are done. |arg| is
 * borrowed until the return: no worker touches it (nor |fn|) afterwards,
 * however late it wakes. Items are taken in increasing order but may finish
 * in any order. n_items <= 0 does nothing; n_items == 1 or a pool of one
 * thread runs everything on the caller. */
void ml_pool_run_items(struct ml_pool *pool, ml_pool_item_fn fn, void *arg, int n_items);

#endif
