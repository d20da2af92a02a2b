/* Tests for src/mesh/mesh_token.c: round trip, every truncation, every
 * flipped byte, bad versions, address caps, trailing bytes, text form. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "base/ml_err.h"
#include "mesh/mesh_token.h"

static void sample(struct mesh_token *t, int n_addrs)
{
	memset(t, 0, sizeof(*t));
	for (int i = 0; i < MESH_ID_LEN; i++)
		t->mesh_id[i] = (uint8_t)(i + 1);
	for (int i = 0; i < NET_ID_LEN; i++)
		t->issuer[i] = (uint8_t)(0x40 + i);
	for (int i = 0; i < MESH_SECRET_LEN; i++)
		t->secret[i] = (uint8_t)(0x80 + i);
	t->n_addrs = (uint8_t)n_addrs;
	for (int i = 0; i < n_addrs; i++) {
		if (i % 2 == 0)
			assert_int_equal(
			    mesh_addr_parse(&t->addrs[i], "192.168.1.20", (uint16_t)(7842 + i)), 0);
		else
			assert_int_equal(
			    mesh_addr_parse(&t->addrs[i], "2001:db8::7", (uint16_t)(7842 + i)), 0);
	}
}

static void assert_same(const struct mesh_token *a, const struct mesh_token *b)
{
	assert_memory_equal(a->mesh_id, b->mesh_id, MESH_ID_LEN);
	assert_memory_equal(a->issuer, b->issuer, NET_ID_LEN);
	assert_memory_equal(a->secret, b->secret, MESH_SECRET_LEN);
	assert_int_equal(a->n_addrs, b->n_addrs);
	for (int i = 0; i < a->n_addrs; i++)
		assert_true(mesh_addr_equal(&a->addrs[i], &b->addrs[i]));
}

static void test_mesh_token_roundtrip(void **state)
{
	(void)state;
	for (int n = 1; n <= MESH_TOKEN_MAX_ADDRS; n++) {
		struct mesh_token t, u;
		sample(&t, n);
		char text[MESH_TOKEN_MAX_LEN];
		int len = mesh_token_encode(&t, text, sizeof(text));
		assert_true(len > 0 && len < MESH_TOKEN_MAX_LEN);
		assert_int_equal((size_t)len, strlen(text));
		assert_int_equal(mesh_token_decode(&u, text), 0);
		assert_same(&t, &u);
	}
	/* surrounding whitespace (a pasted line) is fine */
	struct mesh_token t, u;
	sample(&t, 2);
	char text[MESH_TOKEN_MAX_LEN], padded[MESH_TOKEN_MAX_LEN + 8];
	mesh_token_encode(&t, text, sizeof(text));
	snprintf(padded, sizeof(padded), "  %s\n", text);
	assert_int_equal(mesh_token_decode(&u, padded), 0);
	assert_same(&t, &u);
}

static void test_mesh_token_truncations(void **state)
{
	(void)state;
	struct mesh_token t, u;
	sample(&t, 3);
	uint8_t blob[MESH_TOKEN_MAX_BLOB];
	int n = mesh_token_encode_blob(&t, blob, sizeof(blob));
	assert_true(n > 0);
	for (int k = 0; k < n; k++)
		assert_int_equal(mesh_token_decode_blob(&u, blob, (size_t)k), ML_ERR_FORMAT);
	assert_int_equal(mesh_token_decode_blob(&u, blob, (size_t)n), 0);
	/* text truncated at every length */
	char text[MESH_TOKEN_MAX_LEN];
	int tl = mesh_token_encode(&t, text, sizeof(text));
	for (int k = 0; k < tl; k++) {
		char cut[MESH_TOKEN_MAX_LEN];
		memcpy(cut, text, (size_t)k);
		cut[k] = 0;
		assert_int_equal(mesh_token_decode(&u, cut), ML_ERR_FORMAT);
	}
}

static void test_mesh_token_flipped_bytes(void **state)
{
	(void)state;
	struct mesh_token t, u;
	sample(&t, 2);
	uint8_t blob[MESH_TOKEN_MAX_BLOB];
	int n = mesh_token_encode_blob(&t, blob, sizeof(blob));
	for (int k = 0; k < n; k++)
		for (int bit = 0; bit < 8; bit++) {
			blob[k] ^= (uint8_t)(1u << bit);
			assert_int_equal(mesh_token_decode_blob(&u, blob, (size_t)n),
			                 ML_ERR_FORMAT);
			blob[k] ^= (uint8_t)(1u << bit);
		}
}

/* Re-seals a hand-edited blob with a valid check so the decoder's other
 * rules are what refuses it. */
static void reseal(uint8_t *blob, size_t n)
{
	uint8_t h[32];
	crypto_generichash(h, sizeof(h), blob, n - 4, NULL, 0);
	memcpy(blob + n - 4, h, 4);
}

