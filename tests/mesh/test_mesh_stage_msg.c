/* Tests for src/mesh/mesh_stage_msg.c: round trips of every STAGE message
 * (RUN_BATCH / RESULT in f32 and f16, PLAN, KV truncate/clear, PLAN_ACK /
 * PLAN_REFUSE, ERROR), every truncation point, trailing bytes, oversized and
 * inconsistent counts, the frame-size cap, f16 conversion accuracy, stale
 * epochs, encoders leaving the buffer untouched on failure, and the
 * activation bytes per token per hop of a 4096-wide (7B-class) model. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/ml_dtype.h"
#include "base/ml_err.h"
#include "kernels/kern.h"
#include "mesh/mesh_plan.h"
#include "mesh/mesh_stage_msg.h"
#include "net/net_frame.h"

/* Parses the one framed STAGE message in |b|. */
static void frame(const struct net_buf *b, uint8_t want_type, const uint8_t **p, size_t *len)
{
	struct net_frame_msg m;
	assert_int_equal(b->err, 0);
	int n = net_frame_parse(NET_STREAM_STAGE, b->data, b->len, &m);
	assert_int_equal(n, (int)b->len);
	assert_int_equal(m.type, want_type);
	*p = m.payload;
	*len = m.len;
}

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

struct batch_fixture {
	uint32_t n, e;
	int32_t seq[8], pos[8];
	int8_t logits[8];
	float embd[8 * 64];
};

static void fixture(struct batch_fixture *f, uint32_t n, uint32_t e)
{
	uint64_t s = 77;
	f->n = n;
	f->e = e;
	for (uint32_t i = 0; i < n; i++) {
		f->seq[i] = (int32_t)(i % 3);
		f->pos[i] = (int32_t)(100 + i);
		f->logits[i] = (int8_t)(i == n - 1 || i == 1);
	}
	for (uint32_t k = 0; k < n * e; k++)
		f->embd[k] = (float)((int64_t)(rnd(&s) % 200001) - 100000) / 1000.0f;
	f->embd[0] = -0.0f;
	f->embd[1] = 1e-30f; /* f32 subnormal-free tiny value: f16 flushes it to 0 */
	f->embd[2] = 65504.0f;
}

static struct mesh_stage_batch_in batch_in(const struct batch_fixture *f, uint8_t dtype)
{
	struct mesh_stage_batch_in in = {.epoch = 5,
	                                 .batch_id = 0x0102030405060708ull,
	                                 .dtype = dtype,
	                                 .rows = MESH_STAGE_ROWS_HIDDEN,
	                                 .n_embd = f->e,
	                                 .n_tokens = f->n,
	                                 .seq = f->seq,
	                                 .pos = f->pos,
	                                 .logits = f->logits,
	                                 .embd = f->embd};
	return in;
}

static void test_batch_roundtrip_f32(void **state)
{
	(void)state;
	struct batch_fixture f;
	fixture(&f, 5, 16);
	struct mesh_stage_batch_in in = batch_in(&f, ML_DTYPE_F32);
	struct net_buf b;
	net_buf_init(&b, 0);
	assert_int_equal(mesh_stage_batch_put(&b, NET_MSG_STAGE_FORWARD, &in), 0);
	assert_int_equal(b.len, mesh_stage_batch_size(5, 16, ML_DTYPE_F32));
	const uint8_t *p;
	size_t len;
	frame(&b, NET_MSG_STAGE_FORWARD, &p, &len);
	struct mesh_stage_batch d;
	assert_int_equal(mesh_stage_batch_decode(&d, p, len, 5, 16, 1), 0);
	assert_int_equal(d.epoch, 5);
	assert_int_equal(d.batch_id, 0x0102030405060708ull);
	assert_int_equal(d.dtype, ML_DTYPE_F32);
	assert_int_equal(d.rows, MESH_STAGE_ROWS_HIDDEN);
	assert_int_equal(d.n_embd, 16);
	assert_int_equal(d.n_tokens, 5);
	int32_t seq[5], pos[5];
	int8_t lg[5];
	mesh_stage_batch_unpack(&d, seq, pos, lg);
	assert_memory_equal(seq, f.seq, sizeof(seq));
	assert_memory_equal(pos, f.pos, sizeof(pos));
	for (int i = 0; i < 5; i++)
		assert_int_equal(lg[i], f.logits[i] ? 1 : 0);
	int32_t s1, p1;
	bool w;
	mesh_stage_batch_token(&d, 4, &s1, &p1, &w);
	assert_int_equal(s1, 1);
	assert_int_equal(p1, 104);
	assert_true(w);
	float rows[5 * 16];
	assert_int_equal(mesh_stage_batch_rows(&d, rows, 5 * 16 - 1), ML_ERR_RANGE);
	assert_int_equal(mesh_stage_batch_rows(&d, rows, 5 * 16), 0);
	assert_memory_equal(rows, f.embd, sizeof(rows)); /* bit exact, -0 included */
	/* the rows are little-endian on the wire */
	uint32_t u;
	memcpy(&u, &f.embd[3], 4);
	const uint8_t *r3 = p + MESH_STAGE_BATCH_HEAD + 5 * MESH_STAGE_BATCH_TOKEN + 12;
	assert_int_equal(r3[0], u & 0xff);
	assert_int_equal(r3[3], u >> 24);
	/* also decodes when the receiver does not pin n_embd */
	assert_int_equal(mesh_stage_batch_decode(&d, p, len, 0, 0, 1), 0);
	/* RESULT uses the same layout; the NORMED row kind round trips */
	net_buf_reset(&b);
	in.rows = MESH_STAGE_ROWS_NORMED;
	assert_int_equal(mesh_stage_batch_put(&b, NET_MSG_STAGE_RESULT, &in), 0);
	frame(&b, NET_MSG_STAGE_RESULT, &p, &len);
	assert_int_equal(mesh_stage_batch_decode(&d, p, len, 5, 16, 0), 0);
	assert_int_equal(d.rows, MESH_STAGE_ROWS_NORMED);
	/* no logits array: every flag is 0 */
	net_buf_reset(&b);
	in.logits = NULL;
	assert_int_equal(mesh_stage_batch_put(&b, NET_MSG_STAGE_FORWARD, &in), 0);
	frame(&b, NET_MSG_STAGE_FORWARD, &p, &len);
	assert_int_equal(mesh_stage_batch_decode(&d, p, len, 5, 16, 1), 0);
	mesh_stage_batch_unpack(&d, seq, pos, lg);
	for (int i = 0; i < 5; i++)
		assert_int_equal(lg[i], 0);
	net_buf_free(&b);
}

