/* Membership table and failure detection (see mesh_member.h). */
#include "mesh/mesh_member.h"

#include "base/ml_err.h"

#include <stdlib.h>
#include <string.h>

const char *mesh_state_name(int s)
{
	switch (s) {
	case MESH_ALIVE:
		return "alive";
	case MESH_SUSPECT:
		return "suspect";
	case MESH_DEAD:
		return "dead";
	case MESH_LEFT:
		return "left";
	default:
		return "?";
	}
}

const char *mesh_event_name(int ev)
{
	static const char *const n[] = {"joined", "updated", "suspect", "alive",
	                                "dead",   "left",    "rejoined"};
	return ev >= 0 && ev <= MESH_EV_REJOINED ? n[ev] : "?";
}

void mesh_members_init(struct mesh_members *t, uint64_t suspect_ns, uint64_t dead_ns,
                       uint64_t forget_ns, mesh_member_event_fn fn, void *user)
{
	memset(t, 0, sizeof(*t));
	t->suspect_ns = suspect_ns;
	t->dead_ns = dead_ns;
	t->forget_ns = forget_ns;
	t->on_event = fn;
	t->user = user;
}

static void member_free(struct mesh_member *m)
{
	if (!m)
		return;
	free(m->ann);
	free(m->raw);
	free(m);
}

void mesh_members_free(struct mesh_members *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->n; i++)
		member_free(t->v[i]);
	free(t->v);
	t->v = NULL;
	t->n = t->cap = 0;
}

struct mesh_member *mesh_members_find(const struct mesh_members *t, const uint8_t id[NET_ID_LEN])
{
	for (size_t i = 0; i < t->n; i++)
		if (memcmp(t->v[i]->id, id, NET_ID_LEN) == 0)
			return t->v[i];
	return NULL;
}

static struct mesh_member *member_add(struct mesh_members *t, const uint8_t id[NET_ID_LEN])
{
	if (t->n >= MESH_MAX_MEMBERS) {
		ml_error(ML_ERR_RANGE, "mesh_members: table full (%d nodes)", MESH_MAX_MEMBERS);
		return NULL;
	}
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 8;
		struct mesh_member **v = realloc(t->v, cap * sizeof(*v));
		if (!v)
			return NULL;
		t->v = v;
		t->cap = cap;
	}
	struct mesh_member *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	memcpy(m->id, id, NET_ID_LEN);
	t->v[t->n++] = m;
	return m;
}

/* Replaces the stored announcement. */
static int member_store(struct mesh_member *m, const struct mesh_ann *ann, const uint8_t *raw,
                        size_t raw_len)
{
	struct mesh_ann *a = m->ann ? m->ann : malloc(sizeof(*a));
	uint8_t *r = malloc(raw_len ? raw_len : 1);
	if (!a || !r) {
		if (a != m->ann)
			free(a);
		free(r);
		return ML_ERR_NOMEM;
	}
	memcpy(a, ann, sizeof(*a));
	memcpy(r, raw, raw_len);
	m->ann = a;
	free(m->raw);
	m->raw = r;
	m->raw_len = raw_len;
	m->inc = ann->incarnation;
	m->seq = ann->seq;
	return 0;
}

static void emit(struct mesh_members *t, struct mesh_member *m, enum mesh_event ev)
{
	if (t->on_event)
		t->on_event(t, m, ev, t->user);
}

static void set_state(struct mesh_member *m, enum mesh_state s, uint64_t now)
{
	m->state = s;
	m->state_since_ns = now;
}

int mesh_members_set_self(struct mesh_members *t, const struct mesh_ann *ann, const uint8_t *raw,
                          size_t raw_len, uint64_t now)
{
	struct mesh_member *m = mesh_members_find(t, ann->id);
	if (!m && !(m = member_add(t, ann->id)))
		return ML_ERR_NOMEM;
	m->self = true;
	set_state(m, MESH_ALIVE, now);
	m->last_heard_ns = now;
	return member_store(m, ann, raw, raw_len);
}

