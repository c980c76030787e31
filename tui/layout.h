// tui/layout.h — screen layout as a pure function of terminal size and a few flags (testable without a tty).
#pragma once

struct tui_rect {
    int x, y, w, h; // top-left corner and size in cells; w == 0 or h == 0 means absent
};

enum tui_layout_mode {
    TUI_LAYOUT_EMPTY,     // 0 columns or rows: nothing to draw
    TUI_LAYOUT_TOO_SMALL, // only `msg`: a one-line "terminal too small" notice
    TUI_LAYOUT_MINIMAL,   // status, chat, input; no hint bar, dashboard only when zoomed
    TUI_LAYOUT_NORMAL,    // status, body (chat and/or dashboard), input, hint bar
};

enum tui_dash_place {
    TUI_DASH_NONE,  // hidden: collapsed by the user or no room
    TUI_DASH_RIGHT, // beside the chat (wide terminals)
    TUI_DASH_BELOW, // under the chat (narrow but tall terminals)
    TUI_DASH_FULL,  // zoomed: the whole body, no chat
};

#define TUI_LAYOUT_COLLAPSED 1u // the user hid the dashboard
#define TUI_LAYOUT_ZOOM 2u      // the user gave the dashboard the whole body (wins over COLLAPSED)

// The thresholds the layout rules use (tests check against them).
#define TUI_MIN_COLS 20 // below this width, or TUI_MIN_ROWS height: too small
#define TUI_MIN_ROWS 6
#define TUI_NORMAL_COLS 40 // at least this wide and TUI_NORMAL_ROWS tall: normal mode, else minimal
#define TUI_NORMAL_ROWS 12
#define TUI_RIGHT_COLS 100   // dashboard beside the chat from this width (and TUI_DASH_MIN_ROWS)
#define TUI_DASH_MIN_ROWS 16 // no automatic dashboard below this height
#define TUI_INPUT_MAX_ROWS 6 // the input grows up to this many rows (fewer on short terminals)

struct tui_layout {
    int cols, rows;
    int mode;       // enum tui_layout_mode
    int dash_place; // enum tui_dash_place
    struct tui_rect status, chat, dash, input, hints, msg;
};

// Computes the layout of a cols x rows terminal. input_lines: rows the input text wants (clamped to what
// the screen allows). flags: TUI_LAYOUT_*. Every rectangle lies inside the screen, none overlap, sizes are
// never negative; absent parts are all-zero rectangles. Rules: status on the top row; input above the hint
// bar at the bottom; dashboard right of the chat from TUI_RIGHT_COLS columns, else below it from
// TUI_DASH_MIN_ROWS rows, else hidden (unless zoomed).
void tui_layout_compute(int cols, int rows, int input_lines, unsigned flags, struct tui_layout *out);

// How the dashboard splits its inner area between the info column (memory, speed, selection) and the
// layer x head grid: side by side when the grid's wanted width plus a readable info column fit, else
// stacked with the info on top: the grid keeps min(grid_h_want, max(3, h/2)) rows, the info at most
// info_h_want of the rest.
struct tui_dash_plan {
    int side_by_side;
    struct tui_rect info, grid;
};
#define TUI_DASH_INFO_MIN_W 36
void tui_dash_plan_compute(struct tui_rect inner, int grid_w_want, int grid_h_want, int info_h_want,
                           struct tui_dash_plan *out);

// 1 when the two rectangles share a cell.
int tui_rect_overlap(struct tui_rect a, struct tui_rect b);
// 1 when r lies inside outer (an empty r is inside anything).
int tui_rect_inside(struct tui_rect r, struct tui_rect outer);
