/* Tests for src/api/api_request.c: request bodies (every field, every
 * truncation point, wrong types), routes, the bearer check, the escaper. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "api/api_request.h"
#include "base/ml_err.h"

static const char full_chat[] =
    "{\"model\":\"m\",\"messages\":[{\"role\":\"developer\",\"content\":\"be brief\"},"
    "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"he\"},{\"type\":\"text\","
    "\"text\":\"llo\"}]},{\"role\":\"assistant\",\"content\":null}],"
    "\"max_completion_tokens\":7,\"max_tokens\":99,\"temperature\":0,\"top_p\":0.5,"
    "\"top_k\":3,\"min_p\":0.2,\"frequency_penalty\":0.5,\"presence_penalty\":-0.5,"
    "\"seed\":1234,\"stop\":[\"x\",\"\",\"yz\"],\"stream\":true,"
    "\"stream_options\":{\"include_usage\":true},\"tools\":[],\"user\":\"u\"}";

static void test_parse_chat_all_fields(void **state)
{
	struct api_req r;
	struct api_err e;
	(void)state;
	assert_int_equal(api_req_parse(&r, API_KIND_CHAT, full_chat, strlen(full_chat), &e), 0);
	assert_string_equal(r.model, "m");
	assert_int_equal(r.n_msgs, 3);
	assert_string_equal(r.msgs[0].role, "system");
	assert_string_equal(r.msgs[0].content, "be brief");
	assert_string_equal(r.msgs[1].content, "hello");
	assert_string_equal(r.msgs[2].role, "assistant");
	assert_string_equal(r.msgs[2].content, "");
	assert_int_equal(r.max_tokens, 7); /* max_completion_tokens wins */
	assert_true(r.sampling.temp == 0.0f);
	assert_true(r.sampling.top_p == 0.5f);
	assert_int_equal(r.sampling.top_k, 3);
	assert_true(r.sampling.min_p == 0.2f);
	assert_true(r.sampling.freq_penalty == 0.5f);
	assert_true(r.sampling.presence_penalty == -0.5f);
	assert_true(r.sampling.seed == 1234);
	assert_int_equal(r.n_stop, 2); /* the empty one is dropped */
	assert_string_equal(r.stop[0], "x");
	assert_string_equal(r.stop[1], "yz");
	assert_true(r.stream);
	assert_true(r.include_usage);
	api_req_clear(&r);
}

static void test_parse_defaults(void **state)
{
	struct api_req r;
	struct api_err e;
	const char *b = "{\"prompt\":\"Once\"}";
	(void)state;
	assert_int_equal(api_req_parse(&r, API_KIND_COMPLETION, b, strlen(b), &e), 0);
	assert_string_equal(r.prompt, "Once");
	assert_int_equal(r.prompt_len, 4);
	assert_null(r.model);
	assert_int_equal(r.max_tokens, 0);
	assert_false(r.stream);
	struct smp_params d = smp_default_params();
	assert_true(r.sampling.temp == d.temp);
	assert_int_equal(r.sampling.top_k, d.top_k);
	api_req_clear(&r);
}

/* Every proper prefix of a valid body is malformed JSON: 400, with a
 * position, never a crash or a leak. */
static void test_parse_every_truncation(void **state)
{
	(void)state;
	size_t n = strlen(full_chat);
	for (size_t i = 0; i < n; i++) {
		struct api_req r;
		struct api_err e;
		char *p = malloc(i ? i : 1);
		memcpy(p, full_chat, i);
		int rc = api_req_parse(&r, API_KIND_CHAT, p, i, &e);
		assert_int_equal(rc, ML_ERR_INVALID);
		assert_int_equal(e.status, 400);
		assert_string_equal(e.code, "invalid_json");
		api_req_clear(&r);
		free(p);
	}
}