static void test_batch_empty(void **state)
{
	(void)state;
	struct mesh_stage_batch_in in = {.epoch = 1, .dtype = ML_DTYPE_F16, .n_embd = 8};
	struct net_buf b;
	net_buf_init(&b, 0);
	/* an empty RUN_BATCH is refused; an empty RESULT is fine */
	assert_int_equal(mesh_stage_batch_put(&b, NET_MSG_STAGE_FORWARD, &in), ML_ERR_INVALID);
	assert_int_equal(b.len, 0);
	assert_int_equal(mesh_stage_batch_put(&b, NET_MSG_STAGE_RESULT, &in), 0);
	const uint8_t *p;
	size_t len;
	frame(&b, NET_MSG_STAGE_RESULT, &p, &len);
	assert_int_equal(len, MESH_STAGE_BATCH_HEAD);
	struct mesh_stage_batch d;
	assert_int_equal(mesh_stage_batch_decode(&d, p, len, 1, 8, 0), 0);
	assert_int_equal(d.n_tokens, 0);
	assert_int_equal(mesh_stage_batch_decode(&d, p, len, 1, 8, 1), ML_ERR_FORMAT);
	float x;
	assert_int_equal(mesh_stage_batch_rows(&d, &x, 0), 0);
	net_buf_free(&b);
}

static void test_batch_f16_accuracy(void **state)
{
	(void)state;
	enum { N = 4, E = 64 };
	struct batch_fixture f;
	fixture(&f, N, E);
	/* exact values, overflow, tiny */
	f.embd[3] = 1.0f;
	f.embd[4] = -2.5f;
	f.embd[5] = 70000.0f; /* over the f16 range: inf */
	f.embd[6] = 6e-8f;    /* f16 subnormal */
	f.embd[7] = 0.1f;
	struct mesh_stage_batch_in in = batch_in(&f, ML_DTYPE_F16);
	struct net_buf b;
	net_buf_init(&b, 0);
	assert_int_equal(mesh_stage_batch_put(&b, NET_MSG_STAGE_FORWARD, &in), 0);
	assert_int_equal(b.len, mesh_stage_batch_size(N, E, ML_DTYPE_F16));
	const uint8_t *p;
	size_t len;
	frame(&b, NET_MSG_STAGE_FORWARD, &p, &len);
	struct mesh_stage_batch d;
	assert_int_equal(mesh_stage_batch_decode(&d, p, len, 5, E, 1), 0);
	assert_int_equal(d.dtype, ML_DTYPE_F16);
	float rows[N * E];
	assert_int_equal(mesh_stage_batch_rows(&d, rows, N * E), 0);
	for (int k = 0; k < N * E; k++) {
		/* identical to the kernels' conversion, round to nearest even */
		assert_true(rows[k] == kern_f16_to_f32(kern_f32_to_f16(f.embd[k])) ||
		            (isnan(rows[k]) && isnan(f.embd[k])));
		float x = f.embd[k];
		if (fabsf(x) >= 6.103515625e-05f && fabsf(x) <= 65504.0f)
			assert_true(fabsf(rows[k] - x) <= fabsf(x) * 0x1p-11f); /* half an ulp */
	}
	assert_true(signbit(rows[0]) && rows[0] == 0.0f);
	assert_true(rows[1] == 0.0f);
	assert_true(rows[2] == 65504.0f);
	assert_true(rows[3] == 1.0f);
	assert_true(rows[4] == -2.5f);
	assert_true(isinf(rows[5]) && rows[5] > 0);
	assert_true(fabsf(rows[6] - 5.9604645e-08f) < 1e-12f);
	assert_true(fabsf(rows[7] - 0.1f) < 0.1f * 0x1p-11f);
	net_buf_free(&b);
}

static void test_batch_truncation_and_trailing(void **state)
{
	(void)state;
	const uint8_t dts[2] = {ML_DTYPE_F32, ML_DTYPE_F16};
	for (int t = 0; t < 2; t++) {
		struct batch_fixture f;
		fixture(&f, 3, 4);
		struct mesh_stage_batch_in in = batch_in(&f, dts[t]);
		struct net_buf b;
		net_buf_init(&b, 0);
		assert_int_equal(mesh_stage_batch_put(&b, NET_MSG_STAGE_FORWARD, &in), 0);
		const uint8_t *p;
		size_t len;
		frame(&b, NET_MSG_STAGE_FORWARD, &p, &len);
		struct mesh_stage_batch d;
		for (size_t k = 0; k < len; k++)
			assert_int_equal(mesh_stage_batch_decode(&d, p, k, 0, 0, 0), ML_ERR_FORMAT);
		/* the frame parser also waits for the whole message */
		struct net_frame_msg m;
		for (size_t k = 0; k < b.len; k++)
			assert_int_equal(net_frame_parse(NET_STREAM_STAGE, b.data, k, &m),
			                 ML_ERR_INCOMPLETE);
		uint8_t *q = malloc(len + 1);
		memcpy(q, p, len);
		q[len] = 0;
		assert_int_equal(mesh_stage_batch_decode(&d, q, len + 1, 0, 0, 0), ML_ERR_FORMAT);
		free(q);
		net_buf_free(&b);
	}
}

/* Writes a batch header with the given fields into |q| (27 bytes). */
static void head(uint8_t *q, uint8_t ver, uint64_t epoch, uint8_t dtype, uint8_t rows,
                 uint32_t n_embd, uint32_t n_tokens)
{
	struct net_buf b;
	net_buf_init(&b, 0);
	net_buf_put_u8(&b, ver);
	net_buf_put_u64(&b, epoch);
	net_buf_put_u64(&b, 9);
	net_buf_put_u8(&b, dtype);
	net_buf_put_u8(&b, rows);
	net_buf_put_u32(&b, n_embd);
	net_buf_put_u32(&b, n_tokens);
	assert_int_equal(b.len, MESH_STAGE_BATCH_HEAD);
	memcpy(q, b.data, b.len);
	net_buf_free(&b);
}

