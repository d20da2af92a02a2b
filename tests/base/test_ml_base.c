/* Tests for src/base: error messages, rng determinism. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "base/ml_err.h"
#include "base/ml_rng.h"

static void test_ml_error_message(void **state)
{
	(void)state;
	assert_int_equal(ml_error(ML_ERR_RANGE, "value %d over limit %d", 9, 8), ML_ERR_RANGE);
	assert_string_equal(ml_last_error(), "value 9 over limit 8");
	ml_error(ML_ERR_FORMAT, "outer: %s", ml_last_error());
	assert_string_equal(ml_last_error(), "outer: value 9 over limit 8");
	ml_error_clear();
	assert_string_equal(ml_last_error(), "");
	assert_string_equal(ml_strerror(ML_ERR_NOMEM), "out of memory");
}

static void test_ml_rng_deterministic(void **state)
{
	struct ml_rng a, b;
	(void)state;
	ml_rng_seed(&a, 42);
	ml_rng_seed(&b, 42);
	for (int i = 0; i < 100; i++)
		assert_true(ml_rng_next(&a) == ml_rng_next(&b));
	for (int i = 0; i < 1000; i++) {
		double u = ml_rng_uniform(&a);
		assert_true(u >= 0.0 && u < 1.0);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ml_error_message),
		cmocka_unit_test(test_ml_rng_deterministic),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
