/* Election and layer planning for split inference (see mesh_plan.h). */
#include "mesh/mesh_plan.h"

#include "base/ml_err.h"
#include "gguf/gguf.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *mesh_plan_excl_name(int reason)
{
	switch (reason) {
	case MESH_PLAN_EXCL_CLIENT:
		return "lite client";
	case MESH_PLAN_EXCL_NO_MODEL:
		return "no model file";
	case MESH_PLAN_EXCL_RTT_HIGH:
		return "RTT too high";
	case MESH_PLAN_EXCL_RTT_UNKNOWN:
		return "RTT unknown";
	case MESH_PLAN_EXCL_TOO_SMALL:
		return "budget below one layer";
	default:
		return "?";
	}
}

static bool serves(const struct mesh_plan_node *nd)
{
	return nd->has_model && !nd->client;
}

static uint64_t clamp_budget(uint64_t b)
{
	return b > MESH_PLAN_MAX_BYTES ? MESH_PLAN_MAX_BYTES : b;
}

int mesh_plan_elect(const struct mesh_plan_node *nodes, size_t n, size_t *host)
{
	if ((!nodes && n) || !host)
		return ml_error(ML_ERR_INVALID, "%s: NULL argument", __func__);
	if (n > MESH_PLAN_MAX_NODES)
		return ml_error(ML_ERR_INVALID, "%s: %zu nodes, at most %d", __func__, n,
		                MESH_PLAN_MAX_NODES);
	size_t best = SIZE_MAX;
	for (size_t i = 0; i < n; i++) {
		if (!serves(&nodes[i]))
			continue;
		if (best == SIZE_MAX) {
			best = i;
			continue;
		}
		uint64_t bi = clamp_budget(nodes[i].budget), bb = clamp_budget(nodes[best].budget);
		if (bi > bb || (bi == bb && memcmp(nodes[i].id, nodes[best].id, NET_ID_LEN) < 0))
			best = i;
	}
	if (best == SIZE_MAX)
		return ml_error(ML_ERR_NOT_FOUND, "%s: no node serves the model", __func__);
	*host = best;
	return 0;
}

void mesh_plan_election_init(struct mesh_plan_election *e, uint64_t settle_ms)
{
	memset(e, 0, sizeof(*e));
	e->settle_ms = settle_ms;
}

void mesh_plan_election_touch(struct mesh_plan_election *e, uint64_t now_ms)
{
	if (e->pending)
		return;
	e->pending = true;
	e->due_ms = now_ms + e->settle_ms;
}

int mesh_plan_election_poll(struct mesh_plan_election *e, const struct mesh_plan_node *nodes,
                            size_t n, uint64_t now_ms)
{
	if (!e)
		return ml_error(ML_ERR_INVALID, "%s: NULL argument", __func__);
	if (!e->pending || now_ms < e->due_ms)
		return MESH_PLAN_ELECT_NOT_DUE;
	size_t h = 0;
	int rc = mesh_plan_elect(nodes, n, &h);
	if (rc == ML_ERR_INVALID)
		return rc;
	e->pending = false;
	e->n_runs++;
	bool found = rc == 0;
	bool same = found == e->have_host &&
	            (!found || memcmp(nodes[h].id, e->host, NET_ID_LEN) == 0);
	e->have_host = found;
	if (found) {
		memcpy(e->host, nodes[h].id, NET_ID_LEN);
		e->host_budget = clamp_budget(nodes[h].budget);
	} else {
		memset(e->host, 0, NET_ID_LEN);
		e->host_budget = 0;
	}
	if (same)
		return MESH_PLAN_ELECT_SAME;
	e->n_changes++;
	return MESH_PLAN_ELECT_CHANGED;
}

/* --- model sizes ------------------------------------------------------- */

/* Fills prefix[0..n] with cumulative per-layer need (weights + KV) and
 * checks every size against MESH_PLAN_MAX_BYTES. */