static void test_batch_bad_fields(void **state)
{
	(void)state;
	/* one token of n_embd 2 in f32 */
	uint8_t q[MESH_STAGE_BATCH_HEAD + 9 + 8] = {0};
	struct mesh_stage_batch d;
	const size_t L = sizeof(q);
	head(q, 1, 3, ML_DTYPE_F32, 0, 2, 1);
	assert_int_equal(mesh_stage_batch_decode(&d, q, L, 3, 2, 1), 0);
	head(q, 2, 3, ML_DTYPE_F32, 0, 2, 1);
	assert_int_equal(mesh_stage_batch_decode(&d, q, L, 3, 2, 1), ML_ERR_UNSUPPORTED);
	head(q, 1, 3, ML_DTYPE_Q8_0, 0, 2, 1);
	assert_int_equal(mesh_stage_batch_decode(&d, q, L, 3, 2, 1), ML_ERR_UNSUPPORTED);
	head(q, 1, 3, ML_DTYPE_F32, 2, 2, 1);
	assert_int_equal(mesh_stage_batch_decode(&d, q, L, 3, 2, 1), ML_ERR_FORMAT);
	head(q, 1, 3, ML_DTYPE_F32, 0, 0, 1);
	assert_int_equal(mesh_stage_batch_decode(&d, q, L, 3, 0, 1), ML_ERR_FORMAT);
	head(q, 1, 3, ML_DTYPE_F32, 0, 3, 1); /* declared n_embd vs the model's */
	assert_int_equal(mesh_stage_batch_decode(&d, q, L, 3, 2, 1), ML_ERR_FORMAT);
	assert_int_equal(mesh_stage_batch_decode(&d, q, L, 3, 0, 1), ML_ERR_FORMAT); /* bytes */
	/* oversized counts are refused before any size arithmetic */
	head(q, 1, 3, ML_DTYPE_F32, 0, MESH_STAGE_MAX_EMBD + 1, 1);
	assert_int_equal(mesh_stage_batch_decode(&d, q, L, 3, 0, 1), ML_ERR_RANGE);
	head(q, 1, 3, ML_DTYPE_F32, 0, UINT32_MAX, UINT32_MAX);
	assert_int_equal(mesh_stage_batch_decode(&d, q, L, 3, 0, 1), ML_ERR_RANGE);
	head(q, 1, 3, ML_DTYPE_F32, 0, 2, MESH_STAGE_MAX_TOKENS + 1);
	assert_int_equal(mesh_stage_batch_decode(&d, q, L, 3, 0, 1), ML_ERR_RANGE);
	head(q, 1, 3, ML_DTYPE_F32, 0, 2, UINT32_MAX);
	assert_int_equal(mesh_stage_batch_decode(&d, q, L, 3, 0, 1), ML_ERR_RANGE);
	/* counts within the caps but more than the bytes */
	head(q, 1, 3, ML_DTYPE_F32, 0, 2, 2);
	assert_int_equal(mesh_stage_batch_decode(&d, q, L, 3, 0, 1), ML_ERR_FORMAT);
	head(q, 1, 3, ML_DTYPE_F32, 0, MESH_STAGE_MAX_EMBD, MESH_STAGE_MAX_TOKENS);
	assert_int_equal(mesh_stage_batch_decode(&d, q, L, 3, 0, 1), ML_ERR_FORMAT);
	/* bad entries */
	head(q, 1, 3, ML_DTYPE_F32, 0, 2, 1);
	q[MESH_STAGE_BATCH_HEAD] = 0x80; /* seq > INT32_MAX */
	assert_int_equal(mesh_stage_batch_decode(&d, q, L, 3, 0, 1), ML_ERR_FORMAT);
	q[MESH_STAGE_BATCH_HEAD] = 0;
	q[MESH_STAGE_BATCH_HEAD + 4] = 0xff; /* pos */
	assert_int_equal(mesh_stage_batch_decode(&d, q, L, 3, 0, 1), ML_ERR_FORMAT);
	q[MESH_STAGE_BATCH_HEAD + 4] = 0;
	q[MESH_STAGE_BATCH_HEAD + 8] = 2; /* unknown flag */
	assert_int_equal(mesh_stage_batch_decode(&d, q, L, 3, 0, 1), ML_ERR_FORMAT);
	q[MESH_STAGE_BATCH_HEAD + 8] = 1;
	assert_int_equal(mesh_stage_batch_decode(&d, q, L, 3, 0, 1), 0);
	/* n_embd x n_tokens products that would overflow 32 bits are fine */
	head(q, 1, 3, ML_DTYPE_F32, 0, 65536, 4096);
	assert_int_equal(mesh_stage_batch_decode(&d, q, L, 3, 0, 1), ML_ERR_FORMAT);
}

static void test_batch_encode_refusals(void **state)
{
	(void)state;
	struct batch_fixture f;
	fixture(&f, 2, 4);
	struct mesh_stage_batch_in in = batch_in(&f, ML_DTYPE_F32);
	struct net_buf b;
	net_buf_init(&b, 0);
	net_buf_put_u32(&b, 0xdeadbeef); /* earlier content must survive failures */
	assert_int_equal(mesh_stage_batch_put(&b, NET_MSG_STAGE_KV, &in), ML_ERR_INVALID);
	in.dtype = ML_DTYPE_BF16;
	assert_int_equal(mesh_stage_batch_put(&b, NET_MSG_STAGE_FORWARD, &in), ML_ERR_INVALID);
	in.dtype = ML_DTYPE_F32;
	in.rows = 7;
	assert_int_equal(mesh_stage_batch_put(&b, NET_MSG_STAGE_FORWARD, &in), ML_ERR_INVALID);
	in.rows = 0;
	in.n_embd = 0;
	assert_int_equal(mesh_stage_batch_put(&b, NET_MSG_STAGE_FORWARD, &in), ML_ERR_INVALID);
	in.n_embd = MESH_STAGE_MAX_EMBD + 1;
	assert_int_equal(mesh_stage_batch_put(&b, NET_MSG_STAGE_FORWARD, &in), ML_ERR_INVALID);
	in.n_embd = 4;
	in.n_tokens = MESH_STAGE_MAX_TOKENS + 1;
	assert_int_equal(mesh_stage_batch_put(&b, NET_MSG_STAGE_FORWARD, &in), ML_ERR_RANGE);
	in.n_tokens = 2;
	f.pos[1] = -1;
	assert_int_equal(mesh_stage_batch_put(&b, NET_MSG_STAGE_FORWARD, &in), ML_ERR_INVALID);
	f.pos[1] = 3;
	in.embd = NULL;
	assert_int_equal(mesh_stage_batch_put(&b, NET_MSG_STAGE_FORWARD, &in), ML_ERR_INVALID);
	in.embd = f.embd;
	assert_int_equal(b.len, 4);
	assert_int_equal(b.err, 0);
	/* a buffer limit: the encoder fails and restores the buffer */
	struct net_buf small;
	net_buf_init(&small, 40);
	net_buf_put_u8(&small, 1);
	assert_int_equal(mesh_stage_batch_put(&small, NET_MSG_STAGE_FORWARD, &in), ML_ERR_RANGE);
	assert_int_equal(small.len, 1);
	assert_int_equal(small.err, 0);
	net_buf_free(&small);
	assert_int_equal(mesh_stage_batch_put(&b, NET_MSG_STAGE_FORWARD, &in), 0);
	assert_int_equal(b.len, 4 + mesh_stage_batch_size(2, 4, ML_DTYPE_F32));
	net_buf_free(&b);
}

