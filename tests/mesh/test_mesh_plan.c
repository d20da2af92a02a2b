/* Tests for src/mesh/mesh_plan.c: election (budgets, ties, clients, nodes
 * without the model), solo vs split, memory-proportional ranges
 * (103 GB + 51 GB), the RTT gate, not enough memory, manual ratios (valid,
 * invalid, too few nodes, a stage that does not fit), force split, tiny
 * models, rounding that avoids over-filling (checked against brute force),
 * determinism under permutation of the input, plan equality and words. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/ml_err.h"
#include "gguf/gguf.h"
#include "mesh/mesh_plan.h"

#define GB 1000000000ull

static struct mesh_plan_node node(uint8_t idb, uint64_t budget, uint32_t rtt_ms)
{
	struct mesh_plan_node nd;
	memset(&nd, 0, sizeof(nd));
	memset(nd.id, idb, NET_ID_LEN);
	nd.budget = budget;
	nd.rtt_us = rtt_ms * 1000;
	nd.has_model = true;
	return nd;
}

static struct mesh_plan_model uniform(uint32_t n_layer, uint64_t layer, uint64_t embd, uint64_t out)
{
	struct mesh_plan_model m;
	memset(&m, 0, sizeof(m));
	m.n_layer = n_layer;
	m.layer_bytes = layer;
	m.embd_bytes = embd;
	m.output_bytes = out;
	return m;
}

/* Checks the invariants of an OK plan: contiguous, non-empty, host first,
 * bytes recomputed, every stage within its budget x headroom. */
static void check_ok(const struct mesh_plan *p, const struct mesh_plan_model *m, uint32_t permille)
{
	assert_int_equal(p->status, MESH_PLAN_OK);
	assert_true(p->n_stages >= 1);
	assert_memory_equal(p->stages[0].id, p->host, NET_ID_LEN);
	uint32_t b = 0;
	uint64_t kv = m->kv_bytes_per_token * m->n_ctx, sum = 0;
	for (uint32_t s = 0; s < p->n_stages; s++) {
		const struct mesh_plan_stage *st = &p->stages[s];
		assert_int_equal(st->layer_begin, b);
		assert_true(st->layer_end > st->layer_begin);
		uint64_t bytes = 0;
		for (uint32_t j = st->layer_begin; j < st->layer_end; j++)
			bytes += (m->layer_bytes_v ? m->layer_bytes_v[j] : m->layer_bytes) + kv;
		if (s == 0)
			bytes += m->embd_bytes;
		if (s == p->n_stages - 1)
			bytes += m->output_bytes;
		assert_int_equal(st->bytes, bytes);
		assert_true(bytes * permille <= st->budget * 1000);
		sum += bytes;
		b = st->layer_end;
	}
	assert_int_equal(b, m->n_layer);
	assert_int_equal(sum, p->model_bytes);
}

static void test_elect(void **state)
{
	(void)state;
	struct mesh_plan_node v[4] = {node(1, 10 * GB, 0), node(2, 30 * GB, 0), node(3, 90 * GB, 0),
	                              node(4, 20 * GB, 0)};
	size_t h = 99;
	assert_int_equal(mesh_plan_elect(v, 4, &h), 0);
	assert_int_equal(h, 2);
	/* a client or a node without the file never wins, whatever its budget */
	v[2].client = true;
	assert_int_equal(mesh_plan_elect(v, 4, &h), 0);
	assert_int_equal(h, 1);
	v[1].has_model = false;
	assert_int_equal(mesh_plan_elect(v, 4, &h), 0);
	assert_int_equal(h, 3);
	v[0].client = true;
	v[3].has_model = false;
	assert_int_equal(mesh_plan_elect(v, 4, &h), ML_ERR_NOT_FOUND);
	assert_int_equal(mesh_plan_elect(v, 0, &h), ML_ERR_NOT_FOUND);
	assert_int_equal(mesh_plan_elect(NULL, 1, &h), ML_ERR_INVALID);
}

static void test_elect_ties(void **state)
{
	(void)state;
	/* equal budgets: lowest id, in any order */
	struct mesh_plan_node v[3] = {node(9, 50 * GB, 0), node(3, 50 * GB, 0),
	                              node(7, 50 * GB, 0)};
	size_t h;
	for (int r = 0; r < 3; r++) {
		struct mesh_plan_node w[3] = {v[r], v[(r + 1) % 3], v[(r + 2) % 3]};
		assert_int_equal(mesh_plan_elect(w, 3, &h), 0);
		assert_int_equal(w[h].id[0], 3);
	}
	/* ids differing only in the last byte */
	v[1].id[31] = 0x10;
	v[2] = v[1];
	v[2].id[31] = 0x0f;
	assert_int_equal(mesh_plan_elect(v, 3, &h), 0);
	assert_int_equal(h, 2);
	/* budgets above the cap compare as equal (clamped), then by id */
	struct mesh_plan_node big[2] = {node(5, UINT64_MAX, 0),
	                                node(4, MESH_PLAN_MAX_BYTES + 1, 0)};
	assert_int_equal(mesh_plan_elect(big, 2, &h), 0);
	assert_int_equal(h, 1);
}

/* The election over time: settle window, only nodes with the model,
 * re-election when the winner leaves or a bigger node comes, and the same
 * answer on every node whatever the order of its member table. */
