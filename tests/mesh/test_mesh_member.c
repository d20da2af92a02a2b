/* Tests for src/mesh/mesh_member.c with a fake clock: suspect and dead
 * timing, connection loss, stale gossip ignored, dead nodes not revived by
 * relayed news, leaving, rejoin with a higher incarnation, forgetting. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "mesh/mesh_member.h"

#define S 1000000000ull
#define MS 1000000ull

struct rec {
	int n;
	enum mesh_event ev[64];
};

static void on_ev(struct mesh_members *t, struct mesh_member *m, enum mesh_event ev, void *user)
{
	(void)t;
	(void)m;
	struct rec *r = user;
	if (r->n < 64)
		r->ev[r->n++] = ev;
}

static struct mesh_ann *ann(uint8_t who, uint64_t inc, uint64_t seq)
{
	static struct mesh_ann a;
	memset(&a, 0, sizeof(a));
	memset(a.id, who, NET_ID_LEN);
	a.incarnation = inc;
	a.seq = seq;
	a.vram_bytes = 1000;
	return &a;
}

static const uint8_t RAW[4] = {1, 2, 3, 4};

static uint8_t *idof(uint8_t who)
{
	static uint8_t id[NET_ID_LEN];
	memset(id, who, NET_ID_LEN);
	return id;
}

static void setup_table(struct mesh_members *t, struct rec *r)
{
	memset(r, 0, sizeof(*r));
	mesh_members_init(t, 4 * S, 10 * S, 60 * S, on_ev, r);
	assert_int_equal(mesh_members_set_self(t, ann(1, 5, 1), RAW, 4, 0), 0);
}

static void test_mesh_member_silence(void **state)
{
	(void)state;
	struct mesh_members t;
	struct rec r;
	setup_table(&t, &r);
	assert_int_equal(mesh_members_apply(&t, ann(2, 10, 1), RAW, 4, true, 0), MESH_APPLY_CHANGE);
	assert_int_equal(r.ev[0], MESH_EV_JOINED);
	struct mesh_member *m = mesh_members_find(&t, idof(2));
	assert_int_equal(m->state, MESH_ALIVE);
	assert_int_equal(mesh_members_next_deadline(&t), 4 * S);
	mesh_members_tick(&t, 4 * S - 1);
	assert_int_equal(m->state, MESH_ALIVE);
	mesh_members_tick(&t, 4 * S);
	assert_int_equal(m->state, MESH_SUSPECT);
	assert_int_equal(r.ev[1], MESH_EV_SUSPECT);
	/* heard again: alive */
	mesh_members_heard(&t, idof(2), 5 * S);
	assert_int_equal(m->state, MESH_ALIVE);
	assert_int_equal(r.ev[2], MESH_EV_ALIVE);
	/* silent 10 s: dead (through suspect) */
	mesh_members_tick(&t, 9 * S);
	assert_int_equal(m->state, MESH_SUSPECT);
	mesh_members_tick(&t, 15 * S - 1);
	assert_int_equal(m->state, MESH_SUSPECT);
	mesh_members_tick(&t, 15 * S);
	assert_int_equal(m->state, MESH_DEAD);
	assert_int_equal(r.ev[r.n - 1], MESH_EV_DEAD);
	/* a message now does not revive it (only a new connection does) */
	mesh_members_heard(&t, idof(2), 16 * S);
	assert_int_equal(m->state, MESH_DEAD);
	/* the self entry never changes */
	assert_int_equal(mesh_members_find(&t, idof(1))->state, MESH_ALIVE);
	/* forgotten after forget_ns */
	mesh_members_tick(&t, 75 * S - 1);
	assert_non_null(mesh_members_find(&t, idof(2)));
	mesh_members_tick(&t, 75 * S);
	assert_null(mesh_members_find(&t, idof(2)));
	assert_int_equal(t.n, 1);
	assert_int_equal(mesh_members_next_deadline(&t), UINT64_MAX);
	/* then even a lower incarnation (clock went backwards) can join again */
	assert_int_equal(mesh_members_apply(&t, ann(2, 3, 1), RAW, 4, true, 80 * S),
	                 MESH_APPLY_CHANGE);
	assert_int_equal(r.ev[r.n - 1], MESH_EV_JOINED);
	mesh_members_free(&t);
}

