/* Tests for src/net/net_frame.c and net_buf.c: the framing codec read like a
 * spec (every truncation point, byte-at-a-time feeding, oversized, unknown
 * and misplaced types, zero length) and the payload helpers. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "base/ml_err.h"
#include "net/net_buf.h"
#include "net/net_frame.h"

/* stream type byte + PING(8 bytes) + ERROR(0 bytes) + GOSSIP(300 bytes) */
static void build_stream(struct net_buf *b)
{
	uint8_t big[300];
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 7);
	net_buf_init(b, 0);
	net_frame_put_stream_type(b, NET_STREAM_CONTROL);
	size_t m = net_frame_begin(b, NET_MSG_PING);
	net_buf_put_u64(b, 0x0102030405060708ull);
	assert_int_equal(net_frame_end(b, NET_STREAM_CONTROL, m), 0);
	assert_int_equal(net_frame_put(b, NET_STREAM_CONTROL, NET_MSG_ERROR, NULL, 0), 0);
	assert_int_equal(net_frame_put(b, NET_STREAM_CONTROL, NET_MSG_GOSSIP, big, sizeof(big)), 0);
	assert_int_equal(b->len, 1 + 13 + 5 + 305);
}

static void check_msgs(struct net_frame_msg *msgs, int n)
{
	assert_int_equal(n, 3);
	assert_int_equal(msgs[0].type, NET_MSG_PING);
	assert_int_equal(msgs[0].len, 8);
	assert_int_equal(msgs[1].type, NET_MSG_ERROR);
	assert_int_equal(msgs[1].len, 0);
	assert_non_null(msgs[1].payload);
	assert_int_equal(msgs[2].type, NET_MSG_GOSSIP);
	assert_int_equal(msgs[2].len, 300);
	for (int i = 0; i < 3; i++)
		assert_int_equal(msgs[i].stream_type, NET_STREAM_CONTROL);
}

/* Feeds |data| in pieces of |step| bytes (0 = split at |cut| only), copies
 * each message's payload and checks the result. */
static void feed_all(const uint8_t *data, size_t len, size_t step, size_t cut)
{
	struct net_frame_decoder d;
	struct net_frame_msg msgs[8];
	uint8_t *copies[8] = {0};
	int n = 0;
	net_frame_decoder_init(&d, 0);
	size_t pos = 0;
	while (pos < len) {
		size_t chunk = step ? step : (pos < cut ? cut - pos : len - pos);
		if (chunk > len - pos)
			chunk = len - pos;
		const uint8_t *p = data + pos;
		size_t left = chunk;
		while (left > 0) {
			struct net_frame_msg m;
			int rc = net_frame_decoder_feed(&d, p, left, &m);
			if (rc == ML_ERR_INCOMPLETE)
				break;
			assert_true(rc > 0 && (size_t)rc <= left);
			assert_true(n < 8);
			msgs[n] = m;
			copies[n] = malloc(m.len + 1);
			memcpy(copies[n], m.payload, m.len);
			msgs[n].payload = copies[n];
			n++;
			p += rc;
			left -= (size_t)rc;
		}
		pos += chunk;
	}
	check_msgs(msgs, n);
	assert_memory_equal(copies[0], "\1\2\3\4\5\6\7\10", 8);
	for (int i = 0; i < 300; i++)
		assert_int_equal(copies[2][i], (uint8_t)(i * 7));
	for (int i = 0; i < n; i++)
		free(copies[i]);
	net_frame_decoder_free(&d);
}

static void test_net_frame_whole(void **state)
{
	(void)state;
	struct net_buf b;
	build_stream(&b);
	feed_all(b.data, b.len, 0, b.len);
	net_buf_free(&b);
}

static void test_net_frame_byte_at_a_time(void **state)
{
	(void)state;
	struct net_buf b;
	build_stream(&b);
	feed_all(b.data, b.len, 1, 0);
	feed_all(b.data, b.len, 3, 0);
	feed_all(b.data, b.len, 7, 0);
	net_buf_free(&b);
}

static void test_net_frame_every_split_point(void **state)
{
	(void)state;
	struct net_buf b;
	build_stream(&b);
	for (size_t cut = 1; cut < b.len; cut++)
		feed_all(b.data, b.len, 0, cut);
	net_buf_free(&b);
}

/* Stateless parse: every truncation of a message is INCOMPLETE, never an
 * error and never a message. */
static void test_net_frame_parse_truncation(void **state)
{
	(void)state;
	struct net_buf b;
	net_buf_init(&b, 0);
	uint8_t payload[40];
	memset(payload, 0xab, sizeof(payload));
	assert_int_equal(
	    net_frame_put(&b, NET_STREAM_STAGE, NET_MSG_STAGE_FORWARD, payload, sizeof(payload)),
	    0);
	struct net_frame_msg m;
	for (size_t i = 0; i < b.len; i++)
		assert_int_equal(net_frame_parse(NET_STREAM_STAGE, b.data, i, &m),
		                 ML_ERR_INCOMPLETE);
	assert_int_equal(net_frame_parse(NET_STREAM_STAGE, b.data, b.len, &m), 45);
	assert_int_equal(m.type, NET_MSG_STAGE_FORWARD);
	assert_int_equal(m.len, 40);
	assert_ptr_equal(m.payload, b.data + 5);
	net_buf_free(&b);
}

