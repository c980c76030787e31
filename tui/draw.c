// tui/draw.c — clipped UTF-8 text and shapes on stdscr (cchar_t cells, combining marks merged).
#include "tui/draw.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <wchar.h>

#include "tui/meter.h"
#include "tui/text.h"

#if TUI_HAVE_CURSES
// One screen cell being assembled: a base character and the combining marks that follow it.
struct cell {
    wchar_t wc[CCHARW_MAX + 1];
    int n;
    int y, x;
};

static void cell_flush(struct cell *c, attr_t a) {
    if (c->n == 0) return;
    c->wc[c->n] = 0;
    cchar_t cc;
    if (setcchar(&cc, c->wc, a & ~A_COLOR, (short)PAIR_NUMBER(a), NULL) == OK) mvadd_wch(c->y, c->x, &cc);
    c->n = 0;
}

int tui_put(const struct tui_theme *th, int y, int x, int maxw, const char *s, size_t len, attr_t a) {
    if (maxw <= 0 || y < 0 || x < 0 || y >= LINES || x >= COLS) return 0;
    if (x + maxw > COLS) maxw = COLS - x;
    struct cell c = {.n = 0};
    int col = 0;
    size_t i = 0;
    while (i < len) {
        uint32_t cp = tui_utf8_next(s, len, &i);
        int w = tui_cp_width(cp);
        if (!th->utf8 && cp >= 0x80) cp = '?', w = 1;
        if (w == 0) {
            // a combining mark joins the cell being built; controls and stray marks are skipped
            if (cp >= 0x300 && c.n > 0 && c.n < CCHARW_MAX) c.wc[c.n++] = (wchar_t)cp;
            continue;
        }
        if (col + w > maxw) break;
        cell_flush(&c, a);
        if (th->utf8 && cp >= 0x80 && wcwidth((wchar_t)cp) < 0) cp = TUI_CP_REPLACEMENT; // unknown to libc
        c.wc[0] = (wchar_t)cp;
        c.n = 1;
        c.y = y, c.x = x + col;
        col += w;
    }
    cell_flush(&c, a);
    return col;
}

int tui_puts(const struct tui_theme *th, int y, int x, int maxw, const char *s, attr_t a) {
    return tui_put(th, y, x, maxw, s, strlen(s), a);
}

int tui_putf(const struct tui_theme *th, int y, int x, int maxw, attr_t a, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return tui_puts(th, y, x, maxw, buf, a);
}

int tui_puts_fit(const struct tui_theme *th, int y, int x, int maxw, const char *s, attr_t a) {
    size_t len = strlen(s);
    if (maxw <= 0) return 0;
    if (tui_str_width(s, len) <= maxw) return tui_put(th, y, x, maxw, s, len, a);
    int used = tui_put(th, y, x, maxw - 1, s, len, a);
    return used + tui_puts(th, y, x + used, 1, th->g->ellipsis, a);
}

void tui_fill(struct tui_rect r, attr_t a) {
    if (r.w <= 0 || r.h <= 0) return;
    cchar_t sp;
    wchar_t w[2] = {L' ', 0};
    setcchar(&sp, w, a & ~A_COLOR, (short)PAIR_NUMBER(a), NULL);
    for (int yy = r.y; yy < r.y + r.h && yy < LINES; yy++)
        for (int xx = r.x; xx < r.x + r.w && xx < COLS; xx++)
            mvadd_wch(yy, xx, &sp);
}

void tui_repeat(const struct tui_theme *th, int y, int x, int n, const char *glyph, attr_t a) {
    for (int i = 0; i < n; i++)
        tui_puts(th, y, x + i, 1, glyph, a);
}

void tui_meter(const struct tui_theme *th, int y, int x, int w, double frac, attr_t fill, attr_t empty) {
    int full, eighths;
    tui_meter_cells(frac, w, &full, &eighths);
    tui_repeat(th, y, x, full, th->g->full, fill);
    int at = full;
    if (eighths > 0 && at < w) {
        // the partial cell: its left part filled, the rest the empty background
        tui_puts(th, y, x + at, 1, th->g->eighths[eighths], fill);
        at++;
    }
    tui_repeat(th, y, x + at, w - at, th->g->empty, empty);
}
#else // built without ncurses: nothing to draw on

int tui_put(const struct tui_theme *th, int y, int x, int maxw, const char *s, size_t len, attr_t a) {
    (void)th, (void)y, (void)x, (void)maxw, (void)s, (void)len, (void)a;
    return 0;
}
int tui_puts(const struct tui_theme *th, int y, int x, int maxw, const char *s, attr_t a) {
    return tui_put(th, y, x, maxw, s, strlen(s), a);
}
int tui_putf(const struct tui_theme *th, int y, int x, int maxw, attr_t a, const char *fmt, ...) {
    (void)th, (void)y, (void)x, (void)maxw, (void)a, (void)fmt;
    return 0;
}
int tui_puts_fit(const struct tui_theme *th, int y, int x, int maxw, const char *s, attr_t a) {
    return tui_puts(th, y, x, maxw, s, a);
}
void tui_fill(struct tui_rect r, attr_t a) { (void)r, (void)a; }
void tui_repeat(const struct tui_theme *th, int y, int x, int n, const char *glyph, attr_t a) {
    (void)th, (void)y, (void)x, (void)n, (void)glyph, (void)a;
}
void tui_meter(const struct tui_theme *th, int y, int x, int w, double frac, attr_t fill, attr_t empty) {
    (void)th, (void)y, (void)x, (void)w, (void)frac, (void)fill, (void)empty;
}
#endif
