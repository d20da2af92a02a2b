/* The generation engine (see eng.h): request intake, the engine thread and
 * its continuous-batching step.
 *
 * Threads. eng_submit() and eng_cancel() run on any thread; they only touch
 * the wait queue, slot ownership (slot->req), counters and cancel flags, all
 * under e->mu, and wake the engine thread through e->cv. Everything else (slot
 * token arrays, samplers, the model context, batch arrays) belongs to the
 * engine thread alone. Callbacks run on the engine thread without e->mu
 * held, so a callback may call eng_submit()/eng_cancel().
 *
 * One step:
 *   1. take cancellations (queued or running) and admit waiting requests,
 *      oldest first, each into the free slot whose leftover KV cache shares
 *      the longest prefix with its prompt (that prefix is not recomputed);
 *   2. build one batch: one token for every generating slot, then prompt
 *      chunks of slots still in prefill (oldest first) with what is left of
 *      n_batch, so a long prompt takes several steps and decoding slots
 *      never wait for all of it;
 *   3. one model_forward();
 *   4. for every slot whose last pending token was in the batch: sample,
 *      detokenize, match stop strings, emit events, finish if done.
 *
 * Memory. Slot token arrays, samplers, batch arrays and the logits buffer
 * are allocated by eng_init(). A request is one allocation made by
 * eng_submit() (prompt copy, stop strings, pending-text buffer) and freed
 * after its last event; the token loop itself does not allocate. */
#include "engine/eng.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/ml_err.h"
#include "base/ml_log.h"
#include "base/ml_pool.h"
#include "base/ml_time.h"
#include "engine/eng_link.h"
#include "engine/eng_stop.h"
#include "gguf/gguf.h"
#include "kernels/kern.h"
#include "model/model.h"
#include "sampler/smp.h"
#include "tokenizer/tok.h"

#define ENG_MAX_PARALLEL 256
#define ENG_PIECE_MAX 256 /* tok_stream_push(): cap >= 256 is always enough */

/* One request, from eng_submit() to its last event. */
struct eng_req {
	struct eng_req *next; /* wait queue link (under e->mu) */
	uint64_t id;
	eng_event_fn cb;
	void *user;
	bool cancel; /* eng_cancel() asked for it (under e->mu) */
	int n_prompt;
	int max_tokens;
	bool ignore_eos;
	struct smp_params sampling;
	int32_t *prompt;          /* [n_prompt], in the same allocation */
	struct eng_stop_set stop; /* strings live in the same allocation */
	char *text;               /* pending (not yet emitted) text, [text_cap] */
	size_t text_cap;
	size_t n_text;
	double t_start; /* ml_time_s() at submit */
};

struct eng_slot {
	int seq;             /* model sequence id == slot index */
	struct eng_req *req; /* NULL: free. Written by the engine thread under e->mu */
	uint64_t order;      /* admission number: prefill goes oldest first */
	int32_t *tokens;     /* [n_ctx]: prompt, then generated tokens */
	int n_tokens;        /* tokens in |tokens| */
	int n_past;          /* of those, already in the KV cache */
	int n_gen;           /* generated tokens */
	int n_cached;        /* free slot: tokens[0..n_cached) are still in the KV cache */
	int n_reuse;         /* set at admission: cached prompt prefix to keep */
	uint64_t last_used;  /* when it was last given back (least recently used goes first) */
	struct smp *smp;
	struct tok_stream ts;
	/* this step */
	int n_chunk;    /* tokens of this slot in the batch */
	int logit_row;  /* row of e->logits for its last token, -1 if none */
	double t_first; /* time of the first generated token */
};

#define ENG_MAX_RETIRED 16

struct eng {
	struct eng_params p;  /* defaults filled in */
	struct model *model;  /* the layers this engine runs now */
	struct model *model0; /* the first one loaded: vocab, hparams, accessors */
	struct model *retired[ENG_MAX_RETIRED]; /* replaced by eng_relink(), freed at the end */
	int n_retired;
	struct model_ctx *ctx;
	struct ml_pool *pool;
	struct tok_vocab *vocab;
	char *chat_template; /* NULL if the model has none */
	char *name;          /* GGUF file stem */
	int n_vocab;

	struct eng_slot *slots; /* [n_parallel] */
	/* batch, [n_batch] each */
	int32_t *b_tok;
	int32_t *b_pos;
	int32_t *b_seq;
	int8_t *b_logits;
	float *logits; /* [n_parallel][n_vocab] */
	float *hidden; /* split only: [n_batch][n_embd], output of layers [0, layer_end) */
	char errmsg[512];

	pthread_t thread;
	bool thread_started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	/* under mu */
	struct eng_req *q_head, *q_tail;
	int n_queued;
	int n_active;
	bool cancel_pending;
	bool stop;
	uint64_t next_id;
	uint64_t n_finished; /* slots given back, for last_used */
	bool relink_pending; /* eng_relink() queued a new link */
	struct eng_link *new_link;
	int new_layer_end;
	bool new_owned;
	struct eng_stats stats; /* totals (n_parallel/n_active/n_queued filled on read) */
	/* engine thread only */
	bool link_down;         /* the link failed; running requests wait for eng_relink() */
	double link_down_since; /* ml_time_s() */
	char link_err[512];     /* why it went down */
	uint64_t next_order;
	uint64_t n_decode; /* one-token decode entries over all forward passes */
};

struct eng_params eng_default_params(void)
{
	struct eng_params p = {
	    .model_path = NULL,
	    .n_parallel = 4,
	    .n_ctx = 0,
	    .n_threads = 0,
	    .n_batch = 512,
	    .n_queue = 16,
	    .kv_type = MODEL_KV_F16,
	};
	return p;
}

/* The KV cache and scratch for |m|: n_parallel sequences of n_ctx
 * positions in the engine's KV type. */
