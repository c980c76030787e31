// tui/draw.h — clipped drawing primitives on the curses screen (UTF-8 text, fills, lines, meters).
// Internal to tui/. Nothing is ever drawn outside the given width, so panes cannot spill into each other.
#pragma once
#include <stddef.h>

#include "tui/layout.h"
#include "tui/theme.h"

// Draws UTF-8 text at (y, x) using at most maxw columns; combining marks join their base cell, invalid
// bytes show as U+FFFD (as '?' when the locale is not UTF-8), controls are skipped, a wide character that
// does not fit entirely is not drawn. Returns the columns used.
int tui_put(const struct tui_theme *th, int y, int x, int maxw, const char *s, size_t len, attr_t a);
// tui_put of a NUL-terminated string.
int tui_puts(const struct tui_theme *th, int y, int x, int maxw, const char *s, attr_t a);
// printf into a line buffer (truncated at 1 KiB), then tui_puts.
int tui_putf(const struct tui_theme *th, int y, int x, int maxw, attr_t a, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
// Like tui_puts but cuts text that does not fit with an ellipsis in the last column.
int tui_puts_fit(const struct tui_theme *th, int y, int x, int maxw, const char *s, attr_t a);
// Fills a rectangle with spaces in attribute a.
void tui_fill(struct tui_rect r, attr_t a);
// Repeats a (one-column) glyph n times from (y, x).
void tui_repeat(const struct tui_theme *th, int y, int x, int n, const char *glyph, attr_t a);
// A horizontal meter of `w` cells filled to frac (clamped to [0,1]): partial cells in eighths.
void tui_meter(const struct tui_theme *th, int y, int x, int w, double frac, attr_t fill, attr_t empty);