static void test_batch_frame_cap(void **state)
{
	(void)state;
	/* 7B-class: n_embd 4096. f32 rows fill the 64 MiB STAGE frame at 4093 */
	assert_int_equal(mesh_stage_batch_max_tokens(4096, ML_DTYPE_F32), 4093);
	assert_int_equal(mesh_stage_batch_max_tokens(4096, ML_DTYPE_F16), 4096);
	assert_int_equal(mesh_stage_batch_max_tokens(65536, ML_DTYPE_F32), 255);
	assert_int_equal(mesh_stage_batch_max_tokens(0, ML_DTYPE_F32), 0);
	assert_int_equal(mesh_stage_batch_max_tokens(8, ML_DTYPE_Q4_0), 0);
	assert_true(mesh_stage_batch_size(4093, 4096, ML_DTYPE_F32) - NET_FRAME_HDR_LEN <=
	            NET_FRAME_MAX_STAGE);
	assert_true(mesh_stage_batch_size(4094, 4096, ML_DTYPE_F32) - NET_FRAME_HDR_LEN >
	            NET_FRAME_MAX_STAGE);
	/* the largest message encodes and parses as a frame */
	const uint32_t n = 4093, e = 4096;
	float *embd = calloc((size_t)n * e, sizeof(float));
	int32_t *seq = calloc(n + 1, sizeof(int32_t)), *pos = calloc(n + 1, sizeof(int32_t));
	assert_non_null(embd);
	for (uint32_t i = 0; i < n; i++)
		pos[i] = (int32_t)i;
	embd[(size_t)n * e - 1] = 3.0f;
	struct mesh_stage_batch_in in = {.epoch = 1,
	                                 .dtype = ML_DTYPE_F32,
	                                 .n_embd = e,
	                                 .n_tokens = n,
	                                 .seq = seq,
	                                 .pos = pos,
	                                 .embd = embd};
	struct net_buf b;
	net_buf_init(&b, 0);
	assert_int_equal(mesh_stage_batch_put(&b, NET_MSG_STAGE_FORWARD, &in), 0);
	const uint8_t *p;
	size_t len;
	frame(&b, NET_MSG_STAGE_FORWARD, &p, &len);
	struct mesh_stage_batch d;
	assert_int_equal(mesh_stage_batch_decode(&d, p, len, 1, e, 1), 0);
	assert_int_equal(mesh_stage_batch_rows(&d, embd, (size_t)n * e), 0);
	assert_true(embd[(size_t)n * e - 1] == 3.0f);
	in.n_tokens = n + 1;
	net_buf_reset(&b);
	assert_int_equal(mesh_stage_batch_put(&b, NET_MSG_STAGE_FORWARD, &in), ML_ERR_RANGE);
	assert_int_equal(b.len, 0);
	net_buf_free(&b);
	free(embd);
	free(seq);
	free(pos);
}

static void test_activation_bytes_7b(void **state)
{
	(void)state;
	/* one decode step (1 token) and the per-token cost inside a big batch */
	uint64_t f32_1 = mesh_stage_batch_size(1, 4096, ML_DTYPE_F32);
	uint64_t f16_1 = mesh_stage_batch_size(1, 4096, ML_DTYPE_F16);
	assert_int_equal(f32_1, 5 + 27 + 9 + 4096 * 4); /* 16425 */
	assert_int_equal(f16_1, 5 + 27 + 9 + 4096 * 2); /* 8233 */
	assert_int_equal(mesh_stage_batch_size(513, 4096, ML_DTYPE_F32) -
	                     mesh_stage_batch_size(512, 4096, ML_DTYPE_F32),
	                 16393);
	assert_int_equal(mesh_stage_batch_size(513, 4096, ML_DTYPE_F16) -
	                     mesh_stage_batch_size(512, 4096, ML_DTYPE_F16),
	                 8201);
	/* and the encoder agrees */
	static float row[4096];
	int32_t z = 0;
	struct mesh_stage_batch_in in = {.epoch = 1,
	                                 .dtype = ML_DTYPE_F16,
	                                 .n_embd = 4096,
	                                 .n_tokens = 1,
	                                 .seq = &z,
	                                 .pos = &z,
	                                 .embd = row};
	struct net_buf b;
	net_buf_init(&b, 0);
	assert_int_equal(mesh_stage_batch_put(&b, NET_MSG_STAGE_FORWARD, &in), 0);
	assert_int_equal(b.len, f16_1);
	net_buf_free(&b);
	print_message("activation bytes per hop, n_embd 4096: 1 token %llu B (f32) / %llu B (f16); "
	              "per token in a batch 16393 B / 8201 B\n",
	              (unsigned long long)f32_1, (unsigned long long)f16_1);
}

