// tui/text.h — UTF-8 decoding, display widths and word wrap by display width (pure: no terminal needed).
#pragma once
#include <stddef.h>
#include <stdint.h>

#define TUI_CP_REPLACEMENT 0xFFFDu

// Decodes the code point at s[*i] (*i < len) and advances *i past it. Invalid, overlong, surrogate or
// truncated sequences yield U+FFFD and advance exactly one byte, so every byte is consumed once.
uint32_t tui_utf8_next(const char *s, size_t len, size_t *i);
// Byte offset of the code point that ends at byte i (0 when i is 0). Mirrors tui_utf8_next: a byte that
// does not belong to a valid sequence ending at i counts as one code point of its own.
size_t tui_utf8_prev(const char *s, size_t len, size_t i);
// Writes cp as UTF-8 into out (room for 4 bytes); code points that cannot be encoded become U+FFFD.
// Returns the number of bytes written (1..4).
int tui_utf8_encode(uint32_t cp, char *out);

// Display columns of one code point: 0 for controls and combining/zero-width marks, 2 for wide characters
// (CJK, most emoji), else 1. Uses wcwidth(), so it follows the current LC_CTYPE as ncurses does; code points
// the locale does not know take one column (they are drawn as one replacement cell).
int tui_cp_width(uint32_t cp);
// Sum of tui_cp_width over a UTF-8 string ('\n' counts 0).
int tui_str_width(const char *s, size_t len);

// One display line of wrapped text: bytes [start, end) of the source, `cols` display columns wide.
struct tui_wrap_line {
    size_t start, end;
    int cols;
};

// Wraps UTF-8 text to `width` columns (values below 1 act as 1). Hard breaks at '\n'; soft breaks after
// runs of spaces (the spaces at a soft break are not part of either line); a word wider than the width is
// split between characters; a wide character never straddles two lines; zero-width marks stay with the
// character before them. A character wider than `width` itself gets a line of its own (cols > width).
// Writes at most `max` lines into `out` (out may be NULL) and returns the total number of lines, which is
// at least 1 (an empty text is one empty line).
int tui_wrap(const char *s, size_t len, int width, struct tui_wrap_line *out, int max);

// Copies `len` bytes of model or user text into a fresh, NUL-terminated string fit for display: tabs become
// four spaces, "\r\n" and lone '\r' become '\n', other C0/C1 controls and DEL are dropped, and invalid
// UTF-8 becomes U+FFFD. *out_len receives the length. NULL when out of memory.
char *tui_text_sanitize(const char *s, size_t len, size_t *out_len);
