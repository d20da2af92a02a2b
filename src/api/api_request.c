/* OpenAI request bodies -> struct api_req, with OpenAI-shaped errors that
 * name the offending parameter. Nothing here trusts the input: every field
 * is type-checked, every number range-checked, every count capped. */
#include "api/api_request.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/ml_err.h"

int api_err_set(struct api_err *e, int status, const char *type, const char *param,
                const char *code, const char *fmt, ...)
{
	va_list ap;
	e->status = status;
	snprintf(e->type, sizeof(e->type), "%s", type ? type : "invalid_request_error");
	snprintf(e->param, sizeof(e->param), "%s", param ? param : "");
	snprintf(e->code, sizeof(e->code), "%s", code ? code : "");
	va_start(ap, fmt);
	vsnprintf(e->message, sizeof(e->message), fmt, ap);
	va_end(ap);
	return ML_ERR_INVALID;
}

char *api_err_json(const struct api_err *e)
{
	/* The message may quote client bytes: build it with the escaper, not
	 * jansson, so that even a message cut inside a UTF-8 character (by
	 * the fixed buffer) still gives a body. */
	struct api_buf b = {0};
	int rc = api_buf_printf(&b, "{\"error\":{\"message\":");
	rc = rc ? rc : api_buf_json_str(&b, e->message, strlen(e->message));
	rc = rc ? rc : api_buf_printf(&b, ",\"type\":");
	rc = rc ? rc : api_buf_json_str(&b, e->type, strlen(e->type));
	rc = rc ? rc : api_buf_printf(&b, ",\"param\":");
	if (!rc && e->param[0])
		rc = api_buf_json_str(&b, e->param, strlen(e->param));
	else if (!rc)
		rc = api_buf_printf(&b, "null");
	rc = rc ? rc : api_buf_printf(&b, ",\"code\":");
	if (!rc && e->code[0])
		rc = api_buf_json_str(&b, e->code, strlen(e->code));
	else if (!rc)
		rc = api_buf_printf(&b, "null");
	rc = rc ? rc : api_buf_printf(&b, "}}");
	if (rc) {
		api_buf_free(&b);
		return NULL;
	}
	return b.data;
}

/* ---- growable buffer ---------------------------------------------------- */

int api_buf_append(struct api_buf *b, const void *p, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *d = realloc(b->data, cap);
		if (!d)
			return ML_ERR_NOMEM;
		b->data = d;
		b->cap = cap;
	}
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

int api_buf_printf(struct api_buf *b, const char *fmt, ...)
{
	char small[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0)
		return ML_ERR_INVALID;
	if ((size_t)n < sizeof(small))
		return api_buf_append(b, small, (size_t)n);
	char *big = malloc((size_t)n + 1);
	if (!big)
		return ML_ERR_NOMEM;
	va_start(ap, fmt);
	vsnprintf(big, (size_t)n + 1, fmt, ap);
	va_end(ap);
	int rc = api_buf_append(b, big, (size_t)n);
	free(big);
	return rc;
}

int api_buf_json_str(struct api_buf *b, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	int rc = api_buf_append(b, "\"", 1);
	size_t run = 0; /* bytes copied verbatim since the last escape */
	for (size_t i = 0; i < len && !rc; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[7];
		size_t n = 0;
		if (c == '"' || c == '\\') {
			esc[0] = '\\', esc[1] = (char)c, n = 2;
		} else if (c == '\n') {
			esc[0] = '\\', esc[1] = 'n', n = 2;
		} else if (c == '\r') {
			esc[0] = '\\', esc[1] = 'r', n = 2;
		} else if (c == '\t') {
			esc[0] = '\\', esc[1] = 't', n = 2;
		} else if (c < 0x20 || c == 0x7f) {
			memcpy(esc, "\\u00", 4);
			esc[4] = hex[c >> 4], esc[5] = hex[c & 15], n = 6;
		} else {
			run++;
			continue;
		}
		if (run)
			rc = api_buf_append(b, s + i - run, run);
		run = 0;
		if (!rc)
			rc = api_buf_append(b, esc, n);
	}
	if (!rc && run)
		rc = api_buf_append(b, s + len - run, run);
	return rc ? rc : api_buf_append(b, "\"", 1);
}

