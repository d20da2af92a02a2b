/* Election and layer planning for split inference, as plain data (no I/O,
 * no clock, no globals): budgets, RTTs and layer sizes in, stages out.
 *
 * Election (mesh_plan_elect): among the nodes that serve the model (have
 * the file, not lite clients), the one with the highest advertised budget
 * is the host; equal budgets go to the lowest node id (bytewise). Every
 * node computes the same host from the same gossip, whatever the order of
 * its member table.
 *
 * Planning (mesh_plan_build), run by the host:
 *   - need = weights (embedding + layers + output head) + KV cache
 *     (bytes per layer per position x planned positions) of every layer;
 *     a node "fits" bytes B when budget >= B x headroom (default 1.1,
 *     MESH_PLAN_HEADROOM_DEFAULT).
 *   - Solo on the host when the whole model fits it, unless force_split.
 *   - Otherwise peers are taken in order of RTT to the host (ties: node id;
 *     the running plan's stages first when the caller lists them in
 *     params.keep) until the sum of their budgets fits the model and a contiguous split
 *     exists in which no node holds more than fits it. Peers are skipped
 *     (and listed in |excluded| with the reason) when they are lite
 *     clients, lack the model file, have an RTT above the gate (default
 *     80 ms) or unknown, or cannot hold even one layer.
 *   - Stage 0 is the host and holds the embedding; the last stage holds the
 *     output head; every stage holds >= 1 layer. Layers are split in
 *     proportion to budgets by bytes (embedding and head included), and
 *     each boundary is rounded to the layer nearest the proportional target
 *     among the boundaries that keep every node within its budget (an exact
 *     feasibility search), so nodes are over-filled only when no split can
 *     avoid it -- and then the plan is NO_FIT instead.
 *   - Manual ratios (--tensor-split R,R,...) set the stage count (host plus
 *     the nearest ratios-1 peers) and split by layer count, as llama.cpp
 *     does; a stage that then does not fit makes the plan NO_FIT naming it.
 *
 * Epochs: the host keeps its current plan; on a membership change (after
 * the settle time) it builds a candidate with epoch = current + 1 and, if
 * mesh_plan_equal() says nothing changed, keeps the current one (and its
 * epoch), else adopts the candidate and sends it as a PLAN message
 * (mesh_stage_msg.h), whose epoch makes stages refuse older traffic.
 *
 * The plan says "not enough memory" as data (status NO_FIT with need and
 * have in bytes); mesh_plan_describe() turns any plan into one line of
 * words for logs and /mesh/status. */
#ifndef MESH_PLAN_H
#define MESH_PLAN_H

#include "net/net_ident.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MESH_PLAN_MAX_NODES 1024         /* candidate nodes per call (= MESH_MAX_MEMBERS) */
#define MESH_PLAN_MAX_STAGES 64          /* pipeline stages per plan */
#define MESH_PLAN_MAX_LAYERS 4096        /* n_layer */
#define MESH_PLAN_MAX_BYTES (1ull << 50) /* model need and budgets (larger budgets are clamped) */
#define MESH_PLAN_HEADROOM_DEFAULT 1100  /* permille: budget >= 1.1 x (weights + KV) */
#define MESH_PLAN_HEADROOM_MIN 1000
#define MESH_PLAN_HEADROOM_MAX 4000
#define MESH_PLAN_RTT_MAX_DEFAULT_US 80000u /* peers above 80 ms stay API users */
#define MESH_PLAN_RTT_UNKNOWN UINT32_MAX
#define MESH_PLAN_RATIO_MAX 1e6

/* The model as the planner sees it. Bytes are what a node must hold. */
struct mesh_plan_model {
	uint32_t n_layer;              /* 1..MESH_PLAN_MAX_LAYERS */
	uint64_t layer_bytes;          /* weights of one layer (used when layer_bytes_v is NULL) */
	const uint64_t *layer_bytes_v; /* [n_layer] weights per layer, or NULL; borrowed */
	uint64_t embd_bytes;           /* token embedding, held by the first stage */
	uint64_t output_bytes;         /* output norm + head, held by the last stage
	                                * (a tied head is token_embd again: pass its size) */
	uint64_t kv_bytes_per_token;   /* KV cache bytes per layer per position */
	uint64_t n_ctx;                /* planned positions, all sequences together */
};

struct gguf_file;

/* Fills |m| from the tensor table and metadata of |gf| (no tensor data is
 * read): the weights of layer i are every tensor named "blk.<i>.*", written
 * to |layer_bytes| (|cap| >= n_layer entries, borrowed by m->layer_bytes_v);
 * the embedding is token_embd.weight plus every other tensor outside the
 * blocks (rope tables and such: small, counted once on the host); the head
 * is output_norm.weight plus output.weight, or token_embd.weight again when
 * the head is tied. KV per layer per position is
 * (key_length + value_length) x head_count_kv x |kv_elem_bytes| (2 for an
 * F16 cache, 4 for F32); m->n_ctx = |n_ctx|.
 * Returns 0, ML_ERR_FORMAT (no <arch>.block_count or head counts, a block
 * index >= block_count, no token_embd.weight), ML_ERR_RANGE (block_count
 * over |cap| or MESH_PLAN_MAX_LAYERS), ML_ERR_INVALID (kv_elem_bytes 0). */
