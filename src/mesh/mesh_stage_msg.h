/* STAGE stream messages between pipeline stages (sans-I/O: explicit encode
 * and strict decode with net_buf / net_reader, nothing else).
 *
 * Data flow: host -> stage 1 -> ... -> last stage -> host, one hop per stage
 * per step. The messages use the NET_STREAM_STAGE ids of net_frame.h:
 *
 *   PLAN          NET_MSG_STAGE_OPEN    host -> every stage
 *   RUN_BATCH     NET_MSG_STAGE_FORWARD stage -> next stage
 *   RESULT        NET_MSG_STAGE_RESULT  last stage -> host
 *   KV_TRUNCATE,  NET_MSG_STAGE_KV      host -> every stage
 *   KV_CLEAR
 *   PLAN_ACK,     NET_MSG_STAGE_ACK     stage -> host
 *   PLAN_REFUSE
 *   ERROR         NET_MSG_ERROR         either way; sender closes the stream
 *
 * Payloads (integers big-endian; float rows little-endian IEEE, as in GGUF,
 * so a little-endian receiver copies them as they are):
 *
 *   RUN_BATCH / RESULT
 *     u8 version (1) | u64 epoch | u64 batch id | u8 dtype (ML_DTYPE_F32 = 0 or
 *     ML_DTYPE_F16 = 1) | u8 rows (0 hidden state, 1 final-normed) | u32 n_embd
 *     | u32 n_tokens | n_tokens x (u32 seq | u32 pos | u8 flags)
 *     | n_tokens x n_embd x (4 or 2 bytes)
 *     flags: bit 0 = want logits for this entry; the other bits must be 0.
 *     n_tokens <= 4096 (RUN_BATCH >= 1), 1 <= n_embd <= 65536, seq and pos
 *     <= INT32_MAX, and the framed message <= NET_FRAME_MAX_STAGE (64 MiB),
 *     so the largest f32 batch of a 4096-wide model is 4093 tokens.
 *   PLAN
 *     u8 version (2) | u64 epoch | fingerprint[32] | u32 n_layer | u32 n_ctx
 *     | u32 n_seq | u32 n_batch | u8 activation dtype | u8 KV cache dtype
 *     | u8 n_stages
 *     | n_stages x (id[32] | u32 layer begin | u32 layer end | next hop id[32])
 *     stages cover [0, n_layer) contiguously in order, each non-empty
 *     (so n_stages <= n_layer <= 4096); 1 <= n_stages <= MESH_STAGE_MAX_STAGES;
 *     no node twice; stage i's next hop is stage i+1 and the last stage's is
 *     the host (stage 0); n_ctx, n_seq, n_batch in 1..INT32_MAX; activation
 *     and KV cache dtypes F32 or F16 (every stage's cache has the host
 *     engine's type, or split output would differ from solo). Version 1
 *     (the same without the KV byte, whose stages kept F16 caches) still
 *     decodes, with an F16 KV type; it is no longer sent.
 *   KV_TRUNCATE / KV_CLEAR
 *     u8 version (1) | u64 epoch | u8 op (1 truncate, 2 clear) | u32 seq | u32 pos
 *     truncate: drop positions >= pos of seq; clear: pos must be 0, seq may be
 *     MESH_STAGE_SEQ_ALL (every sequence).
 *   PLAN_ACK / PLAN_REFUSE
 *     u8 version (1) | u64 epoch | u8 kind (0 ack, 1 refuse) | str reason (<= 1024)
 *   ERROR (layout fixed by net_frame.h for every stream)
 *     u16 code (enum mesh_stage_err) | str reason (<= 1024)
 *
 * Epochs: every decoder of a message with an epoch takes the receiver's
 * current epoch and refuses an older one with MESH_STAGE_ERR_STALE and a
 * message naming both epochs; the message was well formed, so the caller
 * drops it (or answers ERROR MESH_STAGE_E_STALE_EPOCH) without closing the
 * stream. Newer epochs decode; what to do with them is the caller's call. */