static void test_election_settle(void **state)
{
	(void)state;
	struct mesh_plan_election e;
	mesh_plan_election_init(&e, 1000);
	struct mesh_plan_node v[3] = {node(5, 8 * GB, 0), node(2, 4 * GB, 0), node(9, 16 * GB, 0)};
	/* nothing pending: no election, whatever the time */
	assert_int_equal(mesh_plan_election_poll(&e, v, 2, 0), MESH_PLAN_ELECT_NOT_DUE);
	assert_false(e.have_host);
	/* a change at t=100: due at 1100; a burst of changes does not push it back */
	mesh_plan_election_touch(&e, 100);
	mesh_plan_election_touch(&e, 600);
	mesh_plan_election_touch(&e, 1050);
	assert_int_equal(mesh_plan_election_poll(&e, v, 2, 1099), MESH_PLAN_ELECT_NOT_DUE);
	assert_false(e.have_host);
	assert_int_equal(mesh_plan_election_poll(&e, v, 2, 1100), MESH_PLAN_ELECT_CHANGED);
	assert_true(e.have_host);
	assert_int_equal(e.host[0], 5);
	assert_int_equal(e.host_budget, 8 * GB);
	/* polled again without a change: nothing runs */
	assert_int_equal(mesh_plan_election_poll(&e, v, 3, 5000), MESH_PLAN_ELECT_NOT_DUE);
	assert_int_equal(e.host[0], 5);
	/* a node that joins without a bigger budget changes nothing */
	mesh_plan_election_touch(&e, 6000);
	struct mesh_plan_node w[3] = {v[0], v[1], node(1, 2 * GB, 0)};
	assert_int_equal(mesh_plan_election_poll(&e, w, 3, 7000), MESH_PLAN_ELECT_SAME);
	assert_int_equal(e.host[0], 5);
	/* a bigger node joins: it wins after the settle time, not before */
	mesh_plan_election_touch(&e, 8000);
	assert_int_equal(mesh_plan_election_poll(&e, v, 3, 8500), MESH_PLAN_ELECT_NOT_DUE);
	assert_int_equal(e.host[0], 5);
	assert_int_equal(mesh_plan_election_poll(&e, v, 3, 9000), MESH_PLAN_ELECT_CHANGED);
	assert_int_equal(e.host[0], 9);
	assert_int_equal(e.host_budget, 16 * GB);
	/* the bigger node without the model file (or a lite client) does not count */
	mesh_plan_election_touch(&e, 10000);
	v[2].has_model = false;
	assert_int_equal(mesh_plan_election_poll(&e, v, 3, 11000), MESH_PLAN_ELECT_CHANGED);
	assert_int_equal(e.host[0], 5);
	mesh_plan_election_touch(&e, 12000);
	v[2].has_model = true;
	v[2].client = true;
	assert_int_equal(mesh_plan_election_poll(&e, v, 3, 13000), MESH_PLAN_ELECT_SAME);
	assert_int_equal(e.host[0], 5);
	/* the host leaves: the next biggest; then nobody has the model */
	mesh_plan_election_touch(&e, 14000);
	assert_int_equal(mesh_plan_election_poll(&e, &v[1], 1, 15000), MESH_PLAN_ELECT_CHANGED);
	assert_int_equal(e.host[0], 2);
	mesh_plan_election_touch(&e, 16000);
	assert_int_equal(mesh_plan_election_poll(&e, v, 0, 17000), MESH_PLAN_ELECT_CHANGED);
	assert_false(e.have_host);
	mesh_plan_election_touch(&e, 18000);
	assert_int_equal(mesh_plan_election_poll(&e, v, 0, 19000), MESH_PLAN_ELECT_SAME);
	assert_int_equal(e.n_runs, 8);
	assert_int_equal(e.n_changes, 5);
	/* bad input keeps the election pending */
	mesh_plan_election_touch(&e, 20000);
	assert_int_equal(mesh_plan_election_poll(&e, NULL, 1, 21000), ML_ERR_INVALID);
	assert_true(e.pending);
	assert_int_equal(mesh_plan_election_poll(NULL, v, 1, 21000), ML_ERR_INVALID);
	/* settle 0: elects at the first poll after a change */
	mesh_plan_election_init(&e, 0);
	mesh_plan_election_touch(&e, 0);
	assert_int_equal(mesh_plan_election_poll(&e, v, 2, 0), MESH_PLAN_ELECT_CHANGED);
	assert_int_equal(e.host[0], 5);
}

static void test_election_same_everywhere(void **state)
{
	(void)state;
	/* three nodes, each with its member table in its own order and equal
	 * top budgets: all elect the lowest id among the biggest */
	struct mesh_plan_node v[4] = {node(7, 32 * GB, 0), node(4, 32 * GB, 0), node(3, 16 * GB, 0),
	                              node(8, 1 * GB, 0)};
	for (int r = 0; r < 4; r++) {
		struct mesh_plan_election e;
		mesh_plan_election_init(&e, 500);
		struct mesh_plan_node w[4] = {v[r], v[(r + 1) % 4], v[(r + 2) % 4], v[(r + 3) % 4]};
		mesh_plan_election_touch(&e, 1000 * (uint64_t)r);
		assert_int_equal(mesh_plan_election_poll(&e, w, 4, 1000 * (uint64_t)r + 500),
		                 MESH_PLAN_ELECT_CHANGED);
		assert_int_equal(e.host[0], 4);
		assert_int_equal(e.host_budget, 32 * GB);
	}
}

static void test_solo_and_single_node(void **state)
{
	(void)state;
	struct mesh_plan_model m =
	    uniform(28, 500000000ull, 300000000ull, 300000000ull); /* 14.6 GB */
	struct mesh_plan_node v[2] = {node(0xa1, 20 * GB, 0), node(0xc3, 10 * GB, 5)};
	struct mesh_plan p;
	assert_int_equal(mesh_plan_build(&p, &m, v, 1, 0, NULL), 0);
	check_ok(&p, &m, MESH_PLAN_HEADROOM_DEFAULT);
	assert_int_equal(p.n_stages, 1);
	/* fits the host alone: solo even though a peer is there */
	struct mesh_plan q;
	assert_int_equal(mesh_plan_build(&q, &m, v, 2, 0, NULL), 0);
	assert_int_equal(q.n_stages, 1);
	assert_true(mesh_plan_equal(&p, &q));
	char buf[256];
	mesh_plan_describe(&q, buf, sizeof(buf));
	assert_string_equal(buf, "solo on host a1a1a1a1: layers 0-27 (14.6 GB)");
	/* headroom: 14.6 GB needs 16.06 GB of budget by default */
	v[0].budget = 16060000000ull;
	assert_int_equal(mesh_plan_build(&q, &m, v, 1, 0, NULL), 0);
	assert_int_equal(q.status, MESH_PLAN_OK);
	v[0].budget -= 1;
	assert_int_equal(mesh_plan_build(&q, &m, v, 1, 0, NULL), 0);
	assert_int_equal(q.status, MESH_PLAN_NO_FIT);
	assert_int_equal(q.need_bytes, 16060000000ull);
	assert_int_equal(q.have_bytes, 16060000000ull - 1);
	/* the headroom is a parameter */
	struct mesh_plan_params pp = {.headroom_permille = 1000};
	assert_int_equal(mesh_plan_build(&q, &m, v, 1, 0, &pp), 0);
	assert_int_equal(q.status, MESH_PLAN_OK);
}

