/* Tests for src/net/net_ident.c: key file round trip and mode, signatures,
 * id encodings, and that the TLS certificate carries the node key. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/ml_err.h"
#include "net/net_ident.h"

static void test_net_ident_save_load(void **state)
{
	(void)state;
	char dir[] = "/tmp/net_ident_XXXXXX";
	assert_non_null(mkdtemp(dir));
	char path[256];
	snprintf(path, sizeof(path), "%s/key", dir);

	struct net_ident a, b;
	bool created = false;
	assert_int_equal(net_ident_load(&a, path), ML_ERR_NOT_FOUND);
	assert_int_equal(net_ident_load_or_create(&a, path, &created), 0);
	assert_true(created);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(net_ident_load_or_create(&b, path, &created), 0);
	assert_false(created);
	assert_memory_equal(a.pk, b.pk, NET_ID_LEN);
	assert_memory_equal(a.sk, b.sk, 64);

	/* corrupt file */
	FILE *f = fopen(path, "w");
	fputs("mesh-llm ed25519 secret key v1\nzz\n", f);
	fclose(f);
	assert_int_equal(net_ident_load(&b, path), ML_ERR_FORMAT);
	unlink(path);
	rmdir(dir);
}

static void test_net_ident_sign_verify(void **state)
{
	(void)state;
	struct net_ident a, b;
	uint8_t seed[32] = {7};
	assert_int_equal(net_ident_from_seed(&a, seed), 0);
	assert_int_equal(net_ident_generate(&b), 0);
	uint8_t sig[NET_SIG_LEN];
	net_ident_sign(&a, "gossip", 6, sig);
	assert_int_equal(net_ident_verify(a.pk, "gossip", 6, sig), 0);
	assert_int_equal(net_ident_verify(b.pk, "gossip", 6, sig), ML_ERR_AUTH);
	assert_int_equal(net_ident_verify(a.pk, "gossiq", 6, sig), ML_ERR_AUTH);
	sig[5] ^= 1;
	assert_int_equal(net_ident_verify(a.pk, "gossip", 6, sig), ML_ERR_AUTH);
}

static void test_net_ident_encodings(void **state)
{
	(void)state;
	uint8_t id[NET_ID_LEN], back[NET_ID_LEN];
	for (int i = 0; i < NET_ID_LEN; i++)
		id[i] = (uint8_t)(i * 9 + 250);
	char hex[NET_ID_HEX_LEN + 1], sh[9];
	net_id_to_hex(id, hex);
	assert_int_equal(strlen(hex), 64);
	assert_int_equal(net_id_from_hex(hex, back), 0);
	assert_memory_equal(id, back, NET_ID_LEN);
	net_id_short(id, sh);
	assert_memory_equal(sh, hex, 8);
	assert_int_equal(net_id_from_hex("abc", back), ML_ERR_FORMAT);
	hex[10] = 'g';
	assert_int_equal(net_id_from_hex(hex, back), ML_ERR_FORMAT);

	char b64[64];
	int n = net_b64url_encode(id, sizeof(id), b64, sizeof(b64));
	assert_int_equal(n, 43);
	assert_null(strchr(b64, '='));
	assert_null(strchr(b64, '+'));
	uint8_t dec[40];
	assert_int_equal(net_b64url_decode(b64, (size_t)n, dec, sizeof(dec)), 32);
	assert_memory_equal(dec, id, 32);
	assert_true(net_b64url_decode("a$b", 3, dec, sizeof(dec)) < 0);
	assert_int_equal(net_b64url_encode(id, sizeof(id), b64, 10), ML_ERR_RANGE);
}

static void test_net_ident_tls_cert(void **state)
{
	(void)state;
	struct net_ident a;
	assert_int_equal(net_ident_generate(&a), 0);
	gnutls_certificate_credentials_t cred;
	assert_int_equal(net_ident_tls_credentials(&a, &cred), 0);
	/* the certificate in the credentials carries exactly the node key */
	gnutls_x509_crt_t *crts = NULL;
	unsigned ncrt = 0;
	assert_int_equal(gnutls_certificate_get_x509_crt(cred, 0, &crts, &ncrt), 0);
	assert_int_equal(ncrt, 1);
	gnutls_pubkey_t pub;
	gnutls_pubkey_init(&pub);
	assert_int_equal(gnutls_pubkey_import_x509(pub, crts[0], 0), 0);
	gnutls_ecc_curve_t curve;
	gnutls_datum_t x;
	assert_int_equal(gnutls_pubkey_export_ecc_raw2(pub, &curve, &x, NULL, 0), 0);
	assert_int_equal(curve, GNUTLS_ECC_CURVE_ED25519);
	assert_int_equal(x.size, 32);
	assert_memory_equal(x.data, a.pk, 32);
	gnutls_free(x.data);
	gnutls_pubkey_deinit(pub);
	for (unsigned i = 0; i < ncrt; i++)
		gnutls_x509_crt_deinit(crts[i]);
	gnutls_free(crts);
	gnutls_certificate_free_credentials(cred);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_net_ident_save_load),
	    cmocka_unit_test(test_net_ident_sign_verify),
	    cmocka_unit_test(test_net_ident_encodings),
	    cmocka_unit_test(test_net_ident_tls_cert),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
