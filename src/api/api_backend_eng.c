/* The API backend over the local engine: chat template rendering (the
 * model's own template, ChatML when it has none or one we cannot parse),
 * tokenization with the model's BOS rule, and submit/cancel passed
 * straight to the engine. */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "base/ml_err.h"
#include "base/ml_log.h"
#include "tokenizer/tok.h"
#include "tokenizer/tok_template.h"

struct api_eng_backend {
	struct eng *e;
	struct tok_template *tmpl;
	size_t max_piece; /* longest token text in bytes (control tokens included) */
	struct api_backend be;
};

int api_tokenize_prompt(const struct tok_vocab *v, const char *text, size_t len, int32_t **ids_out,
                        int *n_out)
{
	size_t cap = len + 8, n = 0;
	int32_t *ids = malloc(cap * sizeof(*ids));
	if (!ids)
		return ML_ERR_NOMEM;
	/* ids[0] is kept free for a BOS */
	int rc = tok_encode(v, text, len, false, true, ids + 1, cap - 1, &n);
	if (rc == ML_ERR_RANGE) {
		cap = n + 2;
		int32_t *bigger = realloc(ids, cap * sizeof(*ids));
		if (!bigger) {
			free(ids);
			return ML_ERR_NOMEM;
		}
		ids = bigger;
		rc = tok_encode(v, text, len, false, true, ids + 1, cap - 1, &n);
	}
	if (rc || n > (size_t)1 << 30) {
		free(ids);
		return rc ? rc : ML_ERR_RANGE;
	}
	int32_t bos = tok_bos(v);
	if (tok_add_bos(v) && bos >= 0 && (n == 0 || ids[1] != bos)) {
		ids[0] = bos;
		n++;
	} else {
		memmove(ids, ids + 1, n * sizeof(*ids));
	}
	*ids_out = ids;
	*n_out = (int)n;
	return 0;
}

/* Tokenizing runs on the event loop, and the tokenizers are not linear in
 * the text length: a 4 MiB prompt took seconds and stalled every stream.
 * No token is longer than max_piece bytes, so a text of len bytes has at
 * least len / max_piece tokens; when that alone cannot fit the context, the
 * prompt is refused without tokenizing it. */
static int tokenize(struct api_eng_backend *b, const char *text, size_t len, int32_t **ids_out,
                    int *n_out)
{
	size_t n_ctx = (size_t)eng_n_ctx(b->e);
	size_t at_least = (len + b->max_piece - 1) / b->max_piece;
	if (at_least + 1 > n_ctx)
		return ml_error(ML_ERR_RANGE,
		                "This model's maximum context length is %zu tokens, but the prompt "
		                "has at least %zu tokens (%zu bytes).",
		                n_ctx, at_least, len);
	return api_tokenize_prompt(eng_vocab(b->e), text, len, ids_out, n_out);
}

static int be_chat_prompt(void *ctx, const struct tok_chat_msg *msgs, size_t n_msgs, int32_t **ids,
                          int *n_ids, char **text_out)
{
	struct api_eng_backend *b = ctx;
	const struct tok_vocab *v = eng_vocab(b->e);
	int32_t bos = tok_bos(v), eos = tok_eos(v);
	const char *bos_text = bos >= 0 ? tok_text(v, bos) : "";
	const char *eos_text = eos >= 0 ? tok_text(v, eos) : "";
	char *text = NULL;
	size_t len = 0;
	int rc = tok_template_render(b->tmpl, msgs, n_msgs, true, bos_text ? bos_text : "",
	                             eos_text ? eos_text : "", &text, &len);
	if (rc)
		return rc;
	rc = tokenize(b, text, len, ids, n_ids);
	if (!rc && text_out)
		*text_out = text;
	else
		free(text);
	return rc;
}

static int be_text_prompt(void *ctx, const char *text, size_t len, int32_t **ids, int *n_ids)
{
	return tokenize(ctx, text, len, ids, n_ids);
}

static int be_submit(void *ctx, const struct eng_request *r, eng_event_fn cb, void *user,
                     uint64_t *id)
{
	struct api_eng_backend *b = ctx;
	return eng_submit(b->e, r, cb, user, id);
}

static void be_cancel(void *ctx, uint64_t id)
{
	struct api_eng_backend *b = ctx;
	eng_cancel(b->e, id);
}

static int be_n_ctx(void *ctx)
{
	struct api_eng_backend *b = ctx;
	return eng_n_ctx(b->e);
}

static const struct api_backend_ops eng_ops = {
    .chat_prompt = be_chat_prompt,
    .text_prompt = be_text_prompt,
    .submit = be_submit,
    .cancel = be_cancel,
    .n_ctx = be_n_ctx,
};

int api_eng_backend_init(struct api_eng_backend **out, struct eng *e)
{
	struct api_eng_backend *b = calloc(1, sizeof(*b));
	if (!b)
		return ML_ERR_NOMEM;
	b->e = e;
	const char *src = eng_chat_template(e);
	int rc = ML_ERR_NOT_FOUND;
	if (src) {
		rc = tok_template_parse(&b->tmpl, src);
		if (rc)
			ML_WARN("api: the model's chat template cannot be used (%s); using ChatML",
			        ml_last_error());
	} else {
		ML_INFO("api: the model has no chat template; chat requests use ChatML");
	}
	if (rc) {
		rc = tok_template_parse(&b->tmpl, tok_template_chatml);
		if (rc) {
			free(b);
			return rc;
		}
	}
	const struct tok_vocab *v = eng_vocab(e);
	char piece[512];
	b->max_piece = 1;
	for (int32_t id = 0; id < tok_n_vocab(v); id++) {
		int n = tok_piece(v, id, true, piece, sizeof(piece));
		size_t t = strlen(tok_text(v, id) ? tok_text(v, id) : "");
		if (n > 0 && (size_t)n > b->max_piece)
			b->max_piece = (size_t)n;
		if (t > b->max_piece) /* special-token strings are matched as written */
			b->max_piece = t;
	}
	b->be.ops = &eng_ops;
	b->be.ctx = b;
	*out = b;
	return 0;
}

void api_eng_backend_free(struct api_eng_backend *b)
{
	if (!b)
		return;
	tok_template_free(b->tmpl);
	free(b);
}

const struct api_backend *api_eng_backend_get(struct api_eng_backend *b)
{
	return &b->be;
}
