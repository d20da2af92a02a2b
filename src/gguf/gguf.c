/* GGUF v2/v3 reader: header, metadata, tensor table, split files, and
 * on-demand mapping of selected tensor data.
 *
 * The front of each file is read through a pread window (never an mmap of
 * the whole file), every read is checked against what remains of the file,
 * and every count or length against fixed caps before anything is
 * allocated. Parsed strings, arrays and tensor names live in one arena owned
 * by the gguf_file, so pointers handed out stay valid until gguf_close().
 * Keys and tensor names are indexed in open-addressing hash tables, which
 * also catch duplicates while parsing. */
#include "gguf/gguf.h"

#include "base/ml_dtype.h"
#include "base/ml_err.h"
#include "base/ml_log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the GGUF reader assumes a little-endian host"
#endif

#define GGUF_MAGIC "GGUF"
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_WINDOW (128u << 10)            /* pread window over the file front */
#define GGUF_MAX_STRING (64ull << 20)       /* longest metadata string value */
#define GGUF_MAX_KEY 65535ull               /* longest key */
#define GGUF_MAX_NAME 4096ull               /* longest tensor name */
#define GGUF_MAX_DEPTH 8                    /* nesting of arrays in arrays */
#define GGUF_MAX_ALIGNMENT (1ull << 30)
#define GGUF_MIN_KV_BYTES 13ull     /* key length (8) + type (4) + one byte of value */
#define GGUF_MIN_TENSOR_BYTES 32ull /* name length, n_dims, ne[0], type, offset */

/* ---------------------------------------------------------------- arena */

struct arena_blk {
	struct arena_blk *next;
	size_t used, cap;
	alignas(16) unsigned char data[];
};

struct arena {
	struct arena_blk *head;
};

static void *arena_alloc(struct arena *a, uint64_t n)
{
	n = (n + 15) & ~(uint64_t)15;
	if (n > SIZE_MAX / 2)
		return NULL;
	struct arena_blk *b = a->head;
	if (b == NULL || b->cap - b->used < n) {
		size_t cap = n > (64u << 10) ? (size_t)n : (64u << 10);
		b = malloc(sizeof(*b) + cap);
		if (b == NULL)
			return NULL;
		b->used = 0;
		b->cap = cap;
		if (a->head != NULL && n > (64u << 10)) {
			/* big block: keep the current small block at the head */
			b->next = a->head->next;
			a->head->next = b;
		} else {
			b->next = a->head;
			a->head = b;
		}
	}
	void *p = b->data + b->used;
	b->used += n;
	return p;
}

static void arena_free(struct arena *a)
{
	struct arena_blk *b = a->head;
	while (b != NULL) {
		struct arena_blk *n = b->next;
		free(b);
		b = n;
	}
	a->head = NULL;
}

/* ----------------------------------------------------------- hash table */

struct hslot {
	const char *s; /* NULL: empty */
	uint64_t len;
	uint64_t idx;
};

struct hmap {
	struct hslot *slots;
	uint64_t cap; /* power of two */
	uint64_t n;
};

static uint64_t hash_bytes(const char *s, uint64_t len)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	for (uint64_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ull;
	}
	return h ^ (h >> 29);
}

static int hmap_init(struct hmap *m, uint64_t n)
{
	uint64_t cap = 16;
	while (cap < n * 2)
		cap *= 2;
	m->slots = calloc(cap, sizeof(*m->slots));
	if (m->slots == NULL)
		return ML_ERR_NOMEM;
	m->cap = cap;
	m->n = 0;
	return 0;
}

static void hmap_free(struct hmap *m)
{
	free(m->slots);
	m->slots = NULL;
	m->cap = m->n = 0;
}

/* Returns the slot holding |s| or the empty slot where it would go. */
static struct hslot *hmap_slot(const struct hmap *m, const char *s, uint64_t len)
{
	uint64_t i = hash_bytes(s, len) & (m->cap - 1);
	for (;;) {
		struct hslot *e = &m->slots[i];
		if (e->s == NULL || (e->len == len && memcmp(e->s, s, len) == 0))
			return e;
		i = (i + 1) & (m->cap - 1);
	}
}

static int hmap_grow(struct hmap *m)
{
	struct hmap g;
	if (hmap_init(&g, m->cap) != 0) /* doubles: cap >= 2 * (old cap) */
		return ML_ERR_NOMEM;
	for (uint64_t i = 0; i < m->cap; i++)
		if (m->slots[i].s != NULL)
			*hmap_slot(&g, m->slots[i].s, m->slots[i].len) = m->slots[i];
	g.n = m->n;
	free(m->slots);
	*m = g;
	return 0;
}

/* Inserts; returns 1 if the key was already present (nothing changed), 0 if
 * inserted, or ML_ERR_NOMEM. */
static int hmap_put(struct hmap *m, const char *s, uint64_t len, uint64_t idx)
{
	if ((m->n + 1) * 2 > m->cap && hmap_grow(m) != 0)
		return ML_ERR_NOMEM;
	struct hslot *e = hmap_slot(m, s, len);
	if (e->s != NULL)
		return 1;
	e->s = s;
	e->len = len;
	e->idx = idx;
	m->n++;
	return 0;
}

static const struct hslot *hmap_get(const struct hmap *m, const char *s, uint64_t len)
{
	if (m->cap == 0)
		return NULL;
	const struct hslot *e = hmap_slot(m, s, len);
	return e->s != NULL ? e : NULL;
}

/* --------------------------------------------------------- the file object */

struct gguf_part {
	int fd;
	char *path;
	uint64_t size;
	uint64_t data_offset; /* absolute start of the tensor data section */
	uint32_t version;
	uint64_t alignment;
	struct gguf_kv *kv; /* this part's metadata, in file order (malloc) */
	uint64_t n_kv;
};

struct gguf_mapping {
	void *addr;
	size_t len;
};

struct gguf_file {
	char *path;
	struct gguf_part *parts;
	uint32_t n_parts;
	struct arena arena;
	struct hmap kv_index; /* keys of the first part */
	struct gguf_tensor *tensors;
	uint64_t n_tensors, cap_tensors;
	struct hmap tensor_index;
	struct gguf_mapping *maps;
	size_t n_maps, cap_maps;
	bool resident; /* gguf_map() reads into memory instead of mapping the file */
};

/* ------------------------------------------------------- windowed reader */

struct rd {
	int fd;
	const char *path;
	uint64_t size;
	uint64_t pos;
	unsigned char *buf;
	uint64_t buf_off;
	size_t buf_len;
	struct arena *arena;
};