static int model_prefix(const struct mesh_plan_model *m, uint64_t *prefix, uint64_t *total,
                        uint64_t *min_layer)
{
	const uint64_t cap = MESH_PLAN_MAX_BYTES;
	uint64_t kv = 0;
	if (m->n_ctx && m->kv_bytes_per_token > cap / m->n_ctx)
		return ml_error(ML_ERR_INVALID, "%s: KV %llu bytes x %llu positions over %llu",
		                __func__, (unsigned long long)m->kv_bytes_per_token,
		                (unsigned long long)m->n_ctx, (unsigned long long)cap);
	kv = m->kv_bytes_per_token * m->n_ctx;
	if (m->embd_bytes > cap || m->output_bytes > cap)
		return ml_error(ML_ERR_INVALID, "%s: embedding/output bytes over %llu", __func__,
		                (unsigned long long)cap);
	prefix[0] = 0;
	*min_layer = UINT64_MAX;
	for (uint32_t j = 0; j < m->n_layer; j++) {
		uint64_t w = m->layer_bytes_v ? m->layer_bytes_v[j] : m->layer_bytes;
		if (w > cap)
			return ml_error(ML_ERR_INVALID, "%s: layer %u: %llu bytes over %llu",
			                __func__, j, (unsigned long long)w,
			                (unsigned long long)cap);
		w += kv; /* both <= 2^50: no overflow */
		if (w < *min_layer)
			*min_layer = w;
		prefix[j + 1] = prefix[j] + w;
		if (prefix[j + 1] > cap)
			return ml_error(ML_ERR_INVALID, "%s: model need over %llu bytes", __func__,
			                (unsigned long long)cap);
	}
	*total = prefix[m->n_layer] + m->embd_bytes + m->output_bytes;
	if (*total > cap)
		return ml_error(ML_ERR_INVALID, "%s: model need over %llu bytes", __func__,
		                (unsigned long long)cap);
	return 0;
}

/* The integer metadata "<arch>.<key>", or |def| when absent and def >= 0. */
static int arch_u32(const struct gguf_file *gf, const char *arch, const char *key, int64_t def,
                    uint32_t *out)
{
	char name[160];
	snprintf(name, sizeof(name), "%s.%s", arch, key);
	int rc = gguf_get_u32(gf, name, out);
	if (rc == ML_ERR_NOT_FOUND && def >= 0) {
		*out = (uint32_t)def;
		return 0;
	}
	if (rc)
		return ml_error(rc == ML_ERR_NOT_FOUND ? ML_ERR_FORMAT : rc, "%s: metadata %s: %s",
		                __func__, name,
		                rc == ML_ERR_NOT_FOUND ? "missing" : ml_strerror(rc));
	return 0;
}

/* Layer index of a tensor named "blk.<i>.<rest>", or -1. */
static int64_t blk_index(const char *name)
{
	if (strncmp(name, "blk.", 4) != 0)
		return -1;
	const char *p = name + 4;
	int64_t v = 0;
	if (*p < '0' || *p > '9')
		return -1;
	while (*p >= '0' && *p <= '9') {
		v = v * 10 + (*p - '0');
		if (v > 1000000)
			return -1;
		p++;
	}
	return *p == '.' ? v : -1;
}

