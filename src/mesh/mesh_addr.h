/* Node addresses as they travel in invite tokens and gossip: an IPv4 or
 * IPv6 address plus a UDP port, with a fixed explicit wire encoding
 *
 *   u8 family (4 or 6) | 4 or 16 address bytes | u16 port (big-endian)
 *
 * and helpers to turn them into sockaddrs, text, and to list the usable
 * addresses of this machine. */
#ifndef MESH_ADDR_H
#define MESH_ADDR_H

#include "net/net_buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define MESH_ADDR_STR_LEN 56 /* "[ipv6%scope]:port" fits, NUL included */

struct mesh_addr {
	uint8_t family; /* 4 or 6 */
	uint8_t ip[16]; /* first 4 bytes used for IPv4 */
	uint16_t port;
};

/* Appends the wire form of |a|. */
void mesh_addr_put(struct net_buf *b, const struct mesh_addr *a);
/* Reads one address; sets the reader's error and returns ML_ERR_FORMAT on
 * an unknown family, port 0 or truncation. */
int mesh_addr_read(struct net_reader *r, struct mesh_addr *a);
bool mesh_addr_equal(const struct mesh_addr *x, const struct mesh_addr *y);
/* "1.2.3.4:7842" or "[::1]:7842" into |out| (MESH_ADDR_STR_LEN bytes). */
void mesh_addr_str(const struct mesh_addr *a, char out[MESH_ADDR_STR_LEN]);
/* Converts to a sockaddr (sockaddr_in or sockaddr_in6). */
socklen_t mesh_addr_to_sockaddr(const struct mesh_addr *a, struct sockaddr_storage *ss);
/* From a sockaddr (v4-mapped IPv6 becomes IPv4). Returns 0 or
 * ML_ERR_UNSUPPORTED for other families. */
int mesh_addr_from_sockaddr(struct mesh_addr *a, const struct sockaddr *sa);
/* Parses a numeric "host" (IPv4 or IPv6, no brackets) and |port|. Returns 0
 * or ML_ERR_FORMAT. */
int mesh_addr_parse(struct mesh_addr *a, const char *host, uint16_t port);

/* Lists the addresses other machines may reach this node at, for a socket
 * bound to |bind_host| (NULL, "0.0.0.0" or "::" = every interface) and
 * |port|: the bound address itself when it is specific, else every
 * interface address that is up, global or private ones first, then
 * loopback last (so nodes on one machine find each other). Link-local
 * IPv6 addresses are skipped (they need a scope id). IPv6 addresses are
 * listed only when |bind_host| is "::" or an IPv6 address. Writes at most
 * |cap| entries and returns how many, or a negative ML_ERR_*. */
int mesh_addr_local(const char *bind_host, uint16_t port, struct mesh_addr *out, size_t cap);

#endif
