/* Tests for the HTTP tunnel payloads of src/api/api_tunnel.c: round trips,
 * every truncation point, trailing bytes, caps, bad versions, statuses,
 * methods, paths and header bytes. The proxying itself is tested end to
 * end by tests/e2e/test_mesh_serve.sh. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "api/api_tunnel.h"
#include "base/ml_err.h"

#define H(n, v)                                                                                    \
	{                                                                                          \
		n, sizeof(n) - 1, v, sizeof(v) - 1                                                 \
	}

static const struct api_tunnel_header hdrs[] = {
    H("Content-Type", "application/json"),
    H("Accept", "text/event-stream"),
};

static void encode_req(struct net_buf *b)
{
	net_buf_init(b, 0);
	assert_int_equal(api_tunnel_encode_request(b, "POST", "/v1/chat/completions", hdrs, 2), 0);
}

static void test_request_round_trip(void **state)
{
	struct net_buf b;
	struct api_tunnel_head h;
	(void)state;
	encode_req(&b);
	assert_int_equal(api_tunnel_decode_request(b.data, b.len, &h), 0);
	assert_int_equal(h.method_len, 4);
	assert_memory_equal(h.method, "POST", 4);
	assert_int_equal(h.path_len, strlen("/v1/chat/completions"));
	assert_memory_equal(h.path, "/v1/chat/completions", h.path_len);
	assert_int_equal(h.n_headers, 2);
	assert_int_equal(h.headers[1].value_len, strlen("text/event-stream"));
	assert_memory_equal(h.headers[1].name, "Accept", 6);
	net_buf_free(&b);
}

static void test_response_round_trip(void **state)
{
	struct net_buf b;
	struct api_tunnel_head h;
	(void)state;
	net_buf_init(&b, 0);
	assert_int_equal(api_tunnel_encode_response(&b, 503, hdrs, 1), 0);
	assert_int_equal(api_tunnel_decode_response(b.data, b.len, &h), 0);
	assert_int_equal(h.status, 503);
	assert_int_equal(h.n_headers, 1);
	assert_memory_equal(h.headers[0].value, "application/json", 16);
	net_buf_reset(&b);
	assert_int_equal(api_tunnel_encode_response(&b, 200, NULL, 0), 0);
	assert_int_equal(api_tunnel_decode_response(b.data, b.len, &h), 0);
	assert_int_equal(h.n_headers, 0);
	net_buf_free(&b);
}

/* Every strict prefix and one trailing byte fail, as ML_ERR_FORMAT. */
static void test_truncations_and_trailing(void **state)
{
	struct net_buf b;
	struct api_tunnel_head h;
	(void)state;
	encode_req(&b);
	for (size_t n = 0; n < b.len; n++)
		assert_int_equal(api_tunnel_decode_request(b.data, n, &h), ML_ERR_FORMAT);
	uint8_t *more = malloc(b.len + 1);
	memcpy(more, b.data, b.len);
	more[b.len] = 0;
	assert_int_equal(api_tunnel_decode_request(more, b.len + 1, &h), ML_ERR_FORMAT);
	free(more);
	net_buf_reset(&b);
	assert_int_equal(api_tunnel_encode_response(&b, 200, hdrs, 2), 0);
	for (size_t n = 0; n < b.len; n++)
		assert_int_equal(api_tunnel_decode_response(b.data, n, &h), ML_ERR_FORMAT);
	net_buf_free(&b);
}

