/* GGUF v2/v3 writer for tools and tests.
 *
 * Collect metadata and tensor descriptions in a gguf_writer, then write one
 * file or a split model. Metadata values are copied when added. Tensor data
 * is never buffered by the writer: either a pointer the caller keeps valid
 * until the write call returns, or a fill callback that produces rows in
 * chunks of a few MiB while the file is written, so multi-GB synthetic
 * models stream to disk.
 *
 * Every function returns 0 or a negative ML_ERR_* code with a message in
 * ml_last_error(). */
#ifndef GGUF_WRITE_H
#define GGUF_WRITE_H

#include "gguf/gguf.h"

#include <stdbool.h>
#include <stdint.h>

struct gguf_writer;

/* Produces rows [row0, row0 + n_rows) of tensor |name| into |dst| (n_rows
 * times the row size of the tensor's type: ml_dtype_row_size(type, ne[0])).
 * A "row" is ne[0] elements; rows are numbered over ne[1..3] flattened.
 * Returns 0, or a negative ML_ERR_* that aborts the write. */
typedef int (*gguf_fill_fn)(void *user, const char *name, uint64_t row0, uint64_t n_rows,
			    void *dst);

/* New empty writer: version 3, alignment 32. Free with gguf_writer_free. */
int gguf_writer_init(struct gguf_writer **out);
void gguf_writer_free(struct gguf_writer *w); /* accepts NULL */

/* 2 or 3 (the layouts are identical for little-endian files). */
int gguf_writer_set_version(struct gguf_writer *w, uint32_t version);

/* Nonzero power of two. Values other than 32 are also stored as the
 * `general.alignment` key (uint32) of every written part; the key then
 * cannot be added by hand. Adding `general.alignment` by hand without this
 * call writes that value but aligns to 32 (useful for malformed files). */
int gguf_writer_set_alignment(struct gguf_writer *w, uint32_t alignment);

/* Metadata, written in the order added. Keys must be unique (ML_ERR_INVALID
 * otherwise). |v| may be any value incl. nested arrays; arrays of STRING or
 * ARRAY use |arr.items| (each item's type must equal |arr.elem|), other
 * arrays |arr.raw|. Everything is copied. */
int gguf_writer_add_value(struct gguf_writer *w, const char *key, const struct gguf_value *v);
int gguf_writer_add_u8(struct gguf_writer *w, const char *key, uint8_t x);
int gguf_writer_add_i8(struct gguf_writer *w, const char *key, int8_t x);
int gguf_writer_add_u16(struct gguf_writer *w, const char *key, uint16_t x);
int gguf_writer_add_i16(struct gguf_writer *w, const char *key, int16_t x);
int gguf_writer_add_u32(struct gguf_writer *w, const char *key, uint32_t x);
int gguf_writer_add_i32(struct gguf_writer *w, const char *key, int32_t x);
int gguf_writer_add_u64(struct gguf_writer *w, const char *key, uint64_t x);
int gguf_writer_add_i64(struct gguf_writer *w, const char *key, int64_t x);
int gguf_writer_add_f32(struct gguf_writer *w, const char *key, float x);
int gguf_writer_add_f64(struct gguf_writer *w, const char *key, double x);
int gguf_writer_add_bool(struct gguf_writer *w, const char *key, bool x);
int gguf_writer_add_str(struct gguf_writer *w, const char *key, const char *s);
/* |len| bytes of |s| (may contain NULs). */
int gguf_writer_add_strn(struct gguf_writer *w, const char *key, const char *s, uint64_t len);
/* Array of |n| numbers/bools of type |elem|, packed little-endian in |data|. */
int gguf_writer_add_arr(struct gguf_writer *w, const char *key, enum gguf_type elem,
			const void *data, uint64_t n);
/* Array of |n| NUL-terminated strings. */
int gguf_writer_add_arr_str(struct gguf_writer *w, const char *key, const char *const *s,
			    uint64_t n);

/* Tensor |name| (unique) of ggml type |type| with |n_dims| (1..4) dims |ne|
 * (ne[0] a multiple of the type's block size). |data| holds the whole
 * tensor and is borrowed until the write call returns. */
int gguf_writer_add_tensor(struct gguf_writer *w, const char *name, uint32_t type,
			   uint32_t n_dims, const uint64_t *ne, const void *data);
/* Same, with data produced by |fill| during the write. */
int gguf_writer_add_tensor_fill(struct gguf_writer *w, const char *name, uint32_t type,
				uint32_t n_dims, const uint64_t *ne, gguf_fill_fn fill,
				void *user);

uint64_t gguf_writer_n_tensors(const struct gguf_writer *w);

/* Writes everything to |path| (through |path|.tmp, renamed on success). */
int gguf_writer_write(struct gguf_writer *w, const char *path);

/* Writes a split model of |n_parts| files (1..GGUF_MAX_SPLITS, at most one
 * per tensor) named `<prefix>-00001-of-0000N.gguf` ...; tensors are shared
 * out in order, in near-equal counts. Part 1 holds all metadata; every part
 * holds split.no (uint16, 0-based), split.count (uint16) and
 * split.tensors.count (int32), as llama.cpp's gguf-split writes them. */
int gguf_writer_write_split(struct gguf_writer *w, const char *prefix, uint32_t n_parts);

#endif
