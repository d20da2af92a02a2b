/* GGUF v2/v3 reader (bounds-checked) and the tensor index.
 *
 * gguf_open() reads and validates the header, metadata and tensor table of
 * one model, which may be split over several files
 * (`name-00001-of-0000N.gguf`: pass the first; the others are found next to
 * it and their tensors join one index). Nothing of the tensor data is read
 * or mapped until gguf_map() is called, so a pipeline stage maps only the
 * tensors of its own layers. Mapped tensor data are read-only: views into
 * the file (mmap), or, after gguf_set_resident(), a private copy read from
 * the file into huge-page memory.
 *
 * Every length, count, dimension, offset and type id read from the file is
 * checked against what remains of the file and against fixed caps. On a bad
 * file the functions return ML_ERR_FORMAT (or ML_ERR_UNSUPPORTED, ML_ERR_IO,
 * ML_ERR_RANGE) and ml_last_error() holds one message naming the file, the
 * byte offset or tensor name, what was expected and what was found. */
#ifndef GGUF_H
#define GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GGUF_MAX_DIMS 4
#define GGUF_MAX_SPLITS 256

enum gguf_type {
	GGUF_TYPE_UINT8 = 0,
	GGUF_TYPE_INT8 = 1,
	GGUF_TYPE_UINT16 = 2,
	GGUF_TYPE_INT16 = 3,
	GGUF_TYPE_UINT32 = 4,
	GGUF_TYPE_INT32 = 5,
	GGUF_TYPE_FLOAT32 = 6,
	GGUF_TYPE_BOOL = 7,
	GGUF_TYPE_STRING = 8,
	GGUF_TYPE_ARRAY = 9,
	GGUF_TYPE_UINT64 = 10,
	GGUF_TYPE_INT64 = 11,
	GGUF_TYPE_FLOAT64 = 12,
	GGUF_TYPE_COUNT,
};

/* A string from the file: |len| bytes at |ptr|, followed by a NUL that is
 * not part of the string (so ptr can be printed, but may contain NULs). */
struct gguf_str {
	const char *ptr;
	uint64_t len;
};

/* One metadata value. Arrays of numbers/bools keep their elements packed in
 * |arr.raw| (little-endian, the element size of |arr.elem|); arrays of
 * strings or of arrays have one gguf_value per element in |arr.items|. */
struct gguf_value {
	enum gguf_type type;
	union {
		uint64_t u64; /* UINT8..UINT64, BOOL */
		int64_t i64;  /* INT8..INT64 */
		double f64;   /* FLOAT32, FLOAT64 */
		struct gguf_str str;
		struct {
			enum gguf_type elem;
			uint64_t n;
			const void *raw;                /* numeric/bool elements, else NULL */
			const struct gguf_value *items; /* STRING/ARRAY elements, else NULL */
		} arr;
	};
};

struct gguf_kv {
	struct gguf_str key;
	struct gguf_value value;
};

struct gguf_tensor {
	const char *name;        /* NUL-terminated */
	uint32_t type;           /* ggml type id (see kernels/kern.h), already range-checked */
	uint32_t n_dims;         /* 1..4 */
	uint64_t ne[GGUF_MAX_DIMS]; /* ne[0] is the row length (fastest); unused dims are 1 */
	uint64_t n_elements;
	uint64_t n_bytes;        /* size of the data in the file */
	uint32_t file;           /* index of the split file holding it */
	uint64_t offset;         /* absolute byte offset of the data in that file */
	const void *data;        /* NULL until mapped by gguf_map() */
};

struct gguf_file;

/* Opens |path| (the first part of a split model, or a single file), reads
 * and checks header, metadata and tensor table of all parts. Tensor types
 * are checked to be known ggml type ids whose size the reader knows (even
 * if the engine cannot compute with them), and every tensor's data must lie
 * inside its file (and not overlap another's). On success *out owns
 * everything; free with gguf_close(). Returns 0, ML_ERR_FORMAT (malformed),
 * ML_ERR_UNSUPPORTED (GGUF v1, other versions, big-endian), ML_ERR_NOT_FOUND
 * (|path| or a split part missing), ML_ERR_INVALID (not a regular file, or a
 * split part other than the first, or a split file not named as above),
 * ML_ERR_IO or ML_ERR_NOMEM; *out is NULL on failure. */
