/* Byte buffers for wire payloads: net_buf appends big-endian integers,
 * byte strings and length-prefixed strings to a growable buffer; net_reader
 * reads them back with a bounds check on every read.
 *
 * Both carry a sticky error: after the first failure every later call is a
 * no-op and the error is returned by net_buf_error() / net_reader_error().
 * Encoders can therefore write a whole message and check once at the end,
 * and decoders of untrusted payloads can read every field and check once
 * (the values read after a failure are zero / empty, never garbage).
 *
 * Wire conventions (shared by every payload encoder in net and mesh):
 *   integers        big-endian, fixed width
 *   str (short)     u16 length, then that many bytes (no NUL)
 *   blob (long)     u32 length, then that many bytes */
#ifndef NET_BUF_H
#define NET_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct net_buf {
	uint8_t *data; /* owned; NULL until the first write */
	size_t len;    /* bytes written */
	size_t cap;    /* bytes allocated */
	size_t max;    /* growth limit in bytes; 0 = SIZE_MAX/2 */
	int err;       /* 0, ML_ERR_NOMEM or ML_ERR_RANGE (over |max|) */
};

/* Initializes an empty buffer that may grow up to |max| bytes (0 = no
 * limit other than memory). No allocation happens here. */
void net_buf_init(struct net_buf *b, size_t max);
/* Frees the storage; the buffer is then empty and reusable. Accepts NULL. */
void net_buf_free(struct net_buf *b);
/* Drops the contents but keeps the storage and clears the error. */
void net_buf_reset(struct net_buf *b);
/* Ensures room for |n| more bytes. Returns 0, ML_ERR_NOMEM or ML_ERR_RANGE. */
int net_buf_reserve(struct net_buf *b, size_t n);
/* The sticky error (0 when every write so far succeeded). */
static inline int net_buf_error(const struct net_buf *b)
{
	return b->err;
}

void net_buf_put_u8(struct net_buf *b, uint8_t v);
void net_buf_put_u16(struct net_buf *b, uint16_t v);
void net_buf_put_u32(struct net_buf *b, uint32_t v);
void net_buf_put_u64(struct net_buf *b, uint64_t v);
/* Appends |n| raw bytes from |p| (may be NULL when n == 0). */
void net_buf_put_bytes(struct net_buf *b, const void *p, size_t n);
/* Appends a u16 length and |n| bytes; sets ML_ERR_RANGE if n > 65535. */
void net_buf_put_str(struct net_buf *b, const char *s, size_t n);
/* Appends a u32 length and |n| bytes; sets ML_ERR_RANGE if n > UINT32_MAX. */
void net_buf_put_blob(struct net_buf *b, const void *p, size_t n);
/* Overwrites 4 bytes at |off| (< len - 3) with |v| big-endian; used to
 * patch a length written earlier. Sets ML_ERR_RANGE if out of bounds. */
void net_buf_patch_u32(struct net_buf *b, size_t off, uint32_t v);

/* Reader over borrowed bytes: |p| must outlive the reader. */
struct net_reader {
	const uint8_t *p;
	size_t len;
	size_t off;
	int err; /* 0 or ML_ERR_FORMAT (read past the end / bad length) */
};

void net_reader_init(struct net_reader *r, const void *p, size_t len);
static inline int net_reader_error(const struct net_reader *r)
{
	return r->err;
}
static inline size_t net_reader_left(const struct net_reader *r)
{
	return r->len - r->off;
}

uint8_t net_reader_u8(struct net_reader *r);
uint16_t net_reader_u16(struct net_reader *r);
uint32_t net_reader_u32(struct net_reader *r);
uint64_t net_reader_u64(struct net_reader *r);
/* Returns a pointer to the next |n| bytes inside the reader's input and
 * advances, or NULL (and sets the error) if fewer remain. */
const uint8_t *net_reader_bytes(struct net_reader *r, size_t n);
/* Copies |n| bytes to |dst|; on shortage fills |dst| with zeros. */
void net_reader_copy(struct net_reader *r, void *dst, size_t n);
/* Reads a u16-prefixed string. Returns a pointer into the input (not
 * NUL-terminated) and its length in |*n|; rejects lengths above |max|.
 * On failure returns NULL with *n = 0. */
const char *net_reader_str(struct net_reader *r, size_t max, size_t *n);
/* Same with a u32 prefix. */
const uint8_t *net_reader_blob(struct net_reader *r, size_t max, size_t *n);
/* Sets ML_ERR_FORMAT unless every byte was consumed (strict decoders call
 * this last so trailing garbage is rejected). Returns the sticky error. */
int net_reader_finish(struct net_reader *r);

#endif