static int pread_full(int fd, void *dst, size_t n, uint64_t off, const char *path)
{
	unsigned char *p = dst;
	while (n > 0) {
		ssize_t got = pread(fd, p, n, (off_t)off);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			return ml_error(ML_ERR_IO, "gguf: %s: read at offset %" PRIu64 ": %s", path, off,
					strerror(errno));
		}
		if (got == 0)
			return ml_error(ML_ERR_IO,
					"gguf: %s: file shrank while reading: nothing at offset %" PRIu64,
					path, off);
		p += got;
		n -= (size_t)got;
		off += (uint64_t)got;
	}
	return 0;
}

static uint64_t rd_left(const struct rd *r)
{
	return r->size - r->pos;
}

/* Copies |n| bytes at the current position to |dst| and advances. The caller
 * has checked n <= rd_left(). */
static int rd_copy(struct rd *r, void *dst, uint64_t n)
{
	unsigned char *d = dst;
	while (n > 0) {
		if (r->pos >= r->buf_off && r->pos < r->buf_off + r->buf_len) {
			uint64_t in = r->buf_off + r->buf_len - r->pos;
			uint64_t k = n < in ? n : in;
			memcpy(d, r->buf + (r->pos - r->buf_off), (size_t)k);
			d += k;
			n -= k;
			r->pos += k;
		} else if (n >= GGUF_WINDOW) {
			int rc = pread_full(r->fd, d, (size_t)n, r->pos, r->path);
			if (rc != 0)
				return rc;
			r->pos += n;
			n = 0;
		} else {
			uint64_t k = rd_left(r) < GGUF_WINDOW ? rd_left(r) : GGUF_WINDOW;
			r->buf_len = 0;
			int rc = pread_full(r->fd, r->buf, (size_t)k, r->pos, r->path);
			if (rc != 0)
				return rc;
			r->buf_off = r->pos;
			r->buf_len = (size_t)k;
		}
	}
	return 0;
}

#define RD_FAIL(r, off, fmt, ...)                                                              \
	ml_error(ML_ERR_FORMAT, "%s: %s: offset %" PRIu64 ": " fmt, __func__, (r)->path,        \
		 (uint64_t)(off), __VA_ARGS__)

/* Reads a fixed-size little-endian field called |what|. */
#define RD_FIELD(r, dst, what)                                                                 \
	do {                                                                                   \
		if (rd_left(r) < sizeof(*(dst)))                                               \
			return RD_FAIL(r, (r)->pos,                                             \
				       "need %zu bytes for %s, only %" PRIu64 " left in the file",  \
				       sizeof(*(dst)), what, rd_left(r));                       \
		int rc_ = rd_copy(r, dst, sizeof(*(dst)));                                     \
		if (rc_ != 0)                                                                  \
			return rc_;                                                            \
	} while (0)

size_t gguf_type_size(enum gguf_type t)
{
	switch (t) {
	case GGUF_TYPE_UINT8:
	case GGUF_TYPE_INT8:
	case GGUF_TYPE_BOOL: return 1;
	case GGUF_TYPE_UINT16:
	case GGUF_TYPE_INT16: return 2;
	case GGUF_TYPE_UINT32:
	case GGUF_TYPE_INT32:
	case GGUF_TYPE_FLOAT32: return 4;
	case GGUF_TYPE_UINT64:
	case GGUF_TYPE_INT64:
	case GGUF_TYPE_FLOAT64: return 8;
	default: return 0;
	}
}

const char *gguf_type_name(enum gguf_type t)
{
	static const char *const names[GGUF_TYPE_COUNT] = {
		"uint8", "int8",   "uint16", "int16",  "uint32", "int32",   "float32",
		"bool",  "string", "array",  "uint64", "int64",  "float64",
	};
	if ((unsigned)t >= GGUF_TYPE_COUNT)
		return "?";
	return names[t];
}

/* Reads a string (u64 length + bytes) into the arena, NUL-terminated.
 * |what| names it in errors, |cap| bounds the length. */
static int rd_string(struct rd *r, struct gguf_str *out, uint64_t cap, const char *what)
{
	uint64_t off = r->pos, len;
	RD_FIELD(r, &len, what);
	if (len > cap)
		return RD_FAIL(r, off, "%s: string length %" PRIu64 " exceeds the limit of %" PRIu64,
			       what, len, cap);
	if (len > rd_left(r))
		return RD_FAIL(r, off,
			       "%s: string length %" PRIu64 " exceeds the %" PRIu64
			       " bytes left in the file",
			       what, len, rd_left(r));
	char *s = arena_alloc(r->arena, len + 1);
	if (s == NULL)
		return ML_ERR_NOMEM;
	int rc = rd_copy(r, s, len);
	if (rc != 0)
		return rc;
	s[len] = '\0';
	out->ptr = s;
	out->len = len;
	return 0;
}

/* Key text for messages: at most 80 bytes. */
#define KEYFMT "'%.*s'"
#define KEYARG(k) (int)((k)->len < 80 ? (k)->len : 80), (k)->ptr