int mesh_plan_model_from_gguf(struct mesh_plan_model *m, const struct gguf_file *gf,
                              uint64_t *layer_bytes, size_t cap, uint32_t kv_elem_bytes,
                              uint64_t n_ctx)
{
	struct gguf_str arch_s;
	char arch[64];
	uint32_t n_layer, n_embd, n_head, n_head_kv, k_len, v_len;
	int rc;
	memset(m, 0, sizeof(*m));
	if (kv_elem_bytes == 0)
		return ml_error(ML_ERR_INVALID, "%s: KV element size 0", __func__);
	if ((rc = gguf_get_str(gf, "general.architecture", &arch_s)) != 0)
		return ml_error(ML_ERR_FORMAT, "%s: no general.architecture", __func__);
	if (arch_s.len == 0 || arch_s.len >= sizeof(arch) || memchr(arch_s.ptr, 0, arch_s.len))
		return ml_error(ML_ERR_FORMAT, "%s: bad general.architecture", __func__);
	memcpy(arch, arch_s.ptr, arch_s.len);
	arch[arch_s.len] = '\0';
	if ((rc = arch_u32(gf, arch, "block_count", -1, &n_layer)) ||
	    (rc = arch_u32(gf, arch, "embedding_length", -1, &n_embd)) ||
	    (rc = arch_u32(gf, arch, "attention.head_count", -1, &n_head)))
		return rc;
	if (n_head == 0 || n_layer == 0)
		return ml_error(ML_ERR_FORMAT, "%s: %u layers, %u heads", __func__, n_layer,
		                n_head);
	if ((rc = arch_u32(gf, arch, "attention.head_count_kv", n_head, &n_head_kv)) ||
	    (rc = arch_u32(gf, arch, "attention.key_length", n_embd / n_head, &k_len)) ||
	    (rc = arch_u32(gf, arch, "attention.value_length", k_len, &v_len)))
		return rc;
	if (n_layer > cap || n_layer > MESH_PLAN_MAX_LAYERS)
		return ml_error(ML_ERR_RANGE, "%s: %u layers, room for %zu (cap %d)", __func__,
		                n_layer, cap, MESH_PLAN_MAX_LAYERS);
	for (uint32_t j = 0; j < n_layer; j++)
		layer_bytes[j] = 0;
	const struct gguf_tensor *embd = gguf_find_tensor(gf, "token_embd.weight");
	if (!embd)
		return ml_error(ML_ERR_FORMAT, "%s: no token_embd.weight", __func__);
	const struct gguf_tensor *out = gguf_find_tensor(gf, "output.weight");
	const struct gguf_tensor *onorm = gguf_find_tensor(gf, "output_norm.weight");
	for (uint64_t i = 0; i < gguf_n_tensors(gf); i++) {
		const struct gguf_tensor *t = gguf_tensor_at(gf, i);
		int64_t b = blk_index(t->name);
		if (b >= (int64_t)n_layer)
			return ml_error(ML_ERR_FORMAT, "%s: tensor %s beyond block_count %u",
			                __func__, t->name, n_layer);
		if (b >= 0)
			layer_bytes[b] += t->n_bytes;
		else if (t != out && t != onorm)
			m->embd_bytes += t->n_bytes; /* token_embd and small global tensors */
	}
	m->output_bytes = (out ? out->n_bytes : embd->n_bytes) + (onorm ? onorm->n_bytes : 0);
	m->n_layer = n_layer;
	m->layer_bytes_v = layer_bytes;
	m->kv_bytes_per_token = ((uint64_t)k_len + v_len) * n_head_kv * kv_elem_bytes;
	m->n_ctx = n_ctx;
	return 0;
}

/* --- contiguous assignment --------------------------------------------- */

struct assign_in {
	const uint64_t *prefix; /* [n+1] */
	uint32_t n;
	uint64_t embd, out;
	uint32_t S;
	const uint64_t *caps;  /* [S] most bytes each stage may hold */
	const double *targets; /* [S-1] target of boundary s in the metric */
	bool layer_metric;     /* metric(e) = e, else embd + prefix[e] */
};

static uint64_t stage_need(const struct assign_in *a, uint32_t s, uint32_t b, uint32_t e)
{
	uint64_t v = a->prefix[e] - a->prefix[b];
	if (s == 0)
		v += a->embd;
	if (s == a->S - 1)
		v += a->out;
	return v;
}

/* Largest e in [b, n] with prefix[e] - prefix[b] <= room. */
static uint32_t reach(const struct assign_in *a, uint32_t b, uint64_t room)
{
	uint32_t lo = b, hi = a->n;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo + 1) / 2;
		if (a->prefix[mid] - a->prefix[b] <= room)
			lo = mid;
		else
			hi = mid - 1;
	}
	return lo;
}

/* Room for layers on stage s when it is not the last one (after the
 * embedding on stage 0); false when not even the embedding fits. */
static bool stage_room(const struct assign_in *a, uint32_t s, uint64_t *room)
{
	uint64_t fixed = s == 0 ? a->embd : 0;
	if (a->caps[s] < fixed)
		return false;
	*room = a->caps[s] - fixed;
	return true;
}

/* Chooses ends[s] (end of stage s; ends[S-1] = n). Returns 0, 1 when no
 * split keeps every stage within its cap, or ML_ERR_NOMEM.
 *
 * ok[s][b] says stages s..S-1 can cover [b, n) within their caps. It is
 * built backwards; then boundaries are chosen front to back, each the one
 * nearest its proportional target among those from which the rest can
 * still be covered, so the greedy choice never paints itself into a
 * corner. O(S x n log n). */