void api_buf_free(struct api_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

/* ---- field helpers -------------------------------------------------------- */

static const char *json_type_name(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return "an object";
	case JSON_ARRAY:
		return "an array";
	case JSON_STRING:
		return "a string";
	case JSON_INTEGER:
		return "an integer";
	case JSON_REAL:
		return "a number";
	case JSON_TRUE:
	case JSON_FALSE:
		return "a boolean";
	case JSON_NULL:
		return "null";
	}
	return "unknown";
}

static int bad_type(struct api_err *e, const char *param, const char *want, const json_t *v)
{
	return api_err_set(e, 400, NULL, param, "invalid_type",
	                   "Invalid type for '%s': expected %s, but got %s instead.", param, want,
	                   json_type_name(v));
}

/* Optional number in [lo, hi]. Absent or null: *out untouched. */
static int opt_number(const json_t *o, const char *key, double lo, double hi, double *out,
                      struct api_err *e)
{
	const json_t *v = json_object_get(o, key);
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_number(v))
		return bad_type(e, key, "a number", v);
	double d = json_number_value(v);
	if (!isfinite(d) || d < lo || d > hi)
		return api_err_set(e, 400, NULL, key, "invalid_value",
		                   "Invalid value for '%s': expected a number between %g and %g, "
		                   "got %g.",
		                   key, lo, hi, d);
	*out = d;
	return 0;
}

/* Optional integer in [lo, hi]. */
static int opt_int(const json_t *o, const char *key, long long lo, long long hi, long long *out,
                   bool *present, struct api_err *e)
{
	const json_t *v = json_object_get(o, key);
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_integer(v))
		return bad_type(e, key, "an integer", v);
	long long x = (long long)json_integer_value(v);
	if (x < lo || x > hi)
		return api_err_set(e, 400, NULL, key, "invalid_value",
		                   "Invalid value for '%s': expected an integer between %lld and "
		                   "%lld, got %lld.",
		                   key, lo, hi, x);
	*out = x;
	if (present)
		*present = true;
	return 0;
}

static int opt_bool(const json_t *o, const char *key, bool *out, struct api_err *e)
{
	const json_t *v = json_object_get(o, key);
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_boolean(v))
		return bad_type(e, key, "a boolean", v);
	*out = json_is_true(v);
	return 0;
}

static char *dup_str(const json_t *v, size_t *len_out)
{
	size_t n = json_string_length(v);
	char *s = malloc(n + 1);
	if (!s)
		return NULL;
	memcpy(s, json_string_value(v), n + 1);
	if (len_out)
		*len_out = n;
	return s;
}

/* content: string | null | [{type:"text", text}] -> malloc'd text */
static int parse_content(const json_t *v, size_t idx, char **out, struct api_err *e)
{
	char param[64];
	snprintf(param, sizeof(param), "messages[%zu].content", idx);
	if (!v || json_is_null(v)) {
		*out = strdup("");
		return *out ? 0 : ML_ERR_NOMEM;
	}
	if (json_is_string(v)) {
		*out = dup_str(v, NULL);
		return *out ? 0 : ML_ERR_NOMEM;
	}
	if (!json_is_array(v))
		return bad_type(e, param, "a string or an array of content parts", v);
	struct api_buf b = {0};
	int rc = api_buf_append(&b, "", 0);
	for (size_t i = 0; i < json_array_size(v) && !rc; i++) {
		const json_t *part = json_array_get(v, i);
		char pp[80];
		snprintf(pp, sizeof(pp), "messages[%zu].content[%zu]", idx, i);
		if (!json_is_object(part)) {
			rc = bad_type(e, pp, "an object", part);
			break;
		}
		const json_t *type = json_object_get(part, "type");
		const json_t *text = json_object_get(part, "text");
		if (!json_is_string(type) || strcmp(json_string_value(type), "text") != 0) {
			rc = api_err_set(e, 400, NULL, pp, "unsupported_content",
			                 "Only content parts of type 'text' are supported (%s).",
			                 pp);
			break;
		}
		if (!json_is_string(text)) {
			snprintf(pp + strlen(pp), sizeof(pp) - strlen(pp), ".text");
			rc = text ? bad_type(e, pp, "a string", text)
			          : api_err_set(e, 400, NULL, pp, "missing_required_parameter",
			                        "Missing required parameter: '%s'.", pp);
			break;
		}
		rc = api_buf_append(&b, json_string_value(text), json_string_length(text));
	}
	if (rc) {
		api_buf_free(&b);
		return rc;
	}
	*out = b.data;
	return 0;
}

