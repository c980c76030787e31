// tui/text.c — UTF-8 decoding, display widths (wcwidth) and word wrap by display width.
#include "tui/text.h"

#include <stdlib.h>
#include <string.h>
#include <wchar.h>

uint32_t tui_utf8_next(const char *s, size_t len, size_t *i) {
    const unsigned char *u = (const unsigned char *)s;
    size_t p = *i;
    unsigned c = u[p];
    if (c < 0x80) {
        *i = p + 1;
        return c;
    }
    int n;
    uint32_t cp, min;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 1, cp = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 2, cp = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 3, cp = c & 0x07, min = 0x10000;
    } else {
        *i = p + 1;
        return TUI_CP_REPLACEMENT;
    }
    if (p + (size_t)n >= len) { // not enough bytes left for the whole sequence
        *i = p + 1;
        return TUI_CP_REPLACEMENT;
    }
    for (int k = 1; k <= n; k++) {
        unsigned cc = u[p + (size_t)k];
        if ((cc & 0xC0) != 0x80) {
            *i = p + 1;
            return TUI_CP_REPLACEMENT;
        }
        cp = (cp << 6) | (cc & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
        *i = p + 1;
        return TUI_CP_REPLACEMENT;
    }
    *i = p + (size_t)n + 1;
    return cp;
}

size_t tui_utf8_prev(const char *s, size_t len, size_t i) {
    if (i == 0) return 0;
    if (i > len) i = len;
    for (size_t k = 1; k <= 4 && k <= i; k++) {
        size_t p = i - k;
        unsigned c = (unsigned char)s[p];
        if ((c & 0xC0) == 0x80) continue; // a continuation byte cannot start a code point
        size_t q = p;
        tui_utf8_next(s, len, &q);
        return q == i ? p : i - 1;
    }
    return i - 1;
}

int tui_utf8_encode(uint32_t cp, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) cp = TUI_CP_REPLACEMENT;
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

int tui_cp_width(uint32_t cp) {
    if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp < 0xA0)) return 0;
    if (cp < 0x7F) return 1;
    if (cp == TUI_CP_REPLACEMENT) return 1;
    int w = wcwidth((wchar_t)cp);
    if (w < 0) return 1; // unknown to the locale: drawn as one replacement cell
    return w > 2 ? 2 : w;
}

int tui_str_width(const char *s, size_t len) {
    int w = 0;
    size_t i = 0;
    while (i < len)
        w += tui_cp_width(tui_utf8_next(s, len, &i));
    return w;
}

// Appends one line to the wrap output (when there is room) and returns the new count.
static int wrap_emit(struct tui_wrap_line *out, int max, int n, size_t start, size_t end, int cols) {
    if (out && n < max) {
        out[n].start = start;
        out[n].end = end;
        out[n].cols = cols;
    }
    return n + 1;
}

int tui_wrap(const char *s, size_t len, int width, struct tui_wrap_line *out, int max) {
    if (width < 1) width = 1;
    int n = 0;
    size_t line_start = 0;
    int col = 0;
    // The last soft-break opportunity on the current line: the line would end at trim_end (trim_cols wide)
    // and the next one start at brk (where the line is brk_cols wide so far). has_brk = 0 when none.
    int has_brk = 0;
    size_t trim_end = 0, brk = 0;
    int trim_cols = 0, brk_cols = 0;
    int in_spaces = 0;
    int ended_soft = 0; // the text so far ended with a soft break (so no empty line follows it)
    size_t i = 0;
    while (i < len) {
        if (s[i] == '\n') {
            n = wrap_emit(out, max, n, line_start, i, col);
            i++;
            line_start = i, col = 0, has_brk = 0, in_spaces = 0, ended_soft = 0;
            continue;
        }
        size_t j = i;
        uint32_t cp = tui_utf8_next(s, len, &j);
        int w = tui_cp_width(cp);
        if (cp == ' ') {
            if (!in_spaces) trim_end = i, trim_cols = col;
            in_spaces = 1;
            if (col + w > width) {
                // The space run reaches the edge: end the line before it and skip the run.
                n = wrap_emit(out, max, n, line_start, trim_end, trim_cols);
                while (j < len && s[j] == ' ')
                    j++;
                i = j;
                line_start = i, col = 0, has_brk = 0, in_spaces = 0, ended_soft = 1;
                continue;
            }
            col += w;
            i = j;
            has_brk = 1, brk = i, brk_cols = col;
            continue;
        }
        in_spaces = 0;
        if (w > 0 && col + w > width && col > 0) {
            if (has_brk && brk > line_start) {
                n = wrap_emit(out, max, n, line_start, trim_end, trim_cols);
                line_start = brk;
                col -= brk_cols;
            } else {
                n = wrap_emit(out, max, n, line_start, i, col);
                line_start = i;
                col = 0;
            }
            has_brk = 0;
            ended_soft = 1;
            continue; // re-examine this character on the new line
        }
        col += w;
        i = j;
        ended_soft = 0;
    }
    if (n == 0 || line_start < len || !ended_soft) n = wrap_emit(out, max, n, line_start, len, col);
    return n;
}

char *tui_text_sanitize(const char *s, size_t len, size_t *out_len) {
    // Worst cases: a tab becomes 4 bytes; an invalid byte becomes 3 (U+FFFD).
    size_t cap = len * 4 + 1;
    char *o = malloc(cap);
    if (!o) return NULL;
    size_t n = 0, i = 0;
    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\t') {
            memcpy(o + n, "    ", 4);
            n += 4, i++;
            continue;
        }
        if (c == '\r') {
            o[n++] = '\n';
            i++;
            if (i < len && s[i] == '\n') i++;
            continue;
        }
        if (c == '\n') {
            o[n++] = '\n';
            i++;
            continue;
        }
        uint32_t cp = tui_utf8_next(s, len, &i);
        if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp < 0xA0)) continue;
        n += (size_t)tui_utf8_encode(cp, o + n);
    }
    o[n] = 0;
    if (out_len) *out_len = n;
    return o;
}