static int ctx_init(struct eng *e, struct model_ctx **out, struct model *m)
{
	struct model_ctx_params cp = {
	    .n_seq = e->p.n_parallel,
	    .n_ctx = e->p.n_ctx,
	    .n_batch = e->p.n_batch,
	    .kv_type = e->p.kv_type,
	};
	return model_ctx_init_params(out, m, e->pool, &cp);
}

/* Drops positions >= |pos| of sequence |seq| here and on the stages the
 * link reaches. */
static void kv_truncate(struct eng *e, int seq, int pos)
{
	model_kv_truncate(e->ctx, seq, pos);
	if (e->p.link && !e->link_down)
		e->p.link->kv_truncate(e->p.link, seq, pos);
}

/* ---- events ---------------------------------------------------------- */

static void emit(struct eng_slot *s, struct eng_req *r, const char *text, size_t len, int32_t token,
                 enum eng_finish finish, int err, const char *message)
{
	struct eng_event ev = {
	    .id = r->id,
	    .text = len ? text : "",
	    .len = len,
	    .token = token,
	    .finish = finish,
	    .n_prompt = r->n_prompt,
	    .n_completion = s ? s->n_gen : 0,
	    .err = err,
	    .message = message,
	    .n_cached = s ? s->n_reuse : 0,
	};
	r->cb(&ev, r->user);
}

/* Gives slot |s| back and sends the request's final event, with |text| as
 * its last piece of text. Frees the request. A request that ended normally
 * leaves its KV cache for reuse; a cancelled or failed one clears it. */
static void slot_finish(struct eng *e, struct eng_slot *s, enum eng_finish finish, const char *text,
                        size_t len, int err, const char *message)
{
	struct eng_req *r = s->req;
	bool keep = finish == ENG_FINISH_STOP || finish == ENG_FINISH_LENGTH;

	if (!keep)
		kv_truncate(e, s->seq, 0);
	pthread_mutex_lock(&e->mu);
	s->n_cached = keep ? s->n_past : 0;
	s->last_used = ++e->n_finished;
	e->stats.n_requests++;
	e->stats.n_prompt_tokens += (uint64_t)r->n_prompt;
	e->stats.n_cached_tokens += (uint64_t)s->n_reuse;
	e->stats.n_generated += (uint64_t)s->n_gen;
	s->req = NULL;
	e->n_active--;
	pthread_mutex_unlock(&e->mu);

	if (ml_log_get_level() <= ML_LOG_DEBUG) {
		double now = ml_time_s();
		double gen_s = s->n_gen > 1 ? now - s->t_first : 0.0;
		ML_DEBUG("eng: request %llu done (%d): %d prompt + %d generated tokens in %.3f s"
		         " (%.1f tokens/s after the first)",
		         (unsigned long long)r->id, (int)finish, r->n_prompt, s->n_gen,
		         now - r->t_start, gen_s > 0 ? (s->n_gen - 1) / gen_s : 0.0);
	}
	emit(s, r, text, len, -1, finish, err, message);
	s->n_chunk = 0;
	s->logit_row = -1;
	free(r);
}

/* ---- request intake -------------------------------------------------- */

int eng_submit(struct eng *e, const struct eng_request *r, eng_event_fn cb, void *user,
               uint64_t *id)
{
	if (!e || !r || !cb)
		return ml_error(ML_ERR_INVALID, "eng_submit: missing engine, request or callback");
	if (r->n_prompt < 1 || !r->prompt)
		return ml_error(ML_ERR_INVALID, "eng_submit: the prompt is empty");
	if ((int64_t)r->n_prompt + 1 > e->p.n_ctx)
		return ml_error(ML_ERR_RANGE,
		                "prompt of %d tokens does not fit the context of %d tokens per slot"
		                " (prompt + 1 generated token must fit)",
		                r->n_prompt, e->p.n_ctx);
	for (int i = 0; i < r->n_prompt; i++)
		if (r->prompt[i] < 0 || r->prompt[i] >= e->n_vocab)
			return ml_error(ML_ERR_INVALID,
			                "eng_submit: prompt token %d at position %d is outside the "
			                "vocabulary of %d tokens",
			                r->prompt[i], i, e->n_vocab);

	/* One allocation: header, prompt, stop strings, pending-text buffer. */
	size_t n_stop_bytes = 0;
	int n_stop = 0;
	for (int i = 0; i < ENG_MAX_STOP && r->stop[i]; i++) {
		n_stop_bytes += strlen(r->stop[i]) + 1;
		n_stop++;
	}
	size_t max_stop = 0;
	for (int i = 0; i < n_stop; i++) {
		size_t l = strlen(r->stop[i]);
		if (l > max_stop)
			max_stop = l;
	}
	/* Held-back text is shorter than the longest stop string; one push adds
	 * at most ENG_PIECE_MAX bytes, a flush at most a few replacement chars. */
	size_t text_cap = max_stop + 2 * ENG_PIECE_MAX;
	size_t sz = sizeof(struct eng_req) + (size_t)r->n_prompt * sizeof(int32_t) + n_stop_bytes +
	            text_cap;
	struct eng_req *q = calloc(1, sz);
	if (!q)
		return ml_error(ML_ERR_NOMEM,
		                "eng_submit: out of memory for a request of %zu bytes", sz);
	q->cb = cb;
	q->user = user;
	q->n_prompt = r->n_prompt;
	q->max_tokens = r->max_tokens;
	q->ignore_eos = r->ignore_eos;
	q->sampling = r->sampling;
	q->prompt = (int32_t *)(q + 1);
	memcpy(q->prompt, r->prompt, (size_t)r->n_prompt * sizeof(int32_t));
	char *sp = (char *)(q->prompt + r->n_prompt);
	const char *stops[ENG_MAX_STOP + 1] = {0};
	for (int i = 0; i < n_stop; i++) {
		size_t l = strlen(r->stop[i]) + 1;
		memcpy(sp, r->stop[i], l);
		stops[i] = sp;
		sp += l;
	}
	eng_stop_set_init(&q->stop, stops);
	q->text = sp;
	q->text_cap = text_cap;
	q->t_start = ml_time_s();

	pthread_mutex_lock(&e->mu);
	if (e->stop) {
		pthread_mutex_unlock(&e->mu);
		free(q);
		return ml_error(ML_ERR_CLOSED, "eng_submit: the engine is shutting down");
	}
	if (e->n_active + e->n_queued >= e->p.n_parallel + e->p.n_queue) {
		int n_active = e->n_active, n_queued = e->n_queued;
		pthread_mutex_unlock(&e->mu);
		free(q);
		return ml_error(ML_ERR_BUSY,
		                "all %d slots are busy and %d requests are waiting (limit %d)",
		                n_active, n_queued, e->p.n_queue);
	}
	q->id = ++e->next_id;
	if (e->q_tail)
		e->q_tail->next = q;
	else
		e->q_head = q;
	e->q_tail = q;
	e->n_queued++;
	if (id)
		*id = q->id;
	pthread_cond_signal(&e->cv);
	pthread_mutex_unlock(&e->mu);
	return 0;
}