static void test_heterogeneous_103_51(void **state)
{
	(void)state;
	/* 28 layers x 4 GB + 1 GB embedding + 1 GB head = 114 GB; x1.1 = 125.4 > 103 */
	struct mesh_plan_model m = uniform(28, 4 * GB, GB, GB);
	struct mesh_plan_node v[2] = {node(0xa1, 103 * GB, 0), node(0xc3, 51 * GB, 12)};
	size_t h;
	assert_int_equal(mesh_plan_elect(v, 2, &h), 0);
	assert_int_equal(h, 0);
	struct mesh_plan p;
	struct mesh_plan_params pp = {.epoch = 7};
	assert_int_equal(mesh_plan_build(&p, &m, v, 2, h, &pp), 0);
	check_ok(&p, &m, MESH_PLAN_HEADROOM_DEFAULT);
	assert_int_equal(p.epoch, 7);
	assert_int_equal(p.n_stages, 2);
	/* bytes share 103/154 = 0.669 of 114 GB = 76.2 GB -> 19 layers (77 GB) */
	assert_int_equal(p.stages[0].layer_end, 19);
	double share = (double)p.stages[0].bytes / (double)p.model_bytes;
	assert_true(fabs(share - 103.0 / 154.0) < 0.02);
	char buf[256];
	mesh_plan_describe(&p, buf, sizeof(buf));
	assert_string_equal(buf, "host a1a1a1a1: layers 0-18 (77.0 GB), "
	                         "worker c3c3c3c3: layers 19-27 (37.0 GB)");
	/* the peer with the bigger budget would be host; same split reversed */
	v[1].budget = 206 * GB;
	v[0].rtt_us = 12000;
	assert_int_equal(mesh_plan_elect(v, 2, &h), 0);
	assert_int_equal(h, 1);
	pp.force_split = true;
	assert_int_equal(mesh_plan_build(&p, &m, v, 2, h, &pp), 0);
	check_ok(&p, &m, MESH_PLAN_HEADROOM_DEFAULT);
	assert_int_equal(p.stages[0].id[0], 0xc3);
	assert_int_equal(p.stages[0].layer_end, 19);
}

static void test_kv_counts(void **state)
{
	(void)state;
	struct mesh_plan_model m = uniform(10, GB, 0, 0);
	struct mesh_plan_node v[1] = {node(1, 11 * GB, 0)};
	struct mesh_plan p;
	assert_int_equal(mesh_plan_build(&p, &m, v, 1, 0, NULL), 0);
	assert_int_equal(p.status, MESH_PLAN_OK);
	m.kv_bytes_per_token = 1000;
	m.n_ctx = 1000; /* +1 MB per layer */
	assert_int_equal(mesh_plan_build(&p, &m, v, 1, 0, NULL), 0);
	assert_int_equal(p.status, MESH_PLAN_NO_FIT);
	assert_int_equal(p.model_bytes, 10 * GB + 10 * 1000000ull);
	/* KV overflow is refused, not wrapped */
	m.kv_bytes_per_token = UINT64_MAX / 2;
	assert_int_equal(mesh_plan_build(&p, &m, v, 1, 0, NULL), ML_ERR_INVALID);
}

static void test_rtt_gate(void **state)
{
	(void)state;
	struct mesh_plan_model m = uniform(20, 5 * GB, 0, 0); /* 100 GB -> 110 GB */
	struct mesh_plan_node v[4] = {node(0x10, 60 * GB, 0), node(0x20, 200 * GB, 120),
	                              node(0x30, 60 * GB, 80), node(0x40, 60 * GB, 81)};
	v[1].has_model = true;
	struct mesh_plan p;
	/* host is 0x20 by budget; build from 0x10's point of view instead: the
	 * gate uses RTT to the host given */
	assert_int_equal(mesh_plan_build(&p, &m, v, 4, 0, NULL), 0);
	check_ok(&p, &m, MESH_PLAN_HEADROOM_DEFAULT);
	assert_int_equal(p.n_stages, 2);
	assert_int_equal(p.stages[1].id[0], 0x30); /* exactly 80 ms is allowed */
	assert_int_equal(p.n_excluded, 2);
	assert_int_equal(p.excluded[0].id[0], 0x20);
	assert_int_equal(p.excluded[0].reason, MESH_PLAN_EXCL_RTT_HIGH);
	assert_int_equal(p.excluded[1].id[0], 0x40);
	assert_int_equal(p.excluded[1].reason, MESH_PLAN_EXCL_RTT_HIGH);
	char buf[512];
	mesh_plan_describe(&p, buf, sizeof(buf));
	assert_non_null(strstr(buf, "; not used: 20202020 (RTT too high, 120 ms), "
	                            "40404040 (RTT too high, 81 ms)"));
	/* only far peers: not enough memory, and they do not count as "have" */
	v[2].rtt_us = 200000;
	assert_int_equal(mesh_plan_build(&p, &m, v, 4, 0, NULL), 0);
	assert_int_equal(p.status, MESH_PLAN_NO_FIT);
	assert_int_equal(p.have_bytes, 60 * GB);
	/* the gate is a parameter; unknown RTT is never used */
	struct mesh_plan_params pp = {.rtt_max_us = 250000};
	v[3].rtt_us = MESH_PLAN_RTT_UNKNOWN;
	assert_int_equal(mesh_plan_build(&p, &m, v, 4, 0, &pp), 0);
	check_ok(&p, &m, MESH_PLAN_HEADROOM_DEFAULT);
	assert_int_equal(p.stages[1].id[0], 0x20); /* 120 ms now nearer than 200 ms */
	assert_int_equal(p.n_excluded, 1);
	assert_int_equal(p.excluded[0].reason, MESH_PLAN_EXCL_RTT_UNKNOWN);
}

static void test_peers_by_rtt_only_as_needed(void **state)
{
	(void)state;
	struct mesh_plan_model m = uniform(70, GB, 0, 0); /* 70 GB -> 77 GB */
	struct mesh_plan_node v[4] = {node(1, 50 * GB, 0), node(2, 100 * GB, 10),
	                              node(3, 30 * GB, 5), node(4, 40 * GB, 5)};
	struct mesh_plan p;
	/* nearest first: 3 and 4 tie on RTT, id 3 first; 50 + 30 = 80 >= 77 */
	assert_int_equal(mesh_plan_build(&p, &m, v, 4, 0, NULL), 0);
	check_ok(&p, &m, MESH_PLAN_HEADROOM_DEFAULT);
	assert_int_equal(p.n_stages, 2);
	assert_int_equal(p.stages[1].id[0], 3);
	/* more layers: 3 nodes */
	m.n_layer = 100; /* 110 GB */
	assert_int_equal(mesh_plan_build(&p, &m, v, 4, 0, NULL), 0);
	check_ok(&p, &m, MESH_PLAN_HEADROOM_DEFAULT);
	assert_int_equal(p.n_stages, 3);
	assert_int_equal(p.stages[1].id[0], 3);
	assert_int_equal(p.stages[2].id[0], 4);
	/* too much: all four (220 GB of budget) */
	m.n_layer = 190;
	assert_int_equal(mesh_plan_build(&p, &m, v, 4, 0, NULL), 0);
	check_ok(&p, &m, MESH_PLAN_HEADROOM_DEFAULT);
	assert_int_equal(p.n_stages, 4);
	assert_int_equal(p.stages[3].id[0], 2);
}

