/* Sampler: logits -> token id.
 *
 * Order: penalties (repetition, frequency, presence over the last
 * repeat_last_n ids) -> greedy argmax if temp <= 0 -> temperature -> top-k ->
 * softmax -> top-p -> min-p -> seeded draw from what is left, renormalized.
 * (min-p is computed before sorting; the result is the same.)
 * Temperature comes before the truncations, so top-p and min-p see the
 * tempered distribution (llama.cpp's default chain applies it after them;
 * the two agree at temp 1 and for top-k).
 *
 * All scratch is sized by smp_init(); smp_sample() does not allocate. */
#include "sampler/smp.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/ml_err.h"
#include "base/ml_rng.h"

struct smp_cand {
	int32_t id;
	float logit;
	float prob;
};

struct smp {
	struct smp_params p;
	int n_vocab;
	struct ml_rng rng;
	float *logits;          /* (n_vocab) penalized copy */
	int32_t *count;         /* (n_vocab) occurrences in the penalty window; all zero between calls */
	struct smp_cand *cand;  /* (n_vocab) candidates, best first after truncation */
};

struct smp_params smp_default_params(void)
{
	struct smp_params p = {
		.temp = 0.8f,
		.top_k = 40,
		.top_p = 0.95f,
		.min_p = 0.05f,
		.repeat_penalty = 1.0f,
		.repeat_last_n = 64,
		.freq_penalty = 0.0f,
		.presence_penalty = 0.0f,
		.seed = 0,
	};
	return p;
}

int smp_init(struct smp **out, const struct smp_params *p, int n_vocab)
{
	*out = NULL;
	if (p == NULL || n_vocab < 1)
		return ml_error(ML_ERR_INVALID, "smp_init: vocabulary of %d tokens", n_vocab);
	struct smp *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return ML_ERR_NOMEM;
	s->n_vocab = n_vocab;
	s->logits = malloc((size_t)n_vocab * sizeof(float));
	s->count = calloc((size_t)n_vocab, sizeof(int32_t));
	s->cand = malloc((size_t)n_vocab * sizeof(struct smp_cand));
	if (!s->logits || !s->count || !s->cand) {
		smp_free(s);
		return ML_ERR_NOMEM;
	}
	smp_reset(s, p);
	*out = s;
	return 0;
}

void smp_free(struct smp *s)
{
	if (s == NULL)
		return;
	free(s->logits);
	free(s->count);
	free(s->cand);
	free(s);
}

void smp_reset(struct smp *s, const struct smp_params *p)
{
	s->p = *p;
	ml_rng_seed(&s->rng, p->seed);
}

/* Best first; equal logits: lower id first (so results never depend on the
 * sort algorithm). */
static int cand_cmp(const void *a, const void *b)
{
	const struct smp_cand *x = a, *y = b;
	if (x->logit != y->logit)
		return x->logit > y->logit ? -1 : 1;
	return (x->id > y->id) - (x->id < y->id);
}

/* Moves the k best candidates to the front of c[0..n), in any order
 * (quickselect with the cand_cmp order; expected linear time). */
static void select_top(struct smp_cand *c, int n, int k)
{
	int lo = 0, hi = n - 1;
	while (lo < hi) {
		struct smp_cand pivot = c[lo + (hi - lo) / 2];
		int i = lo, j = hi;
		while (i <= j) {
			while (cand_cmp(&c[i], &pivot) < 0)
				i++;
			while (cand_cmp(&c[j], &pivot) > 0)
				j--;
			if (i <= j) {
				struct smp_cand t = c[i];
				c[i] = c[j];
				c[j] = t;
				i++;
				j--;
			}
		}
		if (k - 1 <= j)
			hi = j;
		else if (k - 1 >= i)
			lo = i;
		else
			break;
	}
}

/* In-place heap sort in cand_cmp order (qsort may allocate). */
static void sift_down(struct smp_cand *c, int root, int n)
{
	for (;;) {
		int child = 2 * root + 1;
		if (child >= n)
			return;
		/* max-heap of "worst first" so the array ends up best first */
		if (child + 1 < n && cand_cmp(&c[child + 1], &c[child]) > 0)
			child++;
		if (cand_cmp(&c[child], &c[root]) <= 0)
			return;
		struct smp_cand t = c[root];
		c[root] = c[child];
		c[child] = t;
		root = child;
	}
}