static int assign(const struct assign_in *a, uint32_t *ends)
{
	const uint32_t n = a->n, S = a->S;
	uint8_t *ok = calloc((size_t)S * (n + 1), 1);
	uint32_t *cnt = malloc(sizeof(uint32_t) * (n + 2));
	int rc = 1;
	if (!ok || !cnt) {
		rc = ML_ERR_NOMEM;
		goto out;
	}
	for (int s = (int)S - 1; s >= 0; s--) {
		uint8_t *row = ok + (size_t)s * (n + 1);
		if (s == (int)S - 1) {
			for (uint32_t b = 0; b < n; b++)
				row[b] = stage_need(a, (uint32_t)s, b, n) <= a->caps[s];
			continue;
		}
		const uint8_t *next = row + (n + 1);
		/* cnt[x] = number of e < x with next[e] */
		cnt[0] = 0;
		for (uint32_t x = 0; x <= n; x++)
			cnt[x + 1] = cnt[x] + next[x];
		uint64_t room = 0;
		if (!stage_room(a, (uint32_t)s, &room))
			continue;
		for (uint32_t b = 0; b < n; b++) {
			uint32_t hi = reach(a, b, room);
			row[b] = hi > b && cnt[hi + 1] - cnt[b + 1] > 0;
		}
	}
	if (!ok[0])
		goto out;
	uint32_t b = 0;
	for (uint32_t s = 0; s + 1 < S; s++) {
		const uint8_t *next = ok + (size_t)(s + 1) * (n + 1);
		uint64_t room = 0;
		(void)stage_room(a, s, &room); /* true: ok[s][b] held */
		uint32_t hi = reach(a, b, room), best = 0;
		double best_d = 0;
		for (uint32_t e = b + 1; e <= hi; e++) {
			if (!next[e])
				continue;
			double m = a->layer_metric ? (double)e : (double)(a->embd + a->prefix[e]);
			double d = fabs(m - a->targets[s]);
			if (best == 0 || d < best_d) {
				best = e;
				best_d = d;
			}
		}
		ends[s] = best; /* exists: ok[s][b] */
		b = best;
	}
	ends[S - 1] = n;
	rc = 0;
out:
	free(ok);
	free(cnt);
	return rc;
}

/* --- planning ---------------------------------------------------------- */

struct peer {
	const struct mesh_plan_node *nd;
	uint64_t cap;
	uint32_t keep; /* 1 + index in mesh_plan_params.keep, 0: not kept */
};

static int peer_cmp(const void *x, const void *y)
{
	const struct peer *a = x, *b = y;
	/* the running plan's stages first, in their pipeline order */
	if ((a->keep != 0) != (b->keep != 0))
		return a->keep ? -1 : 1;
	if (a->keep != b->keep)
		return a->keep < b->keep ? -1 : 1;
	if (a->nd->rtt_us != b->nd->rtt_us)
		return a->nd->rtt_us < b->nd->rtt_us ? -1 : 1;
	return memcmp(a->nd->id, b->nd->id, NET_ID_LEN);
}

static int excl_cmp(const void *x, const void *y)
{
	const struct mesh_plan_excluded *a = x, *b = y;
	return memcmp(a->id, b->id, NET_ID_LEN);
}

static int id_cmp(const void *x, const void *y)
{
	const struct mesh_plan_node *const *a = x, *const *b = y;
	return memcmp((*a)->id, (*b)->id, NET_ID_LEN);
}

static uint64_t cap_of(uint64_t budget, uint32_t permille)
{
	return clamp_budget(budget) * 1000 / permille;
}

static uint64_t with_headroom(uint64_t bytes, uint32_t permille)
{
	return (bytes * permille + 999) / 1000; /* bytes <= 2^50, permille < 4096 */
}

