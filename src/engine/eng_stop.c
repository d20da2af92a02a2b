/* Stop-string matching over a slot's pending text (see eng_stop.h). */
#include "engine/eng_stop.h"

#include <string.h>

void eng_stop_set_init(struct eng_stop_set *ss, const char *const *stop)
{
	memset(ss, 0, sizeof(*ss));
	for (int i = 0; stop && i < ENG_MAX_STOP && stop[i]; i++) {
		size_t len = strlen(stop[i]);
		if (len == 0)
			continue;
		ss->s[ss->n] = stop[i];
		ss->len[ss->n] = len;
		ss->n++;
		if (len > ss->max_len)
			ss->max_len = len;
	}
}

/* Moves |pos| back to the first byte of the UTF-8 character holding it. */
static size_t utf8_char_start(const char *buf, size_t pos)
{
	while (pos > 0 && ((unsigned char)buf[pos] & 0xC0) == 0x80)
		pos--;
	return pos;
}

bool eng_stop_scan(const struct eng_stop_set *ss, const char *buf, size_t n, size_t *n_emit)
{
	size_t best = n;
	bool hit = false;

	for (int i = 0; i < ss->n; i++) {
		const char *p = memmem(buf, n, ss->s[i], ss->len[i]);
		if (p && (size_t)(p - buf) < best) {
			best = (size_t)(p - buf);
			hit = true;
		}
	}
	if (hit) {
		*n_emit = best;
		return true;
	}

	/* Longest tail of buf that is a proper prefix of a stop string. */
	size_t hold = 0;
	for (int i = 0; i < ss->n; i++) {
		size_t kmax = ss->len[i] - 1 < n ? ss->len[i] - 1 : n;
		for (size_t k = kmax; k > hold; k--) {
			if (memcmp(buf + n - k, ss->s[i], k) == 0) {
				hold = k;
				break;
			}
		}
	}
	*n_emit = n - hold < n ? utf8_char_start(buf, n - hold) : n;
	return false;
}