int mesh_plan_model_from_gguf(struct mesh_plan_model *m, const struct gguf_file *gf,
                              uint64_t *layer_bytes, size_t cap, uint32_t kv_elem_bytes,
                              uint64_t n_ctx);

/* One candidate node, from gossip. */
struct mesh_plan_node {
	uint8_t id[NET_ID_LEN];
	uint64_t budget; /* advertised memory in bytes (--max-vram applied) */
	uint32_t rtt_us; /* RTT to the host in microseconds; MESH_PLAN_RTT_UNKNOWN if not
	                  * measured (ignored for the host itself) */
	bool has_model;  /* has a local copy of the model file */
	bool client;     /* lite client: never a stage */
};

struct mesh_plan_params {
	uint64_t epoch;             /* copied into the plan (the caller bumps it on change) */
	bool force_split;           /* --split: at least two stages when possible */
	uint32_t headroom_permille; /* 0 = MESH_PLAN_HEADROOM_DEFAULT; else 1000..4000 */
	uint32_t rtt_max_us;        /* 0 = MESH_PLAN_RTT_MAX_DEFAULT_US */
	const double *ratios;       /* --tensor-split, borrowed; NULL/0 = by budgets */
	uint32_t n_ratios;          /* 0..MESH_PLAN_MAX_STAGES */
	/* Stickiness: the ids of the running plan's stages after the host
	 * (n_keep x NET_ID_LEN bytes, borrowed, pipeline order). Those still
	 * usable are taken first, in this order, before other peers by RTT, so
	 * a membership change that does not need another node gives the same
	 * plan (and the pipeline keeps running) instead of following RTT
	 * jitter. NULL/0 = none. */
	const uint8_t *keep;
	uint32_t n_keep; /* 0..MESH_PLAN_MAX_STAGES */
};

enum mesh_plan_status {
	MESH_PLAN_OK = 0,
	MESH_PLAN_NO_FIT = 1,       /* not enough memory: need_bytes / have_bytes */
	MESH_PLAN_TOO_FEW_NODES = 2 /* manual ratios ask for more stages than usable nodes */
};

enum mesh_plan_excl_reason {
	MESH_PLAN_EXCL_CLIENT = 1,      /* lite client */
	MESH_PLAN_EXCL_NO_MODEL = 2,    /* no local copy of the model */
	MESH_PLAN_EXCL_RTT_HIGH = 3,    /* RTT to the host above the gate */
	MESH_PLAN_EXCL_RTT_UNKNOWN = 4, /* RTT not measured yet */
	MESH_PLAN_EXCL_TOO_SMALL = 5,   /* budget below one layer (with headroom) */
};
/* "lite client", "no model file", "RTT too high", "RTT unknown",
 * "budget below one layer", or "?". */
const char *mesh_plan_excl_name(int reason);

/* Plan notes (bit set in mesh_plan.notes). */
#define MESH_PLAN_NOTE_SPLIT_UNAVAILABLE 1u /* force_split, but no usable peer or 1 layer */
#define MESH_PLAN_NOTE_GRANULARITY                                                                 \
	2u /* NO_FIT although the budgets add up: the layers                                       \
	    * do not divide into them */

struct mesh_plan_stage {
	uint8_t id[NET_ID_LEN];
	uint32_t layer_begin, layer_end; /* [begin, end) */
	uint64_t bytes;                  /* weights + KV held, without headroom */
	uint64_t budget;                 /* the node's budget (clamped to MESH_PLAN_MAX_BYTES) */
};

struct mesh_plan_excluded {
	uint8_t id[NET_ID_LEN];
	uint8_t reason; /* enum mesh_plan_excl_reason */
	uint32_t rtt_us;
};

/* The result (about 45 KB: allocate it). On OK, stages[0] is the host, stages cover
 * [0, n_layer) contiguously in order, each non-empty. On NO_FIT and
 * TOO_FEW_NODES n_stages is 0. */
struct mesh_plan {
	uint64_t epoch;
	int status;     /* enum mesh_plan_status */
	uint32_t notes; /* MESH_PLAN_NOTE_* */
	uint32_t n_layer;
	uint8_t host[NET_ID_LEN]; /* elected host (also stages[0].id on OK) */
	uint64_t model_bytes;     /* need of the whole model without headroom */
	/* NO_FIT: need = model_bytes x headroom, have = sum of the budgets of
	 * the host and every usable peer; with manual ratios, the first stage
	 * that does not fit: its need x headroom and its budget (bad_stage). */
	uint64_t need_bytes, have_bytes;
	int bad_stage;           /* -1 unless a manual-ratio stage does not fit */
	uint32_t n_nodes_usable; /* host + usable peers */
	uint32_t n_wanted;       /* stages the manual ratios ask for (0 without ratios) */
	uint32_t n_stages;
	struct mesh_plan_stage stages[MESH_PLAN_MAX_STAGES];
	uint32_t n_excluded; /* sorted by node id */
	struct mesh_plan_excluded excluded[MESH_PLAN_MAX_NODES];
};