static void test_too_little_memory(void **state)
{
	(void)state;
	struct mesh_plan_model m = uniform(50, GB, 0, 0); /* 50 GB -> 55 GB */
	struct mesh_plan_node v[3] = {node(1, 40 * GB, 0), node(2, 11500000000ull, 3),
	                              node(3, 500 * GB, 3)};
	v[2].client = true;
	struct mesh_plan p;
	assert_int_equal(mesh_plan_build(&p, &m, v, 3, 0, NULL), 0);
	assert_int_equal(p.status, MESH_PLAN_NO_FIT);
	assert_int_equal(p.n_stages, 0);
	assert_int_equal(p.need_bytes, 55 * GB);
	assert_int_equal(p.have_bytes, 51500000000ull);
	char buf[256];
	mesh_plan_describe(&p, buf, sizeof(buf));
	assert_string_equal(buf, "Waiting for more peers — need 55.0 GB, have 51.5 GB; "
	                         "not used: 03030303 (lite client)");
	/* a peer joins: it fits now */
	struct mesh_plan_node w[4] = {v[0], v[1], v[2], node(4, 20 * GB, 9)};
	struct mesh_plan q;
	assert_int_equal(mesh_plan_build(&q, &m, w, 4, 0, NULL), 0);
	check_ok(&q, &m, MESH_PLAN_HEADROOM_DEFAULT);
	assert_false(mesh_plan_equal(&p, &q));
	/* small describe buffers truncate but report the full length */
	size_t need = mesh_plan_describe(&p, NULL, 0);
	assert_int_equal(need, strlen(buf));
	char small[10];
	assert_int_equal(mesh_plan_describe(&p, small, sizeof(small)), need);
	assert_int_equal(strlen(small), 9);
}

static void test_excluded_reasons(void **state)
{
	(void)state;
	struct mesh_plan_model m = uniform(10, GB, 0, 0);
	struct mesh_plan_node v[5] = {node(1, 8 * GB, 0), node(5, 100 * GB, 1),
	                              node(4, 100 * GB, 1), node(3, GB, 1), node(2, 100 * GB, 1)};
	v[1].client = true;
	v[2].has_model = false;
	/* 3 has 1 GB: below one layer with headroom (1.1 GB) */
	struct mesh_plan p;
	assert_int_equal(mesh_plan_build(&p, &m, v, 5, 0, NULL), 0);
	check_ok(&p, &m, MESH_PLAN_HEADROOM_DEFAULT);
	assert_int_equal(p.n_stages, 2);
	assert_int_equal(p.stages[1].id[0], 2);
	assert_int_equal(p.n_excluded, 3);
	assert_int_equal(p.excluded[0].id[0], 3);
	assert_int_equal(p.excluded[0].reason, MESH_PLAN_EXCL_TOO_SMALL);
	assert_int_equal(p.excluded[1].reason, MESH_PLAN_EXCL_NO_MODEL);
	assert_int_equal(p.excluded[2].reason, MESH_PLAN_EXCL_CLIENT);
	assert_string_equal(mesh_plan_excl_name(MESH_PLAN_EXCL_TOO_SMALL),
	                    "budget below one layer");
	assert_string_equal(mesh_plan_excl_name(99), "?");
}

static void test_manual_ratios(void **state)
{
	(void)state;
	struct mesh_plan_model m = uniform(28, GB, 0, 0);
	struct mesh_plan_node v[3] = {node(1, 100 * GB, 0), node(2, 100 * GB, 9),
	                              node(3, 100 * GB, 4)};
	double r[3];
	assert_int_equal(mesh_plan_parse_ratios("3,1", r, 3), 2);
	struct mesh_plan_params pp = {.ratios = r, .n_ratios = 2};
	struct mesh_plan p;
	/* fits solo, but ratios ask for two stages: host + nearest (3) */
	assert_int_equal(mesh_plan_build(&p, &m, v, 3, 0, &pp), 0);
	check_ok(&p, &m, MESH_PLAN_HEADROOM_DEFAULT);
	assert_int_equal(p.n_stages, 2);
	assert_int_equal(p.stages[0].layer_end, 21);
	assert_int_equal(p.stages[1].id[0], 3);
	/* three ratios, fractions */
	assert_int_equal(mesh_plan_parse_ratios("0.5,0.25,0.25", r, 3), 3);
	pp.n_ratios = 3;
	assert_int_equal(mesh_plan_build(&p, &m, v, 3, 0, &pp), 0);
	check_ok(&p, &m, MESH_PLAN_HEADROOM_DEFAULT);
	assert_int_equal(p.stages[0].layer_end, 14);
	assert_int_equal(p.stages[1].layer_end, 21);
	assert_int_equal(p.stages[2].id[0], 2);
	/* one ratio = solo */
	pp.n_ratios = 1;
	assert_int_equal(mesh_plan_build(&p, &m, v, 3, 0, &pp), 0);
	assert_int_equal(p.n_stages, 1);
	/* more ratios than usable nodes: wait */
	v[1].rtt_us = 100000;
	pp.n_ratios = 3;
	assert_int_equal(mesh_plan_build(&p, &m, v, 3, 0, &pp), 0);
	assert_int_equal(p.status, MESH_PLAN_TOO_FEW_NODES);
	assert_int_equal(p.n_nodes_usable, 2);
	assert_int_equal(p.n_stages, 0);
	char buf[256];
	mesh_plan_describe(&p, buf, sizeof(buf));
	assert_string_equal(buf, "Waiting for more peers — the tensor split asks for 3 nodes, "
	                         "2 usable; not used: 02020202 (RTT too high, 100 ms)");
	/* a ratio that overloads a node: NO_FIT naming the stage */
	v[1].rtt_us = 9000;
	v[2].budget = 5 * GB;
	r[0] = 1;
	r[1] = 1;
	pp.n_ratios = 2; /* stage 1 = node 3 with 14 GB of layers on 5 GB */
	assert_int_equal(mesh_plan_build(&p, &m, v, 3, 0, &pp), 0);
	assert_int_equal(p.status, MESH_PLAN_NO_FIT);
	assert_int_equal(p.bad_stage, 1);
	assert_int_equal(p.need_bytes, 15400000000ull);
	assert_int_equal(p.have_bytes, 5 * GB);
	mesh_plan_describe(&p, buf, sizeof(buf));
	assert_non_null(strstr(buf, "stage 1 needs 15.4 GB, has 5.0 GB"));
}