static void heap_sort(struct smp_cand *c, int n)
{
	for (int i = n / 2 - 1; i >= 0; i--)
		sift_down(c, i, n);
	for (int end = n - 1; end > 0; end--) {
		struct smp_cand t = c[0];
		c[0] = c[end];
		c[end] = t;
		sift_down(c, 0, end);
	}
}

static void apply_penalties(struct smp *s, const int32_t *history, int n_history)
{
	const struct smp_params *p = &s->p;
	if (history == NULL || n_history <= 0 || p->repeat_last_n == 0)
		return;
	if (p->repeat_penalty == 1.0f && p->freq_penalty == 0.0f && p->presence_penalty == 0.0f)
		return;
	int first = 0;
	if (p->repeat_last_n > 0 && n_history > p->repeat_last_n)
		first = n_history - p->repeat_last_n;
	for (int i = first; i < n_history; i++)
		if (history[i] >= 0 && history[i] < s->n_vocab)
			s->count[history[i]]++;
	for (int i = first; i < n_history; i++) {
		const int32_t id = history[i];
		if (id < 0 || id >= s->n_vocab || s->count[id] == 0)
			continue; /* out of range, or already applied */
		float l = s->logits[id];
		if (p->repeat_penalty != 1.0f && p->repeat_penalty > 0.0f)
			l = l <= 0.0f ? l * p->repeat_penalty : l / p->repeat_penalty;
		l -= (float)s->count[id] * p->freq_penalty + p->presence_penalty;
		s->logits[id] = l;
		s->count[id] = 0;
	}
}

int32_t smp_sample(struct smp *s, const float *logits, const int32_t *history, int n_history)
{
	const struct smp_params *p = &s->p;
	const int nv = s->n_vocab;

	memcpy(s->logits, logits, (size_t)nv * sizeof(float));
	apply_penalties(s, history, n_history);

	if (p->temp <= 0.0f) {
		int32_t best = 0;
		for (int i = 1; i < nv; i++)
			if (s->logits[i] > s->logits[best])
				best = i;
		return best;
	}

	int n = nv;
	for (int i = 0; i < nv; i++) {
		s->cand[i].id = i;
		s->cand[i].logit = s->logits[i] / p->temp;
	}
	if (p->top_k > 0 && p->top_k < n) {
		select_top(s->cand, n, p->top_k);
		n = p->top_k;
	}
	/* softmax over the candidates (unsorted; probabilities ride along) */
	float max = s->cand[0].logit;
	for (int i = 1; i < n; i++)
		if (s->cand[i].logit > max)
			max = s->cand[i].logit;
	double sum = 0.0;
	for (int i = 0; i < n; i++) {
		s->cand[i].prob = expf(s->cand[i].logit - max);
		sum += s->cand[i].prob;
	}
	for (int i = 0; i < n; i++)
		s->cand[i].prob = (float)(s->cand[i].prob / sum);

	/* min-p before sorting: it only removes the tail, which top-p (a
	 * prefix of the sorted list) would reach last, so the result is the
	 * same as applying it after top-p, and the sort gets shorter. */
	if (p->min_p > 0.0f) {
		const float lim = (float)(1.0 / sum) * p->min_p; /* the best has probability 1/sum */
		int keep = 0;
		for (int i = 0; i < n; i++)
			if (s->cand[i].prob >= lim)
				s->cand[keep++] = s->cand[i];
		n = keep > 0 ? keep : 1;
	}
	heap_sort(s->cand, n);

	if (p->top_p < 1.0f) {
		double cum = 0.0;
		for (int i = 0; i < n; i++) {
			cum += s->cand[i].prob;
			if (cum >= p->top_p) {
				n = i + 1;
				break;
			}
		}
	}

	double total = 0.0;
	for (int i = 0; i < n; i++)
		total += s->cand[i].prob;
	const double u = ml_rng_uniform(&s->rng) * total;
	double cum = 0.0;
	for (int i = 0; i < n; i++) {
		cum += s->cand[i].prob;
		if (u < cum)
			return s->cand[i].id;
	}
	return s->cand[n - 1].id;
}
