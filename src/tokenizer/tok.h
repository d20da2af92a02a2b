/* Tokenizers read from GGUF metadata: SentencePiece-style (`llama`),
 * byte-level BPE (`gpt2`, pre-tokenizer chosen by tokenizer.ggml.pre, PCRE2
 * regexes) and WordPiece (`bert`). Special/control tokens, BOS/EOS rules
 * from metadata, parse-special on/off, and a streaming detokenizer that
 * never emits half a UTF-8 character. */
#ifndef TOK_H
#define TOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gguf_file;
struct tok_vocab;

/* Builds the vocabulary from |gf|'s tokenizer.ggml.* metadata (the gguf
 * file may be closed afterwards: everything needed is copied). */
int tok_vocab_load(struct tok_vocab **out, const struct gguf_file *gf);
void tok_vocab_free(struct tok_vocab *v); /* accepts NULL */

int tok_n_vocab(const struct tok_vocab *v);
int32_t tok_bos(const struct tok_vocab *v); /* -1 if none */
int32_t tok_eos(const struct tok_vocab *v); /* -1 if none */
bool tok_add_bos(const struct tok_vocab *v); /* metadata rule (SPM default: true) */
bool tok_add_eos(const struct tok_vocab *v);
/* End-of-generation: eos, eot, im_end, end_of_turn and similar. */
bool tok_is_eog(const struct tok_vocab *v, int32_t id);
bool tok_is_control(const struct tok_vocab *v, int32_t id);
/* The token's stored text (e.g. "▁Hello", "Ġworld", "<0x0A>"), NUL-terminated. */
const char *tok_text(const struct tok_vocab *v, int32_t id);
/* Looks up a token by its exact stored text; -1 if absent. */
int32_t tok_find(const struct tok_vocab *v, const char *text, size_t len);

/* Tokenizes |len| bytes of |text|. add_special: add BOS/EOS as the metadata
 * says. parse_special: text matching a special/control token's string
 * becomes that token. Writes up to |cap| ids to |out| and the full count to
 * *n_out; returns ML_ERR_RANGE when cap was too small (call again with a
 * larger buffer), ML_ERR_FORMAT for invalid UTF-8 where it matters. */
int tok_encode(const struct tok_vocab *v, const char *text, size_t len, bool add_special,
	       bool parse_special, int32_t *out, size_t cap, size_t *n_out);

/* Bytes that token |id| stands for (SPM: "▁" -> " ", <0xNN> -> byte; BPE:
 * byte-level decoding). Control tokens give "" unless |special| is true.
 * Writes at most |cap| bytes, returns the full length (negative on a bad id). */
int tok_piece(const struct tok_vocab *v, int32_t id, bool special, char *buf, size_t cap);

/* Streaming detokenizer for one sequence: feeds token pieces, emits only
 * complete UTF-8 characters, holds back the rest. Handles the SPM rule that
 * drops the leading space of the first piece after BOS. No allocation. */
struct tok_stream {
	const struct tok_vocab *v;
	bool special;     /* render control tokens */
	bool at_start;    /* next piece is the first of the output */
	char pending[8];  /* incomplete UTF-8 tail */
	int n_pending;
};
void tok_stream_init(struct tok_stream *s, const struct tok_vocab *v, bool special);
/* Appends the text of |id| to |out| (cap bytes); returns bytes written,
 * which form complete characters only. cap >= 256 is always enough. Invalid
 * byte sequences are emitted as U+FFFD. */
int tok_stream_push(struct tok_stream *s, int32_t id, char *out, size_t cap);
/* Emits whatever is still pending (as U+FFFD if incomplete). */
int tok_stream_flush(struct tok_stream *s, char *out, size_t cap);

#endif
