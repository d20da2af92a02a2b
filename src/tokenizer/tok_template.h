/* Chat templates: renders a model's tokenizer.chat_template (Jinja) for a
 * list of messages, byte for byte as Python's jinja2 would, for the
 * templates of the common model families (a Jinja-subset interpreter).
 *
 * The environment is the one Hugging Face transformers' apply_chat_template
 * uses: trim_blocks=True, lstrip_blocks=True, a single trailing newline of
 * the template dropped, break/continue, lenient Undefined, tojson as
 * json.dumps(ensure_ascii=False) without HTML escaping, raise_exception()
 * and strftime_now(). Variables: messages (a list of {role, content}
 * dicts), add_generation_prompt, bos_token, eos_token; everything else
 * (tools, documents, enable_thinking, ...) is undefined.
 *
 * A template and its renders are bounded (nesting, macro recursion, loop
 * iterations, output size, memory), so templates from untrusted GGUF files
 * are safe to render. A parsed template is immutable: threads may render
 * it concurrently (tok_template_set_date is not thread-safe). */
#ifndef TOK_TEMPLATE_H
#define TOK_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>

struct tok_chat_msg {
	const char *role;    /* "system", "user", "assistant", ... */
	const char *content; /* NUL-terminated UTF-8; NULL is None (JSON null) */
};

struct tok_template;

/* Parses |src| (NUL-terminated) into *out (caller frees with
 * tok_template_free). ML_ERR_FORMAT with a message "template LINE:COL: ..."
 * for a syntax error, an unsupported tag or nesting deeper than 96;
 * ML_ERR_NOMEM, ML_ERR_RANGE (256 MiB). Unknown filters and tests are
 * reported when a render reaches them, as an ML_ERR_INVALID. */
int tok_template_parse(struct tok_template **out, const char *src);
void tok_template_free(struct tok_template *t); /* accepts NULL */

/* Renders the messages. bos/eos are the tokens' texts (bos_token,
 * eos_token variables; NULL is ""); add_generation_prompt as in
 * transformers. On success *out is a malloc'd NUL-terminated string
 * (caller frees) and *out_len (may be NULL) its length. Template errors
 * (raise_exception, bad types, undefined values used) return
 * ML_ERR_INVALID; raise_exception's message is recorded as is, others as
 * "template LINE:COL: message". ML_ERR_RANGE when a render exceeds a limit
 * (16 MiB of output, 10^6 loop iterations, macro recursion 64, 256 MiB of
 * memory), ML_ERR_NOMEM. *out is NULL on error. */
int tok_template_render(const struct tok_template *t, const struct tok_chat_msg *msgs,
			size_t n_msgs, bool add_generation_prompt, const char *bos_token,
			const char *eos_token, char **out, size_t *out_len);

/* Fixes the date strftime_now() formats (transformers uses the current
 * local date, as does a template with no date set). 0, 0, 0 goes back to
 * the current date. ML_ERR_INVALID for a date that does not exist. Tests
 * use 2024-07-26, the date the Llama 3.1 template falls back to. */
int tok_template_set_date(struct tok_template *t, int year, int month, int day);

/* The ChatML template used when a GGUF has none. */
extern const char tok_template_chatml[];

#endif
