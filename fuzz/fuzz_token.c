/* libFuzzer target for invite tokens: the input is tried as a binary blob
 * and as token text. Whatever decodes must re-encode to the same bytes
 * (the format has exactly one encoding per token). */
#include "base/ml_err.h"
#include "mesh/mesh_token.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mesh_token t, u;
	if (mesh_token_decode_blob(&t, data, size) == 0) {
		uint8_t out[MESH_TOKEN_MAX_BLOB];
		int n = mesh_token_encode_blob(&t, out, sizeof(out));
		if (n < 0 || (size_t)n != size || memcmp(out, data, size) != 0)
			abort();
		if (t.n_addrs < 1 || t.n_addrs > MESH_TOKEN_MAX_ADDRS)
			abort();
	}
	char *s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = 0;
	if (mesh_token_decode(&t, s) == 0) {
		char text[MESH_TOKEN_MAX_LEN];
		int n = mesh_token_encode(&t, text, sizeof(text));
		if (n <= 0 || mesh_token_decode(&u, text) != 0 || memcmp(&t, &u, sizeof(t)) != 0)
			abort();
	}
	free(s);
	return 0;
}