#ifndef MESH_STAGE_MSG_H
#define MESH_STAGE_MSG_H

#include "base/ml_err.h"
#include "net/net_buf.h"
#include "net/net_ident.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mesh_plan;

#define MESH_STAGE_MSG_VERSION 1
#define MESH_STAGE_PLAN_VERSION 2 /* PLAN only: version 1 + the KV type */
#define MESH_STAGE_MAX_TOKENS 4096
#define MESH_STAGE_MAX_EMBD 65536
#define MESH_STAGE_MAX_STAGES 64 /* = MESH_PLAN_MAX_STAGES */
#define MESH_STAGE_MAX_LAYERS 4096
#define MESH_STAGE_REASON_MAX 1024
#define MESH_STAGE_FP_LEN 32
#define MESH_STAGE_SEQ_ALL UINT32_MAX
#define MESH_STAGE_TOKEN_WANT_LOGITS 1u

/* Returned by decoders for a well-formed message of an older epoch. A
 * distinct code: these decoders return it for nothing else. */
#define MESH_STAGE_ERR_STALE ML_ERR_CANCELLED

/* Bytes of the fixed RUN_BATCH / RESULT payload head, and per token before
 * the rows. */
#define MESH_STAGE_BATCH_HEAD 27
#define MESH_STAGE_BATCH_TOKEN 9

enum mesh_stage_rows {
	MESH_STAGE_ROWS_HIDDEN = 0, /* residual stream after the sender's last layer */
	MESH_STAGE_ROWS_NORMED = 1, /* final RMS-normed rows (model_ctx_result_norm) */
};

enum mesh_stage_kv_op {
	MESH_STAGE_KV_TRUNCATE = 1,
	MESH_STAGE_KV_CLEAR = 2,
};

enum mesh_stage_ack_kind {
	MESH_STAGE_PLAN_ACK = 0,
	MESH_STAGE_PLAN_REFUSE = 1,
};

/* ERROR codes on the wire; append-only. */
enum mesh_stage_err {
	MESH_STAGE_E_INTERNAL = 1,       /* the sender failed (reason says how) */
	MESH_STAGE_E_MALFORMED = 2,      /* a message from the receiver did not decode */
	MESH_STAGE_E_STALE_EPOCH = 3,    /* a message of an older plan */
	MESH_STAGE_E_UNKNOWN_EPOCH = 4,  /* a batch for a plan this stage has not loaded */
	MESH_STAGE_E_MODEL_MISMATCH = 5, /* this stage's file is not the host's model */
	MESH_STAGE_E_FORWARD = 6,        /* model_forward failed (bad position, sequence) */
	MESH_STAGE_E_BUSY = 7,
};
/* "internal", "malformed", ... or "?". */
const char *mesh_stage_err_name(int code);

/* The epoch of a RUN_BATCH, RESULT or KV payload (the u64 after the
 * version byte), read without decoding the rest, so a receiver can tell a
 * message of another plan before it queues it. Returns 0, ML_ERR_FORMAT
 * (shorter than 9 bytes) or ML_ERR_UNSUPPORTED (another version). */
int mesh_stage_msg_epoch(const uint8_t *p, size_t len, uint64_t *epoch);

/* --- RUN_BATCH / RESULT ------------------------------------------------- */

/* What an encoder takes: arrays shaped like struct model_batch. */
struct mesh_stage_batch_in {
	uint64_t epoch;
	uint64_t batch_id;
	uint8_t dtype; /* wire type: ML_DTYPE_F32 or ML_DTYPE_F16 (converted here,
	                * round to nearest even; out of range -> inf) */
	uint8_t rows;  /* enum mesh_stage_rows */
	uint32_t n_embd;
	uint32_t n_tokens;
	const int32_t *seq;   /* [n_tokens], >= 0 */
	const int32_t *pos;   /* [n_tokens], >= 0 */
	const int8_t *logits; /* [n_tokens] nonzero = want logits; NULL = none */
	const float *embd;    /* [n_tokens][n_embd] */
};

