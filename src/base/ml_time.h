/* Monotonic clock. */
#ifndef ML_TIME_H
#define ML_TIME_H
#include <stdint.h>

/* Nanoseconds from CLOCK_MONOTONIC. */
uint64_t ml_time_ns(void);
/* Seconds from CLOCK_MONOTONIC, as a double (for benchmarks and logs). */
double ml_time_s(void);

#endif
