/* Tests for src/api/api_gate.c: what the gate hands to evhttp for valid
 * streams (unchanged, however the bytes are split), and how it refuses
 * oversized and malformed requests (status, and the stand-in it puts in
 * their place). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_gate.h"

#define MAX_HEAD 256
#define MAX_BODY 1000

struct run {
	struct api_buf out; /* what evhttp would see */
	int status;         /* 0, or the refusal's status */
	size_t dropped;
	int n_requests;
};

/* Feeds |len| bytes of |in| in pieces of |step| (0: all at once), doing
 * what the server's glue does with each verdict. */
static struct run run_split(const char *in, size_t len, size_t step, size_t max_head,
                            size_t max_body)
{
	struct api_gate g;
	struct run r = {0};
	api_gate_init(&g, max_head, max_body);
	for (size_t off = 0; off < len;) {
		size_t piece = step && len - off > step ? step : len - off;
		while (piece > 0) {
			enum api_gate_act act;
			size_t k = api_gate_feed(&g, in + off, piece, &act);
			assert_true(k > 0 && k <= piece);
			size_t hl;
			const char *h;
			switch (act) {
			case API_GATE_PASS:
				api_buf_append(&r.out, in + off, k);
				break;
			case API_GATE_HOLD:
				break;
			case API_GATE_RELEASE:
			case API_GATE_REJECT:
				h = api_gate_held(&g, &hl);
				api_buf_append(&r.out, h, hl);
				if (act == API_GATE_REJECT) {
					assert_int_equal(r.status, 0);
					assert_non_null(api_gate_error(&g));
					r.status = api_gate_error(&g)->status;
				}
				break;
			case API_GATE_DROP:
				assert_true(r.status != 0);
				r.dropped += k;
				break;
			}
			off += k;
			piece -= k;
		}
	}
	if (!r.status)
		assert_null(api_gate_error(&g));
	r.n_requests = g.n_requests;
	api_gate_clear(&g);
	if (!r.out.data)
		api_buf_append(&r.out, "", 0);
	return r;
}

static struct run run(const char *in, size_t step)
{
	return run_split(in, strlen(in), step, MAX_HEAD, MAX_BODY);
}

/* Valid streams come out unchanged whether fed whole, byte by byte, or cut
 * at every single point. */
static void check_valid(const char *in, int n_requests)
{
	size_t len = strlen(in);
	for (size_t step = 0; step <= 7; step++) {
		struct run r = run(in, step);
		if (r.status)
			fail_msg("step %zu: refused %d: %s", step, r.status, in);
		assert_int_equal(r.out.len, len);
		assert_memory_equal(r.out.data, in, len);
		assert_int_equal(r.n_requests, n_requests);
		api_buf_free(&r.out);
	}
	for (size_t cut = 1; cut < len; cut++) {
		struct api_gate g;
		struct api_buf out = {0};
		api_gate_init(&g, MAX_HEAD, MAX_BODY);
		size_t offs[2] = {0, cut}, ends[2] = {cut, len};
		for (int part = 0; part < 2; part++)
			for (size_t off = offs[part]; off < ends[part];) {
				enum api_gate_act act;
				size_t hl, k = api_gate_feed(&g, in + off, ends[part] - off, &act);
				assert_true(act != API_GATE_REJECT && act != API_GATE_DROP);
				if (act == API_GATE_PASS)
					api_buf_append(&out, in + off, k);
				else if (act == API_GATE_RELEASE) {
					const char *h = api_gate_held(&g, &hl);
					api_buf_append(&out, h, hl);
				}
				off += k;
			}
		assert_int_equal(out.len, len);
		assert_memory_equal(out.data, in, len);
		api_buf_free(&out);
		api_gate_clear(&g);
	}
}