static void test_mesh_token_bad_fields(void **state)
{
	(void)state;
	struct mesh_token t, u;
	sample(&t, 1);
	uint8_t blob[MESH_TOKEN_MAX_BLOB + 32];
	int n = mesh_token_encode_blob(&t, blob, sizeof(blob));
	uint8_t b[sizeof(blob)];
	/* version 2, 0 and 255 */
	for (int v = 0; v < 256; v += 1) {
		if (v == MESH_TOKEN_VERSION)
			continue;
		memcpy(b, blob, (size_t)n);
		b[4] = (uint8_t)v;
		reseal(b, (size_t)n);
		assert_int_equal(mesh_token_decode_blob(&u, b, (size_t)n), ML_ERR_FORMAT);
	}
	/* magic */
	memcpy(b, blob, (size_t)n);
	b[0] = 'X';
	reseal(b, (size_t)n);
	assert_int_equal(mesh_token_decode_blob(&u, b, (size_t)n), ML_ERR_FORMAT);
	/* address count 0, 2 (only one present), 17 */
	size_t cnt_off = 4 + 1 + MESH_ID_LEN + NET_ID_LEN + MESH_SECRET_LEN;
	for (int c = 0; c < 256; c++) {
		if (c == 1)
			continue;
		memcpy(b, blob, (size_t)n);
		b[cnt_off] = (uint8_t)c;
		reseal(b, (size_t)n);
		assert_int_equal(mesh_token_decode_blob(&u, b, (size_t)n), ML_ERR_FORMAT);
	}
	/* family 5 */
	memcpy(b, blob, (size_t)n);
	b[cnt_off + 1] = 5;
	reseal(b, (size_t)n);
	assert_int_equal(mesh_token_decode_blob(&u, b, (size_t)n), ML_ERR_FORMAT);
	/* port 0 */
	memcpy(b, blob, (size_t)n);
	b[cnt_off + 6] = 0;
	b[cnt_off + 7] = 0;
	reseal(b, (size_t)n);
	assert_int_equal(mesh_token_decode_blob(&u, b, (size_t)n), ML_ERR_FORMAT);
	/* trailing byte before the check */
	memcpy(b, blob, (size_t)n - 4);
	b[n - 4] = 0;
	reseal(b, (size_t)n + 1);
	assert_int_equal(mesh_token_decode_blob(&u, b, (size_t)n + 1), ML_ERR_FORMAT);
	/* an over-long blob */
	uint8_t big[MESH_TOKEN_MAX_BLOB + 1] = {0};
	assert_int_equal(mesh_token_decode_blob(&u, big, sizeof(big)), ML_ERR_FORMAT);
	/* encoder refuses bad address lists */
	sample(&t, 1);
	t.n_addrs = 0;
	assert_int_equal(mesh_token_encode_blob(&t, blob, sizeof(blob)), ML_ERR_INVALID);
	t.n_addrs = MESH_TOKEN_MAX_ADDRS + 1;
	assert_int_equal(mesh_token_encode_blob(&t, blob, sizeof(blob)), ML_ERR_INVALID);
	sample(&t, 1);
	assert_int_equal(mesh_token_encode_blob(&t, blob, 10), ML_ERR_RANGE);
}

static void test_mesh_token_text_junk(void **state)
{
	(void)state;
	struct mesh_token u;
	const char *bad[] = {"", "   ", "hello", "TUxUSw", "!!!!", "TUxUSw==", NULL};
	for (int i = 0; bad[i]; i++)
		assert_int_equal(mesh_token_decode(&u, bad[i]), ML_ERR_FORMAT);
	assert_int_equal(mesh_token_decode(&u, NULL), ML_ERR_FORMAT);
	char big[2000];
	memset(big, 'A', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	assert_int_equal(mesh_token_decode(&u, big), ML_ERR_FORMAT);
}

static void test_mesh_addr_local(void **state)
{
	(void)state;
	struct mesh_addr a[16];
	int n = mesh_addr_local("127.0.0.1", 9000, a, 16);
	assert_int_equal(n, 1);
	assert_int_equal(a[0].family, 4);
	assert_int_equal(a[0].port, 9000);
	n = mesh_addr_local(NULL, 9000, a, 16);
	assert_true(n >= 1); /* loopback at least, listed last */
	char s[MESH_ADDR_STR_LEN];
	mesh_addr_str(&a[n - 1], s);
	assert_string_equal(s, "127.0.0.1:9000");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_mesh_token_roundtrip),
	    cmocka_unit_test(test_mesh_token_truncations),
	    cmocka_unit_test(test_mesh_token_flipped_bytes),
	    cmocka_unit_test(test_mesh_token_bad_fields),
	    cmocka_unit_test(test_mesh_token_text_junk),
	    cmocka_unit_test(test_mesh_addr_local),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
