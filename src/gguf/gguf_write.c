/* GGUF writer: metadata is serialised into a byte buffer as it is added;
 * tensor data is streamed from caller pointers or fill callbacks at write
 * time, so the writer's memory does not grow with the model. */
#include "gguf/gguf_write.h"

#include "base/ml_dtype.h"
#include "base/ml_err.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GW_MAX_DEPTH 8
#define GW_MAX_NAME 4096
#define GW_CHUNK (4u << 20) /* bytes of rows asked from a fill callback at once */
#define GW_OUTBUF (1u << 20)

struct gw_tensor {
	char *name;
	uint32_t type, n_dims;
	uint64_t ne[GGUF_MAX_DIMS];
	uint64_t n_bytes, row_bytes, n_rows;
	const void *data;
	gguf_fill_fn fill;
	void *user;
};

struct gguf_writer {
	uint32_t version;
	uint32_t alignment;
	bool alignment_key; /* write general.alignment in every part */
	unsigned char *kv;  /* serialised metadata */
	size_t kv_len, kv_cap;
	uint64_t n_kv;
	char **keys;
	size_t n_keys, cap_keys;
	struct gw_tensor *tensors;
	uint64_t n_tensors, cap_tensors;
};

/* ------------------------------------------------------- byte buffer */

struct bbuf {
	unsigned char **p;
	size_t *len, *cap;
};

static int bb_put(struct bbuf b, const void *src, size_t n)
{
	if (n == 0)
		return 0;
	if (*b.cap - *b.len < n) {
		size_t cap = *b.cap ? *b.cap : 256;
		while (cap - *b.len < n) {
			if (cap > SIZE_MAX / 2)
				return ML_ERR_NOMEM;
			cap *= 2;
		}
		unsigned char *np = realloc(*b.p, cap);
		if (np == NULL)
			return ML_ERR_NOMEM;
		*b.p = np;
		*b.cap = cap;
	}
	memcpy(*b.p + *b.len, src, n);
	*b.len += n;
	return 0;
}

static int bb_u32(struct bbuf b, uint32_t x)
{
	return bb_put(b, &x, 4);
}

static int bb_u64(struct bbuf b, uint64_t x)
{
	return bb_put(b, &x, 8);
}

static int bb_str(struct bbuf b, const char *s, uint64_t len)
{
	int rc = bb_u64(b, len);
	return rc ? rc : bb_put(b, s, (size_t)len);
}

/* Serialises the body of |v| (without its type tag). */
static int put_value(struct bbuf b, const struct gguf_value *v, int depth)
{
	switch (v->type) {
	case GGUF_TYPE_UINT8:
	case GGUF_TYPE_BOOL: { uint8_t x = (uint8_t)v->u64; return bb_put(b, &x, 1); }
	case GGUF_TYPE_INT8: { int8_t x = (int8_t)v->i64; return bb_put(b, &x, 1); }
	case GGUF_TYPE_UINT16: { uint16_t x = (uint16_t)v->u64; return bb_put(b, &x, 2); }
	case GGUF_TYPE_INT16: { int16_t x = (int16_t)v->i64; return bb_put(b, &x, 2); }
	case GGUF_TYPE_UINT32: return bb_u32(b, (uint32_t)v->u64);
	case GGUF_TYPE_INT32: { int32_t x = (int32_t)v->i64; return bb_put(b, &x, 4); }
	case GGUF_TYPE_UINT64: return bb_u64(b, v->u64);
	case GGUF_TYPE_INT64: return bb_put(b, &v->i64, 8);
	case GGUF_TYPE_FLOAT32: { float x = (float)v->f64; return bb_put(b, &x, 4); }
	case GGUF_TYPE_FLOAT64: return bb_put(b, &v->f64, 8);
	case GGUF_TYPE_STRING:
		if (v->str.ptr == NULL && v->str.len != 0)
			return ml_error(ML_ERR_INVALID, "gguf_writer: string value without bytes");
		return bb_str(b, v->str.ptr ? v->str.ptr : "", v->str.len);
	case GGUF_TYPE_ARRAY: break;
	default: return ml_error(ML_ERR_INVALID, "gguf_writer: unknown value type %d", v->type);
	}
	if (depth >= GW_MAX_DEPTH)
		return ml_error(ML_ERR_INVALID, "gguf_writer: arrays nested deeper than %d",
				GW_MAX_DEPTH);
	enum gguf_type e = v->arr.elem;
	if ((unsigned)e >= GGUF_TYPE_COUNT)
		return ml_error(ML_ERR_INVALID, "gguf_writer: unknown array element type %d", e);
	int rc = bb_u32(b, (uint32_t)e);
	if (rc == 0)
		rc = bb_u64(b, v->arr.n);
	if (rc != 0)
		return rc;
	size_t es = gguf_type_size(e);
	if (es != 0) {
		if (v->arr.n != 0 && v->arr.raw == NULL)
			return ml_error(ML_ERR_INVALID, "gguf_writer: numeric array without data");
		if (v->arr.n > SIZE_MAX / es)
			return ML_ERR_NOMEM;
		return v->arr.n ? bb_put(b, v->arr.raw, (size_t)(v->arr.n * es)) : 0;
	}
	if (v->arr.n != 0 && v->arr.items == NULL)
		return ml_error(ML_ERR_INVALID, "gguf_writer: %s array without items",
				gguf_type_name(e));
	for (uint64_t i = 0; i < v->arr.n; i++) {
		if (v->arr.items[i].type != e)
			return ml_error(ML_ERR_INVALID,
					"gguf_writer: array of %s has an item of type %s",
					gguf_type_name(e), gguf_type_name(v->arr.items[i].type));
		if ((rc = put_value(b, &v->arr.items[i], depth + 1)) != 0)
			return rc;
	}
	return 0;
}

