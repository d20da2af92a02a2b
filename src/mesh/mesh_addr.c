/* Node addresses: wire encoding, conversions and local interface listing. */
#include "mesh/mesh_addr.h"

#include "base/ml_err.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

void mesh_addr_put(struct net_buf *b, const struct mesh_addr *a)
{
	net_buf_put_u8(b, a->family);
	net_buf_put_bytes(b, a->ip, a->family == 4 ? 4 : 16);
	net_buf_put_u16(b, a->port);
}

int mesh_addr_read(struct net_reader *r, struct mesh_addr *a)
{
	memset(a, 0, sizeof(*a));
	a->family = net_reader_u8(r);
	if (net_reader_error(r))
		return ML_ERR_FORMAT;
	if (a->family != 4 && a->family != 6) {
		r->err = ML_ERR_FORMAT;
		return ml_error(ML_ERR_FORMAT, "%s: address family %u is neither 4 nor 6", __func__,
		                a->family);
	}
	net_reader_copy(r, a->ip, a->family == 4 ? 4 : 16);
	a->port = net_reader_u16(r);
	if (net_reader_error(r))
		return ML_ERR_FORMAT;
	if (a->port == 0) {
		r->err = ML_ERR_FORMAT;
		return ml_error(ML_ERR_FORMAT, "%s: port 0", __func__);
	}
	return 0;
}

bool mesh_addr_equal(const struct mesh_addr *x, const struct mesh_addr *y)
{
	return x->family == y->family && x->port == y->port &&
	       memcmp(x->ip, y->ip, x->family == 4 ? 4 : 16) == 0;
}

void mesh_addr_str(const struct mesh_addr *a, char out[MESH_ADDR_STR_LEN])
{
	char ip[INET6_ADDRSTRLEN] = "?";
	inet_ntop(a->family == 4 ? AF_INET : AF_INET6, a->ip, ip, sizeof(ip));
	if (a->family == 4)
		snprintf(out, MESH_ADDR_STR_LEN, "%s:%u", ip, a->port);
	else
		snprintf(out, MESH_ADDR_STR_LEN, "[%s]:%u", ip, a->port);
}

socklen_t mesh_addr_to_sockaddr(const struct mesh_addr *a, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (a->family == 4) {
		struct sockaddr_in *s = (struct sockaddr_in *)ss;
		s->sin_family = AF_INET;
		s->sin_port = htons(a->port);
		memcpy(&s->sin_addr, a->ip, 4);
		return sizeof(*s);
	}
	struct sockaddr_in6 *s = (struct sockaddr_in6 *)ss;
	s->sin6_family = AF_INET6;
	s->sin6_port = htons(a->port);
	memcpy(&s->sin6_addr, a->ip, 16);
	return sizeof(*s);
}

int mesh_addr_from_sockaddr(struct mesh_addr *a, const struct sockaddr *sa)
{
	memset(a, 0, sizeof(*a));
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)sa;
		a->family = 4;
		memcpy(a->ip, &s->sin_addr, 4);
		a->port = ntohs(s->sin_port);
		return 0;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)sa;
		a->port = ntohs(s->sin6_port);
		if (IN6_IS_ADDR_V4MAPPED(&s->sin6_addr)) {
			a->family = 4;
			memcpy(a->ip, s->sin6_addr.s6_addr + 12, 4);
		} else {
			a->family = 6;
			memcpy(a->ip, &s->sin6_addr, 16);
		}
		return 0;
	}
	return ML_ERR_UNSUPPORTED;
}

int mesh_addr_parse(struct mesh_addr *a, const char *host, uint16_t port)
{
	memset(a, 0, sizeof(*a));
	a->port = port;
	if (inet_pton(AF_INET, host, a->ip) == 1) {
		a->family = 4;
		return 0;
	}
	if (inet_pton(AF_INET6, host, a->ip) == 1) {
		a->family = 6;
		return 0;
	}
	return ml_error(ML_ERR_FORMAT, "%s: '%s' is not a numeric IP address", __func__, host);
}

static bool is_wild(const char *h)
{
	return h == NULL || !*h || strcmp(h, "0.0.0.0") == 0 || strcmp(h, "::") == 0;
}

int mesh_addr_local(const char *bind_host, uint16_t port, struct mesh_addr *out, size_t cap)
{
	if (!is_wild(bind_host)) {
		if (cap == 0)
			return 0;
		int rc = mesh_addr_parse(&out[0], bind_host, port);
		return rc ? rc : 1;
	}
	bool v6 = bind_host && strchr(bind_host, ':');
	struct ifaddrs *ifa = NULL;
	if (getifaddrs(&ifa) != 0)
		return ml_error(ML_ERR_IO, "%s: getifaddrs failed", __func__);
	size_t n = 0;
	/* pass 0: non-loopback, pass 1: loopback */
	for (int pass = 0; pass < 2; pass++) {
		for (struct ifaddrs *i = ifa; i && n < cap; i = i->ifa_next) {
			if (!i->ifa_addr || !(i->ifa_flags & IFF_UP))
				continue;
			bool lo = (i->ifa_flags & IFF_LOOPBACK) != 0;
			if (lo != (pass == 1))
				continue;
			struct mesh_addr a;
			if (i->ifa_addr->sa_family == AF_INET6) {
				if (!v6)
					continue;
				const struct sockaddr_in6 *s6 =
				    (const struct sockaddr_in6 *)i->ifa_addr;
				if (IN6_IS_ADDR_LINKLOCAL(&s6->sin6_addr))
					continue;
			} else if (i->ifa_addr->sa_family != AF_INET) {
				continue;
			}
			if (mesh_addr_from_sockaddr(&a, i->ifa_addr) != 0)
				continue;
			a.port = port;
			bool dup = false;
			for (size_t k = 0; k < n; k++)
				dup |= mesh_addr_equal(&out[k], &a);
			if (!dup)
				out[n++] = a;
		}
	}
	freeifaddrs(ifa);
	return (int)n;
}