static int parse_messages(struct api_req *r, const json_t *root, struct api_err *e)
{
	const json_t *msgs = json_object_get(root, "messages");
	if (!msgs)
		return api_err_set(e, 400, NULL, "messages", "missing_required_parameter",
		                   "Missing required parameter: 'messages'.");
	if (!json_is_array(msgs))
		return bad_type(e, "messages", "an array", msgs);
	size_t n = json_array_size(msgs);
	if (n == 0)
		return api_err_set(
		    e, 400, NULL, "messages", "invalid_value",
		    "Invalid 'messages': empty array. Expected at least one message.");
	if (n > API_MAX_MESSAGES)
		return api_err_set(e, 400, NULL, "messages", "invalid_value",
		                   "Invalid 'messages': %zu messages, at most %d are allowed.", n,
		                   API_MAX_MESSAGES);
	r->msgs = calloc(n, sizeof(*r->msgs));
	if (!r->msgs)
		return ML_ERR_NOMEM;
	for (size_t i = 0; i < n; i++) {
		const json_t *m = json_array_get(msgs, i);
		char param[64];
		snprintf(param, sizeof(param), "messages[%zu]", i);
		if (!json_is_object(m))
			return bad_type(e, param, "an object", m);
		const json_t *role = json_object_get(m, "role");
		snprintf(param, sizeof(param), "messages[%zu].role", i);
		if (!role)
			return api_err_set(e, 400, NULL, param, "missing_required_parameter",
			                   "Missing required parameter: '%s'.", param);
		if (!json_is_string(role))
			return bad_type(e, param, "a string", role);
		const char *rs = json_string_value(role);
		if (strcmp(rs, "developer") == 0)
			rs = "system";
		if (strcmp(rs, "system") != 0 && strcmp(rs, "user") != 0 &&
		    strcmp(rs, "assistant") != 0 && strcmp(rs, "tool") != 0)
			return api_err_set(e, 400, NULL, param, "invalid_value",
			                   "Invalid value for '%s': expected one of 'system', "
			                   "'developer', 'user', 'assistant', 'tool'.",
			                   param);
		r->msgs[i].role = strdup(rs);
		r->n_msgs = i + 1;
		if (!r->msgs[i].role)
			return ML_ERR_NOMEM;
		const json_t *content = json_object_get(m, "content");
		if (!content && strcmp(rs, "assistant") != 0) {
			snprintf(param, sizeof(param), "messages[%zu].content", i);
			return api_err_set(e, 400, NULL, param, "missing_required_parameter",
			                   "Missing required parameter: '%s'.", param);
		}
		int rc = parse_content(content, i, &r->msgs[i].content, e);
		if (rc)
			return rc;
	}
	return 0;
}

static int parse_stop(struct api_req *r, const json_t *root, struct api_err *e)
{
	const json_t *v = json_object_get(root, "stop");
	if (!v || json_is_null(v))
		return 0;
	const json_t *one[1] = {v};
	size_t n = 1;
	if (json_is_array(v)) {
		n = json_array_size(v);
		if (n > API_MAX_STOP)
			return api_err_set(e, 400, NULL, "stop", "invalid_value",
			                   "Invalid 'stop': %zu sequences, at most %d are allowed.",
			                   n, API_MAX_STOP);
	} else if (!json_is_string(v)) {
		return bad_type(e, "stop", "a string or an array of strings", v);
	}
	for (size_t i = 0; i < n; i++) {
		const json_t *s = json_is_array(v) ? json_array_get(v, i) : one[0];
		if (!json_is_string(s))
			return bad_type(e, "stop", "a string or an array of strings", s);
		size_t len = json_string_length(s);
		if (len == 0)
			continue; /* an empty stop string would end every request at once */
		if (len > API_MAX_STOP_LEN)
			return api_err_set(
			    e, 400, NULL, "stop", "invalid_value",
			    "Invalid 'stop': a sequence of %zu bytes, at most %d are "
			    "allowed.",
			    len, API_MAX_STOP_LEN);
		r->stop[r->n_stop] = dup_str(s, NULL);
		if (!r->stop[r->n_stop])
			return ML_ERR_NOMEM;
		r->n_stop++;
	}
	return 0;
}