static void test_stale_epoch(void **state)
{
	(void)state;
	struct batch_fixture f;
	fixture(&f, 1, 4);
	struct mesh_stage_batch_in in = batch_in(&f, ML_DTYPE_F32);
	in.epoch = 7;
	struct net_buf b;
	net_buf_init(&b, 0);
	assert_int_equal(mesh_stage_batch_put(&b, NET_MSG_STAGE_FORWARD, &in), 0);
	const uint8_t *p;
	size_t len;
	frame(&b, NET_MSG_STAGE_FORWARD, &p, &len);
	struct mesh_stage_batch d;
	assert_int_equal(mesh_stage_batch_decode(&d, p, len, 7, 4, 1), 0);
	assert_int_equal(mesh_stage_batch_decode(&d, p, len, 6, 4, 1),
	                 0); /* newer: caller decides */
	assert_int_equal(mesh_stage_batch_decode(&d, p, len, 8, 4, 1), MESH_STAGE_ERR_STALE);
	assert_non_null(strstr(ml_last_error(), "epoch 7 is older than the current plan 8"));
	assert_int_equal(d.epoch, 7); /* the header is still there for the reply */
	/* malformed beats stale: a broken old message is still a violation */
	assert_int_equal(mesh_stage_batch_decode(&d, p, len - 1, 8, 4, 1), ML_ERR_FORMAT);
	/* the epoch alone, as a worker reads it before queueing a message */
	uint64_t ep = 0;
	assert_int_equal(mesh_stage_msg_epoch(p, len, &ep), 0);
	assert_int_equal(ep, 7);
	for (size_t k = 0; k < 9; k++)
		assert_int_equal(mesh_stage_msg_epoch(p, k, &ep), ML_ERR_FORMAT);
	assert_int_equal(mesh_stage_msg_epoch(p, 9, &ep), 0);
	uint8_t v2[9];
	memcpy(v2, p, 9);
	v2[0] = 2;
	assert_int_equal(mesh_stage_msg_epoch(v2, 9, &ep), ML_ERR_UNSUPPORTED);

	struct mesh_stage_kv kv = {.epoch = 3, .op = MESH_STAGE_KV_CLEAR, .seq = 1};
	net_buf_reset(&b);
	assert_int_equal(mesh_stage_kv_put(&b, &kv), 0);
	frame(&b, NET_MSG_STAGE_KV, &p, &len);
	struct mesh_stage_kv k2;
	assert_int_equal(mesh_stage_kv_decode(&k2, p, len, 4), MESH_STAGE_ERR_STALE);
	assert_int_equal(mesh_stage_kv_decode(&k2, p, len, 3), 0);

	net_buf_reset(&b);
	assert_int_equal(mesh_stage_ack_put(&b, 2, MESH_STAGE_PLAN_ACK, NULL), 0);
	frame(&b, NET_MSG_STAGE_ACK, &p, &len);
	struct mesh_stage_ack a;
	assert_int_equal(mesh_stage_ack_decode(&a, p, len, 3), MESH_STAGE_ERR_STALE);
	assert_int_equal(mesh_stage_ack_decode(&a, p, len, 2), 0);
	net_buf_free(&b);
	assert_string_equal(mesh_stage_err_name(MESH_STAGE_E_STALE_EPOCH), "stale epoch");
	assert_string_equal(mesh_stage_err_name(0), "?");
}

static void sample_plan(struct mesh_stage_plan *sp)
{
	struct mesh_plan_model m = {.n_layer = 28,
	                            .layer_bytes = 4000000000ull,
	                            .embd_bytes = 1000000000ull,
	                            .output_bytes = 1000000000ull};
	struct mesh_plan_node v[3];
	memset(v, 0, sizeof(v));
	for (int i = 0; i < 3; i++) {
		memset(v[i].id, 0xa0 + i, NET_ID_LEN);
		v[i].has_model = true;
		v[i].rtt_us = 1000 * (uint32_t)i;
	}
	v[0].budget = 60000000000ull;
	v[1].budget = 50000000000ull;
	v[2].budget = 40000000000ull;
	struct mesh_plan *plan = malloc(sizeof(*plan));
	struct mesh_plan_params pp = {.epoch = 12};
	assert_int_equal(mesh_plan_build(plan, &m, v, 3, 0, &pp), 0);
	assert_int_equal(plan->status, MESH_PLAN_OK);
	assert_int_equal(plan->n_stages, 3);
	assert_int_equal(mesh_stage_plan_from(sp, plan), 0);
	free(plan);
	for (int i = 0; i < MESH_STAGE_FP_LEN; i++)
		sp->fingerprint[i] = (uint8_t)(i * 7);
	sp->n_ctx = 4096;
	sp->n_seq = 4;
	sp->n_batch = 512;
	sp->act_dtype = ML_DTYPE_F16;
	sp->kv_dtype = ML_DTYPE_F32;
}