/* ---------------------------------------------------------- construction */

int gguf_writer_init(struct gguf_writer **out)
{
	if (out == NULL)
		return ml_error(ML_ERR_INVALID, "%s: NULL argument", __func__);
	struct gguf_writer *w = calloc(1, sizeof(*w));
	if (w == NULL)
		return ML_ERR_NOMEM;
	w->version = 3;
	w->alignment = 32;
	*out = w;
	return 0;
}

void gguf_writer_free(struct gguf_writer *w)
{
	if (w == NULL)
		return;
	for (size_t i = 0; i < w->n_keys; i++)
		free(w->keys[i]);
	free(w->keys);
	for (uint64_t i = 0; i < w->n_tensors; i++)
		free(w->tensors[i].name);
	free(w->tensors);
	free(w->kv);
	free(w);
}

int gguf_writer_set_version(struct gguf_writer *w, uint32_t version)
{
	if (version != 2 && version != 3)
		return ml_error(ML_ERR_INVALID, "%s: version %u (expected 2 or 3)", __func__, version);
	w->version = version;
	return 0;
}

static int claim_key(struct gguf_writer *w, const char *key)
{
	if (key == NULL)
		return ml_error(ML_ERR_INVALID, "gguf_writer: NULL key");
	for (size_t i = 0; i < w->n_keys; i++)
		if (strcmp(w->keys[i], key) == 0)
			return ml_error(ML_ERR_INVALID, "gguf_writer: duplicate key '%s'", key);
	if (w->n_keys == w->cap_keys) {
		size_t cap = w->cap_keys ? w->cap_keys * 2 : 32;
		char **k = realloc(w->keys, cap * sizeof(*k));
		if (k == NULL)
			return ML_ERR_NOMEM;
		w->keys = k;
		w->cap_keys = cap;
	}
	if ((w->keys[w->n_keys] = strdup(key)) == NULL)
		return ML_ERR_NOMEM;
	w->n_keys++;
	return 0;
}

int gguf_writer_set_alignment(struct gguf_writer *w, uint32_t alignment)
{
	if (alignment == 0 || (alignment & (alignment - 1)) != 0)
		return ml_error(ML_ERR_INVALID, "%s: alignment %u is not a nonzero power of two",
				__func__, alignment);
	if (alignment != 32 && !w->alignment_key) {
		int rc = claim_key(w, "general.alignment");
		if (rc != 0)
			return rc;
		w->alignment_key = true;
	}
	w->alignment = alignment;
	return 0;
}