void eng_cancel(struct eng *e, uint64_t id)
{
	if (!e)
		return;
	pthread_mutex_lock(&e->mu);
	for (struct eng_req *q = e->q_head; q; q = q->next)
		if (q->id == id)
			q->cancel = true, e->cancel_pending = true;
	for (int i = 0; i < e->p.n_parallel; i++) {
		struct eng_req *q = e->slots[i].req;
		if (q && q->id == id)
			q->cancel = true, e->cancel_pending = true;
	}
	if (e->cancel_pending)
		pthread_cond_signal(&e->cv);
	pthread_mutex_unlock(&e->mu);
}

/* ---- the engine thread ----------------------------------------------- */

/* Whether |s| still has tokens to compute before it can sample: its
 * prompt, or (after a new link, see eng_relink) its prompt and the tokens
 * it generated so far. A generating slot has n_past == n_tokens - 1. */
static bool in_prefill(const struct eng_slot *s)
{
	return s->n_past < s->req->n_prompt || s->n_past + 1 < s->n_tokens;
}

/* Puts a newly admitted request's prompt into its slot. */
static void slot_start(struct eng *e, struct eng_slot *s)
{
	struct eng_req *r = s->req;

	/* Keep the cached prefix, but always compute the last prompt token:
	 * its logits give the first generated token. */
	int keep = s->n_reuse < r->n_prompt - 1 ? s->n_reuse : r->n_prompt - 1;
	s->n_reuse = keep;
	kv_truncate(e, s->seq, keep);
	memcpy(s->tokens, r->prompt, (size_t)r->n_prompt * sizeof(int32_t));
	s->n_tokens = r->n_prompt;
	s->n_past = keep;
	s->n_cached = 0;
	s->n_gen = 0;
	s->n_chunk = 0;
	s->logit_row = -1;
	s->order = e->next_order++;
	smp_reset(s->smp, &r->sampling);
	tok_stream_init(&s->ts, e->vocab, false);
	/* The output continues a prompt, so its first piece keeps its space. */
	s->ts.at_start = false;
	ML_DEBUG(
	    "eng: request %llu -> slot %d (%d prompt tokens, %d of them cached, waited %.3f s)",
	    (unsigned long long)r->id, s->seq, r->n_prompt, keep, ml_time_s() - r->t_start);
}

/* Length of the prefix of |q|'s prompt still in free slot |s|'s cache. */
static int cached_prefix(const struct eng_slot *s, const struct eng_req *q)
{
	int n = s->n_cached < q->n_prompt ? s->n_cached : q->n_prompt;
	int i = 0;
	while (i < n && s->tokens[i] == q->prompt[i])
		i++;
	return i;
}

/* The free slot for |q| (there is one). Candidates are the slots that
 * would keep at least half of their cache (empty slots always qualify); of
 * those the longest cached prefix wins, then the least recently used. When
 * none qualifies (a shared BOS or system prompt only), the least recently
 * used slot is overwritten, so one unrelated request does not evict a
 * conversation's cache. Sets the slot's n_reuse. Called with e->mu held, on
 * the engine thread (which owns the token arrays it reads). */
static int pick_slot(struct eng *e, const struct eng_req *q)
{
	int best = -1, best_n = -1, lru = -1;
	for (int i = 0; i < e->p.n_parallel; i++) {
		const struct eng_slot *s = &e->slots[i];
		if (s->req)
			continue;
		if (lru < 0 || s->last_used < e->slots[lru].last_used)
			lru = i;
		int n = cached_prefix(s, q);
		if (2 * n < s->n_cached)
			continue;
		if (n > best_n || (n == best_n && s->last_used < e->slots[best].last_used)) {
			best = i;
			best_n = n;
		}
	}
	if (best < 0) {
		best = lru;
		best_n = cached_prefix(&e->slots[lru], q);
	}
	e->slots[best].n_reuse = best_n;
	return best;
}

/* Running requests start over on the next steps: their KV (prompt and
 * generated tokens) is recomputed, which gives the same continuation.
 * Free slots forget their cached prefixes (the stages no longer hold
 * them). Engine thread. */
static void slots_replay(struct eng *e)
{
	pthread_mutex_lock(&e->mu);
	for (int i = 0; i < e->p.n_parallel; i++) {
		struct eng_slot *s = &e->slots[i];
		model_kv_truncate(e->ctx, s->seq, 0);
		if (s->req)
			s->n_past = 0;
		else
			s->n_cached = 0;
	}
	pthread_mutex_unlock(&e->mu);
}

