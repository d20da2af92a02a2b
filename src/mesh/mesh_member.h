/* Membership table (sans-I/O: no sockets, the caller passes the clock).
 *
 * One entry per node ever heard of, this node included. Each entry keeps
 * the newest signed announcement of that node (decoded and raw, for
 * relaying), its version (incarnation, seq) and a liveness state:
 *
 *   ALIVE --silence >= suspect_ns--> SUSPECT --silence >= dead_ns--> DEAD
 *     ^-------------- heard from directly ---------'
 *   ALIVE/SUSPECT --connection lost--> DEAD (at once)
 *   any --signed PEER_LEAVING (incarnation >= ours)--> LEFT (at once)
 *   DEAD/LEFT --announcement or connection with a higher incarnation--> ALIVE
 *   DEAD (same incarnation) --authenticated direct connection--> ALIVE
 *
 * Rules that keep stale gossip harmless: an announcement whose version is
 * not newer than the stored one is ignored; relayed news with the same
 * incarnation updates a DEAD entry's data but never revives it (only the
 * node itself, over a direct connection, or a new incarnation can); a LEFT
 * node comes back only with a new incarnation. DEAD and LEFT entries stay
 * as tombstones for forget_ns, then they are removed. At most
 * MESH_MAX_MEMBERS nodes are tracked. */
#ifndef MESH_MEMBER_H
#define MESH_MEMBER_H

#include "mesh/mesh_gossip.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MESH_MAX_MEMBERS 1024

enum mesh_state { MESH_ALIVE = 0, MESH_SUSPECT, MESH_DEAD, MESH_LEFT };
const char *mesh_state_name(int state); /* "alive", "suspect", "dead", "left" */

enum mesh_event {
	MESH_EV_JOINED = 0, /* first heard of */
	MESH_EV_UPDATED,    /* role, serving model, memory, models or addresses changed */
	MESH_EV_SUSPECT,    /* silent for suspect_ns */
	MESH_EV_ALIVE,      /* suspect or dead node heard from again (same incarnation) */
	MESH_EV_DEAD,       /* silent for dead_ns, or its connection closed */
	MESH_EV_LEFT,       /* announced it is leaving */
	MESH_EV_REJOINED,   /* came back with a new incarnation (restart) */
};
const char *mesh_event_name(int ev);

struct mesh_member {
	uint8_t id[NET_ID_LEN];
	bool self;
	enum mesh_state state;
	struct mesh_ann *ann; /* owned; NULL only for a tombstone known from PEER_LEAVING */
	uint8_t *raw;         /* owned signed announcement bytes */
	size_t raw_len;
	uint64_t inc, seq;      /* newest version seen */
	uint64_t last_heard_ns; /* last direct message or newer announcement */
	uint64_t state_since_ns;
	uint32_t rtt_us;       /* QUIC smoothed RTT to it, 0 = unknown */
	uint32_t ping_us;      /* last PING/PONG round trip (application level) */
	void *conn;            /* the caller's connection object, if any */
	uint64_t next_dial_ns; /* dialing state, owned by the caller */
	uint32_t dial_failures;
};

struct mesh_members;
typedef void (*mesh_member_event_fn)(struct mesh_members *t, struct mesh_member *m,
                                     enum mesh_event ev, void *user);

struct mesh_members {
	struct mesh_member **v;
	size_t n, cap;
	uint64_t suspect_ns, dead_ns, forget_ns;
	mesh_member_event_fn on_event; /* may be NULL */
	void *user;
};

/* Empty table; |self| is added later with mesh_members_set_self. */
void mesh_members_init(struct mesh_members *t, uint64_t suspect_ns, uint64_t dead_ns,
                       uint64_t forget_ns, mesh_member_event_fn fn, void *user);
/* Frees every entry. Accepts NULL. */
void mesh_members_free(struct mesh_members *t);

struct mesh_member *mesh_members_find(const struct mesh_members *t, const uint8_t id[NET_ID_LEN]);

/* Stores this node's own announcement (|ann| is copied, |raw| copied).
 * Returns 0 or ML_ERR_NOMEM. */
int mesh_members_set_self(struct mesh_members *t, const struct mesh_ann *ann, const uint8_t *raw,
                          size_t raw_len, uint64_t now);

enum mesh_apply_result {
	MESH_APPLY_STALE = 0,   /* old news, or about ourselves: drop it */
	MESH_APPLY_REFRESH = 1, /* newer, but only a heartbeat (seq, RTTs) */
	MESH_APPLY_CHANGE = 2,  /* newer and user-visible: a join, restart, revival or change */
};
/* Applies a verified announcement of another node. |ann| and |raw| are
 * copied. |direct| says it came over a connection with that very node.
 * Returns an enum mesh_apply_result (the caller relays REFRESH and CHANGE)
 * or ML_ERR_NOMEM. Fires JOINED, UPDATED, ALIVE, REJOINED. */
int mesh_members_apply(struct mesh_members *t, const struct mesh_ann *ann, const uint8_t *raw,
                       size_t raw_len, bool direct, uint64_t now);
/* A message arrived from |id| over its own authenticated connection. */
void mesh_members_heard(struct mesh_members *t, const uint8_t id[NET_ID_LEN], uint64_t now);
/* An authenticated connection with |id| (incarnation |inc| from its HELLO)
 * is up: a DEAD entry of the same or older incarnation comes back. */
void mesh_members_conn_up(struct mesh_members *t, const uint8_t id[NET_ID_LEN], uint64_t inc,
                          uint64_t now);
/* The (only) connection with |id| closed: ALIVE/SUSPECT -> DEAD. */
void mesh_members_conn_lost(struct mesh_members *t, const uint8_t id[NET_ID_LEN], uint64_t now);
/* Applies a verified PEER_LEAVING. Returns 1 when news (relay it), else 0. */
int mesh_members_leave(struct mesh_members *t, const struct mesh_leaving *l, uint64_t now);
/* Advances the timers: suspect, dead, and removes entries DEAD or LEFT
 * for forget_ns (member pointers are invalid afterwards). */
void mesh_members_tick(struct mesh_members *t, uint64_t now);
/* Nearest future time at which mesh_members_tick would change something
 * (UINT64_MAX if none). */
uint64_t mesh_members_next_deadline(const struct mesh_members *t);

#endif