static int parse_prompt(struct api_req *r, const json_t *root, struct api_err *e)
{
	const json_t *v = json_object_get(root, "prompt");
	if (!v)
		return api_err_set(e, 400, NULL, "prompt", "missing_required_parameter",
		                   "Missing required parameter: 'prompt'.");
	if (json_is_array(v) && json_array_size(v) == 1 && json_is_string(json_array_get(v, 0)))
		v = json_array_get(v, 0);
	if (!json_is_string(v))
		return bad_type(e, "prompt", "a string", v);
	r->prompt = dup_str(v, &r->prompt_len);
	return r->prompt ? 0 : ML_ERR_NOMEM;
}

static int parse_fields(struct api_req *r, const json_t *root, struct api_err *e)
{
	int rc;
	const json_t *model = json_object_get(root, "model");
	if (model && !json_is_null(model)) {
		if (!json_is_string(model))
			return bad_type(e, "model", "a string", model);
		r->model = dup_str(model, NULL);
		if (!r->model)
			return ML_ERR_NOMEM;
	}
	rc = r->kind == API_KIND_CHAT ? parse_messages(r, root, e) : parse_prompt(r, root, e);
	if (rc)
		return rc;

	long long n = 0;
	bool have = false;
	if ((rc = opt_int(root, "max_completion_tokens", 1, 1 << 30, &n, &have, e)))
		return rc;
	if (!have && (rc = opt_int(root, "max_tokens", 1, 1 << 30, &n, &have, e)))
		return rc;
	r->max_tokens = have ? (int)n : 0;

	long long nc = 1;
	if ((rc = opt_int(root, "n", 1, 1, &nc, NULL, e)))
		return rc;

	struct smp_params *sp = &r->sampling;
	double d;
	d = sp->temp;
	if ((rc = opt_number(root, "temperature", 0, 2, &d, e)))
		return rc;
	sp->temp = (float)d;
	d = sp->top_p;
	if ((rc = opt_number(root, "top_p", 0, 1, &d, e)))
		return rc;
	sp->top_p = (float)d;
	d = sp->min_p;
	if ((rc = opt_number(root, "min_p", 0, 1, &d, e)))
		return rc;
	sp->min_p = (float)d;
	d = sp->freq_penalty;
	if ((rc = opt_number(root, "frequency_penalty", -2, 2, &d, e)))
		return rc;
	sp->freq_penalty = (float)d;
	d = sp->presence_penalty;
	if ((rc = opt_number(root, "presence_penalty", -2, 2, &d, e)))
		return rc;
	sp->presence_penalty = (float)d;
	d = sp->repeat_penalty;
	if ((rc = opt_number(root, "repeat_penalty", 0, 10, &d, e)))
		return rc;
	sp->repeat_penalty = (float)d;
	long long k = sp->top_k;
	if ((rc = opt_int(root, "top_k", 0, 1 << 30, &k, NULL, e)))
		return rc;
	sp->top_k = (int)k;
	const json_t *seed = json_object_get(root, "seed");
	if (seed && !json_is_null(seed)) {
		if (!json_is_integer(seed))
			return bad_type(e, "seed", "an integer", seed);
		sp->seed = (uint64_t)json_integer_value(seed);
	}

	if ((rc = parse_stop(r, root, e)))
		return rc;
	if ((rc = opt_bool(root, "stream", &r->stream, e)))
		return rc;
	if ((rc = opt_bool(root, "ignore_eos", &r->ignore_eos, e)))
		return rc;
	const json_t *so = json_object_get(root, "stream_options");
	if (so && !json_is_null(so)) {
		if (!json_is_object(so))
			return bad_type(e, "stream_options", "an object", so);
		const json_t *iu = json_object_get(so, "include_usage");
		if (iu && !json_is_null(iu) && !json_is_boolean(iu))
			return bad_type(e, "stream_options.include_usage", "a boolean", iu);
		r->include_usage = iu && json_is_true(iu);
	}
	return 0;
}