/* The link failed during a step (engine thread): running requests wait
 * for eng_relink() (at most link_wait_ms) and are then recomputed. */
static void link_lost(struct eng *e, const char *why)
{
	e->link_down = true;
	e->link_down_since = ml_time_s();
	snprintf(e->link_err, sizeof(e->link_err), "%s", why);
	pthread_mutex_lock(&e->mu);
	e->stats.link_down = true;
	int n = e->n_active;
	pthread_mutex_unlock(&e->mu);
	ML_WARN("eng: the pipeline failed (%s); %d running requests wait up to %d ms for a new "
	        "plan",
	        why, n, e->p.link_wait_ms);
	slots_replay(e);
}

/* Applies eng_relink() on the engine thread. */
static void relink_apply(struct eng *e, struct eng_link *link, int layer_end, bool owned)
{
	const struct model_hparams *hp = model_hparams(e->model0);
	int rc = 0;
	if (e->p.link && e->p.link_owned)
		e->p.link->free(e->p.link);
	e->p.link = NULL;
	e->link_down = true; /* until the new link has started */
	if (layer_end != model_layer_end(e->model)) {
		struct model *m = NULL;
		struct model_ctx *c = NULL;
		struct model_params mp = {
		    .path = e->p.model_path, .layer_begin = 0, .layer_end = layer_end, .mmap = e->p.mmap};
		if (e->n_retired == ENG_MAX_RETIRED) {
			rc = ml_error(ML_ERR_RANGE,
			              "eng: %d re-plans that changed this node's layers; "
			              "restart to plan again",
			              ENG_MAX_RETIRED);
			goto fail;
		}
		if ((rc = model_load(&m, &mp)) < 0)
			goto fail;
		rc = ctx_init(e, &c, m);
		if (rc < 0) {
			model_free(m);
			goto fail;
		}
		model_ctx_free(e->ctx);
		e->ctx = c;
		if (e->model != e->model0)
			e->retired[e->n_retired++] = e->model;
		e->model = m;
	}
	if (link && !e->hidden) {
		e->hidden = malloc((size_t)e->p.n_batch * (size_t)hp->n_embd * sizeof(float));
		if (!e->hidden) {
			rc = ml_error(ML_ERR_NOMEM, "eng: out of memory for the hidden states");
			goto fail;
		}
	}
	e->p.link = link;
	e->p.link_owned = owned;
	e->p.layer_end = layer_end;
	link = NULL;
	if (e->p.link) {
		struct eng_link_setup ls = {
		    .layer_begin = layer_end,
		    .n_layer = hp->n_layer,
		    .n_embd = hp->n_embd,
		    .n_vocab = hp->n_vocab,
		    .n_seq = e->p.n_parallel,
		    .n_ctx = e->p.n_ctx,
		    .n_batch = e->p.n_batch,
		    .n_threads = e->p.n_threads,
		    .kv_type = e->p.kv_type,
		};
		if ((rc = e->p.link->start(e->p.link, &ls)) < 0)
			goto fail;
	}
	e->link_down = false;
	slots_replay(e);
	pthread_mutex_lock(&e->mu);
	e->stats.link_down = false;
	int n = e->n_active;
	pthread_mutex_unlock(&e->mu);
	if (e->p.link)
		ML_INFO("eng: new pipeline: layers 0-%d here, the link runs %d-%d; %d running "
		        "requests are recomputed and go on",
		        layer_end - 1, layer_end, hp->n_layer - 1, n);
	else
		ML_INFO("eng: new plan: the whole model here; %d running requests are recomputed "
		        "and go on",
		        n);
	return;
fail:
	snprintf(e->link_err, sizeof(e->link_err), "the new plan did not start: %s",
	         ml_last_error()[0] ? ml_last_error() : ml_strerror(rc));
	ML_ERROR("eng: %s", e->link_err);
	if (link && owned)
		link->free(link);
	e->link_down = true;
	e->link_down_since = ml_time_s();
	pthread_mutex_lock(&e->mu);
	e->stats.link_down = true;
	pthread_mutex_unlock(&e->mu);
	slots_replay(e);
}

/* Step 1: cancellations and admissions. Returns false when the engine
 * should exit. */
