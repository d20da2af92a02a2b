/* Tests for the chat template interpreter: every template in
 * ../shared/templates rendered against the conversations in
 * tests/tokenizer/templates/cases.txt must match, byte for byte, the golden
 * renders Python's jinja2 produced (tools/gen_template_goldens.py), or fail
 * with the same raise_exception message; plus small feature checks (their
 * expected strings also come from jinja2) and malformed templates that must
 * fail cleanly. Run from the repository root. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/ml_err.h"
#include "tokenizer/tok_template.h"

#define TEMPLATE_DIR "../shared/templates"
#define GOLDEN_DIR "tests/tokenizer/templates"
#define EXTRA_DIR "tests/tokenizer/templates/extra"

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap);
	size_t r;
	while (buf && (r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
		n += r;
		if (cap - n - 1 == 0) {
			char *nb = realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				buf = NULL;
				break;
			}
			buf = nb;
			cap *= 2;
		}
	}
	fclose(f);
	if (buf)
		buf[n] = 0;
	if (len)
		*len = n;
	return buf;
}

/* ---- the conversations ---- */

#define MAX_CASES 64
#define MAX_MSGS 16

struct tcase {
	char name[64];
	bool agp;
	size_t n;
	struct tok_chat_msg msgs[MAX_MSGS];
};

static struct tcase cases[MAX_CASES];
static size_t n_cases;

static char *unhex(const char *h, size_t n)
{
	char *s = malloc(n / 2 + 1);
	for (size_t i = 0; i + 1 < n + 1 && i / 2 < n / 2; i += 2) {
		unsigned v;
		sscanf(h + i, "%2x", &v);
		s[i / 2] = (char)v;
	}
	s[n / 2] = 0;
	return s;
}