static void test_plan_roundtrip(void **state)
{
	(void)state;
	struct mesh_stage_plan sp, d;
	sample_plan(&sp);
	assert_int_equal(sp.epoch, 12);
	assert_memory_equal(sp.stages[2].next, sp.stages[0].id, NET_ID_LEN);
	assert_memory_equal(sp.stages[0].next, sp.stages[1].id, NET_ID_LEN);
	struct net_buf b;
	net_buf_init(&b, 0);
	assert_int_equal(mesh_stage_plan_put(&b, &sp), 0);
	const uint8_t *p;
	size_t len;
	frame(&b, NET_MSG_STAGE_OPEN, &p, &len);
	assert_int_equal(len, 1 + 8 + 32 + 4 * 4 + 1 + 1 + 1 + 3 * 72);
	assert_int_equal(p[0], MESH_STAGE_PLAN_VERSION);
	assert_int_equal(mesh_stage_plan_decode(&d, p, len, 12), 0);
	assert_memory_equal(&d, &sp, sizeof(d));
	assert_int_equal(mesh_stage_plan_find(&d, sp.stages[1].id), 1);
	uint8_t other[NET_ID_LEN] = {1};
	assert_int_equal(mesh_stage_plan_find(&d, other), -1);
	for (size_t k = 0; k < len; k++)
		assert_int_equal(mesh_stage_plan_decode(&d, p, k, 0), ML_ERR_FORMAT);
	uint8_t *q = malloc(len + 1);
	memcpy(q, p, len);
	q[len] = 0;
	assert_int_equal(mesh_stage_plan_decode(&d, q, len + 1, 0), ML_ERR_FORMAT);
	/* stale */
	assert_int_equal(mesh_stage_plan_decode(&d, q, len, 13), MESH_STAGE_ERR_STALE);
	/* tampering: version, stage count, a range, a next hop, activation
	 * and KV types */
	const size_t off_nst = 1 + 8 + 32 + 16 + 2, off_st = off_nst + 1;
	q[0] = 3;
	assert_int_equal(mesh_stage_plan_decode(&d, q, len, 0), ML_ERR_UNSUPPORTED);
	q[0] = 0;
	assert_int_equal(mesh_stage_plan_decode(&d, q, len, 0), ML_ERR_UNSUPPORTED);
	/* version 1 with the KV byte: read as version 1, the KV byte (F32 = 0)
	 * is its stage count */
	q[0] = 1;
	assert_int_equal(mesh_stage_plan_decode(&d, q, len, 0), ML_ERR_RANGE);
	q[0] = 2;
	q[off_nst - 1] = ML_DTYPE_Q8_0;
	assert_int_equal(mesh_stage_plan_decode(&d, q, len, 0), ML_ERR_UNSUPPORTED);
	q[off_nst - 1] = 0xff;
	assert_int_equal(mesh_stage_plan_decode(&d, q, len, 0), ML_ERR_UNSUPPORTED);
	q[off_nst - 1] = ML_DTYPE_F16;
	assert_int_equal(mesh_stage_plan_decode(&d, q, len, 0), 0);
	assert_int_equal(d.kv_dtype, ML_DTYPE_F16);
	q[off_nst - 1] = ML_DTYPE_F32;
	q[off_nst] = MESH_STAGE_MAX_STAGES + 1;
	assert_int_equal(mesh_stage_plan_decode(&d, q, len, 0), ML_ERR_RANGE);
	q[off_nst] = 0;
	assert_int_equal(mesh_stage_plan_decode(&d, q, len, 0), ML_ERR_RANGE);
	q[off_nst] = 2; /* fewer stages than bytes */
	assert_int_equal(mesh_stage_plan_decode(&d, q, len, 0), ML_ERR_FORMAT);
	q[off_nst] = 3;
	q[off_st + 32 + 7] ^= 1; /* stage 0 layer_end */
	assert_int_equal(mesh_stage_plan_decode(&d, q, len, 0), ML_ERR_FORMAT);
	q[off_st + 32 + 7] ^= 1;
	q[off_st + 40] ^= 1; /* stage 0 next hop */
	assert_int_equal(mesh_stage_plan_decode(&d, q, len, 0), ML_ERR_FORMAT);
	q[off_st + 40] ^= 1;
	q[off_nst - 2] = ML_DTYPE_Q4_0;
	assert_int_equal(mesh_stage_plan_decode(&d, q, len, 0), ML_ERR_UNSUPPORTED);
	q[off_nst - 2] = ML_DTYPE_F16;
	assert_int_equal(mesh_stage_plan_decode(&d, q, len, 0), 0);
	assert_memory_equal(&d, &sp, sizeof(d));

	/* version 1 (no KV byte) still decodes, with F16 caches; strict all
	 * the same: every truncation and a trailing byte are refused */
	uint8_t *v1 = malloc(len);
	memcpy(v1, q, off_nst - 1);
	memcpy(v1 + off_nst - 1, q + off_nst, len - off_nst);
	v1[0] = 1;
	const size_t len1 = len - 1;
	assert_int_equal(mesh_stage_plan_decode(&d, v1, len1, 0), 0);
	assert_int_equal(d.kv_dtype, ML_DTYPE_F16);
	assert_int_equal(d.act_dtype, ML_DTYPE_F16);
	assert_int_equal(d.n_stages, 3);
	assert_memory_equal(d.stages, sp.stages, sizeof(sp.stages));
	for (size_t k = 0; k < len1; k++)
		assert_int_equal(mesh_stage_plan_decode(&d, v1, k, 0), ML_ERR_FORMAT);
	assert_int_equal(mesh_stage_plan_decode(&d, q, len1 + 1, 0), 0); /* v2 */
	v1[0] = 2; /* read as version 2: the first id byte is the stage count */
	assert_int_equal(mesh_stage_plan_decode(&d, v1, len1, 0), ML_ERR_RANGE);
	free(v1);
	/* the encoder refuses what the decoder would */
	struct mesh_stage_plan bad = sp;
	bad.kv_dtype = ML_DTYPE_Q8_0;
	net_buf_reset(&b);
	assert_int_equal(mesh_stage_plan_put(&b, &bad), ML_ERR_INVALID);
	assert_int_equal(b.len, 0);
	free(q);
	net_buf_free(&b);
}

static void test_plan_invalid(void **state)
{
	(void)state;
	struct mesh_stage_plan sp, bad;
	sample_plan(&sp);
	struct net_buf b;
	net_buf_init(&b, 0);
	bad = sp;
	bad.stages[1].layer_begin += 1; /* gap */
	assert_int_equal(mesh_stage_plan_put(&b, &bad), ML_ERR_INVALID);
	bad = sp;
	bad.stages[2].layer_end = bad.stages[2].layer_begin; /* empty stage */
	assert_int_equal(mesh_stage_plan_put(&b, &bad), ML_ERR_INVALID);
	bad = sp;
	bad.n_layer = 27; /* last stage runs past n_layer */
	assert_int_equal(mesh_stage_plan_put(&b, &bad), ML_ERR_INVALID);
	bad = sp;
	bad.n_layer = 29; /* stages end early */
	assert_int_equal(mesh_stage_plan_put(&b, &bad), ML_ERR_INVALID);
	bad = sp;
	memset(bad.stages[2].next, 0, NET_ID_LEN); /* last does not return to the host */
	assert_int_equal(mesh_stage_plan_put(&b, &bad), ML_ERR_INVALID);
	bad = sp;
	memcpy(bad.stages[2].id, bad.stages[0].id, NET_ID_LEN); /* node twice */
	memcpy(bad.stages[1].next, bad.stages[0].id, NET_ID_LEN);
	assert_int_equal(mesh_stage_plan_put(&b, &bad), ML_ERR_INVALID);
	bad = sp;
	bad.n_stages = 0;
	assert_int_equal(mesh_stage_plan_put(&b, &bad), ML_ERR_INVALID);
	bad = sp;
	bad.n_stages = MESH_STAGE_MAX_STAGES + 1;
	assert_int_equal(mesh_stage_plan_put(&b, &bad), ML_ERR_INVALID);
	bad = sp;
	bad.n_seq = 0;
	assert_int_equal(mesh_stage_plan_put(&b, &bad), ML_ERR_INVALID);
	bad = sp;
	bad.act_dtype = ML_DTYPE_BF16;
	assert_int_equal(mesh_stage_plan_put(&b, &bad), ML_ERR_INVALID);
	bad = sp;
	bad.n_layer = 2; /* 3 stages, 2 layers */
	bad.stages[0].layer_end = 1;
	bad.stages[1].layer_begin = 1;
	bad.stages[1].layer_end = 2;
	bad.stages[2].layer_begin = 2;
	bad.stages[2].layer_end = 2;
	assert_int_equal(mesh_stage_plan_put(&b, &bad), ML_ERR_INVALID);
	assert_int_equal(b.len, 0);
	/* a solo plan is a valid PLAN (one stage whose next hop is itself) */
	bad = sp;
	bad.n_stages = 1;
	bad.stages[0].layer_end = bad.n_layer;
	memcpy(bad.stages[0].next, bad.stages[0].id, NET_ID_LEN);
	assert_int_equal(mesh_stage_plan_put(&b, &bad), 0);
	/* a plan that is not OK has no stages to send */
	struct mesh_plan *np = calloc(1, sizeof(*np));
	np->status = MESH_PLAN_NO_FIT;
	assert_int_equal(mesh_stage_plan_from(&bad, np), ML_ERR_INVALID);
	free(np);
	net_buf_free(&b);
}