static bool take_work(struct eng *e)
{
	struct eng_req *cancelled = NULL, **ctail = &cancelled;
	bool cancel_slot[ENG_MAX_PARALLEL] = {0};
	bool admitted[ENG_MAX_PARALLEL] = {0};

	bool relink = false, link_timeout = false;
	struct eng_link *new_link = NULL;
	int new_layer_end = 0;
	bool new_owned = false;

	pthread_mutex_lock(&e->mu);
	for (;;) {
		if (e->stop || e->cancel_pending || e->relink_pending)
			break;
		if (!e->link_down) {
			if (e->n_active > 0 || e->q_head)
				break;
			pthread_cond_wait(&e->cv, &e->mu);
			continue;
		}
		/* The pipeline is down: wait for eng_relink(), up to link_wait_ms. */
		double left = e->link_down_since + e->p.link_wait_ms / 1000.0 - ml_time_s();
		if (left <= 0 && e->n_active > 0) {
			link_timeout = true;
			break;
		}
		if (left <= 0 || left > 1.0)
			left = 1.0;
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		long long ns = (long long)ts.tv_nsec + (long long)(left * 1e9);
		ts.tv_sec += (time_t)(ns / 1000000000LL);
		ts.tv_nsec = (long)(ns % 1000000000LL);
		pthread_cond_timedwait(&e->cv, &e->mu, &ts);
	}
	if (e->stop) {
		pthread_mutex_unlock(&e->mu);
		return false;
	}
	if (e->relink_pending) {
		relink = true;
		new_link = e->new_link;
		new_layer_end = e->new_layer_end;
		new_owned = e->new_owned;
		e->relink_pending = false;
		e->new_link = NULL;
	}
	if (e->cancel_pending) {
		e->cancel_pending = false;
		for (struct eng_req **pp = &e->q_head; *pp;) {
			struct eng_req *q = *pp;
			if (q->cancel) {
				*pp = q->next;
				e->n_queued--;
				q->next = NULL;
				*ctail = q;
				ctail = &q->next;
			} else {
				pp = &q->next;
			}
		}
		e->q_tail = NULL;
		for (struct eng_req *q = e->q_head; q; q = q->next)
			e->q_tail = q;
		for (int i = 0; i < e->p.n_parallel; i++)
			if (e->slots[i].req && e->slots[i].req->cancel)
				cancel_slot[i] = true;
	}
	while (e->q_head && e->n_active < e->p.n_parallel) {
		struct eng_req *q = e->q_head;
		int i = pick_slot(e, q);
		struct eng_slot *s = &e->slots[i];
		e->q_head = q->next;
		if (!e->q_head)
			e->q_tail = NULL;
		q->next = NULL;
		e->n_queued--;
		s->req = q;
		e->n_active++;
		admitted[i] = true;
	}
	pthread_mutex_unlock(&e->mu);

	while (cancelled) {
		struct eng_req *q = cancelled;
		cancelled = q->next;
		ML_DEBUG("eng: request %llu cancelled while waiting", (unsigned long long)q->id);
		emit(NULL, q, "", 0, -1, ENG_FINISH_CANCELLED, 0, NULL);
		free(q);
	}
	for (int i = 0; i < e->p.n_parallel; i++) {
		if (cancel_slot[i])
			slot_finish(e, &e->slots[i], ENG_FINISH_CANCELLED, "", 0, 0, NULL);
		if (admitted[i])
			slot_start(e, &e->slots[i]);
	}
	if (relink)
		relink_apply(e, new_link, new_layer_end, new_owned);
	if (link_timeout && e->link_down) {
		snprintf(e->errmsg, sizeof(e->errmsg),
		         "the pipeline failed (%.400s) and no new plan came within %d ms",
		         e->link_err, e->p.link_wait_ms);
		ML_ERROR("eng: %s", e->errmsg);
		for (int i = 0; i < e->p.n_parallel; i++)
			if (e->slots[i].req)
				slot_finish(e, &e->slots[i], ENG_FINISH_ERROR, "", 0, ML_ERR_CLOSED,
				            e->errmsg);
		e->link_down_since = ml_time_s();
	}
	return true;
}

/* After a token: emits (with |token|) the pending text that can no longer
 * start a stop string. Returns true when a stop string completed; the text
 * before it has gone out and the rest is dropped. */
static bool text_step(struct eng_slot *s, struct eng_req *r, int32_t token)
{
	size_t n_emit;
	bool hit = eng_stop_scan(&r->stop, r->text, r->n_text, &n_emit);
	emit(s, r, r->text, n_emit, token, ENG_FINISH_NONE, 0, NULL);
	if (hit) {
		r->n_text = 0;
		return true;
	}
	memmove(r->text, r->text + n_emit, r->n_text - n_emit);
	r->n_text -= n_emit;
	return false;
}

/* Ends the request in |s| for |why| (STOP by end-of-generation, or
 * LENGTH): the held-back text and any incomplete character go out with the
 * final event, up to a stop string if one completes now. */
static void slot_end(struct eng *e, struct eng_slot *s, enum eng_finish why)
{
	struct eng_req *r = s->req;
	int w = tok_stream_flush(&s->ts, r->text + r->n_text, r->text_cap - r->n_text);
	r->n_text += w > 0 ? (size_t)w : 0;
	size_t n_emit;
	if (eng_stop_scan(&r->stop, r->text, r->n_text, &n_emit))
		why = ENG_FINISH_STOP;
	else
		n_emit = r->n_text;
	slot_finish(e, s, why, r->text, n_emit, 0, NULL);
}

/* Step 4 for one slot: the logits of its last token are ready. */
static void slot_sample(struct eng *e, struct eng_slot *s)
{
	struct eng_req *r = s->req;
	const float *logits = e->logits + (size_t)s->logit_row * (size_t)e->n_vocab;
	int32_t tok = smp_sample(s->smp, logits, s->tokens, s->n_tokens);

	if (tok < 0 || tok >= e->n_vocab) {
		snprintf(e->errmsg, sizeof(e->errmsg), "sampler returned token %d (vocabulary %d)",
		         tok, e->n_vocab);
		slot_finish(e, s, ENG_FINISH_ERROR, "", 0, ML_ERR_INVALID, e->errmsg);
		return;
	}
	s->tokens[s->n_tokens++] = tok;
	if (s->n_gen++ == 0)
		s->t_first = ml_time_s();

	if (!r->ignore_eos && tok_is_eog(e->vocab, tok)) {
		slot_end(e, s, ENG_FINISH_STOP);
		return;
	}
	int w = tok_stream_push(&s->ts, tok, r->text + r->n_text, r->text_cap - r->n_text);
	r->n_text += w > 0 ? (size_t)w : 0;
	if (text_step(s, r, tok)) {
		slot_finish(e, s, ENG_FINISH_STOP, "", 0, 0, NULL);
		return;
	}
	if ((r->max_tokens > 0 && s->n_gen >= r->max_tokens) || s->n_tokens >= e->p.n_ctx)
		slot_end(e, s, ENG_FINISH_LENGTH);
}

