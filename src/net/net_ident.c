/* Ed25519 node identity: key file, signatures, id encodings, and the
 * self-signed TLS certificate made from the same key. */
#include "net/net_ident.h"

#include "base/ml_err.h"
#include "base/ml_log.h"

#include <errno.h>
#include <fcntl.h>
#include <gnutls/abstract.h>
#include <gnutls/x509.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define KEYFILE_MAGIC "mesh-llm ed25519 secret key v1\n"

static int sodium_ready(void)
{
	if (sodium_init() < 0)
		return ml_error(ML_ERR_IO, "%s: libsodium initialisation failed", __func__);
	return 0;
}

int net_ident_generate(struct net_ident *id)
{
	int rc = sodium_ready();
	if (rc)
		return rc;
	crypto_sign_keypair(id->pk, id->sk);
	return 0;
}

int net_ident_from_seed(struct net_ident *id, const uint8_t seed[32])
{
	int rc = sodium_ready();
	if (rc)
		return rc;
	crypto_sign_seed_keypair(id->pk, id->sk, seed);
	return 0;
}

void net_ident_clear(struct net_ident *id)
{
	sodium_memzero(id, sizeof(*id));
}

int net_ident_save(const struct net_ident *id, const char *path)
{
	char tmp[4096];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp))
		return ml_error(ML_ERR_INVALID, "%s: path too long", __func__);
	char seed_hex[65];
	sodium_bin2hex(seed_hex, sizeof(seed_hex), id->sk, 32);
	char text[256];
	int n = snprintf(text, sizeof(text), "%s%s\n", KEYFILE_MAGIC, seed_hex);
	sodium_memzero(seed_hex, sizeof(seed_hex));
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		sodium_memzero(text, sizeof(text));
		return ml_error(ML_ERR_IO, "%s: cannot create %s: %s", __func__, tmp,
		                strerror(errno));
	}
	int rc = 0;
	if (fchmod(fd, 0600) != 0 || write(fd, text, (size_t)n) != n || fsync(fd) != 0)
		rc = ml_error(ML_ERR_IO, "%s: cannot write %s: %s", __func__, tmp, strerror(errno));
	sodium_memzero(text, sizeof(text));
	if (close(fd) != 0 && !rc)
		rc = ml_error(ML_ERR_IO, "%s: cannot write %s: %s", __func__, tmp, strerror(errno));
	if (!rc && rename(tmp, path) != 0)
		rc = ml_error(ML_ERR_IO, "%s: cannot rename %s to %s: %s", __func__, tmp, path,
		              strerror(errno));
	if (rc)
		unlink(tmp);
	return rc;
}

int net_ident_load(struct net_ident *id, const char *path)
{
	int rc = sodium_ready();
	if (rc)
		return rc;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return ml_error(ML_ERR_NOT_FOUND, "%s: no key file at %s", __func__, path);
		return ml_error(ML_ERR_IO, "%s: cannot open %s: %s", __func__, path,
		                strerror(errno));
	}
	struct stat st;
	if (fstat(fd, &st) == 0 && (st.st_mode & 077))
		ML_WARN("key file %s is readable by other users (mode %03o); run chmod 600 on it",
		        path, (unsigned)(st.st_mode & 0777));
	char text[256];
	ssize_t n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n < 0)
		return ml_error(ML_ERR_IO, "%s: cannot read %s: %s", __func__, path,
		                strerror(errno));
	text[n] = 0;
	size_t ml = strlen(KEYFILE_MAGIC);
	uint8_t seed[32];
	size_t bin_len = 0;
	if ((size_t)n < ml + 64 || memcmp(text, KEYFILE_MAGIC, ml) != 0 ||
	    sodium_hex2bin(seed, sizeof(seed), text + ml, 64, NULL, &bin_len, NULL) != 0 ||
	    bin_len != 32) {
		sodium_memzero(text, sizeof(text));
		return ml_error(ML_ERR_FORMAT, "%s: %s is not a mesh-llm key file", __func__, path);
	}
	sodium_memzero(text, sizeof(text));
	rc = net_ident_from_seed(id, seed);
	sodium_memzero(seed, sizeof(seed));
	return rc;
}

int net_ident_load_or_create(struct net_ident *id, const char *path, bool *created)
{
	if (created)
		*created = false;
	int rc = net_ident_load(id, path);
	if (rc != ML_ERR_NOT_FOUND)
		return rc;
	rc = net_ident_generate(id);
	if (!rc)
		rc = net_ident_save(id, path);
	if (!rc && created)
		*created = true;
	return rc;
}