static void test_net_frame_zero_length(void **state)
{
	(void)state;
	uint8_t s[] = {NET_STREAM_HTTP, NET_MSG_HTTP_END, 0, 0, 0, 0};
	struct net_frame_decoder d;
	struct net_frame_msg m;
	net_frame_decoder_init(&d, NET_STREAM_HTTP);
	assert_int_equal(net_frame_decoder_feed(&d, s, sizeof(s), &m), 6);
	assert_int_equal(m.type, NET_MSG_HTTP_END);
	assert_int_equal(m.len, 0);
	assert_non_null(m.payload);
	/* stream-type byte alone is incomplete */
	net_frame_decoder_free(&d);
	net_frame_decoder_init(&d, 0);
	assert_int_equal(net_frame_decoder_feed(&d, s, 1, &m), ML_ERR_INCOMPLETE);
	assert_int_equal(net_frame_decoder_feed(&d, s + 1, 0, &m), ML_ERR_INCOMPLETE);
	assert_int_equal(net_frame_decoder_feed(&d, s + 1, 5, &m), 5);
	assert_int_equal(m.len, 0);
	net_frame_decoder_free(&d);
}

static void test_net_frame_oversized(void **state)
{
	(void)state;
	struct net_frame_decoder d;
	struct net_frame_msg m;
	/* control limit is 1 MiB: 1 MiB passes the check, 1 MiB + 1 fails */
	uint8_t s[6] = {NET_STREAM_CONTROL, NET_MSG_GOSSIP};
	net_frame_encode_header(s + 1, NET_MSG_GOSSIP, NET_FRAME_MAX_CONTROL);
	net_frame_decoder_init(&d, 0);
	assert_int_equal(net_frame_decoder_feed(&d, s, sizeof(s), &m), ML_ERR_INCOMPLETE);
	net_frame_decoder_free(&d);

	net_frame_encode_header(s + 1, NET_MSG_GOSSIP, NET_FRAME_MAX_CONTROL + 1);
	net_frame_decoder_init(&d, 0);
	assert_int_equal(net_frame_decoder_feed(&d, s, sizeof(s), &m), ML_ERR_RANGE);
	assert_non_null(strstr(ml_last_error(), "limit"));
	/* sticky */
	assert_int_equal(net_frame_decoder_feed(&d, s, 1, &m), ML_ERR_RANGE);
	net_frame_decoder_free(&d);

	/* length arriving byte by byte is still refused once complete */
	net_frame_decoder_init(&d, 0);
	int rc = 0;
	for (size_t i = 0; i < sizeof(s); i++) {
		rc = net_frame_decoder_feed(&d, s + i, 1, &m);
		if (i + 1 < sizeof(s))
			assert_int_equal(rc, ML_ERR_INCOMPLETE);
	}
	assert_int_equal(rc, ML_ERR_RANGE);
	net_frame_decoder_free(&d);

	/* 0xffffffff on a stage stream */
	uint8_t t[6] = {NET_STREAM_STAGE, NET_MSG_STAGE_FORWARD, 0xff, 0xff, 0xff, 0xff};
	net_frame_decoder_init(&d, 0);
	assert_int_equal(net_frame_decoder_feed(&d, t, sizeof(t), &m), ML_ERR_RANGE);
	net_frame_decoder_free(&d);

	/* encoder refuses too */
	struct net_buf b;
	net_buf_init(&b, 0);
	size_t mk = net_frame_begin(&b, NET_MSG_PING);
	net_buf_reserve(&b, NET_FRAME_MAX_CONTROL + 1);
	b.len += NET_FRAME_MAX_CONTROL + 1;
	assert_int_equal(net_frame_end(&b, NET_STREAM_CONTROL, mk), ML_ERR_RANGE);
	net_buf_free(&b);
}