static void test_mesh_member_conn_lost_and_stale(void **state)
{
	(void)state;
	struct mesh_members t;
	struct rec r;
	setup_table(&t, &r);
	mesh_members_apply(&t, ann(2, 10, 5), RAW, 4, true, 0);
	struct mesh_member *m = mesh_members_find(&t, idof(2));
	/* older and equal versions are stale */
	assert_int_equal(mesh_members_apply(&t, ann(2, 10, 4), RAW, 4, false, 1 * S), 0);
	assert_int_equal(mesh_members_apply(&t, ann(2, 10, 5), RAW, 4, false, 1 * S), 0);
	assert_int_equal(mesh_members_apply(&t, ann(2, 9, 99), RAW, 4, false, 1 * S), 0);
	assert_int_equal(m->last_heard_ns, 0); /* stale news is not a sign of life */
	/* newer: applied, an UPDATED only when something user-visible changed */
	int before = r.n;
	assert_int_equal(mesh_members_apply(&t, ann(2, 10, 6), RAW, 4, false, 1 * S),
	                 MESH_APPLY_REFRESH);
	assert_int_equal(r.n, before);
	struct mesh_ann *a = ann(2, 10, 7);
	a->vram_bytes = 5;
	assert_int_equal(mesh_members_apply(&t, a, RAW, 4, false, 1 * S), MESH_APPLY_CHANGE);
	assert_int_equal(r.ev[r.n - 1], MESH_EV_UPDATED);
	/* connection closed: dead at once */
	mesh_members_conn_lost(&t, idof(2), 2 * S);
	assert_int_equal(m->state, MESH_DEAD);
	assert_int_equal(r.ev[r.n - 1], MESH_EV_DEAD);
	/* stale and even newer relayed news of the same incarnation leave it dead */
	assert_int_equal(mesh_members_apply(&t, ann(2, 10, 7), RAW, 4, false, 3 * S), 0);
	assert_int_equal(mesh_members_apply(&t, ann(2, 10, 8), RAW, 4, false, 3 * S),
	                 MESH_APPLY_REFRESH);
	assert_int_equal(m->state, MESH_DEAD);
	/* from the node itself over a direct connection: back */
	assert_int_equal(mesh_members_apply(&t, ann(2, 10, 9), RAW, 4, true, 4 * S),
	                 MESH_APPLY_CHANGE);
	assert_int_equal(m->state, MESH_ALIVE);
	assert_int_equal(r.ev[r.n - 1], MESH_EV_ALIVE);
	/* a new authenticated connection revives a dead entry too */
	mesh_members_conn_lost(&t, idof(2), 5 * S);
	mesh_members_conn_up(&t, idof(2), 10, 6 * S);
	assert_int_equal(m->state, MESH_ALIVE);
	/* but not one of an older incarnation */
	mesh_members_conn_lost(&t, idof(2), 7 * S);
	mesh_members_conn_up(&t, idof(2), 9, 8 * S);
	assert_int_equal(m->state, MESH_DEAD);
	mesh_members_free(&t);
}

