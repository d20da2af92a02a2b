/* The network stage runtime of split inference, on mesh STAGE streams and
 * the messages of mesh_stage_msg.h.
 *
 * Data flow (DESIGN.md): host -> stage 1 -> ... -> last stage -> host, one
 * hop per stage per step. Streams:
 *   - the host opens one STAGE stream to every stage. PLAN goes down it and
 *     PLAN_ACK / PLAN_REFUSE come back; on the stream to stage 1 the host
 *     also sends RUN_BATCH and KV commands; the last stage sends RESULT (and
 *     any stage sends ERROR) back on its stream from the host.
 *   - stage i opens one STAGE stream to stage i+1 and passes on both its
 *     RUN_BATCH output and the KV commands it applied, so KV commands and
 *     batches reach every stage in the order the host sent them.
 *
 * Worker (mesh_stage_worker): checks a PLAN's model fingerprint against its
 * own file (refusing with the two fingerprints in words otherwise), maps
 * only its layer range from its OWN local GGUF (no weights travel), and
 * ACKs; then runs each RUN_BATCH through its layers and forwards the hidden
 * states, or, on the last stage, returns the final RMS-normed rows of the
 * entries that want logits (RESULT, rows NORMED, always f32). A PLAN of an
 * older epoch (from the same host) is refused with ERROR STALE_EPOCH.
 *
 * Stale messages: only the newest plan counts. RUN_BATCH and KV commands
 * are taken from its upstream only (the host's stream for stage 1, the
 * previous stage's node for the others) and with its epoch; ERRORs only
 * from the next stage's stream. Anything else (a late batch of a host that
 * lost the election, an old plan's stage) is dropped and counted
 * (n_stale); a dropped RUN_BATCH is answered with ERROR STALE_EPOCH on the
 * stream it came on, so its sender fails at once instead of timing out,
 * and never on the current host's stream.
 *
 * Host (mesh_stage_link_new): an eng_link (engine/eng_link.h). The engine
 * thread encodes each batch and blocks on a condition variable; the event
 * loop thread sends it (woken through a queue and event_active()), reads
 * the RESULT and wakes the engine thread, which multiplies the normed rows
 * by the output head it maps from its own file (bit-identical to the solo
 * engine's logits with f32 activations).
 *
 * Threads: every mesh call happens on the loop thread. The worker loads
 * layers and runs forward passes on its own compute thread (messages reach
 * it through an inbox, its output goes back through an outbox the loop
 * sends), so pings and gossip keep flowing while a stage computes. The
 * link's start() and forward() must be called from a thread other than the
 * loop's, with the loop running. libevent must have threads enabled
 * (evthread_use_pthreads() before the event_base is created).
 *
 * Traffic: mesh_get_traffic() counts bytes per message type; none of the
 * STAGE messages carries weights, so "0 weight bytes" is the total of
 * STAGE_OPEN + STAGE_ACK during load (a few hundred bytes). */
#ifndef MESH_STAGE_H
#define MESH_STAGE_H

#include "mesh/mesh_stage_msg.h"

#include <stdbool.h>
#include <stdint.h>

struct mesh;
struct mesh_stream;
struct event_base;
struct eng_link;
struct eng_link_setup;
struct gguf_file;

/* --- fingerprint --------------------------------------------------------- */

/* Content fingerprint of a model: SHA-256 (libsodium) over its metadata
 * (every key, type and value in file order) and its tensor table (name,
 * type, dimensions, byte size of every tensor), not over the weights. Two
 * files with the same fingerprint are the same model in the same types. */
int mesh_stage_fingerprint(const struct gguf_file *gf, uint8_t out[MESH_STAGE_FP_LEN]);
/* Opens |path| (header and tables only) and fingerprints it. Returns 0 or
 * gguf_open()'s error. */
int mesh_stage_fingerprint_file(const char *path, uint8_t out[MESH_STAGE_FP_LEN]);
/* Lowercase hex, NUL-terminated. */
void mesh_stage_fingerprint_hex(const uint8_t fp[MESH_STAGE_FP_LEN],
                                char out[2 * MESH_STAGE_FP_LEN + 1]);

/* --- worker -------------------------------------------------------------- */

struct mesh_stage_worker_params {
	struct event_base *base; /* the mesh's loop (threads enabled) */
	const char *model_path;  /* this node's own copy of the model */
	int n_threads;           /* compute threads (<= 0: 1) */
};