static void fill_stages(struct mesh_plan *out, const struct assign_in *a,
                        const struct mesh_plan_node *const *sn, const uint32_t *ends)
{
	uint32_t b = 0;
	out->n_stages = a->S;
	for (uint32_t s = 0; s < a->S; s++) {
		struct mesh_plan_stage *st = &out->stages[s];
		memcpy(st->id, sn[s]->id, NET_ID_LEN);
		st->layer_begin = b;
		st->layer_end = ends[s];
		st->bytes = stage_need(a, s, b, ends[s]);
		st->budget = clamp_budget(sn[s]->budget);
		b = ends[s];
	}
}

static int check_params(const struct mesh_plan_model *m, const struct mesh_plan_node *nodes,
                        size_t n, size_t host, const struct mesh_plan_params *p, uint32_t *permille,
                        uint32_t *rtt_max)
{
	if (!m || (!nodes && n))
		return ml_error(ML_ERR_INVALID, "%s: NULL argument", __func__);
	if (m->n_layer < 1 || m->n_layer > MESH_PLAN_MAX_LAYERS)
		return ml_error(ML_ERR_INVALID, "%s: %u layers, want 1..%d", __func__, m->n_layer,
		                MESH_PLAN_MAX_LAYERS);
	if (n > MESH_PLAN_MAX_NODES)
		return ml_error(ML_ERR_INVALID, "%s: %zu nodes, at most %d", __func__, n,
		                MESH_PLAN_MAX_NODES);
	if (host >= n || !serves(&nodes[host]))
		return ml_error(ML_ERR_INVALID, "%s: host %zu is not a node serving the model",
		                __func__, host);
	*permille = p && p->headroom_permille ? p->headroom_permille : MESH_PLAN_HEADROOM_DEFAULT;
	if (*permille < MESH_PLAN_HEADROOM_MIN || *permille > MESH_PLAN_HEADROOM_MAX)
		return ml_error(ML_ERR_INVALID, "%s: headroom %u permille, want %d..%d", __func__,
		                *permille, MESH_PLAN_HEADROOM_MIN, MESH_PLAN_HEADROOM_MAX);
	*rtt_max = p && p->rtt_max_us ? p->rtt_max_us : MESH_PLAN_RTT_MAX_DEFAULT_US;
	if (p && p->n_keep && (!p->keep || p->n_keep > MESH_PLAN_MAX_STAGES))
		return ml_error(ML_ERR_INVALID, "%s: %u stages to keep, at most %d", __func__,
		                p->n_keep, MESH_PLAN_MAX_STAGES);
	if (p && p->n_ratios) {
		if (!p->ratios || p->n_ratios > MESH_PLAN_MAX_STAGES)
			return ml_error(ML_ERR_INVALID, "%s: %u tensor-split ratios, at most %d",
			                __func__, p->n_ratios, MESH_PLAN_MAX_STAGES);
		if (p->n_ratios > m->n_layer)
			return ml_error(ML_ERR_INVALID,
			                "%s: %u tensor-split ratios for a model of %u layers",
			                __func__, p->n_ratios, m->n_layer);
		for (uint32_t i = 0; i < p->n_ratios; i++)
			if (!(p->ratios[i] > 0 && p->ratios[i] <= MESH_PLAN_RATIO_MAX))
				return ml_error(ML_ERR_INVALID, "%s: tensor-split ratio %u is %g",
				                __func__, i, p->ratios[i]);
	}
	/* duplicate ids would make the result depend on input order */
	const struct mesh_plan_node **v = malloc(sizeof(*v) * (n ? n : 1));
	if (!v)
		return ML_ERR_NOMEM;
	for (size_t i = 0; i < n; i++)
		v[i] = &nodes[i];
	qsort(v, n, sizeof(*v), id_cmp);
	int rc = 0;
	for (size_t i = 1; i < n && !rc; i++)
		if (memcmp(v[i - 1]->id, v[i]->id, NET_ID_LEN) == 0)
			rc = ml_error(ML_ERR_INVALID, "%s: node id listed twice", __func__);
	free(v);
	return rc;
}

