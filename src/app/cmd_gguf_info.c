/* `mesh-llm gguf-info FILE`: prints a GGUF file's header, metadata and
 * tensor table. Maps nothing: only the front of the file is read. */
#include "app/app.h"

#include "base/ml_dtype.h"
#include "base/ml_err.h"
#include "gguf/gguf.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define INFO_MAX_STR 80  /* longer strings are abbreviated */
#define INFO_MAX_ELEMS 8 /* array elements shown */

static void usage(FILE *f)
{
	fprintf(f, "usage: mesh-llm gguf-info FILE\n\n"
		   "Prints the GGUF version, alignment, every metadata key (arrays: element\n"
		   "type, count and the first %d elements; long strings abbreviated), the\n"
		   "tensor table (name, type, shape, offset, bytes) and the total weight size.\n"
		   "For a split model pass the first part (name-00001-of-0000N.gguf).\n",
		   INFO_MAX_ELEMS);
}

static void print_str(const struct gguf_str *s)
{
	putchar('"');
	uint64_t n = s->len > INFO_MAX_STR ? INFO_MAX_STR : s->len;
	for (uint64_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s->ptr[i];
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c == '\n')
			printf("\\n");
		else if (c < 0x20 || c == 0x7f)
			printf("\\x%02x", c);
		else
			putchar(c);
	}
	putchar('"');
	if (s->len > INFO_MAX_STR)
		printf("... (%" PRIu64 " bytes)", s->len);
}

/* |s| (|len| bytes) made safe for a terminal: control bytes become '?',
 * cut at |cap| - 1 bytes. */
static const char *safe(const char *s, uint64_t len, char *buf, size_t cap)
{
	size_t n = len < cap - 1 ? (size_t)len : cap - 1;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		buf[i] = c < 0x20 || c == 0x7f ? '?' : (char)c;
	}
	buf[n] = '\0';
	return buf;
}

static void print_elem(enum gguf_type t, const void *raw, uint64_t i)
{
	const unsigned char *p = raw;
	switch (t) {
	case GGUF_TYPE_UINT8: printf("%u", p[i]); break;
	case GGUF_TYPE_INT8: printf("%d", (int8_t)p[i]); break;
	case GGUF_TYPE_BOOL: printf("%s", p[i] ? "true" : "false"); break;
	case GGUF_TYPE_UINT16: { uint16_t x; memcpy(&x, p + 2 * i, 2); printf("%u", x); break; }
	case GGUF_TYPE_INT16: { int16_t x; memcpy(&x, p + 2 * i, 2); printf("%d", x); break; }
	case GGUF_TYPE_UINT32: { uint32_t x; memcpy(&x, p + 4 * i, 4); printf("%u", x); break; }
	case GGUF_TYPE_INT32: { int32_t x; memcpy(&x, p + 4 * i, 4); printf("%d", x); break; }
	case GGUF_TYPE_FLOAT32: { float x; memcpy(&x, p + 4 * i, 4); printf("%g", x); break; }
	case GGUF_TYPE_UINT64: { uint64_t x; memcpy(&x, p + 8 * i, 8); printf("%" PRIu64, x); break; }
	case GGUF_TYPE_INT64: { int64_t x; memcpy(&x, p + 8 * i, 8); printf("%" PRId64, x); break; }
	case GGUF_TYPE_FLOAT64: { double x; memcpy(&x, p + 8 * i, 8); printf("%g", x); break; }
	default: printf("?"); break;
	}
}

static void print_value(const struct gguf_value *v)
{
	switch (v->type) {
	case GGUF_TYPE_UINT8:
	case GGUF_TYPE_UINT16:
	case GGUF_TYPE_UINT32:
	case GGUF_TYPE_UINT64: printf("%" PRIu64, v->u64); break;
	case GGUF_TYPE_INT8:
	case GGUF_TYPE_INT16:
	case GGUF_TYPE_INT32:
	case GGUF_TYPE_INT64: printf("%" PRId64, v->i64); break;
	case GGUF_TYPE_FLOAT32:
	case GGUF_TYPE_FLOAT64: printf("%g", v->f64); break;
	case GGUF_TYPE_BOOL: printf("%s", v->u64 ? "true" : "false"); break;
	case GGUF_TYPE_STRING: print_str(&v->str); break;
	case GGUF_TYPE_ARRAY: {
		printf("[%s x %" PRIu64 "]", gguf_type_name(v->arr.elem), v->arr.n);
		uint64_t n = v->arr.n > INFO_MAX_ELEMS ? INFO_MAX_ELEMS : v->arr.n;
		printf(" [");
		for (uint64_t i = 0; i < n; i++) {
			if (i > 0)
				printf(", ");
			if (v->arr.items != NULL)
				print_value(&v->arr.items[i]);
			else
				print_elem(v->arr.elem, v->arr.raw, i);
		}
		printf("%s]", v->arr.n > n ? ", ..." : "");
		break;
	}
	default: printf("?"); break;
	}
}

int app_cmd_gguf_info(int argc, char **argv)
{
	const char *path = NULL;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		}
		if (argv[i][0] == '-' || path != NULL) {
			fprintf(stderr, "mesh-llm: gguf-info: unexpected argument '%s'\n\n", argv[i]);
			usage(stderr);
			return 2;
		}
		path = argv[i];
	}
	if (path == NULL) {
		usage(stderr);
		return 2;
	}
	struct gguf_file *gf;
	if (gguf_open(&gf, path) != 0) {
		fprintf(stderr, "mesh-llm: %s\n", ml_last_error());
		return 1;
	}
	printf("file:      %s\n", path);
	printf("parts:     %u\n", gguf_n_files(gf));
	printf("size:      %" PRIu64 " bytes\n", gguf_file_size(gf));
	printf("version:   %u\n", gguf_version(gf));
	printf("alignment: %" PRIu64 "\n", gguf_alignment(gf));
	printf("n_kv:      %" PRIu64 "\n", gguf_n_kv(gf));
	printf("n_tensors: %" PRIu64 "\n\nmetadata:\n", gguf_n_tensors(gf));
	for (uint64_t i = 0; i < gguf_n_kv(gf); i++) {
		const struct gguf_kv *kv = gguf_kv_at(gf, i);
		char key[201];
		printf("  %-40s %-8s ", safe(kv->key.ptr, kv->key.len, key, sizeof(key)),
		       gguf_type_name(kv->value.type));
		print_value(&kv->value);
		putchar('\n');
	}
	printf("\ntensors:\n  %-5s %-32s %-7s %-24s %-12s %s\n", "#", "name", "type", "shape",
	       "offset", "bytes");
	uint64_t total = 0;
	for (uint64_t i = 0; i < gguf_n_tensors(gf); i++) {
		const struct gguf_tensor *t = gguf_tensor_at(gf, i);
		char shape[128];
		int n = 0;
		for (uint32_t d = 0; d < t->n_dims; d++)
			n += snprintf(shape + n, sizeof(shape) - (size_t)n, "%s%" PRIu64, d ? " x " : "",
				      t->ne[d]);
		char name[201];
		printf("  %-5" PRIu64 " %-32s %-7s %-24s ", i,
		       safe(t->name, strlen(t->name), name, sizeof(name)), ml_dtype_name(t->type), shape);
		if (gguf_n_files(gf) > 1)
			printf("%u:", t->file);
		printf("%-12" PRIu64 " %" PRIu64 "\n", t->offset, t->n_bytes);
		total += t->n_bytes;
	}
	printf("\ntotal weight bytes: %" PRIu64 " (%.2f MiB)\n", total, (double)total / (1 << 20));
	gguf_close(gf);
	return 0;
}