static void test_bad_fields(void **state)
{
	struct net_buf b;
	struct api_tunnel_head h;
	(void)state;
	/* version */
	encode_req(&b);
	b.data[0] = 2;
	assert_int_equal(api_tunnel_decode_request(b.data, b.len, &h), ML_ERR_FORMAT);
	net_buf_free(&b);
	/* method with a lower-case byte, path without '/', control byte in path */
	const char *methods[] = {"PoST", "POST", "POST"};
	const char *paths[] = {"/x", "x", "/a\x01"};
	for (int i = 0; i < 3; i++) {
		net_buf_init(&b, 0);
		net_buf_put_u8(&b, API_TUNNEL_VERSION);
		net_buf_put_str(&b, methods[i], strlen(methods[i]));
		net_buf_put_str(&b, paths[i], strlen(paths[i]));
		net_buf_put_u16(&b, 0);
		assert_int_equal(api_tunnel_decode_request(b.data, b.len, &h), ML_ERR_FORMAT);
		net_buf_free(&b);
	}
	/* header value with CR LF (header injection), name with ':' or empty */
	const char *names[] = {"X", "X:Y", ""};
	const char *values[] = {"a\r\nEvil: 1", "v", "v"};
	for (int i = 0; i < 3; i++) {
		net_buf_init(&b, 0);
		net_buf_put_u8(&b, API_TUNNEL_VERSION);
		net_buf_put_u16(&b, 200);
		net_buf_put_u16(&b, 1);
		net_buf_put_str(&b, names[i], strlen(names[i]));
		net_buf_put_str(&b, values[i], strlen(values[i]));
		assert_int_equal(api_tunnel_decode_response(b.data, b.len, &h), ML_ERR_FORMAT);
		net_buf_free(&b);
	}
	/* status out of range */
	uint16_t st[] = {0, 99, 600, 65535};
	for (int i = 0; i < 4; i++) {
		net_buf_init(&b, 0);
		net_buf_put_u8(&b, API_TUNNEL_VERSION);
		net_buf_put_u16(&b, st[i]);
		net_buf_put_u16(&b, 0);
		assert_int_equal(api_tunnel_decode_response(b.data, b.len, &h), ML_ERR_FORMAT);
		net_buf_free(&b);
	}
}

static void test_caps(void **state)
{
	struct net_buf b;
	struct api_tunnel_head h;
	(void)state;
	/* too many headers announced */
	net_buf_init(&b, 0);
	net_buf_put_u8(&b, API_TUNNEL_VERSION);
	net_buf_put_u16(&b, 200);
	net_buf_put_u16(&b, API_TUNNEL_MAX_HEADERS + 1);
	for (int i = 0; i < API_TUNNEL_MAX_HEADERS + 1; i++) {
		net_buf_put_str(&b, "A", 1);
		net_buf_put_str(&b, "b", 1);
	}
	assert_int_equal(api_tunnel_decode_response(b.data, b.len, &h), ML_ERR_FORMAT);
	net_buf_free(&b);
	/* a value over the cap */
	char *big = malloc(API_TUNNEL_MAX_VALUE + 2);
	memset(big, 'v', API_TUNNEL_MAX_VALUE + 1);
	big[API_TUNNEL_MAX_VALUE + 1] = '\0';
	net_buf_init(&b, 0);
	net_buf_put_u8(&b, API_TUNNEL_VERSION);
	net_buf_put_u16(&b, 200);
	net_buf_put_u16(&b, 1);
	net_buf_put_str(&b, "A", 1);
	net_buf_put_str(&b, big, API_TUNNEL_MAX_VALUE + 1);
	assert_int_equal(api_tunnel_decode_response(b.data, b.len, &h), ML_ERR_FORMAT);
	net_buf_free(&b);
	/* the encoders refuse what the decoders would */
	struct api_tunnel_header hb = {"A", 1, big, API_TUNNEL_MAX_VALUE + 1};
	net_buf_init(&b, 0);
	assert_int_equal(api_tunnel_encode_response(&b, 200, &hb, 1), ML_ERR_RANGE);
	assert_int_equal(api_tunnel_encode_response(&b, 700, NULL, 0), ML_ERR_RANGE);
	assert_int_equal(api_tunnel_encode_request(&b, "POST", "", NULL, 0), ML_ERR_RANGE);
	assert_int_equal(api_tunnel_encode_request(&b, "AVERYLONGMETHODNAME", "/", NULL, 0),
	                 ML_ERR_RANGE);
	struct api_tunnel_header many[API_TUNNEL_MAX_HEADERS + 1];
	for (int i = 0; i < API_TUNNEL_MAX_HEADERS + 1; i++)
		many[i] = (struct api_tunnel_header){"A", 1, "b", 1};
	assert_int_equal(
	    api_tunnel_encode_request(&b, "GET", "/", many, API_TUNNEL_MAX_HEADERS + 1),
	    ML_ERR_RANGE);
	assert_int_equal(api_tunnel_encode_request(&b, "GET", "/", many, API_TUNNEL_MAX_HEADERS),
	                 0);
	assert_int_equal(api_tunnel_decode_request(b.data, b.len, &h), 0);
	assert_int_equal(h.n_headers, API_TUNNEL_MAX_HEADERS);
	net_buf_free(&b);
	free(big);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_request_round_trip),
	    cmocka_unit_test(test_response_round_trip),
	    cmocka_unit_test(test_truncations_and_trailing),
	    cmocka_unit_test(test_bad_fields),
	    cmocka_unit_test(test_caps),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