struct mesh_stage_worker_stats {
	uint64_t epoch;               /* plan loaded (0: none) */
	int layer_begin, layer_end;   /* loaded range ([0,0) none) */
	int stage, n_stages;          /* this node's index in the plan */
	uint64_t n_plans, n_refused;  /* PLANs accepted / refused */
	uint64_t n_batches, n_tokens; /* RUN_BATCHes run, their entries */
	double compute_s;             /* of those, seconds in the forward pass */
	uint64_t n_kv;                /* KV commands applied */
	uint64_t n_errors;            /* ERRORs sent */
	/* RUN_BATCH, KV and ERROR messages dropped because they are not the
	 * current plan's (an old host's batch, an old stage's output, another
	 * epoch): they never reach the compute thread nor, as an error, the
	 * current host */
	uint64_t n_stale;
	uint64_t weight_bytes_mapped; /* from the local file */
	char last_refusal[MESH_STAGE_REASON_MAX + 1];
};

struct mesh_stage_worker;

/* Fingerprints |p->model_path| (nothing is mapped until a PLAN names a
 * layer range) and starts the compute thread. |mesh| is borrowed and must
 * outlive the worker's streams: stop the loop and call mesh_free() before
 * mesh_stage_worker_free(). Returns 0, ML_ERR_INVALID, ML_ERR_NOMEM,
 * ML_ERR_IO or gguf_open()'s error. */
int mesh_stage_worker_new(struct mesh_stage_worker **out, struct mesh *mesh,
                          const struct mesh_stage_worker_params *p);
void mesh_stage_worker_free(struct mesh_stage_worker *w); /* accepts NULL */
/* Takes a STAGE stream a peer opened (call from mesh's on_stream for
 * NET_STREAM_STAGE). Loop thread. */
void mesh_stage_worker_accept(struct mesh_stage_worker *w, struct mesh_stream *s);
/* Thread-safe snapshot. */
void mesh_stage_worker_get_stats(const struct mesh_stage_worker *w,
                                 struct mesh_stage_worker_stats *out);

/* --- host link ----------------------------------------------------------- */

struct mesh_stage_link_params {
	struct mesh *mesh;       /* borrowed; lives on |base|'s loop thread */
	struct event_base *base; /* the mesh's loop (threads enabled) */
	const char *model_path;  /* the host's file: fingerprint and output head */
	/* The plan: stage 0 is this node (its range is the engine's), stages
	 * 1.. the workers, in pipeline order; epoch, ids and ranges are used,
	 * n_ctx / n_seq / n_batch / fingerprint are filled in by start() from
	 * the engine. Copied. */
	const struct mesh_stage_plan *plan;
	uint8_t act_dtype;   /* activations on the wire: ML_DTYPE_F32 or F16 */
	uint32_t timeout_ms; /* plan acks and each batch (<= 0: 60000) */
};

struct mesh_stage_link_stats {
	uint64_t n_batches, n_tokens; /* forwards done and their entries */
	uint64_t n_logit_rows;        /* rows that came back */
	double wait_s;                /* engine-thread time blocked in forward() */
	double head_s;                /* of that, the output head on the host */
};

/* A link that runs the plan's stages 1.. over the mesh. start() sends the
 * PLAN to every stage (unless mesh_stage_link_send_plan() sent it before)
 * and waits for all acks (a refusal fails eng_init() with the stage's
 * reason). Free with its free() (or link_owned): off the
 * loop thread it detaches its streams on the loop and waits for that; on
 * the loop thread it detaches them at once. Shutting down from a loop
 * callback: mesh_stage_link_abort() first, so an engine thread blocked in
 * forward() returns and eng_free() can join it. Returns 0, ML_ERR_INVALID
 * (plan with fewer than 2 stages, not starting at this node) or
 * ML_ERR_NOMEM. */
int mesh_stage_link_new(struct eng_link **out, const struct mesh_stage_link_params *p);
/* Sends the PLAN now, before the engine starts the link, with the setup
 * the caller expects the engine to pass to start() (n_seq, n_ctx, n_batch
 * and kv_type are used): the stages then load their layers while this node
 * loads its own, instead of after. start() waits for these acks and, when
 * the engine's setup differs after all, sends the plan again (same epoch)
 * with the engine's values, so a wrong guess costs a second load on the
 * stages, never a wrong cache. Call at most once, from any thread, with
 * the loop running or about to run. Returns 0, ML_ERR_INVALID (bad values,
 * called twice) or the fingerprint's error (the model file). */
int mesh_stage_link_send_plan(struct eng_link *l, const struct eng_link_setup *expect);
/* The setup the engine passed to start() (all zero before; thread-safe):
 * what the next plan's mesh_stage_link_send_plan() can expect. */
void mesh_stage_link_get_setup(struct eng_link *l, struct eng_link_setup *out);
/* Thread-safe snapshot. */
void mesh_stage_link_get_stats(struct eng_link *l, struct mesh_stage_link_stats *out);
/* Fails the link now (any thread), e.g. when membership says a stage is
 * dead before its connection times out: a forward() in progress returns
 * ML_ERR_CLOSED with |reason|, and so does every later one. The engine
 * then waits for eng_relink() (eng_params.link_wait_ms). */
void mesh_stage_link_abort(struct eng_link *l, const char *reason);

#endif
