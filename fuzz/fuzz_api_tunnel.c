/* libFuzzer target for the HTTP tunnel payload decoders (api_tunnel.h).
 * The first byte picks the decoder (even: HTTP_REQUEST, odd:
 * HTTP_RESPONSE), the rest is the payload. A decoded head re-encoded must
 * give the same bytes. Nothing may crash, read out of bounds or leak. */
#include "api/api_tunnel.h"
#include "base/ml_err.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct api_tunnel_head h;
	struct net_buf b;
	char method[API_TUNNEL_MAX_METHOD + 1], *path;
	if (size < 1)
		return 0;
	const uint8_t *p = data + 1;
	size_t len = size - 1;
	net_buf_init(&b, 0);
	if ((data[0] & 1) == 0) {
		if (api_tunnel_decode_request(p, len, &h) == 0) {
			if (h.n_headers > API_TUNNEL_MAX_HEADERS ||
			    h.method_len > API_TUNNEL_MAX_METHOD)
				abort();
			memcpy(method, h.method, h.method_len);
			method[h.method_len] = '\0';
			path = strndup(h.path, h.path_len);
			/* a path with a NUL inside re-encodes shorter: skip those */
			if (path && strlen(path) == h.path_len) {
				if (api_tunnel_encode_request(&b, method, path, h.headers,
				                              h.n_headers) ||
				    b.len != len || memcmp(b.data, p, len) != 0)
					abort();
			}
			free(path);
		}
	} else if (api_tunnel_decode_response(p, len, &h) == 0) {
		if (h.status < 100 || h.status > 599)
			abort();
		if (api_tunnel_encode_response(&b, h.status, h.headers, h.n_headers) ||
		    b.len != len || memcmp(b.data, p, len) != 0)
			abort();
	}
	net_buf_free(&b);
	return 0;
}
