/* Message framing on QUIC streams (sans-I/O: no sockets, no clock).
 *
 * Every stream starts with a one-byte stream type (enum net_stream_type).
 * After it the stream carries messages:
 *
 *   [u8 message type][u32 payload length, big-endian][payload]
 *
 * Each message type belongs to one stream type (NET_MSG_ERROR is allowed on
 * all of them) and each stream type has a maximum payload size. A message of
 * an unknown type, a type that does not belong on the stream, or a length
 * over the limit is a protocol violation: the decoder fails and the caller
 * closes the stream (or the connection) and logs ml_last_error().
 *
 * Ids are append-only: never renumber, never reuse. Payload layouts are
 * defined by the modules that own them (mesh, api), with net_buf/net_reader. */
#ifndef NET_FRAME_H
#define NET_FRAME_H

#include "net/net_buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NET_FRAME_HDR_LEN 5

enum net_stream_type {
	NET_STREAM_CONTROL =
	    1,               /* one per connection, opened by the dialer: hello, gossip, liveness */
	NET_STREAM_HTTP = 2, /* one per proxied API request */
	NET_STREAM_STAGE = 3, /* pipeline-stage traffic: activations and KV commands */
	NET_STREAM_TYPE_COUNT
};

enum net_msg_type {
	/* any stream */
	NET_MSG_ERROR = 0, /* u16 code, str reason; sender closes the stream after it */
	/* NET_STREAM_CONTROL */
	NET_MSG_HELLO = 1,        /* version, node id, mesh-secret proof, capabilities */
	NET_MSG_HELLO_ACK = 2,    /* the accepting side's HELLO */
	NET_MSG_GOSSIP = 3,       /* signed node announcements */
	NET_MSG_PEER_DOWN = 4,    /* "I lost peer X" */
	NET_MSG_PEER_LEAVING = 5, /* "I am shutting down" */
	NET_MSG_PING = 6,         /* u64 nonce, u64 send time */
	NET_MSG_PONG = 7,         /* echo of PING */
	/* NET_STREAM_HTTP */
	NET_MSG_HTTP_REQUEST = 16,  /* method, path, headers */
	NET_MSG_HTTP_RESPONSE = 17, /* status, headers */
	NET_MSG_HTTP_BODY = 18,     /* a chunk of the request or response body */
	NET_MSG_HTTP_END = 19,      /* end of body */
	/* NET_STREAM_STAGE */
	NET_MSG_STAGE_OPEN = 32,    /* model, layer range, dtype of activations */
	NET_MSG_STAGE_FORWARD = 33, /* sequence ids, positions, hidden states */
	NET_MSG_STAGE_RESULT = 34,  /* output hidden states of the last stage */
	NET_MSG_STAGE_KV = 35,      /* KV-cache commands: drop/truncate/copy sequence */
	NET_MSG_STAGE_ACK = 36,     /* reply to OPEN / KV */
	NET_MSG_TYPE_MAX = 255,
};

/* Maximum payload sizes per stream type. */
#define NET_FRAME_MAX_CONTROL (1u << 20) /* 1 MiB: gossip of a large mesh */
#define NET_FRAME_MAX_HTTP (1u << 20)    /* 1 MiB per body chunk */
#define NET_FRAME_MAX_STAGE (64u << 20)  /* 64 MiB: a prompt batch of activations */

/* Name of a stream type or message type ("?" when unknown); never NULL. */
const char *net_stream_type_name(uint8_t stream_type);
const char *net_msg_type_name(uint8_t msg_type);
/* True when |stream_type| is known. */
bool net_stream_type_valid(uint8_t stream_type);
/* Max payload for |stream_type|, 0 when unknown. */
uint32_t net_frame_max_payload(uint8_t stream_type);
/* Checks that |msg_type| may appear on |stream_type| with |len| bytes of
 * payload. Returns 0, ML_ERR_PROTO (unknown / misplaced type) or
 * ML_ERR_RANGE (too long), with a message in ml_last_error(). */