/* A decoded RUN_BATCH / RESULT: the header, and views into the payload
 * (borrowed: valid while the payload is). Unpack with the functions below. */
struct mesh_stage_batch {
	uint64_t epoch;
	uint64_t batch_id;
	uint8_t dtype;
	uint8_t rows;
	uint32_t n_embd;
	uint32_t n_tokens;
	const uint8_t *tokens; /* n_tokens x 9 bytes */
	const uint8_t *data;   /* n_tokens x n_embd x (4 or 2) bytes */
};

/* Size of the framed message (5-byte frame header included) for a batch of
 * |n_tokens| rows of |n_embd| in |dtype|; 0 for an unknown dtype. */
uint64_t mesh_stage_batch_size(uint32_t n_tokens, uint32_t n_embd, uint8_t dtype);
/* Most tokens one message can carry for |n_embd| and |dtype| (<= 4096;
 * 0 for bad arguments). Larger batches are split by the caller. */
uint32_t mesh_stage_batch_max_tokens(uint32_t n_embd, uint8_t dtype);

/* Appends a framed RUN_BATCH (|type| NET_MSG_STAGE_FORWARD) or RESULT
 * (NET_MSG_STAGE_RESULT) to |out|. Returns 0, ML_ERR_INVALID (bad type,
 * dtype, rows, n_embd, negative seq/pos, NULL arrays), ML_ERR_RANGE (over
 * the token cap or the frame size) or the buffer's error. On error |out|
 * is left as it was (length restored). */
int mesh_stage_batch_put(struct net_buf *out, uint8_t type, const struct mesh_stage_batch_in *in);

/* Strict decode of a RUN_BATCH or RESULT payload. |current_epoch|: older
 * epochs give MESH_STAGE_ERR_STALE. |expect_n_embd|: when nonzero, another
 * n_embd is ML_ERR_FORMAT. |min_tokens|: 1 for RUN_BATCH, 0 for RESULT.
 * Returns 0, ML_ERR_FORMAT (truncated, trailing bytes, bad field, counts
 * that do not match the bytes), ML_ERR_UNSUPPORTED (other version, other
 * dtype), ML_ERR_RANGE (n_tokens or n_embd over the caps), or
 * MESH_STAGE_ERR_STALE; ml_last_error() says which. */
int mesh_stage_batch_decode(struct mesh_stage_batch *b, const uint8_t *p, size_t len,
                            uint64_t current_epoch, uint32_t expect_n_embd, uint32_t min_tokens);

/* Entry |i| (< n_tokens) of a decoded batch. */
void mesh_stage_batch_token(const struct mesh_stage_batch *b, uint32_t i, int32_t *seq,
                            int32_t *pos, bool *want_logits);
/* Copies the entries into arrays of at least n_tokens (|logits| may be NULL). */
void mesh_stage_batch_unpack(const struct mesh_stage_batch *b, int32_t *seq, int32_t *pos,
                             int8_t *logits);
/* Converts the rows to f32 into |out| (n_tokens x n_embd floats; |cap|
 * floats available). Returns 0 or ML_ERR_RANGE when |cap| is too small. */
int mesh_stage_batch_rows(const struct mesh_stage_batch *b, float *out, size_t cap);

/* --- PLAN ---------------------------------------------------------------- */

struct mesh_stage_plan_stage {
	uint8_t id[NET_ID_LEN];
	uint32_t layer_begin, layer_end;
	uint8_t next[NET_ID_LEN]; /* where this stage sends its output */
};

