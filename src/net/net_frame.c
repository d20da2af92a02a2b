/* Stream-type byte + [type][u32 length][payload] framing: tables, stateless
 * parse, incremental decoder and encoders. */
#include "net/net_frame.h"

#include "base/ml_err.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t empty_payload[1];

/* Which stream type each message type belongs to; 0 = unknown id,
 * 0xff = allowed on every stream type. */
static uint8_t msg_stream(uint8_t type)
{
	switch (type) {
	case NET_MSG_ERROR:
		return 0xff;
	case NET_MSG_HELLO:
	case NET_MSG_HELLO_ACK:
	case NET_MSG_GOSSIP:
	case NET_MSG_PEER_DOWN:
	case NET_MSG_PEER_LEAVING:
	case NET_MSG_PING:
	case NET_MSG_PONG:
		return NET_STREAM_CONTROL;
	case NET_MSG_HTTP_REQUEST:
	case NET_MSG_HTTP_RESPONSE:
	case NET_MSG_HTTP_BODY:
	case NET_MSG_HTTP_END:
		return NET_STREAM_HTTP;
	case NET_MSG_STAGE_OPEN:
	case NET_MSG_STAGE_FORWARD:
	case NET_MSG_STAGE_RESULT:
	case NET_MSG_STAGE_KV:
	case NET_MSG_STAGE_ACK:
		return NET_STREAM_STAGE;
	}
	return 0;
}

const char *net_stream_type_name(uint8_t t)
{
	switch (t) {
	case NET_STREAM_CONTROL:
		return "control";
	case NET_STREAM_HTTP:
		return "http";
	case NET_STREAM_STAGE:
		return "stage";
	}
	return "?";
}

const char *net_msg_type_name(uint8_t t)
{
	switch (t) {
	case NET_MSG_ERROR:
		return "ERROR";
	case NET_MSG_HELLO:
		return "HELLO";
	case NET_MSG_HELLO_ACK:
		return "HELLO_ACK";
	case NET_MSG_GOSSIP:
		return "GOSSIP";
	case NET_MSG_PEER_DOWN:
		return "PEER_DOWN";
	case NET_MSG_PEER_LEAVING:
		return "PEER_LEAVING";
	case NET_MSG_PING:
		return "PING";
	case NET_MSG_PONG:
		return "PONG";
	case NET_MSG_HTTP_REQUEST:
		return "HTTP_REQUEST";
	case NET_MSG_HTTP_RESPONSE:
		return "HTTP_RESPONSE";
	case NET_MSG_HTTP_BODY:
		return "HTTP_BODY";
	case NET_MSG_HTTP_END:
		return "HTTP_END";
	case NET_MSG_STAGE_OPEN:
		return "STAGE_OPEN";
	case NET_MSG_STAGE_FORWARD:
		return "STAGE_FORWARD";
	case NET_MSG_STAGE_RESULT:
		return "STAGE_RESULT";
	case NET_MSG_STAGE_KV:
		return "STAGE_KV";
	case NET_MSG_STAGE_ACK:
		return "STAGE_ACK";
	}
	return "?";
}

bool net_stream_type_valid(uint8_t t)
{
	return t >= NET_STREAM_CONTROL && t < NET_STREAM_TYPE_COUNT;
}

uint32_t net_frame_max_payload(uint8_t t)
{
	switch (t) {
	case NET_STREAM_CONTROL:
		return NET_FRAME_MAX_CONTROL;
	case NET_STREAM_HTTP:
		return NET_FRAME_MAX_HTTP;
	case NET_STREAM_STAGE:
		return NET_FRAME_MAX_STAGE;
	}
	return 0;
}

int net_frame_check(uint8_t stream_type, uint8_t msg_type, uint64_t len)
{
	if (!net_stream_type_valid(stream_type))
		return ml_error(ML_ERR_PROTO, "%s: unknown stream type %u", __func__, stream_type);
	uint8_t st = msg_stream(msg_type);
	if (st == 0)
		return ml_error(ML_ERR_PROTO, "%s: unknown message type %u on %s stream", __func__,
		                msg_type, net_stream_type_name(stream_type));
	if (st != 0xff && st != stream_type)
		return ml_error(ML_ERR_PROTO, "%s: message %s not allowed on %s stream", __func__,
		                net_msg_type_name(msg_type), net_stream_type_name(stream_type));
	uint32_t max = net_frame_max_payload(stream_type);
	if (len > max)
		return ml_error(
		    ML_ERR_RANGE,
		    "%s: %s message of %llu bytes exceeds the %u-byte limit of %s streams",
		    __func__, net_msg_type_name(msg_type), (unsigned long long)len, max,
		    net_stream_type_name(stream_type));
	return 0;
}

static uint32_t rd_u32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

int net_frame_parse(uint8_t stream_type, const uint8_t *buf, size_t len, struct net_frame_msg *out)
{
	/* Validate the type as soon as its byte is here, so garbage is rejected
	 * early instead of after waiting for a length that never comes. */
	if (len >= 1 && len < NET_FRAME_HDR_LEN) {
		int rc = net_frame_check(stream_type, buf[0], 0);
		return rc ? rc : ML_ERR_INCOMPLETE;
	}
	if (len < NET_FRAME_HDR_LEN)
		return ML_ERR_INCOMPLETE;
	uint32_t plen = rd_u32(buf + 1);
	int rc = net_frame_check(stream_type, buf[0], plen);
	if (rc)
		return rc;
	if (len - NET_FRAME_HDR_LEN < plen)
		return ML_ERR_INCOMPLETE;
	if ((uint64_t)plen + NET_FRAME_HDR_LEN > INT_MAX)
		return ml_error(ML_ERR_RANGE, "%s: message too large for this API", __func__);
	out->stream_type = stream_type;
	out->type = buf[0];
	out->len = plen;
	out->payload = plen ? buf + NET_FRAME_HDR_LEN : empty_payload;
	return (int)(NET_FRAME_HDR_LEN + plen);
}