static void test_mesh_member_leave_and_rejoin(void **state)
{
	(void)state;
	struct mesh_members t;
	struct rec r;
	setup_table(&t, &r);
	mesh_members_apply(&t, ann(3, 10, 5), RAW, 4, true, 0);
	struct mesh_member *m = mesh_members_find(&t, idof(3));
	struct mesh_leaving l = {.incarnation = 10, .seq = 6};
	memcpy(l.id, idof(3), NET_ID_LEN);
	/* an old leave (older incarnation) is ignored */
	struct mesh_leaving old = l;
	old.incarnation = 9;
	assert_int_equal(mesh_members_leave(&t, &old, 1 * S), 0);
	assert_int_equal(m->state, MESH_ALIVE);
	assert_int_equal(mesh_members_leave(&t, &l, 1 * S), 1);
	assert_int_equal(m->state, MESH_LEFT);
	assert_int_equal(r.ev[r.n - 1], MESH_EV_LEFT);
	assert_int_equal(mesh_members_leave(&t, &l, 1 * S), 0); /* relayed copy: not news */
	/* gossip still in flight from before the goodbye cannot bring it back,
	 * not even a higher seq of the same incarnation, nor a connection */
	assert_int_equal(mesh_members_apply(&t, ann(3, 10, 5), RAW, 4, false, 2 * S), 0);
	assert_int_equal(mesh_members_apply(&t, ann(3, 10, 50), RAW, 4, true, 2 * S), 0);
	mesh_members_conn_up(&t, idof(3), 10, 2 * S);
	assert_int_equal(m->state, MESH_LEFT);
	/* ticks do not turn LEFT into DEAD */
	mesh_members_tick(&t, 30 * S);
	assert_int_equal(m->state, MESH_LEFT);
	/* restart: same id, higher incarnation */
	assert_int_equal(mesh_members_apply(&t, ann(3, 11, 1), RAW, 4, false, 31 * S),
	                 MESH_APPLY_CHANGE);
	assert_int_equal(m->state, MESH_ALIVE);
	assert_int_equal(r.ev[r.n - 1], MESH_EV_REJOINED);
	assert_int_equal(m->inc, 11);
	/* a dead node restarting comes back through its new connection even
	 * before its announcement arrives */
	mesh_members_conn_lost(&t, idof(3), 40 * S);
	mesh_members_conn_up(&t, idof(3), 12, 41 * S);
	assert_int_equal(m->state, MESH_ALIVE);
	assert_int_equal(r.ev[r.n - 1], MESH_EV_REJOINED);
	/* a restart noticed while it is still alive (announcement of a new
	 * incarnation) is a REJOINED too */
	assert_int_equal(mesh_members_apply(&t, ann(3, 13, 1), RAW, 4, false, 42 * S),
	                 MESH_APPLY_CHANGE);
	assert_int_equal(r.ev[r.n - 1], MESH_EV_REJOINED);
	/* announcements about ourselves are ignored */
	assert_int_equal(mesh_members_apply(&t, ann(1, 99, 99), RAW, 4, false, 42 * S), 0);
	mesh_members_free(&t);
}

static void test_mesh_member_many(void **state)
{
	(void)state;
	struct mesh_members t;
	struct rec r;
	setup_table(&t, &r);
	for (int i = 2; i < 200; i++)
		assert_int_equal(mesh_members_apply(&t, ann((uint8_t)i, 1, 1), RAW, 4, false, 0),
		                 MESH_APPLY_CHANGE);
	assert_int_equal(t.n, 199);
	for (int i = 2; i < 200; i += 2)
		mesh_members_heard(&t, idof((uint8_t)i), 8 * S);
	mesh_members_tick(&t, 11 * S);
	int dead = 0, alive = 0;
	for (size_t i = 0; i < t.n; i++)
		dead += t.v[i]->state == MESH_DEAD, alive += t.v[i]->state == MESH_ALIVE;
	assert_int_equal(dead, 99);
	assert_int_equal(alive, 100); /* 99 heard + self */
	/* the table is capped */
	int refused = 0;
	for (int i = 0; i < MESH_MAX_MEMBERS + 10; i++) {
		struct mesh_ann *a = ann(0, 1, 1);
		a->id[0] = (uint8_t)(i >> 8);
		a->id[1] = (uint8_t)i;
		a->id[2] = 0xee;
		refused += mesh_members_apply(&t, a, RAW, 4, false, 0) < 0;
	}
	assert_int_equal(t.n, MESH_MAX_MEMBERS);
	assert_true(refused > 0);
	mesh_members_free(&t);
	mesh_members_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_mesh_member_silence),
	    cmocka_unit_test(test_mesh_member_conn_lost_and_stale),
	    cmocka_unit_test(test_mesh_member_leave_and_rejoin),
	    cmocka_unit_test(test_mesh_member_many),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
