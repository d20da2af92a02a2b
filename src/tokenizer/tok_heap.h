/* A small binary heap of merge candidates shared by the SPM and BPE
 * encoders (internal). The best candidate is at the top: for SPM the
 * highest score, for BPE the lowest rank (stored as a negated score); ties
 * go to the leftmost pair, as in llama.cpp. */
#ifndef TOK_HEAP_H
#define TOK_HEAP_H

#include <stdlib.h>

#include "base/ml_err.h"

struct tok_bigram {
	double score; /* higher is better */
	int left, right;
	size_t size; /* combined byte length when queued (detects stale entries) */
};

struct tok_heap {
	struct tok_bigram *a;
	size_t n, cap;
};

static inline int tok_bigram_better(const struct tok_bigram *x, const struct tok_bigram *y)
{
	return x->score > y->score || (x->score == y->score && x->left < y->left);
}

static inline int tok_heap_push(struct tok_heap *h, struct tok_bigram b)
{
	if (h->n == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 64;
		struct tok_bigram *a = realloc(h->a, cap * sizeof(*a));
		if (!a)
			return ML_ERR_NOMEM;
		h->a = a;
		h->cap = cap;
	}
	size_t i = h->n++;
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (!tok_bigram_better(&b, &h->a[p]))
			break;
		h->a[i] = h->a[p];
		i = p;
	}
	h->a[i] = b;
	return 0;
}

static inline struct tok_bigram tok_heap_pop(struct tok_heap *h)
{
	struct tok_bigram top = h->a[0];
	struct tok_bigram last = h->a[--h->n];
	size_t i = 0;
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, best = i;
		const struct tok_bigram *bv = &last;
		if (l < h->n && tok_bigram_better(&h->a[l], bv)) {
			best = l;
			bv = &h->a[l];
		}
		if (r < h->n && tok_bigram_better(&h->a[r], bv))
			best = r;
		if (best == i)
			break;
		h->a[i] = h->a[best];
		i = best;
	}
	if (h->n > 0)
		h->a[i] = last;
	return top;
}

#endif
