// tui/theme.c — colour pairs and attribute styles (with a colourless fallback), glyph sets.
#include "tui/theme.h"

#include "kvcache/kv_stats.h"

#if TUI_HAVE_CURSES
void tui_theme_init(struct tui_theme *th, int use_color, int utf8) {
    // Colourless defaults: only bold, dim, reverse and underline, so NO_COLOR stays readable.
    attr_t a[TS_COUNT] = {0};
    a[TS_DIM] = A_DIM;
    a[TS_BOLD] = A_BOLD;
    a[TS_USER] = A_BOLD;
    a[TS_NOTICE] = A_DIM;
    a[TS_ERROR] = A_BOLD | A_UNDERLINE;
    a[TS_STATUS] = A_REVERSE;
    a[TS_STATUS_HI] = A_REVERSE | A_BOLD;
    a[TS_HINT_KEY] = A_REVERSE;
    a[TS_BORDER] = A_DIM;
    a[TS_FOCUS] = A_BOLD;
    a[TS_SELECT] = A_REVERSE | A_BOLD;
    a[TS_METER_HIGH] = A_BOLD;
    a[TS_METER_EMPTY] = A_DIM;
    a[TS_GOOD] = A_BOLD;
    a[TS_POL_RED] = A_BOLD;
    th->color = 0;
    if (use_color && has_colors() && start_color() == OK) {
        th->color = 1;
        short bg = use_default_colors() == OK ? -1 : COLOR_BLACK;
        // pair numbers: 1..n, one per foreground (8-colour safe)
        static const short fg[] = {COLOR_GREEN,   COLOR_CYAN, COLOR_BLUE,  COLOR_YELLOW,
                                   COLOR_MAGENTA, COLOR_RED,  COLOR_WHITE, COLOR_BLACK};
        for (short i = 0; i < 8; i++)
            init_pair((short)(i + 1), fg[i], bg);
        init_pair(9, COLOR_BLACK, COLOR_CYAN);   // status bar
        init_pair(10, COLOR_BLACK, COLOR_WHITE); // hint keys
        init_pair(11, COLOR_WHITE, COLOR_BLUE);  // selection
#define P(n) ((attr_t)COLOR_PAIR(n))
        a[TS_USER] = P(2) | A_BOLD;
        a[TS_NOTICE] = P(4);
        a[TS_ERROR] = P(6) | A_BOLD;
        a[TS_STATUS] = P(9);
        a[TS_STATUS_HI] = P(9) | A_BOLD;
        a[TS_HINT_KEY] = P(10);
        a[TS_BORDER] = P(3);
        a[TS_FOCUS] = P(2) | A_BOLD;
        a[TS_SELECT] = P(11) | A_BOLD;
        a[TS_METER_LOW] = P(1);
        a[TS_METER_MID] = P(4);
        a[TS_METER_HIGH] = P(6);
        a[TS_METER_EMPTY] = A_DIM;
        a[TS_SPARK] = P(2);
        a[TS_GOOD] = P(1) | A_BOLD;
        a[TS_POL_GREEN] = P(1);
        a[TS_POL_CYAN] = P(2);
        a[TS_POL_BLUE] = P(3) | A_BOLD;
        a[TS_POL_YELLOW] = P(4);
        a[TS_POL_MAGENTA] = P(5);
        a[TS_POL_RED] = P(6) | A_BOLD;
        a[TS_POL_WHITE] = P(7);
#undef P
    }
    for (int i = 0; i < TS_COUNT; i++)
        th->attr[i] = a[i];
    th->utf8 = utf8;
    th->g = tui_theme_glyphs(utf8);
}
#else
void tui_theme_init(struct tui_theme *th, int use_color, int utf8) {
    (void)use_color;
    for (int i = 0; i < TS_COUNT; i++)
        th->attr[i] = 0;
    th->color = 0;
    th->utf8 = utf8;
    th->g = tui_theme_glyphs(utf8);
}
#endif

int tui_theme_policy_style(uint32_t c) {
    if (c & KV_C_FULL) return (c & KV_C_WINDOW) ? TS_POL_WHITE : TS_POL_RED;
    c &= ~(uint32_t)KV_C_WINDOW;
    if (c & KV_C_SELECT) return TS_POL_MAGENTA;
    if (c == KV_C_LOCAL) return TS_POL_MAGENTA;
    if (c & KV_C_LOCAL) return TS_POL_YELLOW;
    if (c & KV_C_FREQ) return TS_POL_BLUE;
    if (c & KV_C_PUNCT) return TS_POL_CYAN;
    if (c & KV_C_SPECIAL) return TS_POL_GREEN;
    return TS_NORMAL;
}

static const struct tui_glyphs glyphs_utf8 = {
    .spark = {" ", "\u2581", "\u2582", "\u2583", "\u2584", "\u2585", "\u2586", "\u2587", "\u2588"},
    .eighths = {" ", "\u258f", "\u258e", "\u258d", "\u258c", "\u258b", "\u258a", "\u2589"},
    .full = "\u2588",
    .empty = "\u2591",
    .shade = {"\u2581", "\u2582", "\u2584", "\u2586", "\u2588"},
    .hline = "\u2500",
    .vline = "\u2502",
    .cross_down = "\u252c",
    .spinner = {"\u280b", "\u2819", "\u2839", "\u2838", "\u283c", "\u2834", "\u2826", "\u2827", "\u2807",
                "\u280f"},
    .n_spinner = 10,
    .ellipsis = "\u2026",
    .up = "\u25b2",
    .down = "\u25bc",
    .left = "\u25c0",
    .right = "\u25b6",
    .user_mark = "\u276f",
};

static const struct tui_glyphs glyphs_ascii = {
    .spark = {" ", ".", ",", "-", "~", "=", "+", "*", "#"},
    .eighths = {" ", " ", " ", "-", "-", "=", "=", "="},
    .full = "#",
    .empty = ".",
    .shade = {".", ":", "-", "=", "#"},
    .hline = "-",
    .vline = "|",
    .cross_down = "+",
    .spinner = {"|", "/", "-", "\\"},
    .n_spinner = 4,
    .ellipsis = "~",
    .up = "^",
    .down = "v",
    .left = "<",
    .right = ">",
    .user_mark = ">",
};

const struct tui_glyphs *tui_theme_glyphs(int utf8) { return utf8 ? &glyphs_utf8 : &glyphs_ascii; }
