/* UDP socket on the event loop, with delayed/lossy sending for tests. */
#include "net/net_udp.h"

#include "base/ml_err.h"
#include "base/ml_log.h"
#include "base/ml_time.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RXBUF_SIZE 65536
#define RX_BATCH 256 /* datagrams read per wakeup before yielding to the loop */

struct net_udp_delayed {
	struct net_udp_delayed *next;
	uint64_t due_ns;
	struct sockaddr_storage to;
	socklen_t tolen;
	size_t len;
	uint8_t data[];
};

int net_udp_resolve(const char *host, uint16_t port, struct sockaddr_storage *out,
                    socklen_t *outlen)
{
	struct addrinfo hints, *res = NULL;
	char ps[8];
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_DGRAM;
	hints.ai_flags = AI_NUMERICSERV;
	snprintf(ps, sizeof(ps), "%u", port);
	int grc = getaddrinfo(host && *host ? host : NULL, ps, &hints, &res);
	if (grc != 0 || !res)
		return ml_error(ML_ERR_NOT_FOUND, "%s: cannot resolve %s: %s", __func__,
		                host ? host : "(any)", gai_strerror(grc));
	if (res->ai_addrlen > sizeof(*out)) {
		freeaddrinfo(res);
		return ml_error(ML_ERR_INVALID, "%s: address too long", __func__);
	}
	memset(out, 0, sizeof(*out));
	memcpy(out, res->ai_addr, res->ai_addrlen);
	*outlen = (socklen_t)res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

static void udp_on_read(evutil_socket_t fd, short what, void *arg)
{
	struct net_udp *u = arg;
	(void)what;
	for (int i = 0; i < RX_BATCH; i++) {
		struct sockaddr_storage from;
		struct iovec iov = {u->rxbuf, RXBUF_SIZE};
		union {
			char buf[CMSG_SPACE(sizeof(int))];
			struct cmsghdr align;
		} ctl;
		struct msghdr msg = {0};
		msg.msg_name = &from;
		msg.msg_namelen = sizeof(from);
		msg.msg_iov = &iov;
		msg.msg_iovlen = 1;
		msg.msg_control = ctl.buf;
		msg.msg_controllen = sizeof(ctl.buf);
		ssize_t n = recvmsg(fd, &msg, 0);
		if (n < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				ML_DEBUG("net: udp recvmsg: %s", strerror(errno));
			return;
		}
		/* With UDP_GRO the kernel may hand over several datagrams of
		 * |seg| bytes (the last shorter) in one buffer. */
		size_t seg = (size_t)n;
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm))
			if (cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_GRO) {
				int g = 0;
				memcpy(&g, CMSG_DATA(cm), sizeof(g));
				if (g > 0)
					seg = (size_t)g;
			}
		u->rx_calls++;
		for (size_t off = 0; off < (size_t)n; off += seg) {
			size_t len = (size_t)n - off < seg ? (size_t)n - off : seg;
			u->rx_packets++;
			u->rx_bytes += len;
			u->recv_fn(u->user, u->rxbuf + off, len, (struct sockaddr *)&from,
			           msg.msg_namelen);
			if (u->fd < 0) /* closed from inside the callback */
				return;
		}
	}
}

static int udp_send_now(struct net_udp *u, const struct sockaddr *to, socklen_t tolen,
                        const uint8_t *data, size_t len)
{
	for (;;) {
		ssize_t n = sendto(u->fd, data, len, 0, to, tolen);
		u->tx_calls++;
		if (n >= 0) {
			u->tx_packets++;
			u->tx_bytes += len;
			return 0;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) {
			u->tx_dropped++;
			return 0;
		}
		/* ICMP errors surface here (ECONNREFUSED on Linux); QUIC's own
		 * timers deal with an unreachable peer. */
		if (errno == ECONNREFUSED || errno == EHOSTUNREACH || errno == ENETUNREACH) {
			u->tx_dropped++;
			return 0;
		}
		return ml_error(ML_ERR_IO, "%s: sendto: %s", __func__, strerror(errno));
	}
}

static void udp_arm_queue(struct net_udp *u)
{
	if (!u->q_head) {
		evtimer_del(u->q_timer);
		return;
	}
	uint64_t now = ml_time_ns();
	uint64_t wait = u->q_head->due_ns > now ? u->q_head->due_ns - now : 0;
	struct timeval tv = {(time_t)(wait / 1000000000u),
	                     (suseconds_t)((wait % 1000000000u) / 1000u)};
	evtimer_add(u->q_timer, &tv);
}

