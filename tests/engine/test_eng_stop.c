/* Tests for src/engine/eng_stop.c: stop-string matching and hold-back. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "engine/eng_stop.h"

static size_t scan(const struct eng_stop_set *ss, const char *text, bool *hit)
{
	size_t n_emit = 999;
	*hit = eng_stop_scan(ss, text, strlen(text), &n_emit);
	return n_emit;
}

static void test_eng_stop_none(void **state)
{
	struct eng_stop_set ss;
	bool hit;
	(void)state;
	eng_stop_set_init(&ss, NULL);
	assert_int_equal(ss.n, 0);
	assert_int_equal(scan(&ss, "hello", &hit), 5);
	assert_false(hit);
	const char *empty[] = {"", NULL};
	eng_stop_set_init(&ss, empty);
	assert_int_equal(ss.n, 0);
	assert_int_equal(scan(&ss, "", &hit), 0);
	assert_false(hit);
}

static void test_eng_stop_match(void **state)
{
	const char *stops[] = {"END", "\n\n", NULL};
	struct eng_stop_set ss;
	bool hit;
	(void)state;
	eng_stop_set_init(&ss, stops);
	assert_int_equal(ss.n, 2);
	assert_int_equal(ss.max_len, 3);
	assert_int_equal(scan(&ss, "abc END def", &hit), 4);
	assert_true(hit);
	/* earliest occurrence over all stop strings wins */
	assert_int_equal(scan(&ss, "a\n\nb END", &hit), 1);
	assert_true(hit);
	assert_int_equal(scan(&ss, "END", &hit), 0);
	assert_true(hit);
}

static void test_eng_stop_hold(void **state)
{
	const char *stops[] = {"<stop>", "xy", NULL};
	struct eng_stop_set ss;
	bool hit;
	(void)state;
	eng_stop_set_init(&ss, stops);
	assert_int_equal(scan(&ss, "abc<st", &hit), 3); /* "<st" may become "<stop>" */
	assert_false(hit);
	assert_int_equal(scan(&ss, "abc<", &hit), 3);
	assert_int_equal(scan(&ss, "abcx", &hit), 3); /* "x" may become "xy" */
	assert_int_equal(scan(&ss, "abc<sx", &hit), 5);
	assert_int_equal(scan(&ss, "<sto", &hit), 0);
	assert_int_equal(scan(&ss, "<stox", &hit), 4);
	assert_false(hit);
	assert_int_equal(scan(&ss, "abc", &hit), 3);
}

static void test_eng_stop_utf8(void **state)
{
	/* A (malformed) stop string starting with a continuation byte must not
	 * make the engine split a character. */
	const char *stops[] = {"\xA9z", NULL};
	struct eng_stop_set ss;
	bool hit;
	(void)state;
	eng_stop_set_init(&ss, stops);
	assert_int_equal(scan(&ss, "a\xC3\xA9", &hit), 1);
	assert_false(hit);
	const char *stops2[] = {"\xC3\xA9!", NULL};
	eng_stop_set_init(&ss, stops2);
	assert_int_equal(scan(&ss, "ab\xC3\xA9", &hit), 2);
	assert_int_equal(scan(&ss, "ab\xC3\xA9!c", &hit), 2);
	assert_true(hit);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_eng_stop_none),
	    cmocka_unit_test(test_eng_stop_match),
	    cmocka_unit_test(test_eng_stop_hold),
	    cmocka_unit_test(test_eng_stop_utf8),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
