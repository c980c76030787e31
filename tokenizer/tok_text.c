// tokenizer/tok_text.c — pure-C text side: streaming UTF-8 repair, piece decoding, punctuation test.
#include "tokenizer/tok.h"

#include <string.h>

#include "tokenizer/tok_text.h"

// ---- UTF-8 scanning ------------------------------------------------------------------------------------

// Looks at the sequence starting at s[0] (n >= 1 bytes available). Returns its length (1..4) when it is a
// complete well-formed sequence (code point in *cp); 0 when all n bytes are a well-formed but unfinished
// prefix (more input may complete it); -k when ill-formed, k being the length of the maximal ill-formed
// subpart that one U+FFFD replaces (Unicode 15, §3.9 "U+FFFD substitution of maximal subparts").
static int utf8_scan(const unsigned char *s, size_t n, unsigned *cp) {
    unsigned c = s[0], v, lo = 0x80, hi = 0xBF;
    int len;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        v = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        v = c & 0x0F;
        if (c == 0xE0) lo = 0xA0; // no overlong forms
        if (c == 0xED) hi = 0x9F; // no UTF-16 surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        v = c & 0x07;
        if (c == 0xF0) lo = 0x90; // no overlong forms
        if (c == 0xF4) hi = 0x8F; // nothing above U+10FFFF
    } else {
        return -1; // continuation byte, C0/C1 or F5..FF
    }
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n) return 0;
        unsigned b = s[i];
        unsigned l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
        if (b < l || b > h) return -i;
        v = v << 6 | (b & 0x3F);
    }
    *cp = v;
    return len;
}

// Output buffer that never overflows: holds at most cap-1 bytes plus a NUL, and takes a sequence whole or
// not at all, so a UTF-8 sequence is never split. Once something did not fit, it takes nothing more.
struct sink {
    char *out;
    size_t cap, len;
    int full;
};

static void sink_init(struct sink *o, char *out, size_t cap) {
    o->out = out;
    o->cap = out ? cap : 0;
    o->len = 0;
    o->full = o->cap == 0;
    if (o->cap) out[0] = '\0';
}

static void sink_put(struct sink *o, const void *p, size_t n) {
    if (o->full) return;
    if (n > o->cap - 1 - o->len) {
        o->full = 1;
        return;
    }
    memcpy(o->out + o->len, p, n);
    o->len += n;
    o->out[o->len] = '\0';
}

static const char k_replacement[3] = {'\xEF', '\xBF', '\xBD'}; // U+FFFD

// ---- streaming UTF-8 -------------------------------------------------------------------------------------

// Emits the sequences of s[0..n) and returns how many bytes were consumed; an unfinished tail (well-formed
// so far) is not consumed. Stops early once the sink is full.
static size_t utf8_emit(struct sink *o, const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n && !o->full) {
        unsigned cp;
        int r = utf8_scan(s + i, n - i, &cp);
        if (r == 0) break;
        if (r > 0) {
            sink_put(o, s + i, (size_t)r);
            i += (size_t)r;
        } else {
            sink_put(o, k_replacement, sizeof k_replacement);
            i += (size_t)-r;
        }
    }
    return i;
}