static void load_cases(void)
{
	if (n_cases)
		return;
	char *txt = read_file(GOLDEN_DIR "/cases.txt", NULL);
	assert_non_null(txt);
	char *save = NULL;
	struct tcase *c = NULL;
	for (char *line = strtok_r(txt, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (!strncmp(line, "case ", 5)) {
			assert_true(n_cases < MAX_CASES);
			c = &cases[n_cases++];
			int agp = 0;
			assert_int_equal(sscanf(line + 5, "%63s %d", c->name, &agp), 2);
			c->agp = agp != 0;
		} else if (!strncmp(line, "msg ", 4)) {
			assert_non_null(c);
			assert_true(c->n < MAX_MSGS);
			char *role = line + 4, *sp = strchr(role, ' ');
			assert_non_null(sp);
			*sp = 0;
			c->msgs[c->n].role = strdup(role);
			c->msgs[c->n].content = unhex(sp + 1, strlen(sp + 1));
			c->n++;
		}
	}
	free(txt);
	assert_true(n_cases > 0);
}

static void report_diff(const char *what, const char *got, size_t gn, const char *want, size_t wn)
{
	size_t i = 0;
	while (i < gn && i < wn && got[i] == want[i])
		i++;
	size_t from = i > 40 ? i - 40 : 0;
	print_error("%s: differs at byte %zu (got %zu bytes, want %zu)\n  got:  \"%.*s\"\n  want: \"%.*s\"\n",
		    what, i, gn, wn, (int)((gn - from) > 100 ? 100 : gn - from), got + from,
		    (int)((wn - from) > 100 ? 100 : wn - from), want + from);
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void run_goldens(const char *dir, size_t min_templates)
{
	load_cases();
	DIR *d = opendir(dir);
	assert_non_null(d);
	char *names[256];
	size_t nn = 0;
	struct dirent *e;
	while ((e = readdir(d)) && nn < 256) {
		size_t l = strlen(e->d_name);
		if (l > 6 && !strcmp(e->d_name + l - 6, ".jinja"))
			names[nn++] = strndup(e->d_name, l - 6);
	}
	closedir(d);
	qsort(names, nn, sizeof(names[0]), cmp_names);
	assert_true(nn >= min_templates);
	int failures = 0, renders = 0;
	for (size_t k = 0; k < nn; k++) {
		char path[512];
		if (snprintf(path, sizeof(path), "%s/%s.jinja", dir, names[k]) >= (int)sizeof(path))
			fail_msg("name too long: %s", names[k]);
		char *src = read_file(path, NULL);
		assert_non_null(src);
		struct tok_template *t = NULL;
		int rc = tok_template_parse(&t, src);
		if (rc != 0) {
			print_error("%s: parse failed: %s\n", names[k], ml_last_error());
			failures++;
			free(src);
			continue;
		}
		assert_int_equal(tok_template_set_date(t, 2024, 7, 26), 0);
		for (size_t ci = 0; ci < n_cases; ci++) {
			struct tcase *c = &cases[ci];
			char what[256], gpath[600], epath[600];
			if (snprintf(what, sizeof(what), "%s.%s", names[k], c->name) >= (int)sizeof(what) ||
			    snprintf(gpath, sizeof(gpath), GOLDEN_DIR "/%s.golden", what) >= (int)sizeof(gpath) ||
			    snprintf(epath, sizeof(epath), GOLDEN_DIR "/%s.error", what) >= (int)sizeof(epath))
				fail_msg("name too long: %s", names[k]);
			size_t wn = 0;
			char *want = read_file(gpath, &wn);
			char *want_err = want ? NULL : read_file(epath, NULL);
			char *out = NULL;
			size_t on = 0;
			renders++;
			rc = tok_template_render(t, c->msgs, c->n, c->agp, "<BOS>", "<EOS>", &out, &on);
			if (!want && !want_err) {
				print_error("%s: no golden; run tools/gen_template_goldens.py\n", what);
				failures++;
			} else if (want_err) {
				if (rc != ML_ERR_INVALID || !strstr(ml_last_error(), want_err)) {
					print_error("%s: want error \"%s\", got rc %d \"%s\"\n", what, want_err, rc,
						    rc ? ml_last_error() : "");
					failures++;
				}
			} else if (rc != 0) {
				print_error("%s: render failed: %s\n", what, ml_last_error());
				failures++;
			} else if (on != wn || memcmp(out, want, wn) != 0 || strlen(out) != on) {
				report_diff(what, out, on, want, wn);
				failures++;
			}
			free(out);
			free(want);
			free(want_err);
		}
		tok_template_free(t);
		free(src);
		free(names[k]);
	}
	print_message("%s: %d renders, %d failures\n", dir, renders, failures);
	assert_int_equal(failures, 0);
}

/* The real templates of the common model families. */
static void test_goldens(void **state)
{
	(void)state;
	run_goldens(TEMPLATE_DIR, 10);
}

/* Our own templates: other families' formats and feature-heavy ones. */
static void test_goldens_extra(void **state)
{
	(void)state;
	run_goldens(EXTRA_DIR, 6);
}

/* ---- small templates; expected strings rendered by jinja2 with
 * trim_blocks and lstrip_blocks on ---- */

static const struct tok_chat_msg conv[] = {
	{"system", "Be nice."},
	{"user", "Hi"},
	{"assistant", "Hello"},
};

static char *render_ok(const char *src)
{
	struct tok_template *t = NULL;
	int rc = tok_template_parse(&t, src);
	if (rc != 0)
		print_error("parse of \"%s\" failed: %s\n", src, ml_last_error());
	assert_int_equal(rc, 0);
	tok_template_set_date(t, 2024, 7, 26);
	char *out = NULL;
	size_t n = 0;
	rc = tok_template_render(t, conv, 3, true, "<s>", "</s>", &out, &n);
	if (rc != 0)
		print_error("render of \"%s\" failed: %s\n", src, ml_last_error());
	assert_int_equal(rc, 0);
	assert_int_equal(strlen(out), n);
	tok_template_free(t);
	return out;
}

static void check(const char *src, const char *want)
{
	char *out = render_ok(src);
	if (strcmp(out, want) != 0)
		print_error("template \"%s\"\n  got  \"%s\"\n  want \"%s\"\n", src, out, want);
	assert_string_equal(out, want);
	free(out);
}

static void test_expressions(void **state)
{
	(void)state;
	check("{{ 1 + 2 * 3 }}|{{ 7 // 2 }}|{{ -7 // 2 }}|{{ -7 % 3 }}|{{ 10 / 4 }}|{{ 2 ** 10 }}",
	      "7|3|-4|2|2.5|1024");
	check("{{ 0.1 + 0.2 }}|{{ 1e20 }}|{{ 1.0 }}|{{ 1e-5 }}|{{ 3 * 1.5 }}",
	      "0.30000000000000004|1e+20|1.0|1e-05|4.5");
	check("{{ range(100000) | reverse | sort | first }}|{{ range(3000) | map('string') | unique | list | length }}", "0|3000");
	check("{{ '' * 4129827551979708059 }}|{{ [] * 4129827551979708059 }}|{{ 'ab' * 2 }}|{{ [1] * 3 }}", "|[]|abab|[1, 1, 1]");
	check("{{ 'a' ~ 1 ~ none ~ true }}|{{ [1, 'a', none, true] }}|{{ {'a': 1} }}|{{ (1,) }}",
	      "a1NoneTrue|[1, 'a', None, True]|{'a': 1}|(1,)");
	check("{{ 'abc'[::-1] }}|{{ [1,2,3][1:] }}|{{ 'héllo'[1] }}|{{ 'héllo'[-2:] }}|{{ [1,2,3,4][::2] }}",
	      "cba|[2, 3]|é|lo|[1, 3]");
	check("{{ 'a,b'.split(',') }}|{{ '  a b '.split() }}|{{ 'x' if false else 'y' }}|{{ 'x' if false }}|",
	      "['a', 'b']|['a', 'b']|y||");
	check("{{ not 1 == 2 }}|{{ 1 < 2 < 3 }}|{{ 'b' in 'abc' }}|{{ 2 not in [1] }}|{{ none is none }}",
	      "True|True|True|True|True");
	check("{{ x is defined }}|{{ x is not defined }}|{{ x }}|{{ x | default('d') }}|{{ '' | default('e', true) }}",
	      "False|True||d|e");
	check("{{ \"it's\" }}|{{ 'say \"hi\"' ~ '\\n' | length }}|{{ '\\u00e9\\x41\\t' }}|{{ 'a' 'b' }}",
	      "it's|say \"hi\"1|\xc3\xa9" "A\t|ab");
	check("{{ messages | length - 1 }}|{{ messages[0].role }}|{{ messages[-1]['content'] }}|{{ messages[5] is defined }}",
	      "2|system|Hello|False");
	check("{{ 'Hello World'.upper() }}|{{ 'ABC'.lower() }}|{{ 'hello world' | title }}|{{ 'hELLO' | capitalize }}",
	      "HELLO WORLD|abc|Hello World|Hello");
	check("{{ '  x  '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ '\\n\\nx'.lstrip('\\n') }}|{{ 'x  '.rstrip() }}",
	      "x|a|x|x");
	check("{{ 'abc'.startswith('ab') }}|{{ 'abc'.endswith(('x', 'c')) }}|{{ 'aXbX'.replace('X', '-') }}",
	      "True|True|a-b-");
	check("{{ 'a,b,c'.rsplit(',', 1) }}{{ '  a b  c '.rsplit(None, 1) }}{{ 'x</think>y</think>z'.rsplit('</think>', 1)[-1] }}",
	      "['a,b', 'c']['  a b', 'c']z");
	check("{{ '{} and {}'.format(1, 'two') }}|{{ '-'.join(['a', 'b']) }}|{{ 'abcabc'.count('b') }}",
	      "1 and two|a-b|2");
}

static void test_filters(void **state)
{
	(void)state;
	check("{{ [3, 1, 2] | sort }}|{{ [1, 2, 2, 1] | unique | list }}|{{ [1, 2] | first }}|{{ [1, 2] | last }}|{{ [1, 2] | join(', ') }}",
	      "[1, 2, 3]|[1, 2]|1|2|1, 2");
	check("{{ {'b': 1, 'a': [1, 2.5, none, true]} | tojson }}|{{ 'é\"\\n' | tojson }}|{{ {'a': {}} | tojson(indent=2) }}",
	      "{\"b\": 1, \"a\": [1, 2.5, null, true]}|\"\xc3\xa9\\\"\\n\"|{\n  \"a\": {}\n}");
	check("{{ {'a': [1, 2]} | tojson(indent=4) }}", "{\n    \"a\": [\n        1,\n        2\n    ]\n}");
	check("{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') | join }}|"
	      "{{ messages | rejectattr('role', 'equalto', 'user') | list | length }}|{{ messages | map(attribute='role') | list }}",
	      "Hi|2|['system', 'user', 'assistant']");
	check("{{ '42' | int + 1 }}|{{ 'x' | int }}|{{ 3.7 | int }}|{{ 2.5 | round }}|{{ 3.14159 | round(2) }}|{{ -3 | abs }}",
	      "43|0|3|2.0|3.14|3");
	check("{{ 'a\\nb\\n\\nc' | indent(2) }}|{{ 'x' | indent(2, true) }}", "a\n  b\n\n  c|  x");
	check("{% for k, v in {'a': 1, 'b': 2} | items %}{{ k }}={{ v }};{% endfor %}|"
	      "{% for k, v in {'a': 1}.items() %}{{ k }}{{ v }}{% endfor %}|{{ {'a': 1}.get('b', 'z') }}|{{ {'a': 1}.keys() | list }}",
	      "a=1;b=2;|a1|z|['a']");
	check("{{ 'abc' | list }}|{{ 'x' | string }}|{{ '  t  ' | trim }}|{{ 'aBc' | upper }}|{{ 'aBc' | lower }}|{{ 'ab' | replace('a', 'z') }}",
	      "['a', 'b', 'c']|x|t|ABC|abc|zb");
	check("{{ '%s and %d' % ('x', 3) }}|{{ '%5.2f|%-4s|%03d|%x|%r' % (3.14159, 'ab', 7, 255, 'q') }}|{{ '%(a)s-%(b)d' % {'a': 'A', 'b': 2} }}|{{ 'Hi' | center(7) }}|",
	      "x and 3| 3.14|ab  |007|ff|'q'|A-2|   Hi  |");
	check("{{ [1, 2, 3] | select('odd') | list }}|{{ [1, 2, 3] | reject('odd') | list }}|{{ [1, 2, 3] | sum }}|{{ [1, 3, 2] | max }}",
	      "[1, 3]|[2]|6|3");
}

static void test_statements(void **state)
{
	(void)state;
	check("{% for m in messages %}{{ loop.index0 }}{{ loop.index }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.revindex }};{% endfor %}",
	      "01TrueFalse33;12FalseFalse32;23FalseTrue31;");
	check("{% for m in messages if m.role != 'system' %}{{ loop.index }}{{ m.role }}{% else %}none{% endfor %}|{% for x in [] %}x{% else %}empty{% endfor %}",
	      "1user2assistant|empty");
	check("{% set x = 1 %}{% for i in [1, 2] %}{{ x }}{% set x = i * 10 %}{{ x }};{% endfor %}{{ x }}", "110;120;1");
	check("{% set ns = namespace(n=0) %}{% for i in range(5) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}", "10");
	check("{% for i in range(10) %}{% if i == 3 %}{% break %}{% endif %}{% if i == 1 %}{% continue %}{% endif %}{{ i }}{% endfor %}",
	      "02");
	check("{% macro hi(name, p='!') %}Hi {{ name }}{{ p }}{% endmacro %}{{ hi('a') }}|{{ hi('b', p='?') }}", "Hi a!|Hi b?");
	check("{% set a, b = 1, 2 %}{{ a }}{{ b }}|{% set blk %}in {{ a }}{% endset %}{{ blk }}", "12|in 1");
	check("{% if false %}a{% elif 1 %}b{% else %}c{% endif %}|{% raw %}{{ x }}{% endraw %}|{# comment #}z", "b|{{ x }}|z");
	check("{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %}|{% for m in messages %}{{ loop.previtem.role if loop.previtem }}{% endfor %}",
	      "37|systemuser");
	check("{{ strftime_now('%Y-%m-%d %d %b %Y %B %A') }}", "2024-07-26 26 Jul 2024 July Friday");
	check("{% filter upper %}abc {{ messages[0].role }}{% endfilter %}|{% filter replace('a', 'b') | upper %}aaa{% endfilter %}",
	      "ABC SYSTEM|BBB");
	check("{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}x {{ messages[0].role }}{% endcall %}|"
	      "{% macro each(items) %}{% for i in items %}[{{ caller(i) }}]{% endfor %}{% endmacro %}{% call(x) each([1, 2]) %}{{ x * 10 }}{% endcall %}",
	      "<b>x system</b>|[10][20]");
	check("{% for i in [1, 2] %}{% continue %}{% else %}E{% endfor %}|{% for i in [1, 2] %}{% if i == 2 %}{% break %}{% endif %}{% else %}E{% endfor %}",
	      "E|");
}

static void test_whitespace(void **state)
{
	(void)state;
	/* trim_blocks drops the newline after a block tag, lstrip_blocks the
	 * indentation before it; '-' strips all whitespace, '+' keeps it */
	check("a\n  {% if true %}\n  b\n  {% endif %}\nc\n", "a\n  b\nc");
	check("a  {%- if true -%}  b  {%- endif %}\n  c", "ab  c");
	check("x\n    {{ 'v' }}\n    {# c #}\ny", "x\n    v\ny");
	check("  {%+ if true %}k{% endif %}", "  k");
	check("{{ 'a' }}  {% if true %}b{% endif %}", "a  b");
	check("a\r\nb\r\n", "a\nb");
	check("{% for i in [1, 2] %}\n  {{ i }}\n{% endfor %}\n", "  1\n  2\n");
}

static void test_chatml(void **state)
{
	(void)state;
	char *out = render_ok(tok_template_chatml);
	assert_string_equal(out, "<|im_start|>system\nBe nice.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
				 "<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>assistant\n");
	free(out);
}

/* ---- malformed or hostile templates ---- */

static void expect_fail(const char *src, int want_rc, const char *msg_part)
{
	struct tok_template *t = NULL;
	int rc = tok_template_parse(&t, src);
	if (rc == 0) {
		char *out = NULL;
		size_t n = 0;
		rc = tok_template_render(t, conv, 3, true, "<s>", "</s>", &out, &n);
		assert_null(rc ? out : NULL);
		free(out);
		tok_template_free(t);
	} else {
		assert_null(t);
	}
	if (rc != want_rc || !strstr(ml_last_error(), msg_part))
		print_error("template \"%.60s\": rc %d \"%s\", want rc %d with \"%s\"\n", src, rc,
			    ml_last_error(), want_rc, msg_part);
	assert_int_equal(rc, want_rc);
	assert_non_null(strstr(ml_last_error(), msg_part));
}

static void test_malformed(void **state)
{
	(void)state;
	expect_fail("{% if x %}abc", ML_ERR_FORMAT, "expected 'endif'");
	expect_fail("{% for x in y %}", ML_ERR_FORMAT, "expected 'endfor'");
	expect_fail("abc {{ x ", ML_ERR_FORMAT, "1:5: unclosed");
	expect_fail("{# never closed", ML_ERR_FORMAT, "comment");
	expect_fail("line\n  {{ x | nosuchfilter }}", ML_ERR_INVALID, "2:8: no filter named 'nosuchfilter'");
	expect_fail("{{ x is nosuchtest }}", ML_ERR_INVALID, "no test named");
	expect_fail("{% endfor %}", ML_ERR_FORMAT, "unexpected 'endfor'");
	expect_fail("{% include 'x' %}", ML_ERR_FORMAT, "unsupported tag 'include'");
	expect_fail("{{ 'abc }}", ML_ERR_FORMAT, "unterminated string");
	expect_fail("{{ (1 + 2 }}", ML_ERR_FORMAT, "expected ')'");
	expect_fail("{{ 1 + }}", ML_ERR_FORMAT, "unexpected end of print statement");
	expect_fail("{{ ] }}", ML_ERR_FORMAT, "unexpected ']'");
	expect_fail("{% break %}", ML_ERR_FORMAT, "outside of a loop");
	expect_fail("{{ raise_exception('boom') }}", ML_ERR_INVALID, "boom");
	expect_fail("{{ undefined_thing.attr }}", ML_ERR_INVALID, "'undefined_thing' is undefined");
	expect_fail("{{ messages[9].role }}", ML_ERR_INVALID, "list object has no element 9");
	expect_fail("{{ 1 / 0 }}", ML_ERR_INVALID, "division by zero");
	expect_fail("{{ 'a' + 1 }}", ML_ERR_INVALID, "unsupported operand");
	expect_fail("{{ none | length }}", ML_ERR_INVALID, "has no len()");
	expect_fail("{% for x in none %}{% endfor %}", ML_ERR_INVALID, "not iterable");
	expect_fail("{{ 9223372036854775807 + 1 }}", ML_ERR_INVALID, "overflow");

	/* deep nesting of every kind */
	char deep[4096];
	size_t n = 0;
	for (int i = 0; i < 500; i++)
		n += (size_t)snprintf(deep + n, sizeof(deep) - n, "(");
	snprintf(deep + n, sizeof(deep) - n, "1");
	char src[4200];
	snprintf(src, sizeof(src), "{{ %s }}", deep);
	expect_fail(src, ML_ERR_FORMAT, "nested deeper");
	n = 0;
	for (int i = 0; i < 300; i++)
		n += (size_t)snprintf(src + n, sizeof(src) - n, "{%% if 1 %%}");
	expect_fail(src, ML_ERR_FORMAT, "nested deeper");
	n = 0;
	for (int i = 0; i < 400; i++)
		n += (size_t)snprintf(src + n, sizeof(src) - n, "not ");
	char tmpl[4300];
	snprintf(tmpl, sizeof(tmpl), "{{ %s1 }}", src);
	expect_fail(tmpl, ML_ERR_FORMAT, "nested deeper");
	n = 0;
	for (int i = 0; i < 400; i++)
		n += (size_t)snprintf(src + n, sizeof(src) - n, "-");
	snprintf(tmpl, sizeof(tmpl), "{{ %s1 }}", src);
	expect_fail(tmpl, ML_ERR_FORMAT, "nested deeper");

	/* recursion through macros whose bodies nest deeply: bounded before
	 * the C stack is (about 0.5 MB at most) */
	n = (size_t)snprintf(src, sizeof(src), "{%% macro f(n) %%}{%% if n < 1000 %%}");
	for (int i = 0; i < 80; i++)
		n += (size_t)snprintf(src + n, sizeof(src) - n, "{%% if 1 %%}");
	n += (size_t)snprintf(src + n, sizeof(src) - n, "{{ f(n + 1) }}");
	for (int i = 0; i < 80; i++)
		n += (size_t)snprintf(src + n, sizeof(src) - n, "{%% endif %%}");
	snprintf(src + n, sizeof(src) - n, "{%% endif %%}{%% endmacro %%}{{ f(0) }}");
	expect_fail(src, ML_ERR_RANGE, "nested deeper than");

	/* runaway work */
	expect_fail("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", ML_ERR_RANGE, "macro calls nested");
	expect_fail("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", ML_ERR_RANGE,
		    "loop iterations");
	expect_fail("{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
		    ML_ERR_RANGE, "");
	expect_fail("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", ML_ERR_RANGE, "output longer");
	expect_fail("{{ range(10000000) | length }}", ML_ERR_RANGE, "range() longer");
	/* scans of big values in loops are charged to a work budget */
	expect_fail("{% set s = 'x' * 10000000 %}{% for i in range(100000) %}{{ s | length }}{% endfor %}", ML_ERR_RANGE,
		    "steps of work");
	expect_fail("{% set s = 'xy' * 4000000 %}{{ s.strip(s) }}", ML_ERR_RANGE, "steps of work");
	expect_fail("{% set l = range(100000) | list %}{% for i in range(100000) %}{{ i in l }}{% endfor %}", ML_ERR_RANGE,
		    "steps of work");
	expect_fail("{{ '' * 4129827551979708059 ~ [1] * 4129827551979708059 }}", ML_ERR_RANGE, "repetition too long");
}

/* Every prefix of a real template either parses or fails cleanly. */
static void test_truncations(void **state)
{
	(void)state;
	char *src = read_file(TEMPLATE_DIR "/Qwen-Qwen3-0.6B.jinja", NULL);
	assert_non_null(src);
	size_t n = strlen(src);
	int parsed = 0;
	for (size_t k = 0; k <= n; k += 1) {
		char *p = strndup(src, k);
		struct tok_template *t = NULL;
		int rc = tok_template_parse(&t, p);
		if (rc == 0) {
			char *out = NULL;
			size_t on = 0;
			rc = tok_template_render(t, conv, 3, true, "<s>", "</s>", &out, &on);
			assert_true(rc == 0 || rc == ML_ERR_INVALID);
			free(out);
			parsed++;
		} else {
			assert_int_equal(rc, ML_ERR_FORMAT);
			assert_true(strlen(ml_last_error()) > 0);
		}
		tok_template_free(t);
		free(p);
	}
	assert_true(parsed > 0);
	free(src);
}

static void test_api(void **state)
{
	(void)state;
	struct tok_template *t = NULL;
	assert_int_equal(tok_template_parse(&t, "x"), 0);
	assert_int_equal(tok_template_set_date(t, 2023, 2, 29), ML_ERR_INVALID);
	assert_int_equal(tok_template_set_date(t, 2024, 2, 29), 0);
	char *out = NULL;
	assert_int_equal(tok_template_render(t, NULL, 0, false, NULL, NULL, &out, NULL), 0);
	assert_string_equal(out, "x");
	free(out);
	tok_template_free(t);
	/* NULL content is None, as JSON null content is in transformers */
	const struct tok_chat_msg tool_call = {"assistant", NULL};
	assert_int_equal(tok_template_parse(&t, "{{ messages[0].content is none }}{{ bos_token }}|{{ messages[0].content }}"), 0);
	assert_int_equal(tok_template_render(t, &tool_call, 1, false, NULL, NULL, &out, NULL), 0);
	assert_string_equal(out, "True|None");
	free(out);
	tok_template_free(t);
	tok_template_free(NULL);
	assert_int_equal(tok_template_parse(&t, NULL), ML_ERR_INVALID);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_goldens),
		cmocka_unit_test(test_goldens_extra),
		cmocka_unit_test(test_expressions),
		cmocka_unit_test(test_filters),
		cmocka_unit_test(test_statements),
		cmocka_unit_test(test_whitespace),
		cmocka_unit_test(test_chatml),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_truncations),
		cmocka_unit_test(test_api),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