int gguf_open(struct gguf_file **out, const char *path);

/* Releases all mappings and memory. Accepts NULL. */
void gguf_close(struct gguf_file *gf);

/* Maps the data of every tensor for which |want(tensor, user)| is true
 * (all tensors if |want| is NULL) and sets their |data|. Can be called
 * again to map more tensors. Mappings cover whole pages around the
 * selected tensors only; selected tensors on the same or adjacent pages
 * share one mapping. Not thread-safe against other calls on |gf|. Returns
 * 0, ML_ERR_IO (mmap failed, or the file changed size since gguf_open) or
 * ML_ERR_NOMEM; tensors mapped before a failure stay mapped. */
int gguf_map(struct gguf_file *gf, bool (*want)(const struct gguf_tensor *t, void *user),
	     void *user);

/* Chooses how later gguf_map() calls provide tensor data. false (the
 * default): read-only shared mappings of the file, paged in lazily, 4 KiB
 * pages. true: each run of selected tensors is read at once into private
 * anonymous memory aligned to 2 MiB and advised for transparent huge pages,
 * then made read-only. Costs the read at load and resident memory equal to
 * the data (the page cache may hold the file as well, reclaimably); pays back
 * in streaming speed: a matrix-vector product over 4 KiB pages misses the
 * TLB on every page (Q8_0, 1 thread, Xeon SPR VM with software prefetch:
 * ~11 GB/s from the mapping vs ~15 GB/s from huge pages). */
void gguf_set_resident(struct gguf_file *gf, bool resident);

uint32_t gguf_version(const struct gguf_file *gf);
const char *gguf_path(const struct gguf_file *gf);   /* the path given to gguf_open */
uint32_t gguf_n_files(const struct gguf_file *gf);   /* 1 unless split */
uint64_t gguf_alignment(const struct gguf_file *gf);
uint64_t gguf_file_size(const struct gguf_file *gf); /* sum over all parts */

/* Metadata, in file order (of the first part). */
uint64_t gguf_n_kv(const struct gguf_file *gf);
const struct gguf_kv *gguf_kv_at(const struct gguf_file *gf, uint64_t i);
/* NULL if absent. */
const struct gguf_value *gguf_find(const struct gguf_file *gf, const char *key);

/* Typed getters. Integer getters accept any integer type whose value fits
 * (ML_ERR_RANGE otherwise); gguf_get_f32 accepts FLOAT32/FLOAT64 and
 * integers. Return 0, ML_ERR_NOT_FOUND (key absent; *out untouched) or
 * ML_ERR_FORMAT (wrong type, with a message naming key and types). */
int gguf_get_u32(const struct gguf_file *gf, const char *key, uint32_t *out);
int gguf_get_i32(const struct gguf_file *gf, const char *key, int32_t *out);
int gguf_get_u64(const struct gguf_file *gf, const char *key, uint64_t *out);
int gguf_get_f32(const struct gguf_file *gf, const char *key, float *out);
int gguf_get_bool(const struct gguf_file *gf, const char *key, bool *out);
int gguf_get_str(const struct gguf_file *gf, const char *key, struct gguf_str *out);
/* Array with elements of |elem| type (ML_ERR_FORMAT if it is another). */
int gguf_get_arr(const struct gguf_file *gf, const char *key, enum gguf_type elem,
		 const struct gguf_value **out);

/* Tensors of all parts, in file order. */
uint64_t gguf_n_tensors(const struct gguf_file *gf);
const struct gguf_tensor *gguf_tensor_at(const struct gguf_file *gf, uint64_t i);
/* NULL if absent (hash lookup). */
const struct gguf_tensor *gguf_find_tensor(const struct gguf_file *gf, const char *name);

const char *gguf_type_name(enum gguf_type t); /* "uint8", ..., "?" if unknown */
/* Bytes of one element of a numeric or bool type; 0 for STRING, ARRAY and
 * unknown types. */
size_t gguf_type_size(enum gguf_type t);

#endif
