/* Fuzzes everything in the API that reads client bytes without a socket:
 * the HTTP framing gate, the JSON body -> request parser (both kinds), the
 * route table, the bearer-token check and the JSON escaper of the replies.
 * The first byte picks the request kind, the gate's caps and how the bytes
 * are cut into reads; the rest is the input. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_gate.h"
#include "api/api_request.h"
#include "base/ml_log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int quiet;
	if (!quiet) {
		ml_log_set_level(ML_LOG_NONE);
		quiet = 1;
	}
	if (size < 1)
		return 0;
	uint8_t sel = data[0];
	const char *p = (const char *)data + 1;
	size_t n = size - 1;
	char *s = malloc(n + 1);
	if (!s)
		return 0;
	memcpy(s, p, n);
	s[n] = '\0';

	struct api_req r;
	struct api_err e;
	int rc = api_req_parse(&r, (sel & 1) ? API_KIND_COMPLETION : API_KIND_CHAT, p, n, &e);
	if (rc) {
		/* the error must render as a body */
		char *body = api_err_json(&e);
		free(body);
	} else {
		/* parsed requests hold NUL-terminated, bounded fields */
		if (r.kind == API_KIND_CHAT && (r.n_msgs == 0 || r.n_msgs > API_MAX_MESSAGES))
			abort();
		for (size_t i = 0; i < r.n_msgs; i++)
			if (!r.msgs[i].role || !r.msgs[i].content)
				abort();
		if (r.n_stop > API_MAX_STOP)
			abort();
	}
	api_req_clear(&r);

	/* the same bytes as a path, a method and an auth header */
	bool ok;
	const char *allow, *arg;
	api_route_match(s, (enum api_method)(sel % 5), &ok, &allow, &arg);
	if (arg && (arg < s || arg > s + n))
		abort();
	api_auth_ok(s, "key");
	api_auth_ok(s, "");

	struct api_buf b = {0};
	if (api_buf_json_str(&b, p, n) == 0) {
		/* no raw control characters survive escaping */
		for (size_t i = 0; i < b.len; i++)
			if ((unsigned char)b.data[i] < 0x20)
				abort();
	}
	api_buf_free(&b);

	/* the same bytes as a client's stream, read in pieces of 1..8 bytes or
	 * whole: the gate must always make progress, keep what it holds under
	 * its cap, and stop at the first refusal */
	struct api_gate g;
	api_gate_init(&g, 64 + (sel & 0x30) * 8, 16 + (sel & 0x0c) * 64);
	size_t off = 0, step = (sel >> 6) ? (size_t)(sel >> 6) * 3 - 1 : n;
	bool rejected = false;
	while (off < n) {
		enum api_gate_act act;
		size_t want = n - off < step ? n - off : step;
		size_t used = api_gate_feed(&g, p + off, want, &act);
		if (used == 0 || used > want)
			abort();
		if (rejected && act != API_GATE_DROP)
			abort();
		if (act == API_GATE_REJECT) {
			if (api_gate_error(&g) == NULL)
				abort();
			rejected = true;
		}
		if (g.held.len > g.max_head + API_GATE_MAX_CHUNK_LINE + 64 && act == API_GATE_HOLD)
			abort();
		off += used;
	}
	api_gate_clear(&g);
	free(s);
	return 0;
}