static void test_kv_roundtrip(void **state)
{
	(void)state;
	const struct mesh_stage_kv good[3] = {
	    {.epoch = 9, .op = MESH_STAGE_KV_TRUNCATE, .seq = 3, .pos = 17},
	    {.epoch = 9, .op = MESH_STAGE_KV_CLEAR, .seq = 0, .pos = 0},
	    {.epoch = 9, .op = MESH_STAGE_KV_CLEAR, .seq = MESH_STAGE_SEQ_ALL, .pos = 0},
	};
	struct net_buf b;
	net_buf_init(&b, 0);
	for (int i = 0; i < 3; i++) {
		net_buf_reset(&b);
		assert_int_equal(mesh_stage_kv_put(&b, &good[i]), 0);
		const uint8_t *p;
		size_t len;
		frame(&b, NET_MSG_STAGE_KV, &p, &len);
		assert_int_equal(len, 18);
		struct mesh_stage_kv d;
		assert_int_equal(mesh_stage_kv_decode(&d, p, len, 9), 0);
		assert_int_equal(d.epoch, good[i].epoch);
		assert_int_equal(d.op, good[i].op);
		assert_int_equal(d.seq, good[i].seq);
		assert_int_equal(d.pos, good[i].pos);
		for (size_t k = 0; k < len; k++)
			assert_int_equal(mesh_stage_kv_decode(&d, p, k, 0), ML_ERR_FORMAT);
		uint8_t q[19];
		memcpy(q, p, len);
		q[len] = 0;
		assert_int_equal(mesh_stage_kv_decode(&d, q, len + 1, 0), ML_ERR_FORMAT);
		q[0] = 9;
		assert_int_equal(mesh_stage_kv_decode(&d, q, len, 0), ML_ERR_UNSUPPORTED);
		q[0] = 1;
		q[9] = 3; /* op */
		assert_int_equal(mesh_stage_kv_decode(&d, q, len, 0), ML_ERR_FORMAT);
	}
	const struct mesh_stage_kv badv[4] = {
	    {.op = 0},
	    {.op = MESH_STAGE_KV_TRUNCATE, .seq = 0x80000000u},
	    {.op = MESH_STAGE_KV_CLEAR, .seq = 1, .pos = 5},
	    {.op = MESH_STAGE_KV_CLEAR, .seq = 0x80000000u},
	};
	net_buf_reset(&b);
	for (int i = 0; i < 4; i++)
		assert_int_equal(mesh_stage_kv_put(&b, &badv[i]), ML_ERR_INVALID);
	assert_int_equal(b.len, 0);
	net_buf_free(&b);
}

static void test_ack_and_error(void **state)
{
	(void)state;
	struct net_buf b;
	net_buf_init(&b, 0);
	const char *why = "model mismatch: fingerprint 1a2b.. here, 9f8e.. on the host";
	assert_int_equal(mesh_stage_ack_put(&b, 4, MESH_STAGE_PLAN_REFUSE, why), 0);
	const uint8_t *p;
	size_t len;
	frame(&b, NET_MSG_STAGE_ACK, &p, &len);
	struct mesh_stage_ack a;
	assert_int_equal(mesh_stage_ack_decode(&a, p, len, 4), 0);
	assert_int_equal(a.epoch, 4);
	assert_int_equal(a.kind, MESH_STAGE_PLAN_REFUSE);
	assert_string_equal(a.reason, why);
	for (size_t k = 0; k < len; k++)
		assert_int_equal(mesh_stage_ack_decode(&a, p, k, 0), ML_ERR_FORMAT);
	uint8_t *q = malloc(len + 1);
	memcpy(q, p, len);
	q[len] = 'x';
	assert_int_equal(mesh_stage_ack_decode(&a, q, len + 1, 0), ML_ERR_FORMAT);
	q[9] = 2; /* kind */
	assert_int_equal(mesh_stage_ack_decode(&a, q, len, 0), ML_ERR_FORMAT);
	q[9] = 1;
	q[12] = '\n'; /* control character in the reason */
	assert_int_equal(mesh_stage_ack_decode(&a, q, len, 0), ML_ERR_FORMAT);
	free(q);
	/* reasons over the cap: refused by the encoder and by the decoder */
	char longr[MESH_STAGE_REASON_MAX + 2];
	memset(longr, 'r', sizeof(longr) - 1);
	longr[sizeof(longr) - 1] = '\0';
	net_buf_reset(&b);
	assert_int_equal(mesh_stage_ack_put(&b, 1, MESH_STAGE_PLAN_ACK, longr), ML_ERR_INVALID);
	assert_int_equal(mesh_stage_error_put(&b, 1, longr), ML_ERR_INVALID);
	assert_int_equal(mesh_stage_ack_put(&b, 1, 2, ""), ML_ERR_INVALID);
	assert_int_equal(b.len, 0);
	net_buf_put_u8(&b, 1);
	net_buf_put_u64(&b, 1);
	net_buf_put_u8(&b, 0);
	net_buf_put_str(&b, longr, MESH_STAGE_REASON_MAX + 1);
	assert_int_equal(mesh_stage_ack_decode(&a, b.data, b.len, 0), ML_ERR_FORMAT);
	/* exactly the cap is fine */
	longr[MESH_STAGE_REASON_MAX] = '\0';
	net_buf_reset(&b);
	assert_int_equal(mesh_stage_ack_put(&b, 1, MESH_STAGE_PLAN_ACK, longr), 0);
	frame(&b, NET_MSG_STAGE_ACK, &p, &len);
	assert_int_equal(mesh_stage_ack_decode(&a, p, len, 0), 0);
	assert_int_equal(strlen(a.reason), MESH_STAGE_REASON_MAX);

	/* ERROR: u16 code | str reason, on the STAGE stream */
	net_buf_reset(&b);
	assert_int_equal(mesh_stage_error_put(&b, MESH_STAGE_E_STALE_EPOCH, "epoch 3 < 4"), 0);
	frame(&b, NET_MSG_ERROR, &p, &len);
	struct mesh_stage_error e;
	assert_int_equal(mesh_stage_error_decode(&e, p, len), 0);
	assert_int_equal(e.code, MESH_STAGE_E_STALE_EPOCH);
	assert_string_equal(e.reason, "epoch 3 < 4");
	for (size_t k = 0; k < len; k++)
		assert_int_equal(mesh_stage_error_decode(&e, p, k), ML_ERR_FORMAT);
	net_buf_reset(&b);
	assert_int_equal(mesh_stage_error_put(&b, 999, NULL), 0); /* unknown codes pass */
	frame(&b, NET_MSG_ERROR, &p, &len);
	assert_int_equal(mesh_stage_error_decode(&e, p, len), 0);
	assert_int_equal(e.code, 999);
	assert_string_equal(e.reason, "");
	net_buf_free(&b);
}