static void test_manual_ratios_invalid(void **state)
{
	(void)state;
	double r[4];
	assert_int_equal(mesh_plan_parse_ratios("", r, 4), ML_ERR_INVALID);
	assert_int_equal(mesh_plan_parse_ratios("1,", r, 4), ML_ERR_INVALID);
	assert_int_equal(mesh_plan_parse_ratios(",1", r, 4), ML_ERR_INVALID);
	assert_int_equal(mesh_plan_parse_ratios("1,,1", r, 4), ML_ERR_INVALID);
	assert_int_equal(mesh_plan_parse_ratios("1;1", r, 4), ML_ERR_INVALID);
	assert_int_equal(mesh_plan_parse_ratios("0,1", r, 4), ML_ERR_INVALID);
	assert_int_equal(mesh_plan_parse_ratios("-1,2", r, 4), ML_ERR_INVALID);
	assert_int_equal(mesh_plan_parse_ratios("nan,1", r, 4), ML_ERR_INVALID);
	assert_int_equal(mesh_plan_parse_ratios("inf", r, 4), ML_ERR_INVALID);
	assert_int_equal(mesh_plan_parse_ratios("1e300", r, 4), ML_ERR_INVALID);
	assert_int_equal(mesh_plan_parse_ratios("1x", r, 4), ML_ERR_INVALID);
	assert_int_equal(mesh_plan_parse_ratios("1,1,1,1,1", r, 4), ML_ERR_INVALID);
	assert_int_equal(mesh_plan_parse_ratios("1,1,1,1", r, 4), 4);

	struct mesh_plan_model m = uniform(3, GB, 0, 0);
	struct mesh_plan_node v[5] = {node(1, 100 * GB, 0), node(2, 100 * GB, 1),
	                              node(3, 100 * GB, 1), node(4, 100 * GB, 1),
	                              node(5, 100 * GB, 1)};
	struct mesh_plan p;
	struct mesh_plan_params pp = {.ratios = r, .n_ratios = 4};
	/* more ratios than layers */
	assert_int_equal(mesh_plan_build(&p, &m, v, 5, 0, &pp), ML_ERR_INVALID);
	double bad[2] = {1, 0};
	pp.ratios = bad;
	pp.n_ratios = 2;
	assert_int_equal(mesh_plan_build(&p, &m, v, 5, 0, &pp), ML_ERR_INVALID);
	bad[1] = NAN;
	assert_int_equal(mesh_plan_build(&p, &m, v, 5, 0, &pp), ML_ERR_INVALID);
	pp.ratios = NULL;
	assert_int_equal(mesh_plan_build(&p, &m, v, 5, 0, &pp), ML_ERR_INVALID);
	pp.n_ratios = MESH_PLAN_MAX_STAGES + 1;
	pp.ratios = r;
	assert_int_equal(mesh_plan_build(&p, &m, v, 5, 0, &pp), ML_ERR_INVALID);
}

static void test_invalid_input(void **state)
{
	(void)state;
	struct mesh_plan_model m = uniform(4, GB, 0, 0);
	struct mesh_plan_node v[2] = {node(1, 100 * GB, 0), node(1, 10 * GB, 1)};
	struct mesh_plan p;
	assert_int_equal(mesh_plan_build(&p, &m, v, 2, 0, NULL), ML_ERR_INVALID); /* duplicate id */
	v[1].id[0] = 2;
	assert_int_equal(mesh_plan_build(&p, &m, v, 2, 0, NULL), 0);
	assert_int_equal(mesh_plan_build(&p, &m, v, 2, 2, NULL), ML_ERR_INVALID); /* host index */
	v[1].client = true;
	assert_int_equal(mesh_plan_build(&p, &m, v, 2, 1, NULL), ML_ERR_INVALID); /* client host */
	m.n_layer = 0;
	assert_int_equal(mesh_plan_build(&p, &m, v, 2, 0, NULL), ML_ERR_INVALID);
	m.n_layer = MESH_PLAN_MAX_LAYERS + 1;
	assert_int_equal(mesh_plan_build(&p, &m, v, 2, 0, NULL), ML_ERR_INVALID);
	m.n_layer = 4;
	m.layer_bytes = MESH_PLAN_MAX_BYTES; /* 4 x the cap */
	assert_int_equal(mesh_plan_build(&p, &m, v, 2, 0, NULL), ML_ERR_INVALID);
	m.layer_bytes = GB;
	m.embd_bytes = UINT64_MAX;
	assert_int_equal(mesh_plan_build(&p, &m, v, 2, 0, NULL), ML_ERR_INVALID);
	m.embd_bytes = 0;
	struct mesh_plan_params pp = {.headroom_permille = 999};
	assert_int_equal(mesh_plan_build(&p, &m, v, 2, 0, &pp), ML_ERR_INVALID);
	pp.headroom_permille = MESH_PLAN_HEADROOM_MAX + 1;
	assert_int_equal(mesh_plan_build(&p, &m, v, 2, 0, &pp), ML_ERR_INVALID);
	pp.headroom_permille = MESH_PLAN_HEADROOM_MAX;
	assert_int_equal(mesh_plan_build(&p, &m, v, 2, 0, &pp), 0);
	assert_int_equal(mesh_plan_build(NULL, &m, v, 2, 0, NULL), ML_ERR_INVALID);
	assert_int_equal(mesh_plan_build(&p, NULL, v, 2, 0, NULL), ML_ERR_INVALID);
}

static void test_force_split(void **state)
{
	(void)state;
	struct mesh_plan_model m = uniform(30, GB, 0, 0);
	struct mesh_plan_node v[3] = {node(1, 100 * GB, 0), node(2, 50 * GB, 3),
	                              node(3, 50 * GB, 2)};
	struct mesh_plan_params pp = {.force_split = true};
	struct mesh_plan p;
	assert_int_equal(mesh_plan_build(&p, &m, v, 3, 0, &pp), 0);
	check_ok(&p, &m, MESH_PLAN_HEADROOM_DEFAULT);
	assert_int_equal(p.n_stages, 2);
	assert_int_equal(p.stages[1].id[0], 3);
	assert_int_equal(p.stages[0].layer_end, 20); /* 100:50 */
	assert_int_equal(p.notes, 0);
	/* no usable peer: solo with a note */
	v[1].rtt_us = v[2].rtt_us = 500000;
	assert_int_equal(mesh_plan_build(&p, &m, v, 3, 0, &pp), 0);
	check_ok(&p, &m, MESH_PLAN_HEADROOM_DEFAULT);
	assert_int_equal(p.n_stages, 1);
	assert_true(p.notes & MESH_PLAN_NOTE_SPLIT_UNAVAILABLE);
	char buf[256];
	mesh_plan_describe(&p, buf, sizeof(buf));
	assert_non_null(strstr(buf, "split asked for, but no peer can take layers"));
	/* one layer cannot be split */
	m.n_layer = 1;
	v[1].rtt_us = 3000;
	assert_int_equal(mesh_plan_build(&p, &m, v, 3, 0, &pp), 0);
	check_ok(&p, &m, MESH_PLAN_HEADROOM_DEFAULT);
	assert_int_equal(p.n_stages, 1);
	assert_true(p.notes & MESH_PLAN_NOTE_SPLIT_UNAVAILABLE);
}

