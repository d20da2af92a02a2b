/* Sampling: logits -> token id. Greedy (temp <= 0), temperature, top-k,
 * top-p, min-p, repetition / frequency / presence penalties, seeded RNG
 * (same seed and inputs, same output). All scratch is allocated by
 * smp_init(), so smp_sample() does not allocate. */
#ifndef SMP_H
#define SMP_H

#include <stdint.h>

struct smp_params {
	float temp;             /* <= 0: greedy (argmax, ties -> lowest id) */
	int top_k;              /* <= 0: off */
	float top_p;            /* >= 1: off */
	float min_p;            /* <= 0: off */
	float repeat_penalty;   /* 1: off (llama.cpp semantics) */
	int repeat_last_n;      /* window for all penalties; 0: off, -1: whole history */
	float freq_penalty;     /* OpenAI frequency_penalty, 0: off */
	float presence_penalty; /* OpenAI presence_penalty, 0: off */
	uint64_t seed;
};

/* temp 0.8, top_k 40, top_p 0.95, min_p 0.05, penalties off, seed 0. */
struct smp_params smp_default_params(void);

struct smp;
int smp_init(struct smp **out, const struct smp_params *p, int n_vocab);
void smp_free(struct smp *s); /* accepts NULL */
/* Resets the RNG to |seed| (for a new request reusing the sampler). */
void smp_reset(struct smp *s, const struct smp_params *p);
/* Picks the next token from |logits| (n_vocab floats, not modified) given
 * the ids generated so far (|history|, |n_history|; penalties use them). */
int32_t smp_sample(struct smp *s, const float *logits, const int32_t *history, int n_history);

#endif