/* A whole STAGE stream with every message type, fed to the frame decoder
 * one byte at a time: each message arrives whole and decodes. */
static void test_stream_byte_at_a_time(void **state)
{
	(void)state;
	struct batch_fixture f;
	fixture(&f, 2, 8);
	struct mesh_stage_batch_in in = batch_in(&f, ML_DTYPE_F16);
	struct mesh_stage_plan sp;
	sample_plan(&sp);
	struct mesh_stage_kv kv = {.epoch = 12, .op = MESH_STAGE_KV_TRUNCATE, .seq = 1, .pos = 4};
	struct net_buf b;
	net_buf_init(&b, 0);
	net_frame_put_stream_type(&b, NET_STREAM_STAGE);
	assert_int_equal(mesh_stage_plan_put(&b, &sp), 0);
	assert_int_equal(mesh_stage_ack_put(&b, 12, MESH_STAGE_PLAN_ACK, "loaded layers 0-9"), 0);
	in.epoch = 12;
	assert_int_equal(mesh_stage_batch_put(&b, NET_MSG_STAGE_FORWARD, &in), 0);
	in.n_tokens = 1;
	assert_int_equal(mesh_stage_batch_put(&b, NET_MSG_STAGE_RESULT, &in), 0);
	assert_int_equal(mesh_stage_kv_put(&b, &kv), 0);
	assert_int_equal(mesh_stage_error_put(&b, MESH_STAGE_E_FORWARD, "position 9 > 4"), 0);
	const uint8_t want[6] = {NET_MSG_STAGE_OPEN,   NET_MSG_STAGE_ACK, NET_MSG_STAGE_FORWARD,
	                         NET_MSG_STAGE_RESULT, NET_MSG_STAGE_KV,  NET_MSG_ERROR};
	struct net_frame_decoder dec;
	net_frame_decoder_init(&dec, NET_STREAM_STAGE);
	int got = 0;
	for (size_t i = 0; i < b.len; i++) {
		struct net_frame_msg m;
		int n = net_frame_decoder_feed(&dec, b.data + i, 1, &m);
		if (n == ML_ERR_INCOMPLETE)
			continue;
		assert_int_equal(n, 1);
		assert_true(got < 6);
		assert_int_equal(m.type, want[got]);
		int rc = -1;
		switch (m.type) {
		case NET_MSG_STAGE_OPEN: {
			struct mesh_stage_plan d;
			rc = mesh_stage_plan_decode(&d, m.payload, m.len, 12);
			break;
		}
		case NET_MSG_STAGE_ACK: {
			struct mesh_stage_ack a;
			rc = mesh_stage_ack_decode(&a, m.payload, m.len, 12);
			break;
		}
		case NET_MSG_STAGE_FORWARD:
		case NET_MSG_STAGE_RESULT: {
			struct mesh_stage_batch d;
			rc = mesh_stage_batch_decode(&d, m.payload, m.len, 12, 8, 0);
			break;
		}
		case NET_MSG_STAGE_KV: {
			struct mesh_stage_kv k;
			rc = mesh_stage_kv_decode(&k, m.payload, m.len, 12);
			break;
		}
		case NET_MSG_ERROR: {
			struct mesh_stage_error e;
			rc = mesh_stage_error_decode(&e, m.payload, m.len);
			break;
		}
		}
		assert_int_equal(rc, 0);
		got++;
	}
	assert_int_equal(got, 6);
	net_frame_decoder_free(&dec);
	net_buf_free(&b);
}

/* Random bytes and random mutations of valid messages never crash and
 * never decode into values outside the caps. */
static void test_mutations(void **state)
{
	(void)state;
	struct batch_fixture f;
	fixture(&f, 3, 8);
	struct mesh_stage_batch_in in = batch_in(&f, ML_DTYPE_F16);
	struct mesh_stage_plan sp;
	sample_plan(&sp);
	struct net_buf b;
	net_buf_init(&b, 0);
	assert_int_equal(mesh_stage_batch_put(&b, NET_MSG_STAGE_FORWARD, &in), 0);
	assert_int_equal(mesh_stage_plan_put(&b, &sp), 0);
	uint64_t s = 99;
	float rows[3 * 8];
	for (int it = 0; it < 20000; it++) {
		uint8_t q[512];
		size_t n = b.len < sizeof(q) ? b.len : sizeof(q);
		memcpy(q, b.data, n);
		for (int k = 0; k < 3; k++)
			q[rnd(&s) % n] ^= (uint8_t)(1u << (rnd(&s) % 8));
		size_t len = rnd(&s) % n;
		struct mesh_stage_batch d;
		if (mesh_stage_batch_decode(&d, q + 5, len, 0, 0, 0) == 0) {
			assert_true(d.n_tokens <= MESH_STAGE_MAX_TOKENS && d.n_embd <= 8);
			if ((size_t)d.n_tokens * d.n_embd <= 24)
				assert_int_equal(mesh_stage_batch_rows(&d, rows, 24), 0);
		}
		struct mesh_stage_plan p;
		if (mesh_stage_plan_decode(&p, q + 5, len, 0) == 0)
			assert_true(p.n_stages >= 1 && p.n_stages <= MESH_STAGE_MAX_STAGES);
	}
	net_buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_batch_roundtrip_f32),
	    cmocka_unit_test(test_batch_empty),
	    cmocka_unit_test(test_batch_f16_accuracy),
	    cmocka_unit_test(test_batch_truncation_and_trailing),
	    cmocka_unit_test(test_batch_bad_fields),
	    cmocka_unit_test(test_batch_encode_refusals),
	    cmocka_unit_test(test_batch_frame_cap),
	    cmocka_unit_test(test_activation_bytes_7b),
	    cmocka_unit_test(test_stale_epoch),
	    cmocka_unit_test(test_plan_roundtrip),
	    cmocka_unit_test(test_plan_invalid),
	    cmocka_unit_test(test_kv_roundtrip),
	    cmocka_unit_test(test_ack_and_error),
	    cmocka_unit_test(test_stream_byte_at_a_time),
	    cmocka_unit_test(test_mutations),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