static void test_tiny_models(void **state)
{
	(void)state;
	/* 2 layers, three nodes needed by memory: impossible (a stage per layer at most) */
	struct mesh_plan_model m = uniform(2, 10 * GB, 0, 0);
	struct mesh_plan_node v[3] = {node(1, 8 * GB, 0), node(2, 8 * GB, 1), node(3, 8 * GB, 2)};
	struct mesh_plan p;
	assert_int_equal(mesh_plan_build(&p, &m, v, 3, 0, NULL), 0);
	assert_int_equal(p.status, MESH_PLAN_NO_FIT); /* each layer is 11 GB with headroom */
	/* 3 layers of 5 GB on 3 nodes of 6 GB: one layer each */
	m = uniform(3, 5 * GB, 0, 0);
	v[0].budget = v[1].budget = v[2].budget = 6 * GB;
	assert_int_equal(mesh_plan_build(&p, &m, v, 3, 0, NULL), 0);
	check_ok(&p, &m, MESH_PLAN_HEADROOM_DEFAULT);
	assert_int_equal(p.n_stages, 3);
	for (uint32_t s = 0; s < 3; s++)
		assert_int_equal(p.stages[s].layer_end - p.stages[s].layer_begin, 1);
	/* 2 layers on 3 small nodes: budgets add up but layers don't divide */
	m = uniform(2, 5 * GB, 0, 0);
	v[0].budget = v[1].budget = v[2].budget = 4 * GB;
	assert_int_equal(mesh_plan_build(&p, &m, v, 3, 0, NULL), 0);
	assert_int_equal(p.status, MESH_PLAN_NO_FIT); /* 4 GB < 5.5 GB */
	/* the embedding alone is too big for the host */
	m = uniform(4, GB, 50 * GB, GB);
	v[0].budget = 40 * GB;
	v[1].budget = v[2].budget = 100 * GB;
	assert_int_equal(mesh_plan_build(&p, &m, v, 3, 0, NULL), 0);
	assert_int_equal(p.status, MESH_PLAN_NO_FIT);
	assert_true(p.notes & MESH_PLAN_NOTE_GRANULARITY);
	char buf[256];
	mesh_plan_describe(&p, buf, sizeof(buf));
	assert_non_null(strstr(buf, "the layers do not divide"));
}

static void test_rounding_avoids_overfill(void **state)
{
	(void)state;
	/* layers 1,1,1,5,1,1 GB; host 8 GB, peer 6.9 GB (headroom 1.0).
	 * The proportional boundary (5.37 GB) rounds to 3 layers, which would put
	 * 7 GB on the 6.9 GB peer; 4 layers on the host fits both. */
	uint64_t lb[6] = {GB, GB, GB, 5 * GB, GB, GB};
	struct mesh_plan_model m = uniform(6, 0, 0, 0);
	m.layer_bytes_v = lb;
	struct mesh_plan_node v[2] = {node(1, 8 * GB, 0), node(2, 6900000000ull, 1)};
	struct mesh_plan_params pp = {.headroom_permille = 1000};
	struct mesh_plan p;
	assert_int_equal(mesh_plan_build(&p, &m, v, 2, 0, &pp), 0);
	check_ok(&p, &m, 1000);
	assert_int_equal(p.stages[0].layer_end, 4);
	/* with a 7 GB peer the nearer boundary (3 layers) is chosen */
	v[1].budget = 7 * GB;
	assert_int_equal(mesh_plan_build(&p, &m, v, 2, 0, &pp), 0);
	check_ok(&p, &m, 1000);
	assert_int_equal(p.stages[0].layer_end, 3);
}

/* Smallest xorshift for reproducible random cases. */
static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* True when some contiguous split of |m| over stages with capacities
 * |caps| exists (brute force over every boundary choice). */
static bool brute_feasible(const uint64_t *lb, uint32_t n, uint64_t embd, uint64_t out,
                           const uint64_t *caps, uint32_t S, uint32_t b, uint32_t s)
{
	if (s == S - 1) {
		if (b >= n)
			return false;
		uint64_t v = (s == 0 ? embd : 0) + out;
		for (uint32_t j = b; j < n; j++)
			v += lb[j];
		return v <= caps[s];
	}
	uint64_t v = s == 0 ? embd : 0;
	for (uint32_t e = b + 1; e < n; e++) {
		v += lb[e - 1];
		if (v > caps[s])
			break;
		if (brute_feasible(lb, n, embd, out, caps, S, e, s + 1))
			return true;
	}
	return false;
}

static void test_random_against_brute_force(void **state)
{
	(void)state;
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	for (int it = 0; it < 3000; it++) {
		uint32_t n = 1 + (uint32_t)(rnd(&seed) % 9);
		uint64_t lb[9];
		for (uint32_t j = 0; j < n; j++)
			lb[j] = 1 + rnd(&seed) % 10;
		struct mesh_plan_model m = uniform(n, 0, 0, 0);
		m.layer_bytes_v = lb;
		m.embd_bytes = rnd(&seed) % 5;
		m.output_bytes = rnd(&seed) % 5;
		uint32_t nn = 1 + (uint32_t)(rnd(&seed) % 4);
		struct mesh_plan_node v[4];
		for (uint32_t i = 0; i < nn; i++)
			v[i] =
			    node((uint8_t)(i + 1), 1 + rnd(&seed) % 40, (uint32_t)(rnd(&seed) % 3));
		struct mesh_plan_params pp = {.headroom_permille = 1000};
		size_t h;
		assert_int_equal(mesh_plan_elect(v, nn, &h), 0);
		struct mesh_plan p;
		assert_int_equal(mesh_plan_build(&p, &m, v, nn, h, &pp), 0);
		if (p.status == MESH_PLAN_OK) {
			check_ok(&p, &m, 1000);
			continue;
		}
		/* NO_FIT: no prefix of the peers (by RTT, then id) can hold it */
		assert_int_equal(p.status, MESH_PLAN_NO_FIT);
		/* peers that cannot hold the smallest layer are skipped (they could
		 * never be a stage); the rest are taken by RTT, then id */
		uint64_t min_layer = UINT64_MAX;
		for (uint32_t j = 0; j < n; j++)
			min_layer = lb[j] < min_layer ? lb[j] : min_layer;
		const struct mesh_plan_node *order[4];
		uint32_t k = 0;
		order[k++] = &v[h];
		for (uint32_t rt = 0; rt < 3; rt++)
			for (uint32_t i = 0; i < nn; i++)
				if (i != h && v[i].rtt_us == rt * 1000 && v[i].budget >= min_layer)
					order[k++] = &v[i]; /* ids ascend with i */
		uint64_t caps[4];
		for (uint32_t S = 1; S <= k; S++) {
			for (uint32_t s = 0; s < S; s++)
				caps[s] = order[s]->budget;
			assert_false(
			    brute_feasible(lb, n, m.embd_bytes, m.output_bytes, caps, S, 0, 0));
		}
	}
}

static void shuffle(struct mesh_plan_node *v, size_t n, uint64_t *seed)
{
	for (size_t i = n; i > 1; i--) {
		size_t j = rnd(seed) % i;
		struct mesh_plan_node t = v[i - 1];
		v[i - 1] = v[j];
		v[j] = t;
	}
}