static int rd_value(struct rd *r, enum gguf_type type, struct gguf_value *v, int depth,
		    const struct gguf_str *key)
{
	uint64_t off = r->pos;
	v->type = type;
	switch (type) {
	case GGUF_TYPE_UINT8: {
		uint8_t x;
		RD_FIELD(r, &x, "uint8 value");
		v->u64 = x;
		return 0;
	}
	case GGUF_TYPE_BOOL: {
		uint8_t x;
		RD_FIELD(r, &x, "bool value");
		if (x > 1)
			return RD_FAIL(r, off, "key " KEYFMT ": bool value must be 0 or 1, found %u",
				       KEYARG(key), x);
		v->u64 = x;
		return 0;
	}
	case GGUF_TYPE_INT8: {
		int8_t x;
		RD_FIELD(r, &x, "int8 value");
		v->i64 = x;
		return 0;
	}
	case GGUF_TYPE_UINT16: {
		uint16_t x;
		RD_FIELD(r, &x, "uint16 value");
		v->u64 = x;
		return 0;
	}
	case GGUF_TYPE_INT16: {
		int16_t x;
		RD_FIELD(r, &x, "int16 value");
		v->i64 = x;
		return 0;
	}
	case GGUF_TYPE_UINT32: {
		uint32_t x;
		RD_FIELD(r, &x, "uint32 value");
		v->u64 = x;
		return 0;
	}
	case GGUF_TYPE_INT32: {
		int32_t x;
		RD_FIELD(r, &x, "int32 value");
		v->i64 = x;
		return 0;
	}
	case GGUF_TYPE_UINT64: {
		uint64_t x;
		RD_FIELD(r, &x, "uint64 value");
		v->u64 = x;
		return 0;
	}
	case GGUF_TYPE_INT64: {
		int64_t x;
		RD_FIELD(r, &x, "int64 value");
		v->i64 = x;
		return 0;
	}
	case GGUF_TYPE_FLOAT32: {
		float x;
		RD_FIELD(r, &x, "float32 value");
		v->f64 = x;
		return 0;
	}
	case GGUF_TYPE_FLOAT64: {
		double x;
		RD_FIELD(r, &x, "float64 value");
		v->f64 = x;
		return 0;
	}
	case GGUF_TYPE_STRING: return rd_string(r, &v->str, GGUF_MAX_STRING, "string value");
	case GGUF_TYPE_ARRAY: break;
	default:
		return RD_FAIL(r, off, "key " KEYFMT ": unknown value type %u (expected 0..%d)",
			       KEYARG(key), (unsigned)type, GGUF_TYPE_COUNT - 1);
	}

	if (depth >= GGUF_MAX_DEPTH)
		return RD_FAIL(r, off, "key " KEYFMT ": arrays nested deeper than the limit of %d",
			       KEYARG(key), GGUF_MAX_DEPTH);
	uint32_t elem;
	uint64_t n;
	RD_FIELD(r, &elem, "array element type");
	if (elem >= GGUF_TYPE_COUNT)
		return RD_FAIL(r, off, "key " KEYFMT ": unknown array element type %u (expected 0..%d)",
			       KEYARG(key), elem, GGUF_TYPE_COUNT - 1);
	uint64_t count_off = r->pos;
	RD_FIELD(r, &n, "array count");
	size_t esz = gguf_type_size((enum gguf_type)elem);
	/* smallest encoding of one element bounds the count by what remains */
	uint64_t min_elem = esz ? esz : elem == GGUF_TYPE_STRING ? 8 : 12;
	if (n > rd_left(r) / min_elem)
		return RD_FAIL(r, count_off,
			       "key " KEYFMT ": array count %" PRIu64 " of %s needs at least %" PRIu64
			       " bytes per element but only %" PRIu64 " bytes are left in the file",
			       KEYARG(key), n, gguf_type_name((enum gguf_type)elem), min_elem,
			       rd_left(r));
	v->arr.elem = (enum gguf_type)elem;
	v->arr.n = n;
	v->arr.raw = NULL;
	v->arr.items = NULL;
	if (esz != 0) {
		void *raw = arena_alloc(r->arena, n * esz);
		if (raw == NULL)
			return ML_ERR_NOMEM;
		int rc = rd_copy(r, raw, n * esz);
		if (rc != 0)
			return rc;
		if (elem == GGUF_TYPE_BOOL) {
			const uint8_t *b = raw;
			for (uint64_t i = 0; i < n; i++)
				if (b[i] > 1)
					return RD_FAIL(r, count_off + 8 + i,
						       "key " KEYFMT ": bool array element %" PRIu64
						       " must be 0 or 1, found %u",
						       KEYARG(key), i, b[i]);
		}
		v->arr.raw = raw;
		return 0;
	}
	struct gguf_value *items = arena_alloc(r->arena, n * sizeof(*items) + 1);
	if (items == NULL)
		return ML_ERR_NOMEM;
	for (uint64_t i = 0; i < n; i++) {
		int rc = elem == GGUF_TYPE_STRING
				 ? rd_string(r, &items[i].str, GGUF_MAX_STRING, "string array element")
				 : rd_value(r, GGUF_TYPE_ARRAY, &items[i], depth + 1, key);
		if (rc != 0)
			return rc;
		items[i].type = (enum gguf_type)elem;
	}
	v->arr.items = items;
	return 0;
}

static bool value_int(const struct gguf_value *v, int64_t *is, uint64_t *us, bool *is_signed)
{
	switch (v->type) {
	case GGUF_TYPE_UINT8:
	case GGUF_TYPE_UINT16:
	case GGUF_TYPE_UINT32:
	case GGUF_TYPE_UINT64: *us = v->u64; *is_signed = false; return true;
	case GGUF_TYPE_INT8:
	case GGUF_TYPE_INT16:
	case GGUF_TYPE_INT32:
	case GGUF_TYPE_INT64: *is = v->i64; *is_signed = true; return true;
	default: return false;
	}
}

/* Value of an integer metadata entry as u64, or false if negative/not int. */
static bool value_as_u64(const struct gguf_value *v, uint64_t *out)
{
	int64_t s = 0;
	uint64_t u = 0;
	bool sg = false;
	if (!value_int(v, &s, &u, &sg))
		return false;
	if (sg) {
		if (s < 0)
			return false;
		u = (uint64_t)s;
	}
	*out = u;
	return true;
}

/* Reads one tensor info entry and checks everything that does not depend on
 * the data section offset. */