static void test_valid_streams(void **state)
{
	check_valid("GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n", 1);
	check_valid("GET /health HTTP/1.0\n\n", 1);
	check_valid("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\n\r\n"
	            "{\"prompt\":\"\"}"
	            "GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
	            2);
	/* body-less methods: evhttp reads no body, whatever the headers say */
	check_valid("GET /health HTTP/1.1\r\nContent-Length: 5000000\r\n\r\n", 1);
	check_valid("DELETE /v1/models HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 1);
	/* chunked, with the empty lines evhttp skips, and trailers */
	check_valid("POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
	            "5\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n"
	            "POST /v1/completions HTTP/1.1\r\ntransfer-encoding: Chunked\r\n"
	            "Expect: 100-continue\r\n\r\n"
	            "3 ignored\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n",
	            2);
	/* a POST without a length and Connection: close has no body */
	check_valid("POST /v1/completions HTTP/1.1\r\nConnection: close\r\n\r\n", 1);
	check_valid("POST /v1/completions HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 1);
	/* exactly at the caps */
	char body[2048];
	int n =
	    snprintf(body, sizeof(body), "PUT /x HTTP/1.1\r\nContent-Length: %d\r\n\r\n", MAX_BODY);
	memset(body + n, 'b', MAX_BODY);
	body[n + MAX_BODY] = '\0';
	check_valid(body, 1);
	char head[MAX_HEAD + 1];
	n = snprintf(head, sizeof(head), "GET / HTTP/1.1\r\nX: ");
	memset(head + n, 'h', MAX_HEAD - (size_t)n - 4);
	memcpy(head + MAX_HEAD - 4, "\r\n\r\n", 5);
	assert_int_equal(strlen(head), MAX_HEAD);
	check_valid(head, 1);
}

static const char repl_head[] = "GET /.mesh-llm/refused HTTP/1.1\r\nHost: mesh-llm\r\n"
                                "Connection: close\r\n" API_GATE_MARK ": 1\r\n\r\n";

/* A refused request: |want| status, and the stream evhttp sees is |prefix|
 * (what went through before) followed by |repl|, for every split. */
static void check_refused(const char *in, size_t len, int want, const char *prefix,
                          const char *repl)
{
	for (size_t step = 0; step <= 5; step++) {
		struct run r = run_split(in, len, step, MAX_HEAD, MAX_BODY);
		if (r.status != want)
			fail_msg("step %zu: status %d, want %d: %.200s", step, r.status, want, in);
		size_t pl = strlen(prefix), rl = strlen(repl);
		if (r.out.len != pl + rl || memcmp(r.out.data, prefix, pl) != 0 ||
		    memcmp(r.out.data + pl, repl, rl) != 0)
			fail_msg("step %zu: evhttp would see:\n%s\nwant:\n%s%s", step, r.out.data,
			         prefix, repl);
		api_buf_free(&r.out);
	}
}

static void refused_head(const char *in, int want)
{
	check_refused(in, strlen(in), want, "", repl_head);
}

static void test_oversized(void **state)
{
	/* Content-Length over the cap: refused before any body byte */
	refused_head("POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 1001\r\n\r\n{", 413);
	refused_head("POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 104857600\r\n\r\n",
	             413);
	refused_head("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", 400);
	/* a head over the cap, with or without its end in sight */
	char big[1024];
	int n = snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nX-Big: ");
	memset(big + n, 'x', 600);
	strcpy(big + n + 600, "\r\n\r\n");
	refused_head(big, 431);
	big[n + 300] = '\0';
	refused_head(big, 431);
	memset(big, 'G', 500);
	big[500] = '\0';
	refused_head(big, 431); /* a request line without end */

	/* chunked over the cap: the body is ended at the chunk that would
	 * cross it, and the rest is dropped */
	const char *pre = "POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
	char in[4096], want[4096];
	size_t len = (size_t)snprintf(in, sizeof(in), "%s", pre);
	for (int i = 0; i < 3; i++) {
		len += (size_t)snprintf(in + len, sizeof(in) - len, "12c\r\n");
		memset(in + len, 'a', 300);
		len += 300;
		len += (size_t)snprintf(in + len, sizeof(in) - len, "\r\n");
	}
	memcpy(want, in, len);
	want[len] = '\0';
	len += (size_t)snprintf(in + len, sizeof(in) - len, "12c\r\n");
	memset(in + len, 'a', 300);
	len += 300;
	len += (size_t)snprintf(in + len, sizeof(in) - len, "\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n");
	check_refused(in, len, 413, want, "0\r\n\r\n");
	/* a single huge chunk */
	snprintf(in, sizeof(in), "%sFFFFFFFFFFFFFFF\r\nabc", pre);
	check_refused(in, strlen(in), 413, pre, "0\r\n\r\n");
	/* trailers count against the head cap */
	len = (size_t)snprintf(in, sizeof(in), "%s1\r\na\r\n0\r\nX-T: ", pre);
	memset(in + len, 't', 400);
	strcpy(in + len + 400, "\r\n\r\n");
	snprintf(want, sizeof(want), "%s1\r\na\r\n0\r\n", pre);
	check_refused(in, strlen(in), 431, want, "\r\n");
}

static void test_malformed(void **state)
{
	refused_head("\r\nGET / HTTP/1.1\r\n\r\n", 400);
	refused_head("GET /\r\n\r\n", 400);
	refused_head("GET  / HTTP/1.1\r\n\r\n", 400);
	refused_head("GET / HTTP/1.1 x\r\n\r\n", 400);
	refused_head("get / HTTP/1.1\r\n\r\n", 501);
	refused_head("BREW /pot HTTP/1.1\r\n\r\n", 501);
	refused_head("GET / HTTP/2.0\r\n\r\n", 505);
	refused_head("GET / HTTP/1\r\n\r\n", 400);
	refused_head("GET / HTTPS/1.1\r\n\r\n", 400);
	refused_head("GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400);
	refused_head("GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", 400);
	refused_head("GET / HTTP/1.1\r\nBad Key: a\r\n\r\n", 400);
	refused_head("GET / HTTP/1.1\r\n: a\r\n\r\n", 400);
	check_refused("GET /\0 HTTP/1.1\r\n\r\n", 19, 400, "", repl_head);
	refused_head("POST / HTTP/1.1\r\nContent-Length: 12a\r\n\r\n", 400);
	refused_head("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400);
	refused_head("POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", 400);
	refused_head("POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nab", 400);
	refused_head("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501);
	refused_head("POST / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n", 411);
	refused_head("POST / HTTP/1.1\r\nContent-Length: 2\r\nExpect: 200-ok\r\n\r\nab", 417);
	/* a target evhttp's URI parser rejects */
	refused_head("GET http://[::1 HTTP/1.1\r\n\r\n", 400);

	const char *pre = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
	char in[1024];
	const char *bad_chunks[] = {"5;ext=1\r\nhello\r\n", "0x5\r\nhello\r\n", "zz\r\n",
	                            " 5\r\nhello\r\n", "-5\r\n"};
	for (size_t i = 0; i < sizeof(bad_chunks) / sizeof(*bad_chunks); i++) {
		snprintf(in, sizeof(in), "%s%s", pre, bad_chunks[i]);
		check_refused(in, strlen(in), 400, pre, "0\r\n\r\n");
	}
	char longline[512];
	memset(longline, '0', 300);
	longline[300] = '\0';
	snprintf(in, sizeof(in), "%s%s", pre, longline);
	check_refused(in, strlen(in), 400, pre, "0\r\n\r\n");
	snprintf(in, sizeof(in), "%s0\r\nno colon\r\n\r\n", pre);
	char want[256];
	snprintf(want, sizeof(want), "%s0\r\n", pre);
	check_refused(in, strlen(in), 400, want, "\r\n");
}

/* A refusal after valid requests: those go through, the refused one is
 * replaced, everything after it is dropped. */
static void test_refusal_after_valid(void **state)
{
	const char *ok = "GET /health HTTP/1.1\r\n\r\n"
	                 "POST /v1/completions HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
	char in[512];
	snprintf(in, sizeof(in),
	         "%sPOST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\nxxxxGET / HTTP/1.1\r\n\r\n", ok);
	check_refused(in, strlen(in), 413, ok, repl_head);
	struct run r = run(in, 1);
	assert_int_equal(r.n_requests, 2);
	assert_true(r.dropped > 0);
	api_buf_free(&r.out);
}

/* Deterministic random streams: the gate never crashes, never hands on
 * more than it was given plus a stand-in, and holds at most the caps. */
static void test_random_bytes(void **state)
{
	uint64_t x = 88172645463325252ull;
	char buf[2048];
	static const char *const atoms[] = {"GET / HTTP/1.1\r\n",
	                                    "POST /v1/completions HTTP/1.1\r\n",
	                                    "\r\n",
	                                    "\n",
	                                    "Content-Length: 3\r\n",
	                                    "Transfer-Encoding: chunked\r\n",
	                                    "3\r\nabc\r\n",
	                                    "0\r\n",
	                                    "Connection: close\r\n",
	                                    "X: y\r\n",
	                                    "abc",
	                                    ": ",
	                                    " ",
	                                    "\0",
	                                    "ffff\r\n"};
	for (int it = 0; it < 3000; it++) {
		size_t len = 0;
		while (len < 1500) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			const char *a = atoms[x % (sizeof(atoms) / sizeof(*atoms))];
			size_t al = a[0] ? strlen(a) : 1;
			memcpy(buf + len, a, al);
			len += al;
		}
		struct run r = run_split(buf, len, 1 + (size_t)(x % 97), MAX_HEAD, MAX_BODY);
		assert_true(r.out.len <= len + sizeof(repl_head));
		api_buf_free(&r.out);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_valid_streams), cmocka_unit_test(test_oversized),
	    cmocka_unit_test(test_malformed),     cmocka_unit_test(test_refusal_after_valid),
	    cmocka_unit_test(test_random_bytes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
