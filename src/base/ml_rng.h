/* Small seeded PRNG (xoshiro256**, seeded through splitmix64). Same seed,
 * same sequence, on every platform. Not for cryptography. */
#ifndef ML_RNG_H
#define ML_RNG_H
#include <stdint.h>

struct ml_rng {
	uint64_t s[4];
};

void ml_rng_seed(struct ml_rng *rng, uint64_t seed);
uint64_t ml_rng_next(struct ml_rng *rng);
/* Uniform in [0, 1) with 53 bits. */
double ml_rng_uniform(struct ml_rng *rng);
/* Standard normal (Box-Muller). */
double ml_rng_normal(struct ml_rng *rng);

#endif