static int rd_tensor(struct rd *r, struct gguf_tensor *t)
{
	uint64_t off = r->pos;
	struct gguf_str name;
	int rc = rd_string(r, &name, GGUF_MAX_NAME, "tensor name");
	if (rc != 0)
		return rc;
	if (memchr(name.ptr, '\0', name.len) != NULL)
		return RD_FAIL(r, off, "tensor name '%s' contains a NUL byte", name.ptr);
	t->name = name.ptr;
	uint64_t dims_off = r->pos;
	RD_FIELD(r, &t->n_dims, "tensor n_dims");
	if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
		return RD_FAIL(r, dims_off, "tensor '%s': n_dims %u is out of range (expected 1..%d)",
			       t->name, t->n_dims, GGUF_MAX_DIMS);
	for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++)
		t->ne[d] = 1;
	uint64_t ne_off = r->pos;
	for (uint32_t d = 0; d < t->n_dims; d++) {
		RD_FIELD(r, &t->ne[d], "tensor dimension");
		if (t->ne[d] < 1 || t->ne[d] > (uint64_t)INT64_MAX)
			return RD_FAIL(r, ne_off + 8 * d,
				       "tensor '%s': ne[%u] = %" PRIu64 " (expected 1..2^63-1)",
				       t->name, d, t->ne[d]);
	}
	uint64_t type_off = r->pos;
	RD_FIELD(r, &t->type, "tensor type");
	RD_FIELD(r, &t->offset, "tensor data offset");
	const struct ml_dtype_info *dt = ml_dtype_get(t->type);
	if (dt == NULL)
		return RD_FAIL(r, type_off, "tensor '%s': unknown tensor type id %u", t->name,
			       t->type);
	if (t->ne[0] % dt->block_size != 0)
		return RD_FAIL(r, ne_off,
			       "tensor '%s': row length ne[0] = %" PRIu64
			       " is not a multiple of the %s block size %u",
			       t->name, t->ne[0], dt->name, dt->block_size);
	uint64_t nel = t->ne[0], bytes = (t->ne[0] / dt->block_size);
	bool ovf = __builtin_mul_overflow(bytes, (uint64_t)dt->type_size, &bytes);
	for (uint32_t d = 1; d < GGUF_MAX_DIMS; d++) {
		ovf |= __builtin_mul_overflow(nel, t->ne[d], &nel);
		ovf |= __builtin_mul_overflow(bytes, t->ne[d], &bytes);
	}
	if (ovf || nel > (uint64_t)INT64_MAX || bytes > (uint64_t)INT64_MAX)
		return RD_FAIL(r, ne_off,
			       "tensor '%s': element count or byte size overflows 63 bits "
			       "(ne = %" PRIu64 " x %" PRIu64 " x %" PRIu64 " x %" PRIu64 ")",
			       t->name, t->ne[0], t->ne[1], t->ne[2], t->ne[3]);
	t->n_elements = nel;
	t->n_bytes = bytes;
	t->data = NULL;
	return 0;
}

static int add_tensor_slot(struct gguf_file *gf, uint64_t extra)
{
	if (gf->n_tensors + extra <= gf->cap_tensors)
		return 0;
	/* grow by doubling: the count in the file only bounds, never sizes, it */
	uint64_t cap = gf->cap_tensors ? gf->cap_tensors * 2 : 64;
	if (cap < gf->n_tensors + extra)
		cap = gf->n_tensors + extra;
	struct gguf_tensor *t = realloc(gf->tensors, cap * sizeof(*t));
	if (t == NULL)
		return ML_ERR_NOMEM;
	gf->tensors = t;
	gf->cap_tensors = cap;
	return 0;
}

static int check_split_part(const struct gguf_part *p, uint32_t pi, uint64_t count);

struct span {
	uint64_t off, end, idx;
};

static int span_cmp(const void *a, const void *b)
{
	const struct span *x = a, *y = b;
	return x->off < y->off ? -1 : x->off > y->off;
}

/* Refuses tensors [first, n_tensors) whose data overlap (writers lay them out
 * one after the other; llama.cpp even requires that exact order). */
static int check_overlap(const struct gguf_file *gf, uint64_t first, const char *path)
{
	uint64_t n = gf->n_tensors - first;
	if (n < 2)
		return 0;
	struct span *sp = malloc(n * sizeof(*sp));
	if (sp == NULL)
		return ML_ERR_NOMEM;
	for (uint64_t i = 0; i < n; i++) {
		const struct gguf_tensor *t = &gf->tensors[first + i];
		sp[i] = (struct span){t->offset, t->offset + t->n_bytes, first + i};
	}
	qsort(sp, n, sizeof(*sp), span_cmp);
	int rc = 0;
	for (uint64_t i = 1; i < n && rc == 0; i++)
		if (sp[i].off < sp[i - 1].end)
			rc = ml_error(ML_ERR_FORMAT,
				      "check_overlap: %s: data of tensor '%s' at offset %" PRIu64
				      " overlaps tensor '%s' (ends at %" PRIu64 ")",
				      path, gf->tensors[sp[i].idx].name, sp[i].off,
				      gf->tensors[sp[i - 1].idx].name, sp[i - 1].end);
	free(sp);
	return rc;
}

/* Parses part |pi| of |gf| from |path|: header, metadata and tensor table;
 * appends its tensors to gf->tensors. Parts after the first must carry
 * split.no = |pi| and split.count = |count|. */
