/* libFuzzer target for the frame decoder: feeds the input in pieces whose
 * sizes come from the input itself, and checks that every message returned
 * lies inside its limits and that whole-buffer and piecewise decoding agree. */
#include "base/ml_err.h"
#include "net/net_frame.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t decode(const uint8_t *data, size_t size, size_t step, int *final_rc)
{
	struct net_frame_decoder d;
	uint64_t h = 1469598103934665603ull; /* FNV over (type, len, payload) */
	net_frame_decoder_init(&d, 0);
	size_t pos = 0;
	int rc = ML_ERR_INCOMPLETE;
	while (pos < size) {
		size_t chunk = step && step < size - pos ? step : size - pos;
		const uint8_t *p = data + pos;
		size_t left = chunk;
		while (left) {
			struct net_frame_msg m;
			rc = net_frame_decoder_feed(&d, p, left, &m);
			if (rc < 0)
				break;
			if ((size_t)rc > left || m.len > net_frame_max_payload(m.stream_type) ||
			    !m.payload)
				abort();
			h = (h ^ m.type) * 1099511628211ull;
			h = (h ^ m.len) * 1099511628211ull;
			for (uint32_t i = 0; i < m.len; i++)
				h = (h ^ m.payload[i]) * 1099511628211ull;
			p += rc;
			left -= (size_t)rc;
		}
		if (rc < 0 && rc != ML_ERR_INCOMPLETE)
			break;
		pos += chunk;
	}
	net_frame_decoder_free(&d);
	*final_rc = rc < 0 && rc != ML_ERR_INCOMPLETE ? rc : 0;
	return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int rc_a, rc_b, rc_c;
	uint64_t a = decode(data, size, 0, &rc_a);
	uint64_t b = decode(data, size, 1, &rc_b);
	size_t step = size ? (size_t)(data[size - 1] % 17) + 1 : 1;
	uint64_t c = decode(data, size, step, &rc_c);
	/* Errors are detected at the same point however the bytes are split, so
	 * the messages before an error and the outcome must match. */
	if (a != b || a != c || rc_a != rc_b || rc_a != rc_c)
		abort();
	return 0;
}