int api_req_parse(struct api_req *r, enum api_kind kind, const char *body, size_t len,
                  struct api_err *err)
{
	memset(r, 0, sizeof(*r));
	r->kind = kind;
	r->sampling = smp_default_params();
	if (len == 0)
		return api_err_set(err, 400, NULL, NULL, "invalid_json",
		                   "The request body is empty; expected a JSON object.");
	json_error_t jerr;
	json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return api_err_set(err, 400, NULL, NULL, "invalid_json",
		                   "Invalid JSON in the request body at line %d, column %d: %s",
		                   jerr.line, jerr.column, jerr.text);
	int rc;
	if (!json_is_object(root))
		rc = api_err_set(err, 400, NULL, NULL, "invalid_json",
		                 "The request body must be a JSON object, got %s.",
		                 json_type_name(root));
	else
		rc = parse_fields(r, root, err);
	if (rc == ML_ERR_NOMEM)
		api_err_set(err, 500, "server_error", NULL, NULL, "Out of memory.");
	json_decref(root);
	return rc;
}

void api_req_clear(struct api_req *r)
{
	free(r->model);
	for (size_t i = 0; i < r->n_msgs; i++) {
		free(r->msgs[i].role);
		free(r->msgs[i].content);
	}
	free(r->msgs);
	free(r->prompt);
	for (int i = 0; i < r->n_stop; i++)
		free(r->stop[i]);
	memset(r, 0, sizeof(*r));
}

/* ---- routes and auth ------------------------------------------------------ */

enum api_route api_route_match(const char *path, enum api_method method, bool *method_ok,
                               const char **allow, const char **arg)
{
	static const struct {
		const char *path;
		enum api_route route;
		bool post; /* POST route (else GET/HEAD) */
	} routes[] = {
	    {"/health", API_ROUTE_HEALTH, false},
	    {"/v1/models", API_ROUTE_MODELS, false},
	    {"/models", API_ROUTE_MODELS, false},
	    {"/v1/chat/completions", API_ROUTE_CHAT, true},
	    {"/chat/completions", API_ROUTE_CHAT, true},
	    {"/v1/completions", API_ROUTE_COMPLETION, true},
	    {"/completions", API_ROUTE_COMPLETION, true},
	    {"/apply-template", API_ROUTE_TEMPLATE, true},
	};
	*method_ok = true;
	*allow = NULL;
	*arg = NULL;
	if (!path)
		return API_ROUTE_NONE;
	size_t len = strlen(path);
	/* tolerate one trailing slash */
	if (len > 1 && path[len - 1] == '/')
		len--;
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		if (strlen(routes[i].path) != len || memcmp(routes[i].path, path, len) != 0)
			continue;
		*allow = routes[i].post ? "POST, OPTIONS" : "GET, HEAD, OPTIONS";
		if (method == API_OPTIONS)
			return routes[i].route;
		*method_ok =
		    routes[i].post ? method == API_POST : (method == API_GET || method == API_HEAD);
		return routes[i].route;
	}
	static const char pre[] = "/v1/models/";
	if (len > sizeof(pre) - 1 && strncmp(path, pre, sizeof(pre) - 1) == 0) {
		*allow = "GET, HEAD, OPTIONS";
		*method_ok = method == API_GET || method == API_HEAD || method == API_OPTIONS;
		*arg = path + sizeof(pre) - 1;
		return API_ROUTE_MODEL;
	}
	return API_ROUTE_NONE;
}

bool api_route_needs_auth(enum api_route r)
{
	return r != API_ROUTE_HEALTH;
}

bool api_auth_ok(const char *header, const char *key)
{
	if (!header || !key)
		return false;
	if (strncasecmp(header, "Bearer ", 7) != 0)
		return false;
	header += 7;
	while (*header == ' ')
		header++;
	size_t hl = strlen(header), kl = strlen(key);
	while (hl > 0 && (header[hl - 1] == ' ' || header[hl - 1] == '\t'))
		hl--;
	unsigned diff = (unsigned)(hl != kl);
	for (size_t i = 0; i < kl; i++)
		diff |= (unsigned char)key[i] ^ (unsigned char)(i < hl ? header[i] : 0);
	return diff == 0;
}