void net_ident_sign(const struct net_ident *id, const void *msg, size_t len,
                    uint8_t sig[NET_SIG_LEN])
{
	crypto_sign_detached(sig, NULL, msg, len, id->sk);
}

int net_ident_verify(const uint8_t pk[NET_ID_LEN], const void *msg, size_t len,
                     const uint8_t sig[NET_SIG_LEN])
{
	if (crypto_sign_verify_detached(sig, msg, len, pk) != 0)
		return ML_ERR_AUTH;
	return 0;
}

void net_id_to_hex(const uint8_t id[NET_ID_LEN], char out[NET_ID_HEX_LEN + 1])
{
	static const char hx[] = "0123456789abcdef";
	for (int i = 0; i < NET_ID_LEN; i++) {
		out[2 * i] = hx[id[i] >> 4];
		out[2 * i + 1] = hx[id[i] & 15];
	}
	out[NET_ID_HEX_LEN] = 0;
}

void net_id_short(const uint8_t id[NET_ID_LEN], char out[9])
{
	char full[NET_ID_HEX_LEN + 1];
	net_id_to_hex(id, full);
	memcpy(out, full, 8);
	out[8] = 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int net_id_from_hex(const char *s, uint8_t id[NET_ID_LEN])
{
	if (!s || strlen(s) != NET_ID_HEX_LEN)
		return ml_error(ML_ERR_FORMAT, "%s: a node id is %d hex digits", __func__,
		                NET_ID_HEX_LEN);
	for (int i = 0; i < NET_ID_LEN; i++) {
		int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return ml_error(ML_ERR_FORMAT, "%s: bad hex digit at %d", __func__, 2 * i);
		id[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

int net_b64url_encode(const void *in, size_t n, char *out, size_t cap)
{
	size_t need = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	if (cap < need)
		return ml_error(ML_ERR_RANGE, "%s: need %zu bytes, have %zu", __func__, need, cap);
	sodium_bin2base64(out, cap, in, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	return (int)strlen(out);
}

int net_b64url_decode(const char *s, size_t len, uint8_t *out, size_t cap)
{
	size_t bin_len = 0;
	const char *end = NULL;
	if (sodium_base642bin(out, cap, s, len, NULL, &bin_len, &end,
	                      sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0) {
		if (len / 4 * 3 > cap)
			return ml_error(ML_ERR_RANGE, "%s: output buffer of %zu bytes too small",
			                __func__, cap);
		return ml_error(ML_ERR_FORMAT, "%s: invalid base64url", __func__);
	}
	if (end != s + len)
		return ml_error(ML_ERR_FORMAT, "%s: trailing characters in base64url", __func__);
	return (int)bin_len;
}

static int gtls_fail(const char *fn, const char *what, int grc)
{
	return ml_error(ML_ERR_AUTH, "%s: %s: %s", fn, what, gnutls_strerror(grc));
}

int net_ident_tls_credentials(const struct net_ident *id, gnutls_certificate_credentials_t *out)
{
	gnutls_privkey_t priv = NULL;
	gnutls_pubkey_t pub = NULL;
	gnutls_x509_crt_t crt = NULL;
	gnutls_certificate_credentials_t cred = NULL;
	gnutls_pcert_st pcert;
	bool have_pcert = false;
	int grc, rc = 0;
	gnutls_datum_t x = {(unsigned char *)id->pk, NET_ID_LEN};
	gnutls_datum_t k = {(unsigned char *)id->sk, 32};

	*out = NULL;
	if ((grc = gnutls_privkey_init(&priv)) < 0) {
		rc = gtls_fail(__func__, "privkey_init", grc);
		goto fail;
	}
	if ((grc = gnutls_privkey_import_ecc_raw(priv, GNUTLS_ECC_CURVE_ED25519, &x, NULL, &k)) <
	    0) {
		rc = gtls_fail(__func__, "import Ed25519 key", grc);
		goto fail;
	}
	if ((grc = gnutls_pubkey_init(&pub)) < 0 ||
	    (grc = gnutls_pubkey_import_privkey(pub, priv, 0, 0)) < 0) {
		rc = gtls_fail(__func__, "public key", grc);
		goto fail;
	}
	if ((grc = gnutls_x509_crt_init(&crt)) < 0) {
		rc = gtls_fail(__func__, "crt_init", grc);
		goto fail;
	}
	char cn[32];
	char sid[9];
	net_id_short(id->pk, sid);
	snprintf(cn, sizeof(cn), "mesh-llm %s", sid);
	uint8_t serial[16];
	randombytes_buf(serial, sizeof(serial));
	serial[0] &= 0x7f; /* positive */
	time_t now = time(NULL);
	if ((grc = gnutls_x509_crt_set_version(crt, 3)) < 0 ||
	    (grc = gnutls_x509_crt_set_serial(crt, serial, sizeof(serial))) < 0 ||
	    (grc = gnutls_x509_crt_set_activation_time(crt, now - 86400)) < 0 ||
	    (grc = gnutls_x509_crt_set_expiration_time(crt, now + 10 * 365 * 86400L)) < 0 ||
	    (grc = gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, cn,
	                                         (unsigned)strlen(cn))) < 0 ||
	    (grc = gnutls_x509_crt_set_pubkey(crt, pub)) < 0 ||
	    (grc = gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_DIGITAL_SIGNATURE)) < 0 ||
	    (grc = gnutls_x509_crt_privkey_sign(crt, crt, priv, GNUTLS_DIG_UNKNOWN, 0)) < 0) {
		rc = gtls_fail(__func__, "self-signed certificate", grc);
		goto fail;
	}
	if ((grc = gnutls_pcert_import_x509(&pcert, crt, 0)) < 0) {
		rc = gtls_fail(__func__, "pcert_import", grc);
		goto fail;
	}
	have_pcert = true;
	if ((grc = gnutls_certificate_allocate_credentials(&cred)) < 0) {
		rc = gtls_fail(__func__, "allocate credentials", grc);
		goto fail;
	}
	/* On success the credentials own both the pcert and the private key. */
	if ((grc = gnutls_certificate_set_key(cred, NULL, 0, &pcert, 1, priv)) < 0) {
		rc = gtls_fail(__func__, "set_key", grc);
		goto fail;
	}
	priv = NULL;
	have_pcert = false;
	gnutls_x509_crt_deinit(crt);
	gnutls_pubkey_deinit(pub);
	*out = cred;
	return 0;

fail:
	if (cred)
		gnutls_certificate_free_credentials(cred);
	if (have_pcert)
		gnutls_pcert_deinit(&pcert);
	if (crt)
		gnutls_x509_crt_deinit(crt);
	if (pub)
		gnutls_pubkey_deinit(pub);
	if (priv)
		gnutls_privkey_deinit(priv);
	return rc;
}

int net_tls_peer_id(gnutls_session_t session, uint8_t id[NET_ID_LEN])
{
	unsigned int n = 0;
	const gnutls_datum_t *certs = gnutls_certificate_get_peers(session, &n);
	if (!certs || n == 0)
		return ml_error(ML_ERR_AUTH, "%s: peer sent no certificate", __func__);
	gnutls_pubkey_t pub = NULL;
	gnutls_datum_t x = {NULL, 0};
	gnutls_ecc_curve_t curve = GNUTLS_ECC_CURVE_INVALID;
	int rc = 0, grc;
	if ((grc = gnutls_pubkey_init(&pub)) < 0 ||
	    (grc = gnutls_pubkey_import_x509_raw(pub, &certs[0], GNUTLS_X509_FMT_DER, 0)) < 0) {
		rc = gtls_fail(__func__, "peer certificate", grc);
		goto out;
	}
	if (gnutls_pubkey_get_pk_algorithm(pub, NULL) != GNUTLS_PK_EDDSA_ED25519) {
		rc = ml_error(ML_ERR_AUTH, "%s: peer key is not Ed25519", __func__);
		goto out;
	}
	if ((grc = gnutls_pubkey_export_ecc_raw2(pub, &curve, &x, NULL, 0)) < 0) {
		rc = gtls_fail(__func__, "peer key", grc);
		goto out;
	}
	if (curve != GNUTLS_ECC_CURVE_ED25519 || x.size != NET_ID_LEN) {
		rc = ml_error(ML_ERR_AUTH, "%s: peer key has %u bytes, not an Ed25519 key",
		              __func__, x.size);
		goto out;
	}
	memcpy(id, x.data, NET_ID_LEN);
out:
	gnutls_free(x.data);
	if (pub)
		gnutls_pubkey_deinit(pub);
	return rc;
}