static int parse_part(struct gguf_file *gf, uint32_t pi, const char *path, uint64_t count)
{
	struct gguf_part *p = &gf->parts[pi];
	struct hmap keys = {0};
	struct rd r = {.fd = -1, .path = path, .arena = &gf->arena};
	int rc;

	p->fd = -1;
	p->path = strdup(path);
	if (p->path == NULL)
		return ML_ERR_NOMEM;
	r.path = p->path;
	p->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (p->fd < 0)
		return ml_error(errno == ENOENT ? ML_ERR_NOT_FOUND : ML_ERR_IO, "%s: %s: %s", __func__,
				path, strerror(errno));
	struct stat st;
	if (fstat(p->fd, &st) != 0)
		return ml_error(ML_ERR_IO, "%s: %s: stat: %s", __func__, path, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return ml_error(ML_ERR_INVALID, "%s: %s: not a regular file", __func__, path);
	p->size = (uint64_t)st.st_size;
	r.fd = p->fd;
	r.size = p->size;
	/* the window never exceeds the file, so small files cost little */
	r.buf = malloc(p->size == 0 ? 1 : p->size < GGUF_WINDOW ? (size_t)p->size : GGUF_WINDOW);
	if (r.buf == NULL)
		return ML_ERR_NOMEM;

	char magic[4];
	if (r.size < 4) {
		rc = RD_FAIL(&r, 0, "not a GGUF file: %" PRIu64 " bytes, too short for the magic",
			     r.size);
		goto out;
	}
	if ((rc = rd_copy(&r, magic, 4)) != 0)
		goto out;
	if (memcmp(magic, GGUF_MAGIC, 4) != 0) {
		rc = RD_FAIL(&r, 0,
			     "not a GGUF file: expected magic 'GGUF', found %02x %02x %02x %02x",
			     (unsigned char)magic[0], (unsigned char)magic[1],
			     (unsigned char)magic[2], (unsigned char)magic[3]);
		goto out;
	}
	/* like RD_FIELD, but unwinds through |out| */
#define GET(dst, what)                                                                         \
	do {                                                                                   \
		if (rd_left(&r) < sizeof(*(dst))) {                                            \
			rc = RD_FAIL(&r, r.pos,                                                 \
				     "need %zu bytes for %s, only %" PRIu64 " left in the file",    \
				     sizeof(*(dst)), what, rd_left(&r));                        \
			goto out;                                                              \
		}                                                                              \
		if ((rc = rd_copy(&r, dst, sizeof(*(dst)))) != 0)                              \
			goto out;                                                              \
	} while (0)

	GET(&p->version, "version");
	if (p->version == 1) {
		rc = ml_error(ML_ERR_UNSUPPORTED,
			      "%s: %s: offset 4: GGUF version 1 is not supported (expected 2 or 3)",
			      __func__, path);
		goto out;
	}
	if (p->version != 2 && p->version != 3) {
		bool swapped = (p->version & 0xffff) == 0 && (p->version >> 24) <= 3;
		rc = ml_error(ML_ERR_UNSUPPORTED,
			      "%s: %s: offset 4: GGUF version %u is not supported (expected 2 or 3)%s",
			      __func__, path, p->version,
			      swapped ? "; the file looks big-endian, only little-endian is supported"
				      : "");
		goto out;
	}
	uint64_t n_tensors, n_kv;
	GET(&n_tensors, "tensor count");
	GET(&n_kv, "metadata count");
	if (n_kv > rd_left(&r) / GGUF_MIN_KV_BYTES) {
		rc = RD_FAIL(&r, 16,
			     "metadata count %" PRIu64 " cannot fit in the %" PRIu64
			     " bytes left in the file (at least %llu bytes each)",
			     n_kv, rd_left(&r), GGUF_MIN_KV_BYTES);
		goto out;
	}
	if (n_tensors > rd_left(&r) / GGUF_MIN_TENSOR_BYTES) {
		rc = RD_FAIL(&r, 8,
			     "tensor count %" PRIu64 " cannot fit in the %" PRIu64
			     " bytes left in the file (at least %llu bytes each)",
			     n_tensors, rd_left(&r), GGUF_MIN_TENSOR_BYTES);
		goto out;
	}

	/* metadata */
	/* arrays grow as entries parse, so a lying count cannot reserve memory */
	uint64_t cap_kv = 0;
	if (hmap_init(&keys, n_kv < 1024 ? n_kv : 1024) != 0) {
		rc = ML_ERR_NOMEM;
		goto out;
	}
	p->alignment = GGUF_DEFAULT_ALIGNMENT;
	for (uint64_t i = 0; i < n_kv; i++) {
		if (i == cap_kv) {
			cap_kv = cap_kv ? cap_kv * 2 : 32;
			struct gguf_kv *nkv = realloc(p->kv, cap_kv * sizeof(*nkv));
			if (nkv == NULL) {
				rc = ML_ERR_NOMEM;
				goto out;
			}
			p->kv = nkv;
		}
		struct gguf_kv *kv = &p->kv[i];
		uint64_t koff = r.pos;
		uint32_t type;
		if ((rc = rd_string(&r, &kv->key, GGUF_MAX_KEY, "metadata key")) != 0)
			goto out;
		GET(&type, "metadata value type");
		if ((rc = rd_value(&r, (enum gguf_type)type, &kv->value, 0, &kv->key)) != 0)
			goto out;
		rc = hmap_put(&keys, kv->key.ptr, kv->key.len, i);
		if (rc < 0)
			goto out;
		if (rc == 1) {
			rc = RD_FAIL(&r, koff, "duplicate metadata key " KEYFMT, KEYARG(&kv->key));
			goto out;
		}
		if (kv->key.len == 17 && memcmp(kv->key.ptr, "general.alignment", 17) == 0) {
			uint64_t a;
			if (!value_as_u64(&kv->value, &a)) {
				rc = RD_FAIL(&r, koff,
					     "general.alignment must be an unsigned integer, found %s",
					     gguf_type_name(kv->value.type));
				goto out;
			}
			/* The GGUF spec asks for a multiple of 8; below that, block
			 * and float data would sit at misaligned addresses (and
			 * llama.cpp refuses such a file when it loads it). */
			if (a < 8 || (a & (a - 1)) != 0 || a > GGUF_MAX_ALIGNMENT) {
				rc = RD_FAIL(&r, koff,
					     "general.alignment %" PRIu64
					     " must be a power of two from 8 to %llu",
					     a, GGUF_MAX_ALIGNMENT);
				goto out;
			}
			p->alignment = a;
		}
		p->n_kv = i + 1;
	}
	if (pi > 0 && (rc = check_split_part(p, pi, count)) != 0)
		goto out;
	if (pi == 0) {
		gf->kv_index = keys;
		keys.slots = NULL;
	}

	/* tensor table */
	uint64_t first = gf->n_tensors;
	for (uint64_t i = 0; i < n_tensors; i++) {
		if ((rc = add_tensor_slot(gf, 1)) != 0)
			goto out;
		struct gguf_tensor *t = &gf->tensors[first + i];
		uint64_t toff = r.pos;
		if ((rc = rd_tensor(&r, t)) != 0)
			goto out;
		t->file = pi;
		rc = hmap_put(&gf->tensor_index, t->name, strlen(t->name), first + i);
		if (rc < 0)
			goto out;
		if (rc == 1) {
			rc = RD_FAIL(&r, toff, "duplicate tensor name '%s'", t->name);
			goto out;
		}
		gf->n_tensors++;
	}

	/* data section: aligned end of the tensor table */
	p->data_offset = (r.pos + p->alignment - 1) & ~(p->alignment - 1);
	for (uint64_t i = first; i < gf->n_tensors; i++) {
		struct gguf_tensor *t = &gf->tensors[i];
		uint64_t rel = t->offset;
		if (rel % p->alignment != 0) {
			rc = ml_error(ML_ERR_FORMAT,
				      "%s: %s: tensor '%s': data offset %" PRIu64
				      " is not a multiple of the alignment %" PRIu64,
				      __func__, path, t->name, rel, p->alignment);
			goto out;
		}
		if (p->data_offset > p->size || rel > p->size - p->data_offset ||
		    t->n_bytes > p->size - p->data_offset - rel) {
			rc = ml_error(ML_ERR_FORMAT,
				      "%s: %s: tensor '%s': data [%" PRIu64 ", +%" PRIu64
				      ") lies outside the file (data section starts at %" PRIu64
				      ", file size %" PRIu64 ")",
				      __func__, path, t->name, rel, t->n_bytes, p->data_offset,
				      p->size);
			goto out;
		}
		t->offset = p->data_offset + rel;
	}
	if ((rc = check_overlap(gf, first, path)) != 0)
		goto out;
	rc = 0;
#undef GET
out:
	hmap_free(&keys);
	free(r.buf);
	return rc;
}

static const struct gguf_value *part_find(const struct gguf_part *p, const char *key)
{
	size_t len = strlen(key);
	for (uint64_t i = 0; i < p->n_kv; i++)
		if (p->kv[i].key.len == len && memcmp(p->kv[i].key.ptr, key, len) == 0)
			return &p->kv[i].value;
	return NULL;
}

/* Recognises "<prefix>-NNNNN-of-MMMMM.gguf"; returns false otherwise. */
static bool split_name(const char *path, size_t *prefix_len, unsigned *no, unsigned *count)
{
	static const char tail[] = "-00000-of-00000.gguf";
	size_t n = strlen(path), t = sizeof(tail) - 1;
	if (n < t)
		return false;
	const char *s = path + n - t;
	unsigned a = 0, b = 0;
	for (size_t i = 0; i < t; i++) {
		if (tail[i] == '0') {
			if (s[i] < '0' || s[i] > '9')
				return false;
			if (i < 6)
				a = a * 10 + (unsigned)(s[i] - '0');
			else
				b = b * 10 + (unsigned)(s[i] - '0');
		} else if (s[i] != tail[i]) {
			return false;
		}
	}
	*prefix_len = n - t;
	*no = a;
	*count = b;
	return true;
}

static int split_value(const struct gguf_part *p, const char *key, uint64_t *out, bool required)
{
	const struct gguf_value *v = part_find(p, key);
	if (v == NULL) {
		if (!required)
			return ML_ERR_NOT_FOUND;
		return ml_error(ML_ERR_FORMAT, "gguf_open: %s: split part lacks the key '%s'",
				p->path, key);
	}
	if (!value_as_u64(v, out))
		return ml_error(ML_ERR_FORMAT,
				"gguf_open: %s: key '%s' must be a non-negative integer, found %s",
				p->path, key, gguf_type_name(v->type));
	return 0;
}

static int check_split_part(const struct gguf_part *p, uint32_t pi, uint64_t count)
{
	uint64_t pno, pcount;
	int rc = split_value(p, "split.no", &pno, true);
	if (rc == 0)
		rc = split_value(p, "split.count", &pcount, true);
	if (rc == 0 && (pno != pi || pcount != count))
		rc = ml_error(ML_ERR_FORMAT,
			      "gguf_open: %s: split.no %" PRIu64 " / split.count %" PRIu64
			      " (expected %u / %" PRIu64 ")",
			      p->path, pno, pcount, pi, count);
	return rc;
}

static int open_splits(struct gguf_file *gf, const char *path)
{
	uint64_t count;
	int rc = split_value(&gf->parts[0], "split.count", &count, false);
	if (rc == ML_ERR_NOT_FOUND)
		return 0;
	if (rc != 0)
		return rc;
	if (count == 0 || count > GGUF_MAX_SPLITS)
		return ml_error(ML_ERR_FORMAT,
				"gguf_open: %s: split.count %" PRIu64 " is out of range (1..%d)",
				path, count, GGUF_MAX_SPLITS);
	uint64_t no = 0;
	rc = split_value(&gf->parts[0], "split.no", &no, false);
	if (rc != 0 && rc != ML_ERR_NOT_FOUND)
		return rc;
	if (no != 0)
		return ml_error(ML_ERR_INVALID,
				"gguf_open: %s: this is part %" PRIu64 " of a %" PRIu64
				"-part split model; open the first part (-00001-of-...)",
				path, no + 1, count);
	if (count > 1) {
		size_t plen;
		unsigned fno, fcount;
		if (!split_name(path, &plen, &fno, &fcount) || fno != 1 || fcount != count)
			return ml_error(ML_ERR_INVALID,
					"gguf_open: %s: split model with %" PRIu64
					" parts, but the file name is not '<name>-00001-of-%05" PRIu64
					".gguf'",
					path, count, count);
		char *name = malloc(plen + 32);
		if (name == NULL)
			return ML_ERR_NOMEM;
		for (uint32_t i = 1; i < count; i++) {
			snprintf(name, plen + 32, "%.*s-%05u-of-%05u.gguf", (int)plen, path, i + 1,
				 fcount);
			gf->n_parts = i + 1;
			rc = parse_part(gf, i, name, count);
			if (rc != 0)
				break;
		}
		free(name);
		if (rc != 0)
			return rc;
	}
	uint64_t total;
	rc = split_value(&gf->parts[0], "split.tensors.count", &total, false);
	if (rc == 0 && total != gf->n_tensors)
		return ml_error(ML_ERR_FORMAT,
				"gguf_open: %s: split.tensors.count is %" PRIu64
				" but the %u parts hold %" PRIu64 " tensors",
				path, total, gf->n_parts, gf->n_tensors);
	if (rc != 0 && rc != ML_ERR_NOT_FOUND)
		return rc;
	return 0;
}

int gguf_open(struct gguf_file **out, const char *path)
{
	int rc;
	if (out == NULL || path == NULL)
		return ml_error(ML_ERR_INVALID, "%s: NULL argument", __func__);
	*out = NULL;
	struct gguf_file *gf = calloc(1, sizeof(*gf));
	if (gf == NULL)
		return ML_ERR_NOMEM;
	gf->path = strdup(path);
	gf->parts = calloc(GGUF_MAX_SPLITS, sizeof(*gf->parts));
	if (gf->path == NULL || gf->parts == NULL) {
		rc = ML_ERR_NOMEM;
		goto fail;
	}
	for (uint32_t i = 0; i < GGUF_MAX_SPLITS; i++)
		gf->parts[i].fd = -1;
	if ((rc = hmap_init(&gf->tensor_index, 64)) != 0)
		goto fail;
	gf->n_parts = 1;
	if ((rc = parse_part(gf, 0, path, 0)) != 0)
		goto fail;
	if ((rc = open_splits(gf, path)) != 0)
		goto fail;
	ML_DEBUG("gguf: %s: v%u, %" PRIu64 " metadata keys, %" PRIu64 " tensors in %u file(s)",
		 path, gf->parts[0].version, gf->parts[0].n_kv, gf->n_tensors, gf->n_parts);
	*out = gf;
	return 0;
fail:
	if (rc == ML_ERR_NOMEM)
		ml_error(rc, "%s: %s: out of memory while reading the file", __func__, path);
	gguf_close(gf);
	return rc;
}

void gguf_close(struct gguf_file *gf)
{
	if (gf == NULL)
		return;
	for (size_t i = 0; i < gf->n_maps; i++)
		munmap(gf->maps[i].addr, gf->maps[i].len);
	free(gf->maps);
	if (gf->parts != NULL) {
		for (uint32_t i = 0; i < gf->n_parts; i++) {
			if (gf->parts[i].fd >= 0)
				close(gf->parts[i].fd);
			free(gf->parts[i].path);
			free(gf->parts[i].kv);
		}
		free(gf->parts);
	}
	hmap_free(&gf->kv_index);
	hmap_free(&gf->tensor_index);
	free(gf->tensors);
	arena_free(&gf->arena);
	free(gf->path);
	free(gf);
}

/* ---------------------------------------------------------------- mapping */

struct map_item {
	uint64_t off, end, idx;
};

static int map_item_cmp(const void *a, const void *b)
{
	const struct map_item *x = a, *y = b;
	return x->off < y->off ? -1 : x->off > y->off;
}

/* Huge-page size the resident copies are aligned to (x86-64, arm64 with 4K
 * pages). */
#define GGUF_HUGE_PAGE ((size_t)2 << 20)

/* Reads [start, start + len) of part |p| into fresh private anonymous
 * memory, aligned to and advised for transparent huge pages, then makes it
 * read-only. Bytes past the end of the file read as 0, as in a mapping.
 * Returns MAP_FAILED with errno set on failure. */
static void *read_resident(const struct gguf_part *p, uint64_t start, size_t len)
{
	const size_t span = len + GGUF_HUGE_PAGE;
	char *raw = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (raw == MAP_FAILED)
		return MAP_FAILED;
	/* keep only the aligned [a, a + len) part of the reservation */
	char *a = (char *)(((uintptr_t)raw + GGUF_HUGE_PAGE - 1) & ~(uintptr_t)(GGUF_HUGE_PAGE - 1));
	if (a > raw)
		munmap(raw, (size_t)(a - raw));
	if (raw + span > a + len)
		munmap(a + len, (size_t)(raw + span - (a + len)));
	madvise(a, len, MADV_HUGEPAGE); /* advice only: fine if THP is off */
	/* the range is rounded up to whole pages: the end past the file stays 0 */
	const size_t want = p->size > start && p->size - start < len ? (size_t)(p->size - start) : len;
	for (size_t done = 0; done < want;) {
		ssize_t n = pread(p->fd, a + done, want - done, (off_t)(start + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int err = n < 0 ? errno : EIO; /* 0: the file shrank */
			munmap(a, len);
			errno = err;
			return MAP_FAILED;
		}
		done += (size_t)n;
	}
	if (mprotect(a, len, PROT_READ) != 0) {
		int err = errno;
		munmap(a, len);
		errno = err;
		return MAP_FAILED;
	}
	return a;
}

static int map_range(struct gguf_file *gf, const struct gguf_part *p, uint64_t start,
		     uint64_t end, void **addr)
{
	if (gf->n_maps == gf->cap_maps) {
		size_t cap = gf->cap_maps ? gf->cap_maps * 2 : 16;
		struct gguf_mapping *m = realloc(gf->maps, cap * sizeof(*m));
		if (m == NULL)
			return ML_ERR_NOMEM;
		gf->maps = m;
		gf->cap_maps = cap;
	}
	size_t len = (size_t)(end - start);
	void *a = gf->resident ? read_resident(p, start, len)
			       : mmap(NULL, len, PROT_READ, MAP_SHARED, p->fd, (off_t)start);
	if (a == MAP_FAILED)
		return ml_error(ML_ERR_IO, "%s: %s: %s of %zu bytes at offset %" PRIu64 ": %s", __func__,
				p->path, gf->resident ? "reading" : "mmap", len, start, strerror(errno));
	gf->maps[gf->n_maps].addr = a;
	gf->maps[gf->n_maps].len = len;
	gf->n_maps++;
	*addr = a;
	return 0;
}

void gguf_set_resident(struct gguf_file *gf, bool resident)
{
	if (gf != NULL)
		gf->resident = resident;
}

int gguf_map(struct gguf_file *gf, bool (*want)(const struct gguf_tensor *t, void *user),
	     void *user)
{
	if (gf == NULL)
		return ml_error(ML_ERR_INVALID, "%s: NULL file", __func__);
	long ps = sysconf(_SC_PAGESIZE);
	uint64_t page = ps > 0 ? (uint64_t)ps : 4096;
	struct map_item *items = malloc((gf->n_tensors + 1) * sizeof(*items));
	if (items == NULL)
		return ML_ERR_NOMEM;
	int rc = 0;
	for (uint32_t f = 0; f < gf->n_parts && rc == 0; f++) {
		const struct gguf_part *p = &gf->parts[f];
		size_t n = 0;
		for (uint64_t i = 0; i < gf->n_tensors; i++) {
			const struct gguf_tensor *t = &gf->tensors[i];
			if (t->file != f || t->data != NULL || (want != NULL && !want(t, user)))
				continue;
			items[n].off = t->offset;
			items[n].end = t->offset + t->n_bytes;
			items[n].idx = i;
			n++;
		}
		if (n == 0)
			continue;
		/* a file that shrank since open would SIGBUS on access */
		struct stat st;
		if (fstat(p->fd, &st) != 0 || (uint64_t)st.st_size != p->size) {
			rc = ml_error(ML_ERR_IO, "%s: %s: file changed size since it was opened",
				      __func__, p->path);
			break;
		}
		qsort(items, n, sizeof(*items), map_item_cmp);
		size_t i = 0;
		while (i < n && rc == 0) {
			uint64_t start = items[i].off & ~(page - 1), end = items[i].end;
			size_t j = i + 1;
			/* runs of selected tensors that touch the same or adjacent pages share
			 * one mapping */
			while (j < n && (items[j].off & ~(page - 1)) <= ((end + page - 1) & ~(page - 1))) {
				if (items[j].end > end)
					end = items[j].end;
				j++;
			}
			end = (end + page - 1) & ~(page - 1);
			void *base = NULL;
			rc = map_range(gf, p, start, end, &base);
			for (size_t k = i; k < j && rc == 0; k++)
				gf->tensors[items[k].idx].data =
					(const unsigned char *)base + (items[k].off - start);
			i = j;
		}
	}
	free(items);
	return rc;
}

/* ---------------------------------------------------------------- queries */

uint32_t gguf_version(const struct gguf_file *gf)
{
	return gf->parts[0].version;
}

const char *gguf_path(const struct gguf_file *gf)
{
	return gf->path;
}

uint32_t gguf_n_files(const struct gguf_file *gf)
{
	return gf->n_parts;
}

uint64_t gguf_alignment(const struct gguf_file *gf)
{
	return gf->parts[0].alignment;
}

uint64_t gguf_file_size(const struct gguf_file *gf)
{
	uint64_t s = 0;
	for (uint32_t i = 0; i < gf->n_parts; i++)
		s += gf->parts[i].size;
	return s;
}

uint64_t gguf_n_kv(const struct gguf_file *gf)
{
	return gf->parts[0].n_kv;
}

const struct gguf_kv *gguf_kv_at(const struct gguf_file *gf, uint64_t i)
{
	return i < gf->parts[0].n_kv ? &gf->parts[0].kv[i] : NULL;
}

const struct gguf_value *gguf_find(const struct gguf_file *gf, const char *key)
{
	if (key == NULL)
		return NULL;
	const struct hslot *e = hmap_get(&gf->kv_index, key, strlen(key));
	return e != NULL ? &gf->parts[0].kv[e->idx].value : NULL;
}

uint64_t gguf_n_tensors(const struct gguf_file *gf)
{
	return gf->n_tensors;
}

const struct gguf_tensor *gguf_tensor_at(const struct gguf_file *gf, uint64_t i)
{
	return i < gf->n_tensors ? &gf->tensors[i] : NULL;
}

const struct gguf_tensor *gguf_find_tensor(const struct gguf_file *gf, const char *name)
{
	if (name == NULL)
		return NULL;
	const struct hslot *e = hmap_get(&gf->tensor_index, name, strlen(name));
	return e != NULL ? &gf->tensors[e->idx] : NULL;
}

/* --------------------------------------------------------- typed getters */

static int get_value(const struct gguf_file *gf, const char *key, const struct gguf_value **v,
		     const char *fn)
{
	*v = gguf_find(gf, key);
	if (*v == NULL)
		return ml_error(ML_ERR_NOT_FOUND, "%s: %s: key '%s' not found", fn, gf->path, key);
	return 0;
}

static int wrong_type(const struct gguf_file *gf, const char *key, const struct gguf_value *v,
		      const char *want, const char *fn)
{
	return ml_error(ML_ERR_FORMAT, "%s: %s: key '%s' has type %s, expected %s", fn, gf->path,
			key, gguf_type_name(v->type), want);
}

/* Integer value of |key| checked against [lo, hi]. */
static int get_int(const struct gguf_file *gf, const char *key, int64_t lo, uint64_t hi,
		   int64_t *sout, uint64_t *uout, const char *fn)
{
	const struct gguf_value *v;
	int rc = get_value(gf, key, &v, fn);
	if (rc != 0)
		return rc;
	int64_t s = 0;
	uint64_t u = 0;
	bool sg = false;
	if (!value_int(v, &s, &u, &sg))
		return wrong_type(gf, key, v, "an integer", fn);
	if (sg) {
		if (s < lo || (s > 0 && (uint64_t)s > hi))
			return ml_error(ML_ERR_RANGE,
					"%s: %s: key '%s' = %" PRId64 " is out of range [%" PRId64
					", %" PRIu64 "]",
					fn, gf->path, key, s, lo, hi);
		*sout = s;
		*uout = (uint64_t)s;
	} else {
		if (u > hi)
			return ml_error(ML_ERR_RANGE,
					"%s: %s: key '%s' = %" PRIu64 " is out of range [%" PRId64
					", %" PRIu64 "]",
					fn, gf->path, key, u, lo, hi);
		*uout = u;
		*sout = (int64_t)u;
	}
	return 0;
}

int gguf_get_u32(const struct gguf_file *gf, const char *key, uint32_t *out)
{
	int64_t s;
	uint64_t u;
	int rc = get_int(gf, key, 0, UINT32_MAX, &s, &u, __func__);
	if (rc == 0)
		*out = (uint32_t)u;
	return rc;
}

int gguf_get_i32(const struct gguf_file *gf, const char *key, int32_t *out)
{
	int64_t s;
	uint64_t u;
	int rc = get_int(gf, key, INT32_MIN, INT32_MAX, &s, &u, __func__);
	if (rc == 0)
		*out = (int32_t)s;
	return rc;
}

int gguf_get_u64(const struct gguf_file *gf, const char *key, uint64_t *out)
{
	int64_t s;
	uint64_t u;
	int rc = get_int(gf, key, 0, UINT64_MAX, &s, &u, __func__);
	if (rc == 0)
		*out = u;
	return rc;
}

int gguf_get_f32(const struct gguf_file *gf, const char *key, float *out)
{
	const struct gguf_value *v;
	int rc = get_value(gf, key, &v, __func__);
	if (rc != 0)
		return rc;
	int64_t s = 0;
	uint64_t u = 0;
	bool sg = false;
	if (v->type == GGUF_TYPE_FLOAT32 || v->type == GGUF_TYPE_FLOAT64)
		*out = (float)v->f64;
	else if (value_int(v, &s, &u, &sg))
		*out = sg ? (float)s : (float)u;
	else
		return wrong_type(gf, key, v, "a number", __func__);
	return 0;
}

int gguf_get_bool(const struct gguf_file *gf, const char *key, bool *out)
{
	const struct gguf_value *v;
	int rc = get_value(gf, key, &v, __func__);
	if (rc != 0)
		return rc;
	if (v->type != GGUF_TYPE_BOOL)
		return wrong_type(gf, key, v, "bool", __func__);
	*out = v->u64 != 0;
	return 0;
}

int gguf_get_str(const struct gguf_file *gf, const char *key, struct gguf_str *out)
{
	const struct gguf_value *v;
	int rc = get_value(gf, key, &v, __func__);
	if (rc != 0)
		return rc;
	if (v->type != GGUF_TYPE_STRING)
		return wrong_type(gf, key, v, "string", __func__);
	*out = v->str;
	return 0;
}

int gguf_get_arr(const struct gguf_file *gf, const char *key, enum gguf_type elem,
		 const struct gguf_value **out)
{
	const struct gguf_value *v;
	int rc = get_value(gf, key, &v, __func__);
	if (rc != 0)
		return rc;
	if (v->type != GGUF_TYPE_ARRAY)
		return wrong_type(gf, key, v, "array", __func__);
	if (v->arr.elem != elem)
		return ml_error(ML_ERR_FORMAT, "%s: %s: key '%s' is an array of %s, expected %s",
				__func__, gf->path, key, gguf_type_name(v->arr.elem),
				gguf_type_name(elem));
	*out = v;
	return 0;
}