static void test_error_json(void **state)
{
	struct api_err e;
	(void)state;
	api_err_set(&e, 400, NULL, "stop", "invalid_value", "bad \"quote\"\n");
	char *j = api_err_json(&e);
	assert_string_equal(j, "{\"error\":{\"message\":\"bad \\\"quote\\\"\\n\",\"type\":"
	                       "\"invalid_request_error\",\"param\":\"stop\",\"code\":"
	                       "\"invalid_value\"}}");
	free(j);
	api_err_set(&e, 500, "server_error", NULL, NULL, "x");
	j = api_err_json(&e);
	assert_non_null(strstr(j, "\"param\":null,\"code\":null"));
	free(j);
}

static void test_json_position(void **state)
{
	struct api_req r;
	struct api_err e;
	const char *b = "{\n  \"messages\": [1,\n  }";
	(void)state;
	assert_int_equal(api_req_parse(&r, API_KIND_CHAT, b, strlen(b), &e), ML_ERR_INVALID);
	assert_non_null(strstr(e.message, "line 3"));
	assert_non_null(strstr(e.message, "column"));
	api_req_clear(&r);
}

static void test_routes(void **state)
{
	bool ok;
	const char *allow, *arg;
	(void)state;
	assert_int_equal(api_route_match("/v1/chat/completions", API_POST, &ok, &allow, &arg),
	                 API_ROUTE_CHAT);
	assert_true(ok);
	assert_int_equal(api_route_match("/v1/chat/completions/", API_POST, &ok, &allow, &arg),
	                 API_ROUTE_CHAT);
	assert_int_equal(api_route_match("/v1/chat/completions", API_GET, &ok, &allow, &arg),
	                 API_ROUTE_CHAT);
	assert_false(ok);
	assert_string_equal(allow, "POST, OPTIONS");
	assert_int_equal(api_route_match("/v1/models/abc", API_GET, &ok, &allow, &arg),
	                 API_ROUTE_MODEL);
	assert_string_equal(arg, "abc");
	assert_int_equal(api_route_match("/v1/models/", API_GET, &ok, &allow, &arg),
	                 API_ROUTE_MODELS);
	assert_int_equal(api_route_match("/health", API_HEAD, &ok, &allow, &arg), API_ROUTE_HEALTH);
	assert_true(ok);
	assert_int_equal(api_route_match("/", API_GET, &ok, &allow, &arg), API_ROUTE_NONE);
	assert_int_equal(api_route_match(NULL, API_GET, &ok, &allow, &arg), API_ROUTE_NONE);
	assert_int_equal(api_route_match("/v1/completionsX", API_POST, &ok, &allow, &arg),
	                 API_ROUTE_NONE);
	assert_false(api_route_needs_auth(API_ROUTE_HEALTH));
	assert_true(api_route_needs_auth(API_ROUTE_MODELS));
}

static void test_auth(void **state)
{
	(void)state;
	assert_true(api_auth_ok("Bearer k1", "k1"));
	assert_true(api_auth_ok("bearer  k1 ", "k1"));
	assert_false(api_auth_ok("Bearer k", "k1"));
	assert_false(api_auth_ok("Bearer k12", "k1"));
	assert_false(api_auth_ok("Basic k1", "k1"));
	assert_false(api_auth_ok(NULL, "k1"));
	assert_false(api_auth_ok("Bearer ", "k1"));
}

static void test_escape(void **state)
{
	struct api_buf b = {0};
	(void)state;
	assert_int_equal(api_buf_json_str(&b, "a\"b\\c\x01\td\xc3\xa9", 10), 0);
	assert_string_equal(b.data, "\"a\\\"b\\\\c\\u0001\\td\xc3\xa9\"");
	api_buf_free(&b);
	assert_int_equal(api_buf_json_str(&b, "", 0), 0);
	assert_string_equal(b.data, "\"\"");
	api_buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_chat_all_fields),
	    cmocka_unit_test(test_parse_defaults),
	    cmocka_unit_test(test_parse_every_truncation),
	    cmocka_unit_test(test_error_json),
	    cmocka_unit_test(test_json_position),
	    cmocka_unit_test(test_routes),
	    cmocka_unit_test(test_auth),
	    cmocka_unit_test(test_escape),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