// The pending bytes are always an unfinished well-formed prefix (at most 3 bytes). First the sequence that
// starts in them is resolved against the head of `in`; then `in` is scanned in place. If `out` is too small
// the output stops at a sequence boundary and the rest of the input is dropped (cap >= 3 * (n + 3) + 1
// never truncates: each input byte yields at most 3 output bytes).
int tok_utf8_push(struct tok_utf8 *u, const char *in, size_t n, char *out, size_t cap) {
    struct sink o;
    sink_init(&o, out, cap);
    if (!u) return 0;
    if (!in) n = 0;
    size_t np = u->n_pend > 0 ? (size_t)u->n_pend : 0;
    if (np > sizeof u->pend) np = sizeof u->pend;
    u->n_pend = 0;

    unsigned char head[sizeof u->pend + 4];
    size_t take = n < 4 ? n : 4;
    memcpy(head, u->pend, np);
    if (take) memcpy(head + np, in, take);
    size_t pos = 0; // in the stream pend ++ in
    while (pos < np && !o.full) {
        unsigned cp;
        int r = utf8_scan(head + pos, np + take - pos, &cp);
        if (r == 0) { // still unfinished: then all of `in` (fewer than 4 bytes) belongs to it
            memcpy(u->pend, head + pos, np + take - pos);
            u->n_pend = (int)(np + take - pos);
            return (int)o.len;
        }
        if (r > 0) {
            sink_put(&o, head + pos, (size_t)r);
            pos += (size_t)r;
        } else {
            sink_put(&o, k_replacement, sizeof k_replacement);
            pos += (size_t)-r;
        }
    }
    if (o.full) return (int)o.len;

    const unsigned char *s = (const unsigned char *)in;
    size_t i = pos - np;
    i += utf8_emit(&o, s + i, n - i);
    if (!o.full && i < n) { // an unfinished sequence (< 4 bytes) waits for the next push
        memcpy(u->pend, s + i, n - i);
        u->n_pend = (int)(n - i);
    }
    return (int)o.len;
}

int tok_utf8_flush(struct tok_utf8 *u, char *out, size_t cap) {
    struct sink o;
    sink_init(&o, out, cap);
    if (!u) return 0;
    if (u->n_pend > 0) sink_put(&o, k_replacement, sizeof k_replacement); // one maximal subpart
    u->n_pend = 0;
    return (int)o.len;
}

// ---- piece decoding ---------------------------------------------------------------------------------------

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