int mesh_plan_build(struct mesh_plan *out, const struct mesh_plan_model *m,
                    const struct mesh_plan_node *nodes, size_t n, size_t host,
                    const struct mesh_plan_params *p)
{
	uint32_t permille = MESH_PLAN_HEADROOM_DEFAULT, rtt_max = MESH_PLAN_RTT_MAX_DEFAULT_US;
	if (!out)
		return ml_error(ML_ERR_INVALID, "%s: NULL argument", __func__);
	memset(out, 0, sizeof(*out));
	out->bad_stage = -1;
	int rc = check_params(m, nodes, n, host, p, &permille, &rtt_max);
	if (rc)
		return rc;
	out->epoch = p ? p->epoch : 0;
	out->n_layer = m->n_layer;
	memcpy(out->host, nodes[host].id, NET_ID_LEN);

	uint64_t *prefix = malloc(sizeof(uint64_t) * (m->n_layer + 1));
	struct peer *peers = malloc(sizeof(*peers) * (n ? n : 1));
	const struct mesh_plan_node **sn = malloc(sizeof(*sn) * MESH_PLAN_MAX_STAGES);
	uint64_t *caps = malloc(sizeof(uint64_t) * MESH_PLAN_MAX_STAGES);
	double *targets = malloc(sizeof(double) * MESH_PLAN_MAX_STAGES);
	uint32_t *ends = malloc(sizeof(uint32_t) * MESH_PLAN_MAX_STAGES);
	if (!prefix || !peers || !sn || !caps || !targets || !ends) {
		rc = ML_ERR_NOMEM;
		goto fail;
	}
	uint64_t total = 0, min_layer = 0;
	rc = model_prefix(m, prefix, &total, &min_layer);
	if (rc)
		goto fail;
	out->model_bytes = total;

	/* usable peers and the excluded */
	size_t np = 0;
	for (size_t i = 0; i < n; i++) {
		const struct mesh_plan_node *nd = &nodes[i];
		if (i == host)
			continue;
		int why = 0;
		if (nd->client)
			why = MESH_PLAN_EXCL_CLIENT;
		else if (!nd->has_model)
			why = MESH_PLAN_EXCL_NO_MODEL;
		else if (nd->rtt_us == MESH_PLAN_RTT_UNKNOWN)
			why = MESH_PLAN_EXCL_RTT_UNKNOWN;
		else if (nd->rtt_us > rtt_max)
			why = MESH_PLAN_EXCL_RTT_HIGH;
		else if (cap_of(nd->budget, permille) < min_layer ||
		         cap_of(nd->budget, permille) == 0)
			why = MESH_PLAN_EXCL_TOO_SMALL;
		if (why) {
			struct mesh_plan_excluded *x = &out->excluded[out->n_excluded++];
			memcpy(x->id, nd->id, NET_ID_LEN);
			x->reason = (uint8_t)why;
			x->rtt_us = nd->rtt_us;
			continue;
		}
		peers[np].nd = nd;
		peers[np].cap = cap_of(nd->budget, permille);
		peers[np].keep = 0;
		for (uint32_t k = 0; p && k < p->n_keep && !peers[np].keep; k++)
			if (memcmp(p->keep + (size_t)k * NET_ID_LEN, nd->id, NET_ID_LEN) == 0)
				peers[np].keep = k + 1;
		np++;
	}
	qsort(out->excluded, out->n_excluded, sizeof(out->excluded[0]), excl_cmp);
	qsort(peers, np, sizeof(*peers), peer_cmp);
	out->n_nodes_usable = (uint32_t)(np + 1);
	uint64_t have = clamp_budget(nodes[host].budget);
	for (size_t i = 0; i < np; i++)
		have += clamp_budget(peers[i].nd->budget);

	sn[0] = &nodes[host];
	caps[0] = cap_of(nodes[host].budget, permille);
	struct assign_in a = {.prefix = prefix,
	                      .n = m->n_layer,
	                      .embd = m->embd_bytes,
	                      .out = m->output_bytes,
	                      .caps = caps,
	                      .targets = targets};

	if (p && p->n_ratios) {
		/* manual ratios: exactly n_ratios stages, split by layer count */
		uint32_t S = p->n_ratios;
		out->n_wanted = S;
		if (S > np + 1) {
			out->status = MESH_PLAN_TOO_FEW_NODES;
			goto done;
		}
		double rsum = 0, acc = 0;
		for (uint32_t s = 0; s < S; s++)
			rsum += p->ratios[s];
		for (uint32_t s = 0; s < S; s++) {
			if (s > 0)
				sn[s] = peers[s - 1].nd;
			caps[s] = UINT64_MAX;
			acc += p->ratios[s];
			if (s + 1 < S)
				targets[s] = (double)m->n_layer * acc / rsum;
		}
		a.S = S;
		a.layer_metric = true;
		rc = assign(&a, ends);
		if (rc < 0)
			goto fail;
		/* cannot be 1: every cap is unbounded and S <= n_layer */
		fill_stages(out, &a, sn, ends);
		for (uint32_t s = 0; s < S; s++) {
			uint64_t c = cap_of(sn[s]->budget, permille);
			if (out->stages[s].bytes > c) {
				out->status = MESH_PLAN_NO_FIT;
				out->bad_stage = (int)s;
				out->need_bytes = with_headroom(out->stages[s].bytes, permille);
				out->have_bytes = clamp_budget(sn[s]->budget);
				out->n_stages = 0;
				goto done;
			}
		}
		out->status = MESH_PLAN_OK;
		goto done;
	}

	/* by budgets: the fewest nearest peers that fit */
	size_t k_min = 0;
	bool force = p && p->force_split;
	if (force) {
		if (np == 0 || m->n_layer < 2)
			out->notes |= MESH_PLAN_NOTE_SPLIT_UNAVAILABLE;
		else
			k_min = 1;
	}
	size_t k_max = np;
	if (k_max > MESH_PLAN_MAX_STAGES - 1)
		k_max = MESH_PLAN_MAX_STAGES - 1;
	if (k_max > m->n_layer - 1)
		k_max = m->n_layer - 1;
	uint64_t capsum = caps[0];
	for (size_t k = 0; k < k_min; k++)
		capsum += peers[k].cap;
	for (size_t k = k_min; k <= k_max; k++) {
		if (k > k_min)
			capsum += peers[k - 1].cap;
		if (capsum < total)
			continue;
		uint32_t S = (uint32_t)k + 1;
		double bsum = 0, acc = 0;
		for (uint32_t s = 0; s < S; s++) {
			if (s > 0) {
				sn[s] = peers[s - 1].nd;
				caps[s] = peers[s - 1].cap;
			}
			bsum += (double)clamp_budget(sn[s]->budget);
		}
		for (uint32_t s = 0; s + 1 < S; s++) {
			acc += bsum > 0 ? (double)clamp_budget(sn[s]->budget) : 1.0;
			targets[s] = (double)total * acc / (bsum > 0 ? bsum : (double)S);
		}
		a.S = S;
		a.layer_metric = false;
		rc = assign(&a, ends);
		if (rc < 0)
			goto fail;
		if (rc == 0) {
			fill_stages(out, &a, sn, ends);
			out->status = MESH_PLAN_OK;
			goto done;
		}
	}
	out->status = MESH_PLAN_NO_FIT;
	out->need_bytes = with_headroom(total, permille);
	out->have_bytes = have;
	if (have >= out->need_bytes)
		out->notes |= MESH_PLAN_NOTE_GRANULARITY;
done:
	rc = 0;
fail:
	free(prefix);
	free(peers);
	free(sn);
	free(caps);
	free(targets);
	free(ends);
	return rc;
}

