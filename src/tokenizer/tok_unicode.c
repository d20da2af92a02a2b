/* UTF-8 and code point helpers for the tokenizer; table lookups over the
 * generated data in tok_unicode_data.c. */
#include "tokenizer/tok_unicode.h"

int tok_utf8_len(unsigned char c)
{
	static const int lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
	return lookup[c >> 4];
}

int tok_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
	if (n == 0)
		return 0;
	unsigned char c = s[0];
	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	int len;
	uint32_t v, min;
	if (c >= 0xC2 && c <= 0xDF) {
		len = 2;
		v = c & 0x1F;
		min = 0x80;
	} else if (c >= 0xE0 && c <= 0xEF) {
		len = 3;
		v = c & 0x0F;
		min = 0x800;
	} else if (c >= 0xF0 && c <= 0xF4) {
		len = 4;
		v = c & 0x07;
		min = 0x10000;
	} else {
		return 0;
	}
	if ((size_t)len > n)
		return 0;
	for (int i = 1; i < len; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		v = (v << 6) | (s[i] & 0x3F);
	}
	if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
		return 0;
	*cp = v;
	return len;
}

int tok_utf8_encode(uint32_t cp, char *out)
{
	unsigned char *o = (unsigned char *)out;
	if (cp < 0x80) {
		o[0] = (unsigned char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (unsigned char)(0xC0 | (cp >> 6));
		o[1] = (unsigned char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (unsigned char)(0xE0 | (cp >> 12));
		o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
		o[2] = (unsigned char)(0x80 | (cp & 0x3F));
		return 3;
	}
	o[0] = (unsigned char)(0xF0 | (cp >> 18));
	o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
	o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
	o[3] = (unsigned char)(0x80 | (cp & 0x3F));
	return 4;
}

int tok_utf8_valid(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;
	while (i < n) {
		if (p[i] < 0x80) {
			i++;
			continue;
		}
		uint32_t cp;
		int l = tok_utf8_decode(p + i, n - i, &cp);
		if (l == 0)
			return 0;
		i += (size_t)l;
	}
	return 1;
}

unsigned tok_ucd_flags_of(uint32_t cp)
{
	unsigned lo = 0, hi = tok_ucd_n_flags;
	while (hi - lo > 1) { /* last range with first <= cp */
		unsigned mid = (lo + hi) / 2;
		if (tok_ucd_flags[mid].first <= cp)
			lo = mid;
		else
			hi = mid;
	}
	return tok_ucd_flags[lo].flags;
}

static uint32_t map_lookup(const struct tok_ucd_map *m, unsigned n, uint32_t cp)
{
	unsigned lo = 0, hi = n;
	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;
		if (m[mid].from == cp)
			return m[mid].to;
		if (m[mid].from < cp)
			lo = mid + 1;
		else
			hi = mid;
	}
	return cp;
}

uint32_t tok_ucd_nfd_base(uint32_t cp)
{
	return cp < 0xC0 ? cp : map_lookup(tok_ucd_nfd, tok_ucd_n_nfd, cp);
}

uint32_t tok_ucd_tolower(uint32_t cp)
{
	if (cp < 0x80)
		return (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp;
	return map_lookup(tok_ucd_lower, tok_ucd_n_lower, cp);
}

/* GPT-2: printable bytes ('!'..'~', 0xA1..0xAC, 0xAE..0xFF) map to
 * themselves; the other 68 bytes map to 256, 257, ... in byte order. */
static int byte_is_printable(unsigned b)
{
	return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

uint32_t tok_byte_cp(unsigned char b)
{
	if (byte_is_printable(b))
		return b;
	uint32_t n = 0;
	for (unsigned i = 0; i < b; i++)
		if (!byte_is_printable(i))
			n++;
	return 256 + n;
}

int tok_cp_byte(uint32_t cp)
{
	if (cp < 256)
		return byte_is_printable(cp) ? (int)cp : -1;
	if (cp >= 256 + 68)
		return -1;
	uint32_t n = cp - 256;
	for (unsigned i = 0; i < 256; i++)
		if (!byte_is_printable(i) && n-- == 0)
			return (int)i;
	return -1;
}
