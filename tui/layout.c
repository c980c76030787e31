// tui/layout.c — terminal size (+ collapse/zoom flags) to rectangles; pure so tests can sweep sizes.
#include "tui/layout.h"

#include <string.h>

static struct tui_rect rect(int x, int y, int w, int h) {
    struct tui_rect r = {x, y, w < 0 ? 0 : w, h < 0 ? 0 : h};
    if (r.w == 0 || r.h == 0) r.x = r.y = r.w = r.h = 0;
    return r;
}

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

void tui_layout_compute(int cols, int rows, int input_lines, unsigned flags, struct tui_layout *L) {
    memset(L, 0, sizeof *L);
    L->cols = cols < 0 ? 0 : cols;
    L->rows = rows < 0 ? 0 : rows;
    if (L->cols == 0 || L->rows == 0) {
        L->mode = TUI_LAYOUT_EMPTY;
        return;
    }
    cols = L->cols, rows = L->rows;
    if (cols < TUI_MIN_COLS || rows < TUI_MIN_ROWS) {
        L->mode = TUI_LAYOUT_TOO_SMALL;
        L->msg = rect(0, rows / 2, cols, 1);
        return;
    }
    int normal = cols >= TUI_NORMAL_COLS && rows >= TUI_NORMAL_ROWS;
    L->mode = normal ? TUI_LAYOUT_NORMAL : TUI_LAYOUT_MINIMAL;

    int hints_h = normal ? 1 : 0;
    int max_in = normal ? clampi((rows - 3) / 3, 1, TUI_INPUT_MAX_ROWS) : clampi((rows - 2) / 3, 1, 2);
    int in_h = clampi(input_lines, 1, max_in);
    L->status = rect(0, 0, cols, 1);
    L->hints = rect(0, rows - hints_h, cols, hints_h);
    L->input = rect(0, rows - hints_h - in_h, cols, in_h);
    int body_y = 1, body_h = rows - 1 - in_h - hints_h; // >= 2 given the minimum sizes
    struct tui_rect body = rect(0, body_y, cols, body_h);

    int place = TUI_DASH_NONE;
    if (flags & TUI_LAYOUT_ZOOM)
        place = TUI_DASH_FULL;
    else if (!normal || (flags & TUI_LAYOUT_COLLAPSED))
        place = TUI_DASH_NONE;
    else if (cols >= TUI_RIGHT_COLS && rows >= TUI_DASH_MIN_ROWS)
        place = TUI_DASH_RIGHT;
    else if (rows >= TUI_DASH_MIN_ROWS)
        place = TUI_DASH_BELOW;
    L->dash_place = place;

    switch (place) {
    case TUI_DASH_FULL:
        L->dash = body;
        break;
    case TUI_DASH_RIGHT: {
        int dw = clampi(cols * 2 / 5, 40, 80);
        L->chat = rect(0, body_y, cols - dw, body_h);
        L->dash = rect(cols - dw, body_y, dw, body_h);
        break;
    }
    case TUI_DASH_BELOW: {
        int dh = clampi(body_h / 2, 6, 18);
        if (body_h - dh < 4) dh = body_h - 4;
        L->chat = rect(0, body_y, cols, body_h - dh);
        L->dash = rect(0, body_y + body_h - dh, cols, dh);
        break;
    }
    default:
        L->chat = body;
        break;
    }
}

void tui_dash_plan_compute(struct tui_rect in, int grid_w_want, int grid_h_want, int info_h_want,
                           struct tui_dash_plan *P) {
    memset(P, 0, sizeof *P);
    if (in.w <= 0 || in.h <= 0) return;
    if (grid_w_want < 1) grid_w_want = 1;
    if (in.w >= grid_w_want + 2 + TUI_DASH_INFO_MIN_W && in.h >= 3) {
        P->side_by_side = 1;
        P->grid = rect(in.x, in.y, grid_w_want, in.h);
        P->info = rect(in.x + grid_w_want + 2, in.y, in.w - grid_w_want - 2, in.h);
        return;
    }
    // the grid keeps what it wants up to half the height (at least 3 rows); the info gets the rest
    int grid_keep = grid_h_want < 0 ? 0 : grid_h_want;
    int half = in.h / 2 > 3 ? in.h / 2 : 3;
    if (grid_keep > half) grid_keep = half;
    int ih = clampi(info_h_want, 0, in.h);
    if (ih > in.h - grid_keep) ih = in.h - grid_keep;
    if (ih < 0) ih = 0;
    P->info = rect(in.x, in.y, in.w, ih);
    P->grid = rect(in.x, in.y + ih, in.w, in.h - ih);
}

int tui_rect_overlap(struct tui_rect a, struct tui_rect b) {
    if (a.w <= 0 || a.h <= 0 || b.w <= 0 || b.h <= 0) return 0;
    return a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
}

int tui_rect_inside(struct tui_rect r, struct tui_rect o) {
    if (r.w == 0 || r.h == 0) return 1;
    if (r.w < 0 || r.h < 0) return 0;
    return r.x >= o.x && r.y >= o.y && r.x + r.w <= o.x + o.w && r.y + r.h <= o.y + o.h;
}