static void test_permutation_determinism(void **state)
{
	(void)state;
	uint64_t seed = 12345;
	for (int it = 0; it < 200; it++) {
		struct mesh_plan_node v[12];
		size_t n = 2 + rnd(&seed) % 11;
		for (size_t i = 0; i < n; i++) {
			v[i] = node((uint8_t)(0x10 + i), (1 + rnd(&seed) % 8) * 10 * GB,
			            (uint32_t)(rnd(&seed) % 120));
			v[i].id[5] = (uint8_t)rnd(&seed);
			if (rnd(&seed) % 7 == 0)
				v[i].client = true;
			if (rnd(&seed) % 9 == 0)
				v[i].has_model = false;
		}
		v[0].has_model = true;
		v[0].client = false;
		struct mesh_plan_model m =
		    uniform(32 + (uint32_t)(rnd(&seed) % 60), 2 * GB, GB, GB);
		struct mesh_plan_params pp = {.epoch = 3, .force_split = rnd(&seed) % 2};
		size_t h;
		assert_int_equal(mesh_plan_elect(v, n, &h), 0);
		struct mesh_plan *ref = malloc(sizeof(*ref)), *p = malloc(sizeof(*p));
		assert_int_equal(mesh_plan_build(ref, &m, v, n, h, &pp), 0);
		uint8_t host_id[NET_ID_LEN];
		memcpy(host_id, v[h].id, NET_ID_LEN);
		for (int r = 0; r < 5; r++) {
			shuffle(v, n, &seed);
			assert_int_equal(mesh_plan_elect(v, n, &h), 0);
			assert_memory_equal(v[h].id, host_id, NET_ID_LEN);
			assert_int_equal(mesh_plan_build(p, &m, v, n, h, &pp), 0);
			assert_true(mesh_plan_equal(ref, p));
			assert_memory_equal(ref, p, sizeof(*p));
		}
		free(ref);
		free(p);
	}
}

/* params.keep: the running plan's stages stay while they are usable, in
 * their pipeline order, whatever the RTTs of newcomers. */
static void test_keep_running_stages(void **state)
{
	(void)state;
	struct mesh_plan_model m = uniform(28, GB, GB, GB); /* 30 GB */
	struct mesh_plan_node v[3] = {node(0xa0, 20 * GB, 0), node(0xb0, 20 * GB, 5),
	                              node(0xc0, 20 * GB, 2)};
	struct mesh_plan *run = malloc(sizeof(*run)), *p = malloc(sizeof(*p));
	/* running: host + B (C was not there yet) */
	assert_int_equal(mesh_plan_build(run, &m, v, 2, 0, NULL), 0);
	assert_int_equal(run->n_stages, 2);
	assert_int_equal(run->stages[1].id[0], 0xb0);
	/* C joins, nearer: without keep the plan follows the RTT */
	assert_int_equal(mesh_plan_build(p, &m, v, 3, 0, NULL), 0);
	assert_int_equal(p->stages[1].id[0], 0xc0);
	assert_false(mesh_plan_equal(run, p));
	/* with keep: the same plan, whatever the order of the input */
	struct mesh_plan_params pp = {.keep = run->stages[1].id, .n_keep = 1};
	assert_int_equal(mesh_plan_build(p, &m, v, 3, 0, &pp), 0);
	assert_true(mesh_plan_equal(run, p));
	struct mesh_plan_node w[3] = {v[2], v[0], v[1]};
	assert_int_equal(mesh_plan_build(p, &m, w, 3, 1, &pp), 0);
	assert_true(mesh_plan_equal(run, p));
	/* a kept stage that is no longer usable (RTT over the gate) is replaced */
	v[1].rtt_us = 200000;
	assert_int_equal(mesh_plan_build(p, &m, v, 3, 0, &pp), 0);
	assert_int_equal(p->n_stages, 2);
	assert_int_equal(p->stages[1].id[0], 0xc0);
	v[1].rtt_us = 5000;
	/* a kept id that is not in the input is ignored */
	assert_int_equal(mesh_plan_build(p, &m, &v[0], 1, 0, &pp), 0);
	assert_int_equal(p->status, MESH_PLAN_NO_FIT);
	/* two kept stages keep their pipeline order, not the RTT order */
	struct mesh_plan_model big = uniform(40, GB, GB, GB); /* 42 GB: host + 2 */
	uint8_t keep[2 * NET_ID_LEN];
	memcpy(keep, v[2].id, NET_ID_LEN);
	memcpy(keep + NET_ID_LEN, v[1].id, NET_ID_LEN);
	struct mesh_plan_params p2 = {.keep = keep, .n_keep = 2};
	assert_int_equal(mesh_plan_build(p, &big, v, 3, 0, &p2), 0);
	assert_int_equal(p->n_stages, 3);
	assert_int_equal(p->stages[1].id[0], 0xc0);
	assert_int_equal(p->stages[2].id[0], 0xb0);
	memcpy(keep, v[1].id, NET_ID_LEN);
	memcpy(keep + NET_ID_LEN, v[2].id, NET_ID_LEN);
	assert_int_equal(mesh_plan_build(p, &big, v, 3, 0, &p2), 0);
	assert_int_equal(p->stages[1].id[0], 0xb0);
	assert_int_equal(p->stages[2].id[0], 0xc0);
	/* manual ratios keep the running stages too */
	double r[2] = {1, 1};
	struct mesh_plan_params p3 = {.keep = run->stages[1].id, .n_keep = 1, .ratios = r,
	                              .n_ratios = 2};
	assert_int_equal(mesh_plan_build(p, &m, v, 3, 0, &p3), 0);
	assert_int_equal(p->stages[1].id[0], 0xb0);
	/* bad keep lists */
	struct mesh_plan_params bad = {.keep = NULL, .n_keep = 1};
	assert_int_equal(mesh_plan_build(p, &m, v, 3, 0, &bad), ML_ERR_INVALID);
	bad.keep = keep;
	bad.n_keep = MESH_PLAN_MAX_STAGES + 1;
	assert_int_equal(mesh_plan_build(p, &m, v, 3, 0, &bad), ML_ERR_INVALID);
	free(run);
	free(p);
}

static void test_plan_equal(void **state)
{
	(void)state;
	struct mesh_plan_model m = uniform(28, 4 * GB, GB, GB);
	struct mesh_plan_node v[2] = {node(0xa1, 103 * GB, 0), node(0xc3, 51 * GB, 12)};
	struct mesh_plan a, b;
	struct mesh_plan_params pa = {.epoch = 1}, pb = {.epoch = 2};
	assert_int_equal(mesh_plan_build(&a, &m, v, 2, 0, &pa), 0);
	assert_int_equal(mesh_plan_build(&b, &m, v, 2, 0, &pb), 0);
	assert_true(mesh_plan_equal(&a, &b)); /* epoch ignored */
	m.kv_bytes_per_token = 1;
	m.n_ctx = 1;
	assert_int_equal(mesh_plan_build(&b, &m, v, 2, 0, &pb), 0);
	assert_true(mesh_plan_equal(&a, &b)); /* same layout, other bytes */
	v[1].budget = 80 * GB;
	assert_int_equal(mesh_plan_build(&b, &m, v, 2, 0, &pb), 0);
	assert_false(mesh_plan_equal(&a, &b)); /* boundary moved */
	b = a;
	b.stages[1].id[3] ^= 1;
	assert_false(mesh_plan_equal(&a, &b));
}