int gguf_writer_add_value(struct gguf_writer *w, const char *key, const struct gguf_value *v)
{
	if (w == NULL || v == NULL)
		return ml_error(ML_ERR_INVALID, "%s: NULL argument", __func__);
	size_t mark = w->kv_len;
	struct bbuf b = {&w->kv, &w->kv_len, &w->kv_cap};
	int rc = claim_key(w, key);
	if (rc != 0)
		return rc;
	rc = bb_str(b, key, strlen(key));
	if (rc == 0)
		rc = bb_u32(b, (uint32_t)v->type);
	if (rc == 0)
		rc = put_value(b, v, 0);
	if (rc != 0) {
		w->kv_len = mark;
		free(w->keys[--w->n_keys]);
		return rc;
	}
	w->n_kv++;
	return 0;
}

#define SCALAR_ADDER(fn, T, gt, field)                                                         \
	int fn(struct gguf_writer *w, const char *key, T x)                                    \
	{                                                                                      \
		struct gguf_value v = {.type = gt};                                            \
		v.field = x;                                                                   \
		return gguf_writer_add_value(w, key, &v);                                      \
	}
SCALAR_ADDER(gguf_writer_add_u8, uint8_t, GGUF_TYPE_UINT8, u64)
SCALAR_ADDER(gguf_writer_add_i8, int8_t, GGUF_TYPE_INT8, i64)
SCALAR_ADDER(gguf_writer_add_u16, uint16_t, GGUF_TYPE_UINT16, u64)
SCALAR_ADDER(gguf_writer_add_i16, int16_t, GGUF_TYPE_INT16, i64)
SCALAR_ADDER(gguf_writer_add_u32, uint32_t, GGUF_TYPE_UINT32, u64)
SCALAR_ADDER(gguf_writer_add_i32, int32_t, GGUF_TYPE_INT32, i64)
SCALAR_ADDER(gguf_writer_add_u64, uint64_t, GGUF_TYPE_UINT64, u64)
SCALAR_ADDER(gguf_writer_add_i64, int64_t, GGUF_TYPE_INT64, i64)
SCALAR_ADDER(gguf_writer_add_f32, float, GGUF_TYPE_FLOAT32, f64)
SCALAR_ADDER(gguf_writer_add_f64, double, GGUF_TYPE_FLOAT64, f64)
SCALAR_ADDER(gguf_writer_add_bool, bool, GGUF_TYPE_BOOL, u64)

int gguf_writer_add_strn(struct gguf_writer *w, const char *key, const char *s, uint64_t len)
{
	struct gguf_value v = {.type = GGUF_TYPE_STRING};
	v.str.ptr = s;
	v.str.len = len;
	return gguf_writer_add_value(w, key, &v);
}

int gguf_writer_add_str(struct gguf_writer *w, const char *key, const char *s)
{
	if (s == NULL)
		return ml_error(ML_ERR_INVALID, "%s: NULL string for '%s'", __func__,
				key ? key : "(null)");
	return gguf_writer_add_strn(w, key, s, strlen(s));
}

int gguf_writer_add_arr(struct gguf_writer *w, const char *key, enum gguf_type elem,
			const void *data, uint64_t n)
{
	if (gguf_type_size(elem) == 0)
		return ml_error(ML_ERR_INVALID, "%s: '%s': element type %s is not numeric", __func__,
				key ? key : "(null)", gguf_type_name(elem));
	struct gguf_value v = {.type = GGUF_TYPE_ARRAY};
	v.arr.elem = elem;
	v.arr.n = n;
	v.arr.raw = data;
	return gguf_writer_add_value(w, key, &v);
}

int gguf_writer_add_arr_str(struct gguf_writer *w, const char *key, const char *const *s,
			    uint64_t n)
{
	struct gguf_value *items = calloc(n ? n : 1, sizeof(*items));
	if (items == NULL)
		return ML_ERR_NOMEM;
	for (uint64_t i = 0; i < n; i++) {
		items[i].type = GGUF_TYPE_STRING;
		items[i].str.ptr = s[i] ? s[i] : "";
		items[i].str.len = s[i] ? strlen(s[i]) : 0;
	}
	struct gguf_value v = {.type = GGUF_TYPE_ARRAY};
	v.arr.elem = GGUF_TYPE_STRING;
	v.arr.n = n;
	v.arr.items = items;
	int rc = gguf_writer_add_value(w, key, &v);
	free(items);
	return rc;
}