/* Steps 2-4. */
static void engine_step(struct eng *e)
{
	int n = 0, n_rows = 0;
	int budget = e->p.n_batch;

	/* One token for every generating slot. */
	for (int i = 0; i < e->p.n_parallel; i++) {
		struct eng_slot *s = &e->slots[i];
		s->n_chunk = 0;
		s->logit_row = -1;
		if (!s->req || in_prefill(s) || s->n_past >= s->n_tokens)
			continue;
		e->b_tok[n] = s->tokens[s->n_past];
		e->b_pos[n] = s->n_past;
		e->b_seq[n] = s->seq;
		e->b_logits[n] = 1;
		s->n_chunk = 1;
		s->logit_row = n_rows++;
		n++;
	}
	budget -= n;
	const int budget_decode = budget;

	/* Prompt chunks, oldest request first, with what is left. */
	while (budget > 0) {
		struct eng_slot *best = NULL;
		for (int i = 0; i < e->p.n_parallel; i++) {
			struct eng_slot *s = &e->slots[i];
			if (s->req && s->n_chunk == 0 && in_prefill(s) &&
			    (!best || s->order < best->order))
				best = s;
		}
		if (!best)
			break;
		int k = best->n_tokens - best->n_past;
		if (k > budget)
			k = budget;
		for (int j = 0; j < k; j++) {
			e->b_tok[n + j] = best->tokens[best->n_past + j];
			e->b_pos[n + j] = best->n_past + j;
			e->b_seq[n + j] = best->seq;
			e->b_logits[n + j] = 0;
		}
		if (best->n_past + k == best->n_tokens) {
			e->b_logits[n + k - 1] = 1;
			best->logit_row = n_rows++;
		}
		best->n_chunk = k;
		n += k;
		budget -= k;
	}
	if (n == 0)
		return;

	struct model_batch b = {
	    .n_tokens = n,
	    .tokens = e->b_tok,
	    .embd = NULL,
	    .pos = e->b_pos,
	    .seq = e->b_seq,
	    .logits = e->b_logits,
	};
	double t0 = ml_time_s();
	int rc;
	bool link_failed = false;
	if (!e->p.link) {
		rc = model_forward(e->ctx, &b, e->logits);
	} else {
		rc = model_forward(e->ctx, &b, e->hidden);
		if (rc == 0) {
			struct eng_link_batch lb = {n, e->b_pos, e->b_seq, e->b_logits};
			rc = e->p.link->forward(e->p.link, &lb, e->hidden, e->logits);
			link_failed = rc < 0;
		}
	}
	double dt = ml_time_s() - t0;
	e->n_decode += (uint64_t)(e->p.n_batch - budget_decode);
	pthread_mutex_lock(&e->mu);
	e->stats.busy_s += dt;
	e->stats.n_steps++;
	e->stats.n_step_tokens += (uint64_t)n;
	pthread_mutex_unlock(&e->mu);
	if (rc < 0 && link_failed && e->p.link_wait_ms > 0) {
		link_lost(e, ml_last_error()[0] ? ml_last_error() : ml_strerror(rc));
		return;
	}
	if (rc < 0) {
		snprintf(e->errmsg, sizeof(e->errmsg), "forward pass failed: %s",
		         ml_last_error()[0] ? ml_last_error() : ml_strerror(rc));
		ML_ERROR("eng: %s", e->errmsg);
		for (int i = 0; i < e->p.n_parallel; i++)
			if (e->slots[i].req && e->slots[i].n_chunk)
				slot_finish(e, &e->slots[i], ENG_FINISH_ERROR, "", 0, rc,
				            e->errmsg);
		return;
	}
	for (int i = 0; i < e->p.n_parallel; i++) {
		struct eng_slot *s = &e->slots[i];
		if (!s->req || !s->n_chunk)
			continue;
		s->n_past += s->n_chunk;
		if (s->logit_row >= 0)
			slot_sample(e, s);
	}
}

static void *engine_main(void *arg)
{
	struct eng *e = arg;

	while (take_work(e))
		if (!e->link_down)
			engine_step(e);

	/* Shutting down: everything still here is cancelled. */
	for (int i = 0; i < e->p.n_parallel; i++)
		if (e->slots[i].req)
			slot_finish(e, &e->slots[i], ENG_FINISH_CANCELLED, "", 0, 0, NULL);
	pthread_mutex_lock(&e->mu);
	struct eng_req *q = e->q_head;
	e->q_head = e->q_tail = NULL;
	e->n_queued = 0;
	pthread_mutex_unlock(&e->mu);
	while (q) {
		struct eng_req *next = q->next;
		emit(NULL, q, "", 0, -1, ENG_FINISH_CANCELLED, 0, NULL);
		free(q);
		q = next;
	}
	return NULL;
}

/* ---- life cycle ------------------------------------------------------ */

static char *file_stem(const char *path)
{
	const char *base = strrchr(path, '/');
	base = base ? base + 1 : path;
	size_t len = strlen(base);
	if (len > 5 && strcmp(base + len - 5, ".gguf") == 0)
		len -= 5;
	char *s = malloc(len + 1);
	if (s) {
		memcpy(s, base, len);
		s[len] = '\0';
	}
	return s;
}