int net_frame_check(uint8_t stream_type, uint8_t msg_type, uint64_t len);

/* A decoded message. |payload| is borrowed: it points into the caller's
 * input or into the decoder's buffer and is valid until the next call to
 * net_frame_decoder_feed() or net_frame_decoder_free(). */
struct net_frame_msg {
	uint8_t stream_type;
	uint8_t type;
	uint32_t len;
	const uint8_t *payload; /* non-NULL even when len == 0 */
};

/* Stateless parse of one message at the start of |buf| on a stream of type
 * |stream_type| (the stream-type byte already consumed).
 * Returns bytes consumed (>= 5) with |*out| pointing into |buf|,
 * ML_ERR_INCOMPLETE if |buf| holds only part of a message, or
 * ML_ERR_PROTO / ML_ERR_RANGE (see net_frame_check). */
int net_frame_parse(uint8_t stream_type, const uint8_t *buf, size_t len, struct net_frame_msg *out);

/* Incremental decoder for one stream: first byte is the stream type, then
 * messages. Bytes may arrive split anywhere. */
struct net_frame_decoder {
	uint8_t stream_type; /* 0 until the first byte arrived */
	uint8_t hdr[NET_FRAME_HDR_LEN];
	uint8_t hdr_len; /* header bytes buffered so far */
	uint32_t need;   /* payload length of the message being buffered */
	uint8_t *buf;    /* owned partial-payload buffer */
	size_t buf_len;  /* payload bytes buffered */
	size_t buf_cap;
	int err;        /* sticky: once failed, every feed fails */
	uint8_t expect; /* if nonzero, the only stream type accepted */
};

/* |expect_stream_type| 0 accepts any known stream type. */
void net_frame_decoder_init(struct net_frame_decoder *d, uint8_t expect_stream_type);
/* Frees the buffer. Accepts NULL. */
void net_frame_decoder_free(struct net_frame_decoder *d);

/* Feeds |len| bytes at |data|.
 * Returns n > 0: n bytes were consumed and |*out| holds one complete message
 *   (call again with data + n for the rest);
 * ML_ERR_INCOMPLETE: all |len| bytes were consumed, no message completed yet;
 * ML_ERR_PROTO / ML_ERR_RANGE: bad stream type, message type or length
 *   (ml_last_error() says which); the stream must be closed. Sticky.
 * ML_ERR_NOMEM: could not buffer the payload.
 * At most INT_MAX bytes are looked at per call. */
int net_frame_decoder_feed(struct net_frame_decoder *d, const uint8_t *data, size_t len,
                           struct net_frame_msg *out);

/* --- encoding --------------------------------------------------------- */

/* Writes the 5-byte header for a message of |type| with |len| bytes. */
void net_frame_encode_header(uint8_t out[NET_FRAME_HDR_LEN], uint8_t type, uint32_t len);
/* Appends the stream-type byte that must open a stream. */
void net_frame_put_stream_type(struct net_buf *b, uint8_t stream_type);
/* Appends a whole message. Checks type and size for |stream_type|.
 * Returns 0 or ML_ERR_PROTO / ML_ERR_RANGE / ML_ERR_NOMEM. */
int net_frame_put(struct net_buf *b, uint8_t stream_type, uint8_t type, const void *payload,
                  size_t len);
/* Two-step encoding for payloads written with net_buf_put_*:
 *   size_t m = net_frame_begin(b, NET_MSG_GOSSIP);
 *   net_buf_put_u64(b, ...); ...
 *   rc = net_frame_end(b, NET_STREAM_CONTROL, m);
 * begin returns the offset of the header; end patches the length and checks
 * type and size. end returns 0 or the buffer's / the check's error. */
size_t net_frame_begin(struct net_buf *b, uint8_t type);
int net_frame_end(struct net_buf *b, uint8_t stream_type, size_t mark);

#endif