/* Elects the host among |nodes| (|n| <= MESH_PLAN_MAX_NODES).
 * Writes its index to |*host|. Returns 0, ML_ERR_NOT_FOUND when no node
 * serves the model, ML_ERR_INVALID for n over the cap or NULL pointers. */
int mesh_plan_elect(const struct mesh_plan_node *nodes, size_t n, size_t *host);

/* The election over time, as data (no clock: the caller passes |now_ms|).
 * A membership change (mesh_plan_election_touch) makes an election due
 * |settle_ms| later; further changes before then do not push it back, so
 * a burst of joins elects once and a steady trickle cannot starve it. When
 * due, mesh_plan_election_poll runs mesh_plan_elect over the nodes the
 * caller gathered from gossip (only those that have the model and want to
 * serve it: has_model) and remembers the winner. Every node that sees the
 * same gossip elects the same host. */
#define MESH_PLAN_SETTLE_MS_DEFAULT 1000

struct mesh_plan_election {
	uint64_t settle_ms;
	bool pending;   /* an election is due at |due_ms| */
	uint64_t due_ms;
	bool have_host; /* the last election found a host */
	uint8_t host[NET_ID_LEN];
	uint64_t host_budget; /* its advertised budget when elected */
	uint64_t n_runs;      /* elections run */
	uint64_t n_changes;   /* of those, the ones that changed the host */
};

enum mesh_plan_elect_result {
	MESH_PLAN_ELECT_NOT_DUE = 0, /* nothing pending, or the settle time runs */
	MESH_PLAN_ELECT_SAME = 1,    /* elected again the same host (or again none) */
	MESH_PLAN_ELECT_CHANGED = 2, /* a different host, a first one, or none any more */
};

/* No host, nothing pending. |settle_ms| 0 elects at the first poll after a
 * change. */
void mesh_plan_election_init(struct mesh_plan_election *e, uint64_t settle_ms);
/* Membership changed at |now_ms|: an election is due at now + settle,
 * unless one is pending already (its due time stays). */
void mesh_plan_election_touch(struct mesh_plan_election *e, uint64_t now_ms);
/* Runs the pending election when it is due at |now_ms| over |nodes|
 * (|n| <= MESH_PLAN_MAX_NODES). Returns an enum mesh_plan_elect_result
 * (e->have_host / e->host say who won), or ML_ERR_INVALID (NULL pointers,
 * n over the cap; the election stays pending). */
int mesh_plan_election_poll(struct mesh_plan_election *e, const struct mesh_plan_node *nodes,
                            size_t n, uint64_t now_ms);

/* Plans |m| over |nodes| with |nodes[host]| as the host (normally the index
 * mesh_plan_elect gave; rtt_us of every other node is its RTT to that host).
 * |p| may be NULL for defaults. Writes the whole of |*out|.
 * Returns 0 (check out->status), or
 *   ML_ERR_INVALID: bad model (0 or too many layers, sizes over the caps),
 *     duplicate node ids, host index out of range or not serving the model,
 *     headroom out of range, bad ratios (count over the cap or over n_layer,
 *     a ratio not finite or not in (0, MESH_PLAN_RATIO_MAX]);
 *   ML_ERR_NOMEM.
 * Deterministic: the same inputs in any order give the same plan. */
int mesh_plan_build(struct mesh_plan *out, const struct mesh_plan_model *m,
                    const struct mesh_plan_node *nodes, size_t n, size_t host,
                    const struct mesh_plan_params *p);

/* True when |a| and |b| put the same layers on the same nodes (status,
 * n_layer and every stage's id and range; for a plan that is not OK, the
 * need/have figures). The epoch and byte counts of stages are ignored. */
bool mesh_plan_equal(const struct mesh_plan *a, const struct mesh_plan *b);

/* Describes |p| in words, e.g.
 *   "host a1b2c3d4: layers 0-13 (7.1 GB), worker c3d4e5f6: layers 14-27 (6.9 GB)"
 *   "solo on host a1b2c3d4: layers 0-27 (14.2 GB)"
 *   "Waiting for more peers — need 55.0 GB, have 51.5 GB"
 *   "Waiting for more peers — the tensor split asks for 3 nodes, 2 usable"
 * followed by "; not used: <id> (<reason>)..." for excluded nodes (GB =
 * 10^9 bytes). Writes at most |cap| bytes including the NUL (|out| may be
 * NULL when cap is 0). Returns the length the whole text needs, like
 * snprintf. */
size_t mesh_plan_describe(const struct mesh_plan *p, char *out, size_t cap);

/* Parses "R,R,..." (--tensor-split) into |out| (|cap| entries). Returns the
 * count, or ML_ERR_INVALID for an empty list, a value that is not a finite
 * number in (0, MESH_PLAN_RATIO_MAX], or more than |cap| values. */
int mesh_plan_parse_ratios(const char *s, double *out, size_t cap);

#endif