int eng_init(struct eng **out, const struct eng_params *params)
{
	int rc;
	*out = NULL;
	if (!params || !params->model_path)
		return ml_error(ML_ERR_INVALID, "eng_init: no model path");

	struct eng *e = calloc(1, sizeof(*e));
	if (!e)
		return ml_error(ML_ERR_NOMEM, "eng_init: out of memory");
	e->p = *params;
	struct eng_params d = eng_default_params();
	if (e->p.n_parallel <= 0)
		e->p.n_parallel = d.n_parallel;
	if (e->p.n_batch <= 0)
		e->p.n_batch = d.n_batch;
	if (e->p.n_queue < 0)
		e->p.n_queue = d.n_queue;
	if (e->p.n_threads <= 0) {
		long nc = sysconf(_SC_NPROCESSORS_ONLN);
		e->p.n_threads = nc > 0 ? (int)nc : 1;
	}
	if (e->p.n_parallel > ENG_MAX_PARALLEL) {
		rc = ml_error(ML_ERR_RANGE, "eng_init: %d parallel slots asked, at most %d",
		              e->p.n_parallel, ENG_MAX_PARALLEL);
		goto fail_params;
	}
	if (e->p.n_batch < e->p.n_parallel) {
		/* Every generating slot must fit in one step. */
		ML_WARN("eng: batch of %d tokens raised to %d, one per slot", e->p.n_batch,
		        e->p.n_parallel);
		e->p.n_batch = e->p.n_parallel;
	}
	e->name = file_stem(e->p.model_path);
	if (!e->name) {
		rc = ml_error(ML_ERR_NOMEM, "eng_init: out of memory");
		goto fail_params;
	}

	kern_init();
	struct model_params mp = {.path = e->p.model_path, .layer_begin = 0, .layer_end = -1, .mmap = e->p.mmap};
	if (e->p.link) {
		if (e->p.layer_end < 1) {
			rc =
			    ml_error(ML_ERR_INVALID,
			             "eng_init: a split engine needs its last layer (layer_end %d)",
			             e->p.layer_end);
			goto fail_model;
		}
		mp.layer_end = e->p.layer_end;
	}
	rc = model_load(&e->model, &mp);
	if (rc < 0)
		goto fail_model;
	e->model0 = e->model;
	const struct model_hparams *hp = model_hparams(e->model);
	if (e->p.link && model_is_last(e->model)) {
		rc =
		    ml_error(ML_ERR_INVALID,
		             "eng_init: a split engine must leave layers to its link (layer_end %d "
		             "of %d layers)",
		             e->p.layer_end, hp->n_layer);
		goto fail_vocab;
	}
	e->n_vocab = hp->n_vocab;
	if (e->p.n_ctx <= 0) {
		e->p.n_ctx = hp->n_ctx_train > 0 && hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096;
	} else if (hp->n_ctx_train > 0 && e->p.n_ctx > hp->n_ctx_train) {
		ML_WARN("eng: context of %d tokens is longer than the %d the model was trained on",
		        e->p.n_ctx, hp->n_ctx_train);
	}

	rc = tok_vocab_load(&e->vocab, model_gguf(e->model));
	if (rc < 0)
		goto fail_vocab;
	struct gguf_str tmpl;
	if (gguf_get_str(model_gguf(e->model), "tokenizer.chat_template", &tmpl) == 0) {
		e->chat_template = malloc(tmpl.len + 1);
		if (!e->chat_template) {
			rc =
			    ml_error(ML_ERR_NOMEM, "eng_init: out of memory for the chat template");
			goto fail_template;
		}
		memcpy(e->chat_template, tmpl.ptr, tmpl.len);
		e->chat_template[tmpl.len] = '\0';
	}

	rc = ml_pool_init(&e->pool, e->p.n_threads);
	if (rc < 0)
		goto fail_pool;
	rc = ctx_init(e, &e->ctx, e->model);
	if (rc < 0)
		goto fail_ctx;

	size_t nb = (size_t)e->p.n_batch;
	e->slots = calloc((size_t)e->p.n_parallel, sizeof(*e->slots));
	e->b_tok = malloc(nb * sizeof(int32_t));
	e->b_pos = malloc(nb * sizeof(int32_t));
	e->b_seq = malloc(nb * sizeof(int32_t));
	e->b_logits = malloc(nb);
	e->logits = malloc((size_t)e->p.n_parallel * (size_t)e->n_vocab * sizeof(float));
	if (e->p.link)
		e->hidden = malloc(nb * (size_t)hp->n_embd * sizeof(float));
	if (!e->slots || !e->b_tok || !e->b_pos || !e->b_seq || !e->b_logits || !e->logits ||
	    (e->p.link && !e->hidden)) {
		rc = ml_error(ML_ERR_NOMEM, "eng_init: out of memory for slots and batch");
		goto fail_slots;
	}
	struct smp_params sp = smp_default_params();
	for (int i = 0; i < e->p.n_parallel; i++) {
		struct eng_slot *s = &e->slots[i];
		s->seq = i;
		s->logit_row = -1;
		s->tokens = malloc((size_t)e->p.n_ctx * sizeof(int32_t));
		if (!s->tokens) {
			rc = ml_error(ML_ERR_NOMEM, "eng_init: out of memory for slot %d", i);
			goto fail_slots;
		}
		rc = smp_init(&s->smp, &sp, e->n_vocab);
		if (rc < 0)
			goto fail_slots;
	}
	if (e->p.link) {
		struct eng_link_setup ls = {
		    .layer_begin = e->p.layer_end,
		    .n_layer = hp->n_layer,
		    .n_embd = hp->n_embd,
		    .n_vocab = hp->n_vocab,
		    .n_seq = e->p.n_parallel,
		    .n_ctx = e->p.n_ctx,
		    .n_batch = e->p.n_batch,
		    .n_threads = e->p.n_threads,
		    .kv_type = e->p.kv_type,
		};
		rc = e->p.link->start(e->p.link, &ls);
		if (rc < 0)
			goto fail_slots;
	}

	if (pthread_mutex_init(&e->mu, NULL) != 0) {
		rc = ml_error(ML_ERR_IO, "eng_init: pthread_mutex_init failed");
		goto fail_slots;
	}
	if (pthread_cond_init(&e->cv, NULL) != 0) {
		rc = ml_error(ML_ERR_IO, "eng_init: pthread_cond_init failed");
		goto fail_cond;
	}
	if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
		rc = ml_error(ML_ERR_IO, "eng_init: cannot start the engine thread");
		goto fail_thread;
	}
	e->thread_started = true;

	if (e->p.link)
		ML_INFO("split: this node runs layers 0-%d of %d, the link runs %d-%d",
		        e->p.layer_end - 1, hp->n_layer, e->p.layer_end, hp->n_layer - 1);
	ML_INFO("loaded %s: %s, %d layers, %.1f MB of weights, context %d tokens x %d slots, "
	        "%s KV cache, batch %d, %d threads%s",
	        e->name, hp->arch_name, hp->n_layer, (double)model_weight_bytes(e->model) / 1e6,
	        e->p.n_ctx, e->p.n_parallel, e->p.kv_type == MODEL_KV_F16 ? "F16" : "F32",
	        e->p.n_batch, e->p.n_threads,
	        e->chat_template ? ", has a chat template" : "");
	*out = e;
	return 0;