struct mesh_stage_plan {
	uint64_t epoch;
	uint8_t fingerprint[MESH_STAGE_FP_LEN]; /* model content fingerprint */
	uint32_t n_layer;
	uint32_t n_ctx, n_seq, n_batch; /* KV cache and batch sizes every stage allocates */
	uint8_t act_dtype;              /* activations on the wire: ML_DTYPE_F32 / F16 */
	uint8_t kv_dtype;               /* every stage's KV cache: ML_DTYPE_F32 / F16 */
	uint32_t n_stages;
	struct mesh_stage_plan_stage stages[MESH_STAGE_MAX_STAGES];
};

/* Fills |out| from an OK |plan| (ids, ranges, epoch, n_layer; next hops
 * stage i -> i+1, last -> host). The caller sets fingerprint, n_ctx,
 * n_seq, n_batch, act_dtype, kv_dtype. Returns 0 or ML_ERR_INVALID (plan not OK). */
int mesh_stage_plan_from(struct mesh_stage_plan *out, const struct mesh_plan *plan);

/* Appends a framed PLAN (NET_MSG_STAGE_OPEN). Returns 0, ML_ERR_INVALID
 * (a plan the decoder would refuse) or the buffer's error. */
int mesh_stage_plan_put(struct net_buf *out, const struct mesh_stage_plan *p);
/* Strict decode of version 1 or 2; checks the layout rules above. Returns
 * 0, ML_ERR_FORMAT, ML_ERR_UNSUPPORTED (version, dtypes), ML_ERR_RANGE
 * (counts over caps) or MESH_STAGE_ERR_STALE. */
int mesh_stage_plan_decode(struct mesh_stage_plan *p, const uint8_t *payload, size_t len,
                           uint64_t current_epoch);
/* Index of |id| among the plan's stages, or -1. */
int mesh_stage_plan_find(const struct mesh_stage_plan *p, const uint8_t id[NET_ID_LEN]);

/* --- KV commands ---------------------------------------------------------- */

struct mesh_stage_kv {
	uint64_t epoch;
	uint8_t op;   /* enum mesh_stage_kv_op */
	uint32_t seq; /* <= INT32_MAX, or MESH_STAGE_SEQ_ALL for CLEAR */
	uint32_t pos; /* TRUNCATE: first position dropped (<= INT32_MAX); CLEAR: 0 */
};

/* Appends a framed KV command (NET_MSG_STAGE_KV). Returns 0, ML_ERR_INVALID
 * or the buffer's error. */
int mesh_stage_kv_put(struct net_buf *out, const struct mesh_stage_kv *kv);
int mesh_stage_kv_decode(struct mesh_stage_kv *kv, const uint8_t *p, size_t len,
                         uint64_t current_epoch);

/* --- PLAN_ACK / PLAN_REFUSE ------------------------------------------------ */

struct mesh_stage_ack {
	uint64_t epoch;
	uint8_t kind;                           /* enum mesh_stage_ack_kind */
	char reason[MESH_STAGE_REASON_MAX + 1]; /* NUL-terminated, no NUL inside */
};

/* Appends a framed NET_MSG_STAGE_ACK; |reason| may be NULL (""); longer
 * than MESH_STAGE_REASON_MAX is ML_ERR_INVALID. */
int mesh_stage_ack_put(struct net_buf *out, uint64_t epoch, uint8_t kind, const char *reason);
int mesh_stage_ack_decode(struct mesh_stage_ack *a, const uint8_t *p, size_t len,
                          uint64_t current_epoch);

/* --- ERROR ------------------------------------------------------------------- */

struct mesh_stage_error {
	uint16_t code; /* enum mesh_stage_err; unknown codes decode (append-only) */
	char reason[MESH_STAGE_REASON_MAX + 1];
};

/* Appends a framed NET_MSG_ERROR for the STAGE stream. */
int mesh_stage_error_put(struct net_buf *out, uint16_t code, const char *reason);
int mesh_stage_error_decode(struct mesh_stage_error *e, const uint8_t *p, size_t len);

#endif