bool mesh_plan_equal(const struct mesh_plan *a, const struct mesh_plan *b)
{
	if (a->status != b->status || a->n_layer != b->n_layer || a->n_stages != b->n_stages ||
	    memcmp(a->host, b->host, NET_ID_LEN) != 0)
		return false;
	if (a->status != MESH_PLAN_OK &&
	    (a->need_bytes != b->need_bytes || a->have_bytes != b->have_bytes ||
	     a->bad_stage != b->bad_stage || a->n_nodes_usable != b->n_nodes_usable ||
	     a->n_wanted != b->n_wanted))
		return false;
	for (uint32_t s = 0; s < a->n_stages && s < MESH_PLAN_MAX_STAGES; s++) {
		const struct mesh_plan_stage *x = &a->stages[s], *y = &b->stages[s];
		if (memcmp(x->id, y->id, NET_ID_LEN) != 0 || x->layer_begin != y->layer_begin ||
		    x->layer_end != y->layer_end)
			return false;
	}
	return true;
}

/* --- words ------------------------------------------------------------- */

struct sb {
	char *p;
	size_t cap, len;
};

static void sb_printf(struct sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sb *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	size_t room = b->len < b->cap ? b->cap - b->len : 0;
	int k = vsnprintf(room ? b->p + b->len : NULL, room, fmt, ap);
	va_end(ap);
	if (k > 0)
		b->len += (size_t)k;
}