fail_thread:
	pthread_cond_destroy(&e->cv);
fail_cond:
	pthread_mutex_destroy(&e->mu);
fail_slots:
	if (e->slots)
		for (int i = 0; i < e->p.n_parallel; i++) {
			smp_free(e->slots[i].smp);
			free(e->slots[i].tokens);
		}
	free(e->slots);
	free(e->b_tok);
	free(e->b_pos);
	free(e->b_seq);
	free(e->b_logits);
	free(e->logits);
	free(e->hidden);
	model_ctx_free(e->ctx);
fail_ctx:
	ml_pool_free(e->pool);
fail_pool:
	free(e->chat_template);
fail_template:
	tok_vocab_free(e->vocab);
fail_vocab:
	model_free(e->model);
fail_model:
	free(e->name);
fail_params:
	if (params->link && params->link_owned)
		params->link->free(params->link);
	free(e);
	return rc;
}

void eng_free(struct eng *e)
{
	if (!e)
		return;
	if (e->thread_started) {
		pthread_mutex_lock(&e->mu);
		e->stop = true;
		pthread_cond_signal(&e->cv);
		pthread_mutex_unlock(&e->mu);
		pthread_join(e->thread, NULL);
	}
	const struct eng_stats *st = &e->stats;
	if (st->n_steps)
		ML_INFO("engine %s: %llu requests, %llu forward passes, %.2f tokens per pass on "
		        "average (%llu decode, %llu prompt; %llu prompt tokens reused from cache), "
		        "%.1f s computing",
		        e->name, (unsigned long long)st->n_requests,
		        (unsigned long long)st->n_steps,
		        (double)st->n_step_tokens / (double)st->n_steps,
		        (unsigned long long)e->n_decode,
		        (unsigned long long)(st->n_step_tokens - e->n_decode),
		        (unsigned long long)st->n_cached_tokens, st->busy_s);
	pthread_cond_destroy(&e->cv);
	pthread_mutex_destroy(&e->mu);
	for (int i = 0; i < e->p.n_parallel; i++) {
		smp_free(e->slots[i].smp);
		free(e->slots[i].tokens);
	}
	free(e->slots);
	free(e->b_tok);
	free(e->b_pos);
	free(e->b_seq);
	free(e->b_logits);
	free(e->logits);
	free(e->hidden);
	if (e->p.link && e->p.link_owned)
		e->p.link->free(e->p.link);
	if (e->new_link && e->new_owned)
		e->new_link->free(e->new_link);
	model_ctx_free(e->ctx);
	ml_pool_free(e->pool);
	free(e->chat_template);
	tok_vocab_free(e->vocab);
	if (e->model != e->model0)
		model_free(e->model);
	for (int i = 0; i < e->n_retired; i++)
		model_free(e->retired[i]);
	model_free(e->model0);
	free(e->name);
	free(e);
}

/* ---- accessors ------------------------------------------------------- */

void eng_get_stats(const struct eng *e, struct eng_stats *out)
{
	struct eng *m = (struct eng *)e; /* the mutex only */
	pthread_mutex_lock(&m->mu);
	*out = e->stats;
	out->n_parallel = e->p.n_parallel;
	out->n_active = e->n_active;
	out->n_queued = e->n_queued;
	pthread_mutex_unlock(&m->mu);
}

const struct tok_vocab *eng_vocab(const struct eng *e)
{
	return e->vocab;
}

const struct model_hparams *eng_hparams(const struct eng *e)
{
	return model_hparams(e->model0);
}

int eng_relink(struct eng *e, struct eng_link *link, int layer_end, bool owned)
{
	if (!e)
		return ml_error(ML_ERR_INVALID, "eng_relink: no engine");
	int n_layer = model_hparams(e->model0)->n_layer;
	if (layer_end <= 0)
		layer_end = n_layer;
	if (link ? (layer_end < 1 || layer_end >= n_layer) : layer_end != n_layer) {
		if (link && owned)
			link->free(link);
		return ml_error(ML_ERR_INVALID,
		                "eng_relink: layers 0-%d here %s a link (the model has %d layers)",
		                layer_end - 1, link ? "with" : "without", n_layer);
	}
	struct eng_link *drop = NULL;
	bool drop_owned = false;
	pthread_mutex_lock(&e->mu);
	if (e->relink_pending) {
		drop = e->new_link;
		drop_owned = e->new_owned;
	}
	e->new_link = link;
	e->new_layer_end = layer_end;
	e->new_owned = owned;
	e->relink_pending = true;
	pthread_cond_signal(&e->cv);
	pthread_mutex_unlock(&e->mu);
	if (drop && drop_owned)
		drop->free(drop);
	return 0;
}

const char *eng_model_name(const struct eng *e)
{
	return e->name;
}

enum model_kv_type eng_kv_type(const struct eng *e)
{
	return e->p.kv_type;
}

int eng_n_ctx(const struct eng *e)
{
	return e->p.n_ctx;
}

const char *eng_chat_template(const struct eng *e)
{
	return e->chat_template;
}
