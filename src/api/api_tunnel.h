/* The API over the mesh: a front for the API server that answers
 * GET /mesh/status, lists every model served in the mesh on /v1/models,
 * and proxies requests for a model served by another node through a QUIC
 * stream (NET_STREAM_HTTP); and the receiving side, which feeds a tunnelled
 * request into this node's own API (a loopback HTTP request to 127.0.0.1)
 * and streams the reply back chunk by chunk.
 *
 * On the stream (after the stream-type byte, see net_frame.h):
 *   proxy -> server:  HTTP_REQUEST, HTTP_BODY*, HTTP_END (then fin)
 *   server -> proxy:  HTTP_RESPONSE, HTTP_BODY*, HTTP_END (then fin)
 * or NET_MSG_ERROR instead of the reply. Either side resets the stream to
 * abort: a proxy whose client went away resets, and the server then drops
 * its loopback connection, which cancels the generation.
 *
 * Payloads (net_buf conventions: big-endian, str = u16 length + bytes):
 *   HTTP_REQUEST   u8 version (1), str method, str path, u16 n_headers,
 *                  n_headers x (str name, str value)
 *   HTTP_RESPONSE  u8 version (1), u16 status, u16 n_headers, headers
 *   HTTP_BODY      raw bytes (at most NET_FRAME_MAX_HTTP)
 *   HTTP_END       empty
 * Caps below; anything over them, a second head, a body before the head,
 * or more request body than API_TUNNEL_MAX_BODY resets the stream with
 * MESH_STREAM_BAD and a logged reason.
 *
 * Threads: loop thread only. */
#ifndef API_TUNNEL_H
#define API_TUNNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/net_buf.h"
#include "net/net_ident.h"

struct event_base;
struct mesh;
struct mesh_stream;
struct api_front;

#define API_TUNNEL_VERSION 1
#define API_TUNNEL_MAX_METHOD 16
#define API_TUNNEL_MAX_PATH 4096
#define API_TUNNEL_MAX_HEADERS 32
#define API_TUNNEL_MAX_NAME 128
#define API_TUNNEL_MAX_VALUE 8192
#define API_TUNNEL_MAX_BODY (8u << 20) /* tunnelled request body */
/* Marks a loopback request made for a tunnel: such a request is answered
 * locally, never tunnelled again (no loops between nodes). */
#define API_TUNNEL_MARK "X-Mesh-Tunnel"

struct api_tunnel_header {
	const char *name; /* borrowed; not NUL-terminated */
	size_t name_len;
	const char *value;
	size_t value_len;
};

/* A decoded HTTP_REQUEST or HTTP_RESPONSE head. Strings point into the
 * payload that was decoded (valid as long as it is). */
struct api_tunnel_head {
	const char *method; /* request only */
	size_t method_len;
	const char *path; /* request only */
	size_t path_len;
	int status; /* response only: 100..599 */
	size_t n_headers;
	struct api_tunnel_header headers[API_TUNNEL_MAX_HEADERS];
};

/* Encoders append one payload to |b| (not the frame header). Return 0,
 * ML_ERR_RANGE (a field over its cap) or ML_ERR_NOMEM. */
int api_tunnel_encode_request(struct net_buf *b, const char *method, const char *path,
                              const struct api_tunnel_header *h, size_t n);
int api_tunnel_encode_response(struct net_buf *b, int status, const struct api_tunnel_header *h,
                               size_t n);
/* Decoders check every length against the payload and the caps. Return 0
 * or ML_ERR_FORMAT (truncated, trailing bytes, over a cap, bad version or
 * status; ml_last_error() says which). */
int api_tunnel_decode_request(const uint8_t *p, size_t len, struct api_tunnel_head *out);
int api_tunnel_decode_response(const uint8_t *p, size_t len, struct api_tunnel_head *out);

struct api_tunnel;

struct api_tunnel_params {
	struct event_base *base;
	struct mesh *mesh;   /* borrowed; outlives the tunnel */
	int api_port;        /* this node's API port (loopback target) */
	const char *api_key; /* this node's API key (added to loopback requests), or NULL */
	const char *token;   /* invite token shown in /mesh/status to local callers, or NULL */
};

/* Returns 0 or ML_ERR_NOMEM. Strings are copied. */
int api_tunnel_new(struct api_tunnel **out, const struct api_tunnel_params *p);
/* Resets every open tunnel stream, drops loopback requests, frees. Call
 * before api_server_free and mesh_free. Accepts NULL. */
void api_tunnel_free(struct api_tunnel *t);
/* The model this node serves itself (NULL = none) and whether its engine
 * is attached to the API yet. Requests for it stay local. */
void api_tunnel_set_local(struct api_tunnel *t, const char *model_id, bool ready);
/* Takes a NET_STREAM_HTTP stream a peer opened (from the mesh's
 * on_stream callback). */
void api_tunnel_accept(struct api_tunnel *t, struct mesh_stream *s);
/* The front to give api_server_set_front(); lives as long as |t|. */
const struct api_front *api_tunnel_front(struct api_tunnel *t);
/* Number of proxied requests and served tunnel streams now open. */
int api_tunnel_n_open(const struct api_tunnel *t);

#endif