/* Did anything a user cares about change (not seq or RTTs)? */
static bool significant_change(const struct mesh_ann *o, const struct mesh_ann *a)
{
	if (o->role != a->role || o->vram_bytes != a->vram_bytes || o->n_addrs != a->n_addrs ||
	    o->n_models != a->n_models || o->layer_start != a->layer_start ||
	    o->layer_end != a->layer_end || o->n_layers != a->n_layers ||
	    strcmp(o->serving, a->serving) || strcmp(o->fingerprint, a->fingerprint) ||
	    strcmp(o->source, a->source) || strcmp(o->extra, a->extra))
		return true;
	for (unsigned i = 0; i < a->n_addrs; i++)
		if (!mesh_addr_equal(&o->addrs[i], &a->addrs[i]))
			return true;
	for (unsigned i = 0; i < a->n_models; i++)
		if (strcmp(o->models[i].name, a->models[i].name) ||
		    o->models[i].bytes != a->models[i].bytes)
			return true;
	return false;
}

int mesh_members_apply(struct mesh_members *t, const struct mesh_ann *ann, const uint8_t *raw,
                       size_t raw_len, bool direct, uint64_t now)
{
	struct mesh_member *m = mesh_members_find(t, ann->id);
	if (m && m->self)
		return 0;
	if (!m) {
		if (!(m = member_add(t, ann->id)))
			return ML_ERR_NOMEM;
		if (member_store(m, ann, raw, raw_len))
			return ML_ERR_NOMEM;
		set_state(m, MESH_ALIVE, now);
		m->last_heard_ns = now;
		emit(t, m, MESH_EV_JOINED);
		return MESH_APPLY_CHANGE;
	}
	if (!mesh_version_newer(ann->incarnation, ann->seq, m->inc, m->seq))
		return 0;
	bool new_inc = ann->incarnation > m->inc;
	bool changed = !m->ann || significant_change(m->ann, ann);
	enum mesh_state old = m->state;
	if (old == MESH_LEFT && !new_inc)
		return 0; /* it said goodbye for this incarnation; this is leftover news */
	if (member_store(m, ann, raw, raw_len))
		return ML_ERR_NOMEM;
	if (old == MESH_DEAD || old == MESH_LEFT) {
		if (new_inc) {
			set_state(m, MESH_ALIVE, now);
			m->last_heard_ns = now;
			emit(t, m, MESH_EV_REJOINED);
			return MESH_APPLY_CHANGE;
		}
		if (direct) {
			set_state(m, MESH_ALIVE, now);
			m->last_heard_ns = now;
			emit(t, m, MESH_EV_ALIVE);
			return MESH_APPLY_CHANGE;
		}
		/* relayed news of the same incarnation; keep it dead */
		return MESH_APPLY_REFRESH;
	}
	m->last_heard_ns = now;
	if (new_inc) {
		set_state(m, MESH_ALIVE, now);
		emit(t, m, MESH_EV_REJOINED);
		return MESH_APPLY_CHANGE;
	}
	int rc = MESH_APPLY_REFRESH;
	if (old == MESH_SUSPECT) {
		set_state(m, MESH_ALIVE, now);
		emit(t, m, MESH_EV_ALIVE);
		rc = MESH_APPLY_CHANGE;
	}
	if (changed) {
		emit(t, m, MESH_EV_UPDATED);
		rc = MESH_APPLY_CHANGE;
	}
	return rc;
}

void mesh_members_heard(struct mesh_members *t, const uint8_t id[NET_ID_LEN], uint64_t now)
{
	struct mesh_member *m = mesh_members_find(t, id);
	if (!m || m->self)
		return;
	if (m->state == MESH_ALIVE || m->state == MESH_SUSPECT)
		m->last_heard_ns = now;
	if (m->state == MESH_SUSPECT) {
		set_state(m, MESH_ALIVE, now);
		emit(t, m, MESH_EV_ALIVE);
	}
}