static int add_tensor(struct gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
		      const uint64_t *ne, const void *data, gguf_fill_fn fill, void *user)
{
	if (w == NULL || name == NULL || ne == NULL)
		return ml_error(ML_ERR_INVALID, "gguf_writer_add_tensor: NULL argument");
	size_t nlen = strlen(name);
	if (nlen == 0 || nlen > GW_MAX_NAME)
		return ml_error(ML_ERR_INVALID, "gguf_writer_add_tensor: name length %zu (1..%d)",
				nlen, GW_MAX_NAME);
	const struct ml_dtype_info *dt = ml_dtype_get(type);
	if (dt == NULL)
		return ml_error(ML_ERR_INVALID, "gguf_writer_add_tensor: '%s': unknown type id %u",
				name, type);
	if (n_dims < 1 || n_dims > GGUF_MAX_DIMS)
		return ml_error(ML_ERR_INVALID, "gguf_writer_add_tensor: '%s': n_dims %u (1..%d)",
				name, n_dims, GGUF_MAX_DIMS);
	struct gw_tensor t = {.type = type, .n_dims = n_dims, .data = data, .fill = fill,
			      .user = user};
	for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
		t.ne[d] = d < n_dims ? ne[d] : 1;
		if (t.ne[d] < 1 || t.ne[d] > (uint64_t)INT64_MAX)
			return ml_error(ML_ERR_INVALID, "gguf_writer_add_tensor: '%s': ne[%u] = %" PRIu64,
					name, d, t.ne[d]);
	}
	if (t.ne[0] % dt->block_size != 0)
		return ml_error(ML_ERR_INVALID,
				"gguf_writer_add_tensor: '%s': ne[0] = %" PRIu64
				" is not a multiple of the %s block size %u",
				name, t.ne[0], dt->name, dt->block_size);
	bool ovf = __builtin_mul_overflow(t.ne[0] / dt->block_size, (uint64_t)dt->type_size,
					  &t.row_bytes);
	t.n_rows = t.ne[1];
	ovf |= __builtin_mul_overflow(t.n_rows, t.ne[2], &t.n_rows);
	ovf |= __builtin_mul_overflow(t.n_rows, t.ne[3], &t.n_rows);
	ovf |= __builtin_mul_overflow(t.row_bytes, t.n_rows, &t.n_bytes);
	if (ovf || t.n_bytes > (uint64_t)INT64_MAX)
		return ml_error(ML_ERR_INVALID, "gguf_writer_add_tensor: '%s': size overflows", name);
	for (uint64_t i = 0; i < w->n_tensors; i++)
		if (strcmp(w->tensors[i].name, name) == 0)
			return ml_error(ML_ERR_INVALID,
					"gguf_writer_add_tensor: duplicate tensor name '%s'", name);
	if (w->n_tensors == w->cap_tensors) {
		uint64_t cap = w->cap_tensors ? w->cap_tensors * 2 : 64;
		struct gw_tensor *nt = realloc(w->tensors, cap * sizeof(*nt));
		if (nt == NULL)
			return ML_ERR_NOMEM;
		w->tensors = nt;
		w->cap_tensors = cap;
	}
	if ((t.name = strdup(name)) == NULL)
		return ML_ERR_NOMEM;
	w->tensors[w->n_tensors++] = t;
	return 0;
}

int gguf_writer_add_tensor(struct gguf_writer *w, const char *name, uint32_t type,
			   uint32_t n_dims, const uint64_t *ne, const void *data)
{
	if (data == NULL)
		return ml_error(ML_ERR_INVALID, "%s: '%s': NULL data", __func__, name ? name : "");
	return add_tensor(w, name, type, n_dims, ne, data, NULL, NULL);
}

int gguf_writer_add_tensor_fill(struct gguf_writer *w, const char *name, uint32_t type,
				uint32_t n_dims, const uint64_t *ne, gguf_fill_fn fill,
				void *user)
{
	if (fill == NULL)
		return ml_error(ML_ERR_INVALID, "%s: '%s': NULL fill", __func__, name ? name : "");
	return add_tensor(w, name, type, n_dims, ne, NULL, fill, user);
}

uint64_t gguf_writer_n_tensors(const struct gguf_writer *w)
{
	return w->n_tensors;
}

/* --------------------------------------------------------------- output */

struct out {
	int fd;
	const char *path;
	unsigned char *buf;
	size_t len;
	uint64_t pos; /* bytes accepted so far (file offset) */
};