int tok_text_byte_piece(const char *s, size_t n) {
    if (!s || n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int hi = hex_digit(s[3]), lo = hex_digit(s[4]);
    return hi < 0 || lo < 0 ? -1 : hi << 4 | lo;
}

#define SPACE_SYMBOL "\xE2\x96\x81" // U+2581, SentencePiece's escaped space

// Control tokens decode to nothing, byte pieces to their raw byte (tok_utf8_push reassembles characters
// split over several byte pieces), the unknown piece to SentencePiece's default surface " ⁇ ", and other
// pieces to their text with U+2581 read as a space. The leading space of the first text piece is dropped
// when prev is -1 or BOS and the model drops it (tok_drops_lead_space), as SentencePiece's decoder does.
int tok_decode_piece(const struct tok *t, int prev, int id, char *out, size_t cap) {
    struct sink o;
    sink_init(&o, out, cap);
    if (!t || id < 0 || id >= tok_n_vocab(t)) return 0;
    int type = tok_type(t, id);
    const char *p = tok_piece(t, id);
    size_t n = strlen(p);
    if (type == TOK_CONTROL) return 0;
    if (type == TOK_UNKNOWN) {
        sink_put(&o, " \xE2\x81\x87 ", 5);
        return (int)o.len;
    }
    if (type == TOK_BYTE) {
        int b = tok_text_byte_piece(p, n);
        if (b >= 0) {
            unsigned char c = (unsigned char)b;
            sink_put(&o, &c, 1);
            return (int)o.len;
        }
    }
    size_t i = 0;
    if ((prev < 0 || prev == tok_bos(t)) && tok_drops_lead_space(t) && n >= 3 &&
        memcmp(p, SPACE_SYMBOL, 3) == 0)
        i = 3;
    while (i < n && !o.full) {
        if (n - i >= 3 && memcmp(p + i, SPACE_SYMBOL, 3) == 0) {
            sink_put(&o, " ", 1);
            i += 3;
            continue;
        }
        // copy one character (or one stray byte) whole, so truncation never splits a sequence
        unsigned cp;
        int r = utf8_scan((const unsigned char *)p + i, n - i, &cp);
        size_t len = r > 0 ? (size_t)r : r < 0 ? (size_t)-r : n - i;
        sink_put(&o, p + i, len);
        i += len;
    }
    return (int)o.len;
}

// ---- punctuation ------------------------------------------------------------------------------------------

// White space removed before the test: ASCII \t\n\v\f\r and space, U+0085, U+00A0, U+1680, U+2000–U+200A,
// U+2028, U+2029, U+202F, U+205F, U+3000, and U+2581 (the escaped space in pieces).
static int is_space_cp(unsigned c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000 || c == 0x2581;
}

// Punctuation: ASCII ispunct (so also $ + < = > ^ ` | ~); Latin-1 ¡ § « ¶ · » ¿; General Punctuation
// U+2010–U+2027 and U+2030–U+205E (the rest of that block is spaces and invisible format characters);
// Supplemental Punctuation U+2E00–U+2E7F; CJK Symbols and Punctuation U+3001–U+3003, U+3008–U+3011,
// U+3014–U+301F, U+3030, U+303D (the block's letters, numerals and postal/other symbols excluded); vertical
// forms U+FE10–U+FE19; CJK compatibility and small form variants U+FE30–U+FE6B; fullwidth ASCII punctuation
// U+FF01–U+FF0F, U+FF1A–U+FF20, U+FF3B–U+FF40, U+FF5B–U+FF65 (incl. halfwidth CJK marks). Range tests only,
// no Unicode tables: other scripts' marks (e.g. Arabic comma, Devanagari danda) are not recognised.
static int is_punct_cp(unsigned c) {
    if (c < 0x80)
        return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) ||
               (c >= 0x7B && c <= 0x7E);
    if (c < 0x100)
        return c == 0xA1 || c == 0xA7 || c == 0xAB || c == 0xB6 || c == 0xB7 || c == 0xBB || c == 0xBF;
    if (c >= 0x2010 && c <= 0x2027) return 1;
    if (c >= 0x2030 && c <= 0x205E) return 1;
    if (c >= 0x2E00 && c <= 0x2E7F) return 1;
    if (c >= 0x3001 && c <= 0x303F)
        return c <= 0x3003 || (c >= 0x3008 && c <= 0x3011) || (c >= 0x3014 && c <= 0x301F) || c == 0x3030 ||
               c == 0x303D;
    if (c >= 0xFE10 && c <= 0xFE19) return 1;
    if (c >= 0xFE30 && c <= 0xFE6B) return 1;
    return (c >= 0xFF01 && c <= 0xFF0F) || (c >= 0xFF1A && c <= 0xFF20) || (c >= 0xFF3B && c <= 0xFF40) ||
           (c >= 0xFF5B && c <= 0xFF65);
}

int tok_text_is_punct(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    int n_punct = 0;
    size_t i = 0;
    if (!s) return 0;
    while (i < n) {
        unsigned cp;
        int r = utf8_scan(u + i, n - i, &cp);
        if (r <= 0) return 0;
        i += (size_t)r;
        if (is_space_cp(cp)) continue;
        if (!is_punct_cp(cp)) return 0;
        n_punct++;
    }
    return n_punct > 0;
}

// Control, unknown and unused pieces are never punctuation; a byte piece is when its byte is ASCII
// punctuation; other pieces by tok_text_is_punct on their text.
int tok_is_punct(const struct tok *t, int id) {
    if (!t || id < 0 || id >= tok_n_vocab(t)) return 0;
    int type = tok_type(t, id);
    const char *p = tok_piece(t, id);
    size_t n = strlen(p);
    if (type == TOK_CONTROL || type == TOK_UNKNOWN || type == TOK_UNUSED) return 0;
    if (type == TOK_BYTE) {
        int b = tok_text_byte_piece(p, n);
        if (b >= 0) return b < 0x80 && is_punct_cp((unsigned)b);
    }
    return tok_text_is_punct(p, n);
}