void mesh_members_conn_up(struct mesh_members *t, const uint8_t id[NET_ID_LEN], uint64_t inc,
                          uint64_t now)
{
	struct mesh_member *m = mesh_members_find(t, id);
	if (!m || m->self)
		return;
	if (inc > m->inc && (m->state == MESH_DEAD || m->state == MESH_LEFT)) {
		/* a restart: its announcement (same incarnation) follows at once */
		m->inc = inc;
		m->seq = 0;
		set_state(m, MESH_ALIVE, now);
		m->last_heard_ns = now;
		emit(t, m, MESH_EV_REJOINED);
	} else if (m->state == MESH_DEAD && inc == m->inc) {
		set_state(m, MESH_ALIVE, now);
		m->last_heard_ns = now;
		emit(t, m, MESH_EV_ALIVE);
	} else if (m->state == MESH_ALIVE || m->state == MESH_SUSPECT) {
		mesh_members_heard(t, id, now);
	}
}

void mesh_members_conn_lost(struct mesh_members *t, const uint8_t id[NET_ID_LEN], uint64_t now)
{
	struct mesh_member *m = mesh_members_find(t, id);
	if (!m || m->self || (m->state != MESH_ALIVE && m->state != MESH_SUSPECT))
		return;
	set_state(m, MESH_DEAD, now);
	emit(t, m, MESH_EV_DEAD);
}

int mesh_members_leave(struct mesh_members *t, const struct mesh_leaving *l, uint64_t now)
{
	struct mesh_member *m = mesh_members_find(t, l->id);
	if (!m || m->self || m->state == MESH_LEFT || l->incarnation < m->inc)
		return 0;
	if (l->incarnation == m->inc && l->seq < m->seq)
		return 0;
	m->inc = l->incarnation;
	m->seq = l->seq;
	set_state(m, MESH_LEFT, now);
	emit(t, m, MESH_EV_LEFT);
	return 1;
}

void mesh_members_tick(struct mesh_members *t, uint64_t now)
{
	for (size_t i = 0; i < t->n; i++) {
		struct mesh_member *m = t->v[i];
		if (m->self)
			continue;
		uint64_t silent = now > m->last_heard_ns ? now - m->last_heard_ns : 0;
		if ((m->state == MESH_ALIVE || m->state == MESH_SUSPECT) && silent >= t->dead_ns) {
			set_state(m, MESH_DEAD, now);
			emit(t, m, MESH_EV_DEAD);
		} else if (m->state == MESH_ALIVE && silent >= t->suspect_ns) {
			set_state(m, MESH_SUSPECT, now);
			emit(t, m, MESH_EV_SUSPECT);
		}
	}
	/* Forget dead and departed nodes after forget_ns. By then no live node
	 * still circulates their announcements (only live entries are sent),
	 * and dropping the tombstone lets a node whose clock went backwards
	 * (lower incarnation) join again. */
	size_t k = 0;
	for (size_t i = 0; i < t->n; i++) {
		struct mesh_member *m = t->v[i];
		if (!m->self && (m->state == MESH_DEAD || m->state == MESH_LEFT) && !m->conn &&
		    now - m->state_since_ns >= t->forget_ns) {
			member_free(m);
			continue;
		}
		t->v[k++] = m;
	}
	t->n = k;
}

uint64_t mesh_members_next_deadline(const struct mesh_members *t)
{
	uint64_t next = UINT64_MAX;
	for (size_t i = 0; i < t->n; i++) {
		const struct mesh_member *m = t->v[i];
		uint64_t d = UINT64_MAX;
		if (m->self)
			continue;
		if (m->state == MESH_ALIVE)
			d = m->last_heard_ns + t->suspect_ns;
		else if (m->state == MESH_SUSPECT)
			d = m->last_heard_ns + t->dead_ns;
		else
			d = m->state_since_ns + t->forget_ns;
		if (d < next)
			next = d;
	}
	return next;
}
