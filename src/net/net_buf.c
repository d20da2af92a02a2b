/* Growable big-endian writer and bounds-checked reader for wire payloads. */
#include "net/net_buf.h"

#include "base/ml_err.h"

#include <stdlib.h>
#include <string.h>

void net_buf_init(struct net_buf *b, size_t max)
{
	memset(b, 0, sizeof(*b));
	b->max = max ? max : SIZE_MAX / 2;
}

void net_buf_free(struct net_buf *b)
{
	if (!b)
		return;
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
	b->err = 0;
}

void net_buf_reset(struct net_buf *b)
{
	b->len = 0;
	b->err = 0;
}

int net_buf_reserve(struct net_buf *b, size_t n)
{
	if (b->err)
		return b->err;
	if (n > b->max || b->len > b->max - n) {
		b->err = ML_ERR_RANGE;
		return b->err;
	}
	size_t need = b->len + n;
	if (need <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 64;
	while (cap < need)
		cap = cap > SIZE_MAX / 4 ? need : cap * 2;
	if (cap > b->max)
		cap = b->max;
	uint8_t *p = realloc(b->data, cap);
	if (!p) {
		b->err = ML_ERR_NOMEM;
		return b->err;
	}
	b->data = p;
	b->cap = cap;
	return 0;
}

void net_buf_put_bytes(struct net_buf *b, const void *p, size_t n)
{
	if (n == 0 || net_buf_reserve(b, n))
		return;
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

void net_buf_put_u8(struct net_buf *b, uint8_t v)
{
	net_buf_put_bytes(b, &v, 1);
}

void net_buf_put_u16(struct net_buf *b, uint16_t v)
{
	uint8_t t[2] = {(uint8_t)(v >> 8), (uint8_t)v};
	net_buf_put_bytes(b, t, 2);
}

void net_buf_put_u32(struct net_buf *b, uint32_t v)
{
	uint8_t t[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
	net_buf_put_bytes(b, t, 4);
}

void net_buf_put_u64(struct net_buf *b, uint64_t v)
{
	net_buf_put_u32(b, (uint32_t)(v >> 32));
	net_buf_put_u32(b, (uint32_t)v);
}

void net_buf_put_str(struct net_buf *b, const char *s, size_t n)
{
	if (b->err)
		return;
	if (n > UINT16_MAX) {
		b->err = ML_ERR_RANGE;
		return;
	}
	net_buf_put_u16(b, (uint16_t)n);
	net_buf_put_bytes(b, s, n);
}

void net_buf_put_blob(struct net_buf *b, const void *p, size_t n)
{
	if (b->err)
		return;
	if (n > UINT32_MAX) {
		b->err = ML_ERR_RANGE;
		return;
	}
	net_buf_put_u32(b, (uint32_t)n);
	net_buf_put_bytes(b, p, n);
}

void net_buf_patch_u32(struct net_buf *b, size_t off, uint32_t v)
{
	if (b->err)
		return;
	if (b->len < 4 || off > b->len - 4) {
		b->err = ML_ERR_RANGE;
		return;
	}
	b->data[off] = (uint8_t)(v >> 24);
	b->data[off + 1] = (uint8_t)(v >> 16);
	b->data[off + 2] = (uint8_t)(v >> 8);
	b->data[off + 3] = (uint8_t)v;
}

void net_reader_init(struct net_reader *r, const void *p, size_t len)
{
	r->p = p;
	r->len = p ? len : 0;
	r->off = 0;
	r->err = 0;
}

const uint8_t *net_reader_bytes(struct net_reader *r, size_t n)
{
	if (r->err)
		return NULL;
	if (n > r->len - r->off) {
		r->err = ML_ERR_FORMAT;
		return NULL;
	}
	const uint8_t *p = r->p + r->off;
	r->off += n;
	return p;
}

void net_reader_copy(struct net_reader *r, void *dst, size_t n)
{
	const uint8_t *p = net_reader_bytes(r, n);
	if (p)
		memcpy(dst, p, n);
	else if (n)
		memset(dst, 0, n);
}

uint8_t net_reader_u8(struct net_reader *r)
{
	const uint8_t *p = net_reader_bytes(r, 1);
	return p ? p[0] : 0;
}

uint16_t net_reader_u16(struct net_reader *r)
{
	const uint8_t *p = net_reader_bytes(r, 2);
	return p ? (uint16_t)((p[0] << 8) | p[1]) : 0;
}

uint32_t net_reader_u32(struct net_reader *r)
{
	const uint8_t *p = net_reader_bytes(r, 4);
	return p ? ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3]
	         : 0;
}

uint64_t net_reader_u64(struct net_reader *r)
{
	uint64_t hi = net_reader_u32(r);
	uint64_t lo = net_reader_u32(r);
	return r->err ? 0 : (hi << 32) | lo;
}

const char *net_reader_str(struct net_reader *r, size_t max, size_t *n)
{
	*n = 0;
	uint16_t len = net_reader_u16(r);
	if (r->err)
		return NULL;
	if (len > max) {
		r->err = ML_ERR_FORMAT;
		return NULL;
	}
	const uint8_t *p = net_reader_bytes(r, len);
	if (!p)
		return NULL;
	*n = len;
	return (const char *)p;
}

const uint8_t *net_reader_blob(struct net_reader *r, size_t max, size_t *n)
{
	*n = 0;
	uint32_t len = net_reader_u32(r);
	if (r->err)
		return NULL;
	if (len > max) {
		r->err = ML_ERR_FORMAT;
		return NULL;
	}
	const uint8_t *p = net_reader_bytes(r, len);
	if (!p)
		return NULL;
	*n = len;
	return p;
}

int net_reader_finish(struct net_reader *r)
{
	if (!r->err && r->off != r->len)
		r->err = ML_ERR_FORMAT;
	return r->err;
}
