/* One non-blocking UDP socket on a libevent loop, plus a test knob that
 * delays (with optional jitter) or drops this socket's outgoing datagrams,
 * because the kernel here has no netem. Used by net_quic; not meant for
 * other modules. */
#ifndef NET_UDP_H
#define NET_UDP_H

#include "base/ml_rng.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct event_base;
struct event;
struct net_udp_delayed;

/* Called for each received datagram; |data| is valid during the call. */
typedef void (*net_udp_recv_fn)(void *user, const uint8_t *data, size_t len,
                                const struct sockaddr *from, socklen_t fromlen);

struct net_udp {
	int fd;
	struct sockaddr_storage local;
	socklen_t local_len;
	struct event *rev;
	net_udp_recv_fn recv_fn;
	void *user;
	uint8_t *rxbuf; /* 64 KiB */
	/* netem-like shaping of outgoing packets */
	uint64_t delay_ns;
	uint64_t jitter_ns;
	double loss; /* probability in [0, 1] */
	struct ml_rng rng;
	struct net_udp_delayed *q_head, *q_tail; /* ordered by due time */
	struct event *q_timer;
	struct event_base *base;
	bool gso_off; /* the kernel refused UDP_SEGMENT once; send one by one */
	/* counters */
	uint64_t tx_packets, tx_bytes, tx_dropped, tx_calls, rx_packets, rx_bytes, rx_calls;
};

/* Parses a numeric IPv4/IPv6 address or resolves a host name (first result)
 * into |out|. Returns 0, ML_ERR_NOT_FOUND or ML_ERR_INVALID. */
int net_udp_resolve(const char *host, uint16_t port, struct sockaddr_storage *out,
                    socklen_t *outlen);

/* Binds a socket to |addr|. UDP GSO is used when the kernel has it, unless
 * the environment variable MESH_LLM_NO_GSO is set (for comparisons). (port 0 = ephemeral) and
 * starts reading on |base|. Returns 0, ML_ERR_IO (errno in the message) or ML_ERR_NOMEM. */
int net_udp_open(struct net_udp *u, struct event_base *base, const struct sockaddr *addr,
                 socklen_t len, net_udp_recv_fn fn, void *user);
/* Stops reading, sends queued delayed packets at once and closes the socket.
 * Accepts a zeroed or already-closed struct. */
void net_udp_close(struct net_udp *u);
/* Sends one datagram now, or queues a copy when a delay is configured.
 * Packets the kernel refuses (EAGAIN) are dropped and counted: QUIC
 * retransmits. Returns 0 or ML_ERR_IO for hard errors. */
int net_udp_send(struct net_udp *u, const struct sockaddr *to, socklen_t tolen, const uint8_t *data,
                 size_t len);
/* Sends |len| bytes as datagrams of |seg| bytes each (the last may be
 * shorter) with one system call when the kernel supports UDP GSO, else one
 * by one. With the delay/loss knob active every datagram is shaped on its
 * own. Same errors as net_udp_send. */
int net_udp_send_segments(struct net_udp *u, const struct sockaddr *to, socklen_t tolen,
                          const uint8_t *data, size_t len, size_t seg);
/* Sets the one-way delay, jitter (uniform in [-jitter, +jitter], clamped at
 * zero delay; jitter may reorder packets) and loss probability (0..1) of
 * outgoing packets. |seed| makes loss and jitter reproducible. */
void net_udp_set_netem(struct net_udp *u, uint64_t delay_ns, uint64_t jitter_ns, double loss,
                       uint64_t seed);

#endif
