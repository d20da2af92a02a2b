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

#include "sampler/smp.h"

struct tok_vocab;
struct model_hparams;

/* Fields <= 0 take the default (n_queue: < 0; 0 means no request waits). */
struct eng_params {
	const char *model_path;
	int n_parallel; /* slots (default 4) */
	int n_ctx;      /* context per slot (default min(4096, n_ctx_train)) */
	int n_threads;  /* compute threads (default: cores) */
	int n_batch;    /* max tokens per forward pass (default 512; raised to n_parallel) */
	int n_queue;    /* requests allowed to wait for a slot (default 16); beyond: ML_ERR_BUSY */
};
struct eng_params eng_default_params(void);

#define ENG_MAX_STOP 8

struct eng_request {
	const int32_t *prompt; /* copied by eng_submit */
	int n_prompt;
	int max_tokens;        /* <= 0: until EOS or context end */
	struct smp_params sampling;
	const char *stop[ENG_MAX_STOP]; /* NUL-terminated stop strings, copied; NULL-terminated list */
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
	int32_t token; /* token just generated (-1 on the final event) */
	enum eng_finish finish; /* != NONE on the last event of the request */
	int n_prompt;
	int n_completion;
	int err;          /* ENG_FINISH_ERROR: ML_ERR_* code */
	const char *message; /* ENG_FINISH_ERROR: what went wrong */
	int n_cached;     /* prompt tokens whose KV was reused from the slot's last request */
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
/* The model's chat template (tokenizer.chat_template) or NULL. */
const char *eng_chat_template(const struct eng *e);

/* Queues a request. Returns 0 and its id (set before any event is
 * delivered), ML_ERR_BUSY when all slots and
 * the wait queue are full, ML_ERR_RANGE when the prompt (plus at least one
 * token) does not fit in the context (message says both numbers).
 * |cb| gets every event of this request, the last with finish != NONE;
 * after that call the request is gone. */
int eng_submit(struct eng *e, const struct eng_request *r, eng_event_fn cb, void *user,
	       uint64_t *id);
/* Stops a request as soon as possible and frees its slot; its callback then
 * gets a final ENG_FINISH_CANCELLED event. Unknown ids are ignored. */
void eng_cancel(struct eng *e, uint64_t id);

#endif
