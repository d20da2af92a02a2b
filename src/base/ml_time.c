/* Monotonic clock helpers. */
#include "base/ml_time.h"

#include <time.h>

uint64_t ml_time_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double ml_time_s(void)
{
	return (double)ml_time_ns() * 1e-9;
}
