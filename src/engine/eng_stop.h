/* Stop strings of one request (engine-internal).
 *
 * A slot's not-yet-emitted text lives in a small buffer. After every token
 * the engine asks eng_stop_scan() how much of it may go out: everything up
 * to the first complete stop string (then the request finishes), or else
 * everything except the longest tail that is still the beginning of some
 * stop string (held back until the next token decides). */
#ifndef ENG_STOP_H
#define ENG_STOP_H

#include <stdbool.h>
#include <stddef.h>

#include "engine/eng.h"

struct eng_stop_set {
	int n;                       /* stop strings in use (empty strings are dropped) */
	const char *s[ENG_MAX_STOP]; /* borrowed; NUL-terminated */
	size_t len[ENG_MAX_STOP];    /* strlen of each */
	size_t max_len;              /* longest of them (0 when none) */
};

/* Fills |ss| from a NULL-terminated list of at most ENG_MAX_STOP strings
 * (|stop| may be NULL). The strings are borrowed, not copied. */
void eng_stop_set_init(struct eng_stop_set *ss, const char *const *stop);

/* Scans |n| bytes of pending text |buf|. Returns true when a stop string
 * occurs in it: *n_emit is then the offset of the earliest occurrence (the
 * text before it may be emitted, the rest never). Otherwise returns false
 * and *n_emit is the number of leading bytes that can no longer become part
 * of a stop string; it never splits a UTF-8 character. */
bool eng_stop_scan(const struct eng_stop_set *ss, const char *buf, size_t n, size_t *n_emit);

#endif