static int write_all(struct out *o, const void *src, size_t n)
{
	const unsigned char *p = src;
	while (n > 0) {
		ssize_t k = write(o->fd, p, n > (1u << 30) ? (1u << 30) : n);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return ml_error(ML_ERR_IO, "gguf_writer: %s: write: %s", o->path,
					strerror(errno));
		}
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

static int out_flush(struct out *o)
{
	int rc = write_all(o, o->buf, o->len);
	o->len = 0;
	return rc;
}

static int out_put(struct out *o, const void *src, size_t n)
{
	o->pos += n;
	if (n >= GW_OUTBUF) {
		int rc = out_flush(o);
		return rc ? rc : write_all(o, src, n);
	}
	if (GW_OUTBUF - o->len < n) {
		int rc = out_flush(o);
		if (rc != 0)
			return rc;
	}
	memcpy(o->buf + o->len, src, n);
	o->len += n;
	return 0;
}

static int out_pad(struct out *o, uint64_t alignment)
{
	static const unsigned char zeros[256];
	uint64_t pad = (alignment - o->pos % alignment) % alignment;
	while (pad > 0) {
		size_t k = pad > sizeof(zeros) ? sizeof(zeros) : (size_t)pad;
		int rc = out_put(o, zeros, k);
		if (rc != 0)
			return rc;
		pad -= k;
	}
	return 0;
}

static int out_tensor_data(struct out *o, const struct gw_tensor *t, unsigned char **chunk)
{
	if (t->data != NULL)
		return out_put(o, t->data, (size_t)t->n_bytes);
	uint64_t rows_per = GW_CHUNK / t->row_bytes;
	if (rows_per == 0)
		rows_per = 1;
	if (rows_per > t->n_rows)
		rows_per = t->n_rows;
	if (*chunk == NULL && (*chunk = malloc(GW_CHUNK > t->row_bytes ? GW_CHUNK
								       : (size_t)t->row_bytes)) == NULL)
		return ML_ERR_NOMEM;
	if (t->row_bytes > GW_CHUNK) {
		/* a single row larger than the usual chunk: grow for this tensor */
		unsigned char *c = realloc(*chunk, (size_t)t->row_bytes);
		if (c == NULL)
			return ML_ERR_NOMEM;
		*chunk = c;
	}
	for (uint64_t r = 0; r < t->n_rows; r += rows_per) {
		uint64_t n = t->n_rows - r < rows_per ? t->n_rows - r : rows_per;
		int rc = t->fill(t->user, t->name, r, n, *chunk);
		if (rc != 0)
			return rc;
		if ((rc = out_put(o, *chunk, (size_t)(n * t->row_bytes))) != 0)
			return rc;
	}
	return 0;
}

/* Writes tensors [t0, t1) of |w| to |path|; |n_parts| > 0 adds split keys
 * for part |part|. */
static int write_part(struct gguf_writer *w, const char *path, uint64_t t0, uint64_t t1,
		      uint32_t part, uint32_t n_parts)
{
	int rc = 0;
	unsigned char *meta = NULL, *chunk = NULL;
	size_t meta_len = 0, meta_cap = 0;
	struct bbuf b = {&meta, &meta_len, &meta_cap};
	struct out o = {.fd = -1, .path = path};
	size_t plen = strlen(path);
	char *tmp = malloc(plen + 5);
	if (tmp == NULL)
		return ML_ERR_NOMEM;
	snprintf(tmp, plen + 5, "%s.tmp", path);

	/* header + metadata + tensor table into |meta| */
	uint64_t n_kv = (part == 0 ? w->n_kv : 0) + (w->alignment_key ? 1 : 0) +
			(n_parts > 0 ? 3 : 0);
	rc = bb_put(b, "GGUF", 4);
	rc = rc ? rc : bb_u32(b, w->version);
	rc = rc ? rc : bb_u64(b, t1 - t0);
	rc = rc ? rc : bb_u64(b, n_kv);
	if (rc == 0 && w->alignment_key) {
		rc = bb_str(b, "general.alignment", 17);
		rc = rc ? rc : bb_u32(b, GGUF_TYPE_UINT32);
		rc = rc ? rc : bb_u32(b, w->alignment);
	}
	if (rc == 0 && n_parts > 0) {
		uint16_t no = (uint16_t)part, count = (uint16_t)n_parts;
		int32_t total = (int32_t)w->n_tensors;
		rc = bb_str(b, "split.no", 8);
		rc = rc ? rc : bb_u32(b, GGUF_TYPE_UINT16);
		rc = rc ? rc : bb_put(b, &no, 2);
		rc = rc ? rc : bb_str(b, "split.count", 11);
		rc = rc ? rc : bb_u32(b, GGUF_TYPE_UINT16);
		rc = rc ? rc : bb_put(b, &count, 2);
		rc = rc ? rc : bb_str(b, "split.tensors.count", 19);
		rc = rc ? rc : bb_u32(b, GGUF_TYPE_INT32);
		rc = rc ? rc : bb_put(b, &total, 4);
	}
	if (rc == 0 && part == 0 && w->kv_len > 0)
		rc = bb_put(b, w->kv, w->kv_len);
	uint64_t rel = 0;
	for (uint64_t i = t0; i < t1 && rc == 0; i++) {
		const struct gw_tensor *t = &w->tensors[i];
		rc = bb_str(b, t->name, strlen(t->name));
		rc = rc ? rc : bb_u32(b, t->n_dims);
		for (uint32_t d = 0; d < t->n_dims && rc == 0; d++)
			rc = bb_u64(b, t->ne[d]);
		rc = rc ? rc : bb_u32(b, t->type);
		rc = rc ? rc : bb_u64(b, rel);
		rel += (t->n_bytes + w->alignment - 1) / w->alignment * w->alignment;
	}
	if (rc != 0)
		goto out;

	o.buf = malloc(GW_OUTBUF);
	if (o.buf == NULL) {
		rc = ML_ERR_NOMEM;
		goto out;
	}
	o.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (o.fd < 0) {
		rc = ml_error(ML_ERR_IO, "gguf_writer: %s: %s", tmp, strerror(errno));
		goto out;
	}
	if ((rc = out_put(&o, meta, meta_len)) != 0)
		goto out;
	for (uint64_t i = t0; i < t1; i++) {
		if ((rc = out_pad(&o, w->alignment)) != 0)
			goto out;
		if ((rc = out_tensor_data(&o, &w->tensors[i], &chunk)) != 0)
			goto out;
	}
	/* the file ends right after the last tensor's data (no trailing pad) */
	if ((rc = out_flush(&o)) != 0)
		goto out;
	if (close(o.fd) != 0) {
		o.fd = -1;
		rc = ml_error(ML_ERR_IO, "gguf_writer: %s: close: %s", tmp, strerror(errno));
		goto out;
	}
	o.fd = -1;
	if (rename(tmp, path) != 0)
		rc = ml_error(ML_ERR_IO, "gguf_writer: rename %s -> %s: %s", tmp, path,
			      strerror(errno));
out:
	if (o.fd >= 0)
		close(o.fd);
	if (rc != 0)
		unlink(tmp);
	free(o.buf);
	free(chunk);
	free(meta);
	free(tmp);
	return rc;
}

int gguf_writer_write(struct gguf_writer *w, const char *path)
{
	if (w == NULL || path == NULL)
		return ml_error(ML_ERR_INVALID, "%s: NULL argument", __func__);
	return write_part(w, path, 0, w->n_tensors, 0, 0);
}

int gguf_writer_write_split(struct gguf_writer *w, const char *prefix, uint32_t n_parts)
{
	if (w == NULL || prefix == NULL)
		return ml_error(ML_ERR_INVALID, "%s: NULL argument", __func__);
	if (n_parts < 1 || n_parts > GGUF_MAX_SPLITS || n_parts > w->n_tensors)
		return ml_error(ML_ERR_INVALID,
				"%s: %u parts for %" PRIu64 " tensors (1..min(%d, tensors))",
				__func__, n_parts, w->n_tensors, GGUF_MAX_SPLITS);
	if (w->n_tensors > INT32_MAX)
		return ml_error(ML_ERR_INVALID, "%s: too many tensors for split.tensors.count",
				__func__);
	size_t plen = strlen(prefix) + 32;
	char *path = malloc(plen);
	if (path == NULL)
		return ML_ERR_NOMEM;
	int rc = 0;
	for (uint32_t i = 0; i < n_parts && rc == 0; i++) {
		uint64_t t0 = w->n_tensors * i / n_parts, t1 = w->n_tensors * (i + 1) / n_parts;
		snprintf(path, plen, "%s-%05u-of-%05u.gguf", prefix, i + 1, n_parts);
		rc = write_part(w, path, t0, t1, i, n_parts);
	}
	free(path);
	return rc;
}
