/* Chat templates: renders a model's tokenizer.chat_template (Jinja) for a
 * list of messages, byte for byte as Python's jinja2 would, for the
 * templates of the common model families (a Jinja-subset interpreter). */
#ifndef TOK_TEMPLATE_H
#define TOK_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>

struct tok_chat_msg {
	const char *role;    /* "system", "user", "assistant", ... */
	const char *content; /* NUL-terminated UTF-8 */
};

struct tok_template;

/* Parses |src| (NUL-terminated). ML_ERR_FORMAT with a message (line and
 * column) for syntax the interpreter does not know. */
int tok_template_parse(struct tok_template **out, const char *src);
void tok_template_free(struct tok_template *t); /* accepts NULL */

/* Renders the messages. bos/eos are the tokens' texts (bos_token,
 * eos_token variables); add_generation_prompt as in transformers.
 * On success *out is a malloc'd NUL-terminated string (caller frees) and
 * *out_len its length. Template errors (raise_exception, bad types) return
 * ML_ERR_INVALID with the template's message. */
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