static void test_many_nodes_and_hostile_budgets(void **state)
{
	(void)state;
	size_t n = MESH_PLAN_MAX_NODES;
	struct mesh_plan_node *v = calloc(n + 1, sizeof(*v));
	for (size_t i = 0; i <= n; i++) {
		v[i] = node(0, GB, (uint32_t)(i % 90));
		v[i].id[0] = (uint8_t)(i >> 8);
		v[i].id[1] = (uint8_t)i;
	}
	/* a peer claiming 2^64 - 1 bytes is clamped, not overflowed */
	v[7].budget = UINT64_MAX;
	v[9].budget = UINT64_MAX;
	size_t h;
	assert_int_equal(mesh_plan_elect(v, n + 1, &h), ML_ERR_INVALID);
	assert_int_equal(mesh_plan_elect(v, n, &h), 0);
	assert_int_equal(h, 7); /* equal after clamping: lower id */
	struct mesh_plan_model m = uniform(200, 10 * GB, GB, GB);
	struct mesh_plan *p = malloc(sizeof(*p));
	assert_int_equal(mesh_plan_build(p, &m, v, n + 1, h, NULL), ML_ERR_INVALID);
	assert_int_equal(mesh_plan_build(p, &m, v, n, h, NULL), 0);
	check_ok(p, &m, MESH_PLAN_HEADROOM_DEFAULT);
	assert_int_equal(p->n_stages, 1); /* 2 PB "fits" the host */
	struct mesh_plan_params pp = {.force_split = true};
	assert_int_equal(mesh_plan_build(p, &m, v, n, h, &pp), 0);
	check_ok(p, &m, MESH_PLAN_HEADROOM_DEFAULT);
	assert_int_equal(p->n_stages, 2);
	/* honest budgets: 200 layers of 0.5 GB over 1 GB nodes (one layer each)
	 * would need more than MESH_PLAN_MAX_STAGES stages */
	v[7].budget = v[9].budget = GB;
	m = uniform(200, GB / 2, 0, 0);
	assert_int_equal(mesh_plan_elect(v, n, &h), 0);
	assert_int_equal(h, 0);
	assert_int_equal(mesh_plan_build(p, &m, v, n, h, NULL), 0);
	assert_int_equal(p->status, MESH_PLAN_NO_FIT);
	assert_true(p->notes & MESH_PLAN_NOTE_GRANULARITY);
	uint32_t far = 0;
	for (size_t i = 1; i < n; i++)
		far += i % 90 > 80;
	assert_int_equal(p->n_excluded, far);
	assert_int_equal(p->n_nodes_usable, n - far);
	/* 60 layers fit 60 nodes */
	m.n_layer = 60;
	assert_int_equal(mesh_plan_build(p, &m, v, n, h, NULL), 0);
	check_ok(p, &m, MESH_PLAN_HEADROOM_DEFAULT);
	assert_int_equal(p->n_stages, 60);
	free(p);
	free(v);
}

static void test_model_from_gguf(void **state)
{
	(void)state;
	struct gguf_file *gf;
	if (gguf_open(&gf, "models/stories260K.gguf") != 0) {
		skip(); /* run from the repository root */
		return;
	}
	uint64_t lb[8];
	struct mesh_plan_model m;
	assert_int_equal(mesh_plan_model_from_gguf(&m, gf, lb, 4, 2, 512), ML_ERR_RANGE);
	assert_int_equal(mesh_plan_model_from_gguf(&m, gf, lb, 8, 0, 512), ML_ERR_INVALID);
	assert_int_equal(mesh_plan_model_from_gguf(&m, gf, lb, 8, 2, 512), 0);
	/* 5 layers of q,k,v,o (64x64, 64x32 x2, 64x64), 3 FFN (64x172) and 2 norms, F32 */
	assert_int_equal(m.n_layer, 5);
	assert_ptr_equal(m.layer_bytes_v, lb);
	for (int j = 0; j < 5; j++)
		assert_int_equal(lb[j], 4 * (4096 + 2048 + 2048 + 4096 + 3 * 64 * 172 + 2 * 64));
	assert_int_equal(m.embd_bytes, 64 * 512 * 4);
	assert_int_equal(m.output_bytes, 64 * 512 * 4 + 64 * 4);
	/* (key 8 + value 8) x 4 KV heads x 2 bytes */
	assert_int_equal(m.kv_bytes_per_token, 128);
	assert_int_equal(m.n_ctx, 512);
	/* every byte of the file's tensors is counted once */
	uint64_t sum = 0;
	for (uint64_t i = 0; i < gguf_n_tensors(gf); i++)
		sum += gguf_tensor_at(gf, i)->n_bytes;
	uint64_t got = m.embd_bytes + m.output_bytes;
	for (int j = 0; j < 5; j++)
		got += lb[j];
	assert_int_equal(got, sum);
	/* and it plans: 1.2 MB of weights + 320 KB of KV on two 1 MB nodes */
	struct mesh_plan_node v[2] = {node(1, 1000000, 0), node(2, 1000000, 1)};
	struct mesh_plan p;
	assert_int_equal(mesh_plan_build(&p, &m, v, 2, 0, NULL), 0);
	check_ok(&p, &m, MESH_PLAN_HEADROOM_DEFAULT);
	assert_int_equal(p.n_stages, 2);
	gguf_close(gf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_elect),
	    cmocka_unit_test(test_elect_ties),
	    cmocka_unit_test(test_election_settle),
	    cmocka_unit_test(test_election_same_everywhere),
	    cmocka_unit_test(test_solo_and_single_node),
	    cmocka_unit_test(test_heterogeneous_103_51),
	    cmocka_unit_test(test_kv_counts),
	    cmocka_unit_test(test_rtt_gate),
	    cmocka_unit_test(test_peers_by_rtt_only_as_needed),
	    cmocka_unit_test(test_too_little_memory),
	    cmocka_unit_test(test_excluded_reasons),
	    cmocka_unit_test(test_manual_ratios),
	    cmocka_unit_test(test_manual_ratios_invalid),
	    cmocka_unit_test(test_invalid_input),
	    cmocka_unit_test(test_force_split),
	    cmocka_unit_test(test_tiny_models),
	    cmocka_unit_test(test_rounding_avoids_overfill),
	    cmocka_unit_test(test_random_against_brute_force),
	    cmocka_unit_test(test_permutation_determinism),
	    cmocka_unit_test(test_plan_equal),
	    cmocka_unit_test(test_keep_running_stages),
	    cmocka_unit_test(test_many_nodes_and_hostile_budgets),
	    cmocka_unit_test(test_model_from_gguf),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