void net_frame_decoder_init(struct net_frame_decoder *d, uint8_t expect)
{
	memset(d, 0, sizeof(*d));
	d->expect = expect;
}

void net_frame_decoder_free(struct net_frame_decoder *d)
{
	if (!d)
		return;
	free(d->buf);
	d->buf = NULL;
	d->buf_cap = d->buf_len = 0;
}

int net_frame_decoder_feed(struct net_frame_decoder *d, const uint8_t *data, size_t len,
                           struct net_frame_msg *out)
{
	if (d->err)
		return d->err;
	if (len > INT_MAX)
		len = INT_MAX;
	size_t off = 0;
	if (d->stream_type == 0) {
		if (len == 0)
			return ML_ERR_INCOMPLETE;
		uint8_t st = data[0];
		if (!net_stream_type_valid(st))
			return d->err = ml_error(ML_ERR_PROTO, "%s: unknown stream type %u",
			                         __func__, st);
		if (d->expect && st != d->expect)
			return d->err = ml_error(ML_ERR_PROTO,
			                         "%s: stream type %s where %s was expected",
			                         __func__, net_stream_type_name(st),
			                         net_stream_type_name(d->expect));
		d->stream_type = st;
		off = 1;
	}
	if (d->hdr_len == 0) {
		/* Nothing buffered: a complete message in |data| is returned in place. */
		int n = net_frame_parse(d->stream_type, data + off, len - off, out);
		if (n > 0)
			return (int)off + n;
		if (n != ML_ERR_INCOMPLETE)
			return d->err = n;
	}
	if (d->hdr_len < NET_FRAME_HDR_LEN) {
		while (d->hdr_len < NET_FRAME_HDR_LEN && off < len)
			d->hdr[d->hdr_len++] = data[off++];
		if (d->hdr_len < NET_FRAME_HDR_LEN) {
			int rc = net_frame_check(d->stream_type, d->hdr[0], 0);
			return rc ? (d->err = rc) : ML_ERR_INCOMPLETE;
		}
		uint32_t plen = rd_u32(d->hdr + 1);
		int rc = net_frame_check(d->stream_type, d->hdr[0], plen);
		if (rc)
			return d->err = rc;
		if (plen > d->buf_cap) {
			/* Grow to exactly what this message needs (bounded by the
			 * stream's limit, which net_frame_check enforced). */
			uint8_t *nb = realloc(d->buf, plen);
			if (!nb)
				return d->err = ml_error(ML_ERR_NOMEM, "%s: %u-byte payload",
				                         __func__, plen);
			d->buf = nb;
			d->buf_cap = plen;
		}
		d->need = plen;
		d->buf_len = 0;
	}
	size_t take = d->need - d->buf_len;
	if (take > len - off)
		take = len - off;
	if (take) {
		memcpy(d->buf + d->buf_len, data + off, take);
		d->buf_len += take;
		off += take;
	}
	if (d->buf_len < d->need)
		return ML_ERR_INCOMPLETE;
	out->stream_type = d->stream_type;
	out->type = d->hdr[0];
	out->len = d->need;
	out->payload = d->need ? d->buf : empty_payload;
	d->hdr_len = 0;
	d->buf_len = 0;
	d->need = 0;
	return (int)off;
}

void net_frame_encode_header(uint8_t out[NET_FRAME_HDR_LEN], uint8_t type, uint32_t len)
{
	out[0] = type;
	out[1] = (uint8_t)(len >> 24);
	out[2] = (uint8_t)(len >> 16);
	out[3] = (uint8_t)(len >> 8);
	out[4] = (uint8_t)len;
}

void net_frame_put_stream_type(struct net_buf *b, uint8_t stream_type)
{
	net_buf_put_u8(b, stream_type);
}

int net_frame_put(struct net_buf *b, uint8_t stream_type, uint8_t type, const void *payload,
                  size_t len)
{
	int rc = net_frame_check(stream_type, type, len);
	if (rc)
		return rc;
	uint8_t hdr[NET_FRAME_HDR_LEN];
	net_frame_encode_header(hdr, type, (uint32_t)len);
	net_buf_put_bytes(b, hdr, sizeof(hdr));
	net_buf_put_bytes(b, payload, len);
	return net_buf_error(b);
}

size_t net_frame_begin(struct net_buf *b, uint8_t type)
{
	size_t mark = b->len;
	uint8_t hdr[NET_FRAME_HDR_LEN];
	net_frame_encode_header(hdr, type, 0);
	net_buf_put_bytes(b, hdr, sizeof(hdr));
	return mark;
}

int net_frame_end(struct net_buf *b, uint8_t stream_type, size_t mark)
{
	if (b->err)
		return b->err;
	if (mark > b->len || b->len - mark < NET_FRAME_HDR_LEN)
		return ml_error(ML_ERR_INVALID, "%s: bad mark %zu (buffer %zu bytes)", __func__,
		                mark, b->len);
	size_t plen = b->len - mark - NET_FRAME_HDR_LEN;
	int rc = net_frame_check(stream_type, b->data[mark], plen);
	if (rc)
		return rc;
	net_buf_patch_u32(b, mark + 1, (uint32_t)plen);
	return net_buf_error(b);
}