static double gb(uint64_t v)
{
	return (double)v / 1e9;
}

size_t mesh_plan_describe(const struct mesh_plan *p, char *out, size_t cap)
{
	struct sb b = {.p = out, .cap = out ? cap : 0, .len = 0};
	char id[9];
	if (b.cap)
		out[0] = '\0';
	if (p->status == MESH_PLAN_OK && p->n_stages == 1) {
		net_id_short(p->stages[0].id, id);
		sb_printf(&b, "solo on host %s: layers 0-%u (%.1f GB)", id, p->n_layer - 1,
		          gb(p->stages[0].bytes));
		if (p->notes & MESH_PLAN_NOTE_SPLIT_UNAVAILABLE)
			sb_printf(&b, " (split asked for, but %s)",
			          p->n_layer < 2 ? "the model has one layer"
			                         : "no peer can take layers");
	} else if (p->status == MESH_PLAN_OK) {
		for (uint32_t s = 0; s < p->n_stages && s < MESH_PLAN_MAX_STAGES; s++) {
			const struct mesh_plan_stage *st = &p->stages[s];
			net_id_short(st->id, id);
			sb_printf(&b, "%s%s %s: layers %u-%u (%.1f GB)", s ? ", " : "",
			          s ? "worker" : "host", id, st->layer_begin, st->layer_end - 1,
			          gb(st->bytes));
		}
	} else if (p->status == MESH_PLAN_TOO_FEW_NODES) {
		sb_printf(&b,
		          "Waiting for more peers — the tensor split asks for %u nodes, %u usable",
		          p->n_wanted, p->n_nodes_usable);
	} else if (p->bad_stage >= 0) {
		sb_printf(
		    &b,
		    "Not enough memory for the tensor split — stage %d needs %.1f GB, has %.1f GB",
		    p->bad_stage, gb(p->need_bytes), gb(p->have_bytes));
	} else {
		sb_printf(&b, "Waiting for more peers — need %.1f GB, have %.1f GB",
		          gb(p->need_bytes), gb(p->have_bytes));
		if (p->notes & MESH_PLAN_NOTE_GRANULARITY)
			sb_printf(&b, " (the layers do not divide into the nodes' budgets)");
	}
	for (uint32_t i = 0; i < p->n_excluded && i < MESH_PLAN_MAX_NODES; i++) {
		const struct mesh_plan_excluded *x = &p->excluded[i];
		net_id_short(x->id, id);
		sb_printf(&b, "%s%s (%s", i ? ", " : "; not used: ", id,
		          mesh_plan_excl_name(x->reason));
		if (x->reason == MESH_PLAN_EXCL_RTT_HIGH)
			sb_printf(&b, ", %.0f ms", x->rtt_us / 1000.0);
		sb_printf(&b, ")");
	}
	return b.len;
}

int mesh_plan_parse_ratios(const char *s, double *out, size_t cap)
{
	size_t n = 0;
	if (!s || !*s)
		return ml_error(ML_ERR_INVALID, "%s: empty tensor split", __func__);
	const char *p = s;
	for (;;) {
		char *end;
		errno = 0;
		double v = strtod(p, &end);
		if (end == p || errno || !(v > 0 && v <= MESH_PLAN_RATIO_MAX))
			return ml_error(
			    ML_ERR_INVALID,
			    "%s: tensor split \"%s\": each value must be a number in (0, %g]",
			    __func__, s, MESH_PLAN_RATIO_MAX);
		if (n >= cap)
			return ml_error(ML_ERR_INVALID,
			                "%s: tensor split \"%s\": more than %zu values", __func__,
			                s, cap);
		out[n++] = v;
		if (*end == '\0')
			break;
		if (*end != ',')
			return ml_error(ML_ERR_INVALID,
			                "%s: tensor split \"%s\": expected ',' at \"%s\"", __func__,
			                s, end);
		p = end + 1;
	}
	return (int)n;
}
