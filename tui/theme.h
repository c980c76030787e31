// tui/theme.h — the TUI's palette (styles → curses attributes, policy colours) and glyph sets
// (UTF-8 or ASCII). Internal to tui/: this header and the ones below it use ncurses types.
#pragma once
#include <stdint.h>

#include "tui/term.h"

enum tui_style {
    TS_NORMAL,
    TS_DIM, // secondary text
    TS_BOLD,
    TS_USER,   // the user's messages
    TS_ASSIST, // the model's messages
    TS_NOTICE, // app notices in the chat
    TS_ERROR,
    TS_STATUS,    // status bar
    TS_STATUS_HI, // highlighted field in the status bar
    TS_HINT,      // key-hint bar text
    TS_HINT_KEY,  // key names in the hint bar
    TS_BORDER,    // pane borders and titles
    TS_FOCUS,     // border/title of the focused pane
    TS_SELECT,    // the selected grid cell
    TS_METER_LOW, // meter fill, by level
    TS_METER_MID,
    TS_METER_HIGH,
    TS_METER_EMPTY, // meter background
    TS_SPARK,
    TS_GOOD,      // savings
    TS_POL_GREEN, // policy colours (see tui_theme_policy_style)
    TS_POL_CYAN,
    TS_POL_BLUE,
    TS_POL_YELLOW,
    TS_POL_MAGENTA,
    TS_POL_RED,
    TS_POL_WHITE,
    TS_COUNT
};

// Glyphs for one character set. Strings are UTF-8 (or plain ASCII in the ASCII set).
struct tui_glyphs {
    const char *spark[9];                   // sparkline levels 0..8
    const char *eighths[8];                 // partial meter cell, 0..7 eighths ([0] unused)
    const char *full;                       // full meter cell
    const char *empty;                      // empty meter cell
    const char *shade[5];                   // retained-token shade ramp, low..high
    const char *hline, *vline, *cross_down; // borders
    const char *spinner[10];
    int n_spinner;
    const char *ellipsis;
    const char *up, *down, *left, *right; // scroll markers
    const char *user_mark;                // gutter of the user's messages
};

// What every drawing function needs: style attributes and the glyph set of the open screen.
struct tui_theme {
    attr_t attr[TS_COUNT];      // curses attributes (colour pair included) per enum tui_style
    const struct tui_glyphs *g; // UTF-8 or ASCII glyphs
    int utf8;                   // the locale's charset is UTF-8 (else non-ASCII text shows as '?')
    int color;                  // colours are in use
};

// Fills th for the current screen: colour pairs when use_color and the terminal has colours (8 suffice),
// else attributes only (bold, dim, reverse, underline).
void tui_theme_init(struct tui_theme *th, int use_color, int utf8);
// The style of a head policy (enum kv_comp bits): from green (keeps least) to red (keeps everything).
int tui_theme_policy_style(uint32_t comps);
const struct tui_glyphs *tui_theme_glyphs(int utf8);
