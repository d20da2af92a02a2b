/* Connection-ID hash map (open addressing). */
#include "net/net_cidmap.h"

#include "base/ml_err.h"

#include <stdlib.h>
#include <string.h>

static uint64_t cid_hash(const uint8_t *cid, size_t len)
{
	/* CIDs we issue are random, but a peer picks the client-side ones, so
	 * mix every byte rather than trusting any prefix. */
	uint64_t h = 1469598103934665603ull ^ len;
	for (size_t i = 0; i < len; i++)
		h = (h ^ cid[i]) * 1099511628211ull;
	return h ^ (h >> 29);
}

void net_cidmap_init(struct net_cidmap *m)
{
	memset(m, 0, sizeof(*m));
}

void net_cidmap_free(struct net_cidmap *m)
{
	if (!m)
		return;
	free(m->slots);
	memset(m, 0, sizeof(*m));
}

static struct net_cidmap_slot *find(const struct net_cidmap *m, const uint8_t *cid, size_t len)
{
	if (!m->cap)
		return NULL;
	size_t mask = m->cap - 1;
	for (size_t i = cid_hash(cid, len) & mask, n = 0; n < m->cap; i = (i + 1) & mask, n++) {
		struct net_cidmap_slot *s = &m->slots[i];
		if (s->state == 0)
			return NULL;
		if (s->state == 1 && s->len == len && memcmp(s->cid, cid, len) == 0)
			return s;
	}
	return NULL;
}

static int grow(struct net_cidmap *m)
{
	size_t ncap = m->cap ? m->cap : 64;
	while (ncap < 2 * (m->used + 1) * 2)
		ncap *= 2;
	struct net_cidmap_slot *ns = calloc(ncap, sizeof(*ns));
	if (!ns)
		return ml_error(ML_ERR_NOMEM, "%s: %zu slots", __func__, ncap);
	for (size_t i = 0; i < m->cap; i++) {
		struct net_cidmap_slot *s = &m->slots[i];
		if (s->state != 1)
			continue;
		size_t j = cid_hash(s->cid, s->len) & (ncap - 1);
		while (ns[j].state)
			j = (j + 1) & (ncap - 1);
		ns[j] = *s;
	}
	free(m->slots);
	m->slots = ns;
	m->cap = ncap;
	m->dirty = m->used;
	return 0;
}

int net_cidmap_put(struct net_cidmap *m, const uint8_t *cid, size_t len, void *value)
{
	if (len > NET_CIDMAP_MAX_CIDLEN)
		return ml_error(ML_ERR_INVALID, "%s: cid of %zu bytes", __func__, len);
	struct net_cidmap_slot *s = find(m, cid, len);
	if (s) {
		s->value = value;
		return 0;
	}
	if ((m->dirty + 1) * 2 > m->cap) {
		int rc = grow(m);
		if (rc)
			return rc;
	}
	size_t mask = m->cap - 1;
	size_t i = cid_hash(cid, len) & mask;
	while (m->slots[i].state == 1)
		i = (i + 1) & mask;
	s = &m->slots[i];
	if (s->state == 0)
		m->dirty++;
	s->state = 1;
	s->len = (uint8_t)len;
	memcpy(s->cid, cid, len);
	s->value = value;
	m->used++;
	return 0;
}

void *net_cidmap_get(const struct net_cidmap *m, const uint8_t *cid, size_t len)
{
	if (len > NET_CIDMAP_MAX_CIDLEN)
		return NULL;
	struct net_cidmap_slot *s = find(m, cid, len);
	return s ? s->value : NULL;
}

void net_cidmap_del(struct net_cidmap *m, const uint8_t *cid, size_t len)
{
	struct net_cidmap_slot *s = len <= NET_CIDMAP_MAX_CIDLEN ? find(m, cid, len) : NULL;
	if (!s)
		return;
	s->state = 2;
	s->value = NULL;
	m->used--;
}

size_t net_cidmap_del_value(struct net_cidmap *m, const void *value)
{
	size_t n = 0;
	for (size_t i = 0; i < m->cap; i++) {
		struct net_cidmap_slot *s = &m->slots[i];
		if (s->state == 1 && s->value == value) {
			s->state = 2;
			s->value = NULL;
			m->used--;
			n++;
		}
	}
	return n;
}