static void udp_on_queue_timer(evutil_socket_t fd, short what, void *arg)
{
	struct net_udp *u = arg;
	(void)fd;
	(void)what;
	/* 50 us of slack: the loop's timers are not exact and waking again for
	 * a packet due a few microseconds later costs more than it saves. */
	uint64_t now = ml_time_ns() + 50000;
	while (u->q_head && u->q_head->due_ns <= now) {
		struct net_udp_delayed *d = u->q_head;
		u->q_head = d->next;
		if (!u->q_head)
			u->q_tail = NULL;
		udp_send_now(u, (struct sockaddr *)&d->to, d->tolen, d->data, d->len);
		free(d);
	}
	udp_arm_queue(u);
}

int net_udp_open(struct net_udp *u, struct event_base *base, const struct sockaddr *addr,
                 socklen_t len, net_udp_recv_fn fn, void *user)
{
	memset(u, 0, sizeof(*u));
	u->fd = -1;
	u->base = base;
	u->recv_fn = fn;
	u->user = user;
	ml_rng_seed(&u->rng, 1);
	u->gso_off = getenv("MESH_LLM_NO_GSO") != NULL;
	int rc = 0;
	u->rxbuf = malloc(RXBUF_SIZE);
	if (!u->rxbuf) {
		rc = ml_error(ML_ERR_NOMEM, "%s: rx buffer", __func__);
		goto fail;
	}
	u->fd = socket(addr->sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (u->fd < 0) {
		rc = ml_error(ML_ERR_IO, "%s: socket: %s", __func__, strerror(errno));
		goto fail;
	}
	int buf = 8 << 20; /* the kernel caps this at rmem_max/wmem_max */
	setsockopt(u->fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
	setsockopt(u->fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
	if (!getenv("MESH_LLM_NO_GSO")) {
		int on = 1;
		setsockopt(u->fd, SOL_UDP, UDP_GRO, &on, sizeof(on)); /* best effort */
	}
	if (addr->sa_family == AF_INET6) {
		int off = 0;
		setsockopt(u->fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
	}
	if (bind(u->fd, addr, len) != 0) {
		rc = ml_error(ML_ERR_IO, "%s: bind: %s", __func__, strerror(errno));
		goto fail;
	}
	u->local_len = sizeof(u->local);
	if (getsockname(u->fd, (struct sockaddr *)&u->local, &u->local_len) != 0) {
		rc = ml_error(ML_ERR_IO, "%s: getsockname: %s", __func__, strerror(errno));
		goto fail;
	}
	u->rev = event_new(base, u->fd, EV_READ | EV_PERSIST, udp_on_read, u);
	u->q_timer = evtimer_new(base, udp_on_queue_timer, u);
	if (!u->rev || !u->q_timer) {
		rc = ml_error(ML_ERR_NOMEM, "%s: events", __func__);
		goto fail;
	}
	event_add(u->rev, NULL);
	return 0;
fail:
	net_udp_close(u);
	return rc;
}

void net_udp_close(struct net_udp *u)
{
	if (!u)
		return;
	if (u->rev)
		event_free(u->rev);
	if (u->q_timer)
		event_free(u->q_timer);
	u->rev = u->q_timer = NULL;
	/* Delayed packets leave now rather than never: among them may be the
	 * CONNECTION_CLOSEs of an endpoint shutting down. */
	while (u->q_head) {
		struct net_udp_delayed *d = u->q_head;
		u->q_head = d->next;
		if (u->fd >= 0)
			udp_send_now(u, (struct sockaddr *)&d->to, d->tolen, d->data, d->len);
		free(d);
	}
	u->q_tail = NULL;
	if (u->fd >= 0)
		close(u->fd);
	u->fd = -1;
	free(u->rxbuf);
	u->rxbuf = NULL;
}

void net_udp_set_netem(struct net_udp *u, uint64_t delay_ns, uint64_t jitter_ns, double loss,
                       uint64_t seed)
{
	u->delay_ns = delay_ns;
	u->jitter_ns = jitter_ns;
	u->loss = loss < 0 ? 0 : loss > 1 ? 1 : loss;
	ml_rng_seed(&u->rng, seed ? seed : 1);
}

int net_udp_send(struct net_udp *u, const struct sockaddr *to, socklen_t tolen, const uint8_t *data,
                 size_t len)
{
	if (u->fd < 0)
		return ml_error(ML_ERR_CLOSED, "%s: socket closed", __func__);
	if (u->loss > 0 && ml_rng_uniform(&u->rng) < u->loss) {
		u->tx_dropped++;
		return 0;
	}
	if (u->delay_ns == 0 && u->jitter_ns == 0)
		return udp_send_now(u, to, tolen, data, len);
	if (tolen > sizeof(struct sockaddr_storage))
		return ml_error(ML_ERR_INVALID, "%s: address too long", __func__);
	struct net_udp_delayed *d = malloc(sizeof(*d) + len);
	if (!d) {
		u->tx_dropped++;
		return 0;
	}
	int64_t delay = (int64_t)u->delay_ns;
	if (u->jitter_ns)
		delay += (int64_t)((ml_rng_uniform(&u->rng) * 2.0 - 1.0) * (double)u->jitter_ns);
	if (delay < 0)
		delay = 0;
	d->due_ns = ml_time_ns() + (uint64_t)delay;
	memcpy(&d->to, to, tolen);
	d->tolen = tolen;
	d->len = len;
	memcpy(d->data, data, len);
	d->next = NULL;
	/* keep the queue ordered by due time; without jitter this is an append */
	if (!u->q_tail || u->q_tail->due_ns <= d->due_ns) {
		if (u->q_tail)
			u->q_tail->next = d;
		else
			u->q_head = d;
		u->q_tail = d;
	} else {
		struct net_udp_delayed **pp = &u->q_head;
		while (*pp && (*pp)->due_ns <= d->due_ns)
			pp = &(*pp)->next;
		d->next = *pp;
		*pp = d;
	}
	if (u->q_head == d)
		udp_arm_queue(u);
	return 0;
}

int net_udp_send_segments(struct net_udp *u, const struct sockaddr *to, socklen_t tolen,
                          const uint8_t *data, size_t len, size_t seg)
{
	if (u->fd < 0)
		return ml_error(ML_ERR_CLOSED, "%s: socket closed", __func__);
	if (seg == 0)
		return ml_error(ML_ERR_INVALID, "%s: zero segment size", __func__);
	size_t nseg = (len + seg - 1) / seg;
	bool shaped = u->delay_ns || u->jitter_ns || u->loss > 0;
	if (nseg > 1 && !shaped && !u->gso_off && nseg <= 64) {
		struct iovec iov = {(void *)data, len};
		union {
			char buf[CMSG_SPACE(sizeof(uint16_t))];
			struct cmsghdr align;
		} ctl;
		memset(&ctl, 0, sizeof(ctl));
		struct msghdr msg = {0};
		msg.msg_name = (void *)to;
		msg.msg_namelen = tolen;
		msg.msg_iov = &iov;
		msg.msg_iovlen = 1;
		msg.msg_control = ctl.buf;
		msg.msg_controllen = sizeof(ctl.buf);
		struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
		cm->cmsg_level = SOL_UDP;
		cm->cmsg_type = UDP_SEGMENT;
		cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
		uint16_t gso = (uint16_t)seg;
		memcpy(CMSG_DATA(cm), &gso, sizeof(gso));
		for (;;) {
			ssize_t n = sendmsg(u->fd, &msg, 0);
			u->tx_calls++;
			if (n >= 0) {
				u->tx_packets += nseg;
				u->tx_bytes += len;
				return 0;
			}
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS ||
			    errno == ECONNREFUSED || errno == EHOSTUNREACH ||
			    errno == ENETUNREACH) {
				u->tx_dropped += nseg;
				return 0;
			}
			if (errno == EIO || errno == EINVAL || errno == ENOPROTOOPT ||
			    errno == EOPNOTSUPP) {
				/* no GSO here (or not on this route): stop trying */
				ML_DEBUG(
				    "net: UDP GSO unavailable (%s); sending one datagram per call",
				    strerror(errno));
				u->gso_off = true;
				break;
			}
			return ml_error(ML_ERR_IO, "%s: sendmsg: %s", __func__, strerror(errno));
		}
	}
	for (size_t off = 0; off < len; off += seg) {
		size_t n = len - off < seg ? len - off : seg;
		int rc = net_udp_send(u, to, tolen, data + off, n);
		if (rc)
			return rc;
	}
	return 0;
}