static void test_net_frame_unknown_type(void **state)
{
	(void)state;
	struct net_frame_decoder d;
	struct net_frame_msg m;
	/* unknown stream type */
	uint8_t a[] = {0x77};
	net_frame_decoder_init(&d, 0);
	assert_int_equal(net_frame_decoder_feed(&d, a, 1, &m), ML_ERR_PROTO);
	net_frame_decoder_free(&d);
	uint8_t z[] = {0};
	net_frame_decoder_init(&d, 0);
	assert_int_equal(net_frame_decoder_feed(&d, z, 1, &m), ML_ERR_PROTO);
	net_frame_decoder_free(&d);
	/* unexpected stream type */
	uint8_t e[] = {NET_STREAM_STAGE};
	net_frame_decoder_init(&d, NET_STREAM_CONTROL);
	assert_int_equal(net_frame_decoder_feed(&d, e, 1, &m), ML_ERR_PROTO);
	net_frame_decoder_free(&d);
	/* unknown message type is refused at its first byte */
	uint8_t b[] = {NET_STREAM_CONTROL, 200};
	net_frame_decoder_init(&d, 0);
	assert_int_equal(net_frame_decoder_feed(&d, b, 2, &m), ML_ERR_PROTO);
	net_frame_decoder_free(&d);
	net_frame_decoder_init(&d, 0);
	assert_int_equal(net_frame_decoder_feed(&d, b, 1, &m), ML_ERR_INCOMPLETE);
	assert_int_equal(net_frame_decoder_feed(&d, b + 1, 1, &m), ML_ERR_PROTO);
	net_frame_decoder_free(&d);
	/* message of another stream type */
	uint8_t c[] = {NET_STREAM_CONTROL, NET_MSG_STAGE_FORWARD, 0, 0, 0, 1, 9};
	net_frame_decoder_init(&d, 0);
	assert_int_equal(net_frame_decoder_feed(&d, c, sizeof(c), &m), ML_ERR_PROTO);
	assert_non_null(strstr(ml_last_error(), "not allowed"));
	net_frame_decoder_free(&d);
	/* ERROR is allowed everywhere */
	assert_int_equal(net_frame_check(NET_STREAM_STAGE, NET_MSG_ERROR, 3), 0);
	assert_int_equal(net_frame_check(NET_STREAM_HTTP, NET_MSG_ERROR, 3), 0);
	assert_int_equal(net_frame_check(NET_STREAM_HTTP, NET_MSG_HELLO, 3), ML_ERR_PROTO);
}

static void test_net_buf_reader(void **state)
{
	(void)state;
	struct net_buf b;
	net_buf_init(&b, 0);
	net_buf_put_u8(&b, 0xfe);
	net_buf_put_u16(&b, 0x1234);
	net_buf_put_u32(&b, 0xdeadbeef);
	net_buf_put_u64(&b, 0x0123456789abcdefull);
	net_buf_put_str(&b, "hello", 5);
	net_buf_put_blob(&b, "xyz", 3);
	assert_int_equal(net_buf_error(&b), 0);
	assert_int_equal(b.len, 1 + 2 + 4 + 8 + 7 + 7);

	struct net_reader r;
	size_t n;
	net_reader_init(&r, b.data, b.len);
	assert_int_equal(net_reader_u8(&r), 0xfe);
	assert_int_equal(net_reader_u16(&r), 0x1234);
	assert_int_equal(net_reader_u32(&r), 0xdeadbeef);
	assert_true(net_reader_u64(&r) == 0x0123456789abcdefull);
	const char *s = net_reader_str(&r, 64, &n);
	assert_int_equal(n, 5);
	assert_memory_equal(s, "hello", 5);
	const uint8_t *bl = net_reader_blob(&r, 64, &n);
	assert_int_equal(n, 3);
	assert_memory_equal(bl, "xyz", 3);
	assert_int_equal(net_reader_finish(&r), 0);

	/* every truncation fails cleanly and reads zeros afterwards */
	for (size_t cut = 0; cut < b.len; cut++) {
		net_reader_init(&r, b.data, cut);
		net_reader_u8(&r);
		net_reader_u16(&r);
		net_reader_u32(&r);
		net_reader_u64(&r);
		net_reader_str(&r, 64, &n);
		net_reader_blob(&r, 64, &n);
		assert_int_equal(net_reader_error(&r), ML_ERR_FORMAT);
		assert_int_equal(net_reader_u32(&r), 0);
	}
	/* string longer than the caller's max */
	net_reader_init(&r, b.data + 15, 7);
	assert_null(net_reader_str(&r, 4, &n));
	assert_int_equal(n, 0);
	assert_int_equal(net_reader_error(&r), ML_ERR_FORMAT);
	/* trailing bytes */
	net_reader_init(&r, b.data, 2);
	net_reader_u8(&r);
	assert_int_equal(net_reader_finish(&r), ML_ERR_FORMAT);
	net_buf_free(&b);

	/* growth limit and sticky error */
	net_buf_init(&b, 4);
	net_buf_put_u32(&b, 1);
	net_buf_put_u8(&b, 1);
	assert_int_equal(net_buf_error(&b), ML_ERR_RANGE);
	assert_int_equal(b.len, 4);
	net_buf_put_str(&b, "x", 1);
	assert_int_equal(b.len, 4);
	net_buf_free(&b);
	net_buf_init(&b, 0);
	char big[70000];
	memset(big, 'a', sizeof(big));
	net_buf_put_str(&b, big, sizeof(big));
	assert_int_equal(net_buf_error(&b), ML_ERR_RANGE);
	net_buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_net_frame_whole),
	    cmocka_unit_test(test_net_frame_byte_at_a_time),
	    cmocka_unit_test(test_net_frame_every_split_point),
	    cmocka_unit_test(test_net_frame_parse_truncation),
	    cmocka_unit_test(test_net_frame_zero_length),
	    cmocka_unit_test(test_net_frame_oversized),
	    cmocka_unit_test(test_net_frame_unknown_type),
	    cmocka_unit_test(test_net_buf_reader),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
