/* Hash map from QUIC connection ID to an opaque value (a connection), used
 * by the endpoint to route each incoming packet by its destination CID.
 * Open addressing with linear probing and tombstones; the map owns its slot
 * array, never the values. */
#ifndef NET_CIDMAP_H
#define NET_CIDMAP_H

#include <stddef.h>
#include <stdint.h>

#define NET_CIDMAP_MAX_CIDLEN 20

struct net_cidmap_slot {
	uint8_t state; /* 0 empty, 1 used, 2 deleted */
	uint8_t len;
	uint8_t cid[NET_CIDMAP_MAX_CIDLEN];
	void *value;
};

struct net_cidmap {
	struct net_cidmap_slot *slots;
	size_t cap;   /* power of two */
	size_t used;  /* live entries */
	size_t dirty; /* live + deleted */
};

void net_cidmap_init(struct net_cidmap *m);
/* Frees the slot array. Accepts NULL. */
void net_cidmap_free(struct net_cidmap *m);
/* Inserts or replaces |cid| -> |value|. Returns 0, ML_ERR_INVALID (len
 * over 20) or ML_ERR_NOMEM. */
int net_cidmap_put(struct net_cidmap *m, const uint8_t *cid, size_t len, void *value);
/* The value for |cid|, or NULL. */
void *net_cidmap_get(const struct net_cidmap *m, const uint8_t *cid, size_t len);
/* Removes |cid| if present. */
void net_cidmap_del(struct net_cidmap *m, const uint8_t *cid, size_t len);
/* Removes every entry whose value is |value|; returns how many. */
size_t net_cidmap_del_value(struct net_cidmap *m, const void *value);

#endif
