/* The generation engine: owns a model (all or a range of its layers), the
 * tokenizer, the chat template and n_parallel slots. A dedicated engine
 * thread runs continuous batching: every step, all running sequences
 * decode together in one model_forward(); new requests join between steps;
 * long prompts are processed in chunks so they do not stall the others.
 * A finished request leaves its KV cache in its slot; a new request goes to
 * the free slot that shares the longest prefix with its prompt and skips
 * that prefix (chat turns resend the conversation). Results do not change:
 * the forward pass computes a row the same way whatever batch it is in.
 *
 * Threads: eng_submit()/eng_cancel() may be called from any thread (the API
 * event loop). Events are delivered on the engine thread through the
 * request's callback, which must be quick (copy and wake the loop). */
#ifndef ENG_H
#define ENG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/model.h"
#include "sampler/smp.h"

struct tok_vocab;
struct eng_link;

/* Fields <= 0 take the default (n_queue: < 0; 0 means no request waits). */
struct eng_params {
	const char *model_path;
	int n_parallel; /* slots (default 4) */
	int n_ctx;      /* context per slot (default min(4096, n_ctx_train)) */
	int n_threads;  /* compute threads (default: cores) */
	int n_batch;    /* max tokens per forward pass (default 512; raised to n_parallel) */
	int n_queue;    /* requests allowed to wait for a slot (default 16); beyond: ML_ERR_BUSY */
	/* KV cache element type: MODEL_KV_F16 from eng_default_params() (half
	 * the memory, as llama.cpp's default), MODEL_KV_F32 to compare with the
	 * F32-KV reference outputs. Not a "<= 0" field: a zeroed struct means
	 * F32. A link's stages get the same type (eng_link_setup.kv_type), so
	 * split output equals solo output. */
	enum model_kv_type kv_type;
	bool mmap; /* weights as views of the file mapping (model_params.mmap) */
	/* Split inference (engine/eng_link.h): with a |link| the engine loads
	 * and runs layers [0, layer_end) itself (1 <= layer_end < n_layer) and
	 * the link runs the rest. NULL (the default): the whole model here. */
	struct eng_link *link;
	int layer_end;
	bool link_owned; /* eng_free(), or a failed eng_init(), frees |link| */
	/* When the link fails (a stage died), running requests wait this long
	 * for eng_relink() and then go on recomputed on the new pipeline; after
	 * it they fail with the link's error. 0: they fail at once. */
	int link_wait_ms;
};
struct eng_params eng_default_params(void);

#define ENG_MAX_STOP 8

struct eng_request {
	const int32_t *prompt; /* copied by eng_submit */
	int n_prompt;
	int max_tokens; /* <= 0: until EOS or context end */
	struct smp_params sampling;
	const char
	    *stop[ENG_MAX_STOP]; /* NUL-terminated stop strings, copied; NULL-terminated list */
	bool ignore_eos;
};

enum eng_finish {
	ENG_FINISH_NONE,   /* still running */
	ENG_FINISH_STOP,   /* EOS/EOG token or a stop string */
	ENG_FINISH_LENGTH, /* max_tokens or context full */
	ENG_FINISH_ERROR,
	ENG_FINISH_CANCELLED,
};

struct eng_event {
	uint64_t id;
	/* New text: whole UTF-8 characters, with stop strings (and any text that
	 * may still become one) held back and never emitted. May be empty. */
	const char *text;
	size_t len;
	int32_t token;          /* token just generated (-1 on the final event) */
	enum eng_finish finish; /* != NONE on the last event of the request */
	int n_prompt;
	int n_completion;
	int err;             /* ENG_FINISH_ERROR: ML_ERR_* code */
	const char *message; /* ENG_FINISH_ERROR: what went wrong */
	int n_cached;        /* prompt tokens whose KV was reused from the slot's last request */
};

/* Events of one request: one per generated token (finish NONE, |token| set,
 * |text| possibly empty), then one final event (token -1, finish set, the
 * last released text if any). An end-of-generation token that stops the
 * request gets no token event but is counted in n_completion. Sampling
 * penalties see the prompt and the generated tokens (as llama.cpp). */
typedef void (*eng_event_fn)(const struct eng_event *ev, void *user);

struct eng;

/* Loads the model and starts the engine thread. */
int eng_init(struct eng **out, const struct eng_params *p);
/* Cancels everything, joins the thread, frees. Accepts NULL. */
void eng_free(struct eng *e);

const struct tok_vocab *eng_vocab(const struct eng *e);
const struct model_hparams *eng_hparams(const struct eng *e);
const char *eng_model_name(const struct eng *e); /* GGUF file stem */
int eng_n_ctx(const struct eng *e);              /* per-slot context */
enum model_kv_type eng_kv_type(const struct eng *e);
/* The model's chat template (tokenizer.chat_template) or NULL. */
const char *eng_chat_template(const struct eng *e);

/* A snapshot of the engine's state and totals since eng_init(). */
struct eng_stats {
	int n_parallel;           /* slots */
	int n_active;             /* slots running a request */
	int n_queued;             /* requests waiting for a slot */
	uint64_t n_requests;      /* requests finished (any reason) */
	uint64_t n_prompt_tokens; /* prompt tokens of finished requests */
	uint64_t n_cached_tokens; /* of those, reused from a slot's cache */
	uint64_t n_generated;     /* tokens generated by finished requests */
	uint64_t n_steps;         /* forward passes */
	uint64_t n_step_tokens;   /* batch entries over all forward passes */
	double busy_s;            /* seconds spent in forward passes */
	bool link_down;           /* split: the pipeline failed, waiting for eng_relink() */
};
/* Thread-safe; cheap (one mutex). */
void eng_get_stats(const struct eng *e, struct eng_stats *out);

/* Queues a request. Returns 0 and its id (set before any event is
 * delivered), ML_ERR_BUSY when all slots and
 * the wait queue are full, ML_ERR_RANGE when the prompt (plus at least one
 * token) does not fit in the context (message says both numbers).
 * |cb| gets every event of this request, the last with finish != NONE;
 * after that call the request is gone. */
int eng_submit(struct eng *e, const struct eng_request *r, eng_event_fn cb, void *user,
               uint64_t *id);
/* Split inference, after a re-plan: the engine goes on with |link| (NULL:
 * the whole model here, |layer_end| n_layer or <= 0), running layers
 * [0, layer_end) itself. Queued; the engine thread then frees the old link
 * (if it owned it), loads its new layer range if it changed (the old one
 * stays mapped until eng_free()), starts the new link, and recomputes every
 * running request (prompt plus the tokens generated so far, which gives
 * the same greedy continuation) before it goes on; cached prefixes of free
 * slots are forgotten. A link that does not start is logged and counts as
 * a failed link (see link_wait_ms). With |owned| the engine frees |link|.
 * Call it from a thread other than the one start() waits for (the mesh
 * loop). Returns 0, or ML_ERR_INVALID for a layer range that does not fit
 * (|link| is then freed if |owned|). */
int eng_relink(struct eng *e, struct eng_link *link, int layer_end, bool owned);

/* Stops a request as soon as possible and frees its slot; its callback then
 * gets a final ENG_FINISH_CANCELLED event. Unknown ids are ignored. */
void eng_cancel(struct eng *e, uint64_t id);

#endif
