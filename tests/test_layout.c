// tests/test_layout.c — the TUI's pure parts: layout sweep, word wrap by display width, line editor,
// history, sample ring/sparkline, number formatting, stats copies. No terminal needed.
#include <errno.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/test.h"
#include "tui/input.h"
#include "tui/layout.h"
#include "tui/meter.h"
#include "tui/ring.h"
#include "tui/text.h"
#include "tui/tui.h"

// ---- layout ----------------------------------------------------------------------------------------------

static int rects_ok(const struct tui_layout *L) {
    struct tui_rect screen = {0, 0, L->cols, L->rows};
    const struct tui_rect *r[] = {&L->status, &L->chat, &L->dash, &L->input, &L->hints, &L->msg};
    int n = (int)(sizeof r / sizeof r[0]);
    for (int i = 0; i < n; i++) {
        if (r[i]->w < 0 || r[i]->h < 0 || r[i]->x < 0 || r[i]->y < 0) return 0;
        if (!tui_rect_inside(*r[i], screen)) return 0;
        for (int j = i + 1; j < n; j++)
            if (tui_rect_overlap(*r[i], *r[j])) return 0;
    }
    return 1;
}

static int area(struct tui_rect r) { return r.w * r.h; }

static void test_layout_sizes(void) {
    static const int sizes[][2] = {{1, 1},    {2, 1},     {1, 2},   {5, 3},    {19, 10},  {20, 5},
                                   {20, 6},   {20, 10},   {30, 8},  {39, 20},  {40, 11},  {40, 12},
                                   {60, 15},  {80, 24},   {99, 40}, {100, 15}, {100, 30}, {120, 16},
                                   {160, 48}, {300, 100}, {0, 0},   {0, 24},   {80, 0},   {-3, -3}};
    int n = (int)(sizeof sizes / sizeof sizes[0]);
    for (int i = 0; i < n; i++) {
        for (unsigned flags = 0; flags < 4; flags++) {
            for (int in_lines = 0; in_lines <= 12; in_lines += 3) {
                int c = sizes[i][0], r = sizes[i][1];
                struct tui_layout L;
                tui_layout_compute(c, r, in_lines, flags, &L);
                CHECK_MSG(rects_ok(&L), "%dx%d flags %u input %d: rectangles out of screen or overlapping", c,
                          r, flags, in_lines);
                if (c <= 0 || r <= 0) {
                    CHECK_EQ_INT(L.mode, TUI_LAYOUT_EMPTY);
                    continue;
                }
                if (c < TUI_MIN_COLS || r < TUI_MIN_ROWS) {
                    CHECK_EQ_INT(L.mode, TUI_LAYOUT_TOO_SMALL);
                    CHECK(L.msg.h == 1 && L.msg.w == c);
                    CHECK(area(L.input) == 0 && area(L.chat) == 0 && area(L.status) == 0);
                    continue;
                }
                // input and status always present; the input gets at least one row, at most the cap
                CHECK_MSG(L.input.h >= 1 && L.input.w == c, "%dx%d input", c, r);
                CHECK(L.input.h <= TUI_INPUT_MAX_ROWS);
                CHECK(L.status.h == 1 && L.status.w == c && L.status.y == 0);
                if (in_lines >= 1 && in_lines <= 2) CHECK_EQ_INT(L.input.h, in_lines);
                int normal = c >= TUI_NORMAL_COLS && r >= TUI_NORMAL_ROWS;
                CHECK_EQ_INT(L.mode, normal ? TUI_LAYOUT_NORMAL : TUI_LAYOUT_MINIMAL);
                CHECK_EQ_INT(L.hints.h, normal ? 1 : 0);
                if (normal) CHECK(L.hints.y == r - 1);
                // the screen is used completely: status + body + input + hints
                int body = area(L.chat) + area(L.dash);
                CHECK_MSG(area(L.status) + body + area(L.input) + area(L.hints) == c * r,
                          "%dx%d flags %u: cells unused", c, r, flags);
                // dashboard placement rule
                int want;
                if (flags & TUI_LAYOUT_ZOOM)
                    want = TUI_DASH_FULL;
                else if (!normal || (flags & TUI_LAYOUT_COLLAPSED))
                    want = TUI_DASH_NONE;
                else if (c >= TUI_RIGHT_COLS && r >= TUI_DASH_MIN_ROWS)
                    want = TUI_DASH_RIGHT;
                else if (r >= TUI_DASH_MIN_ROWS)
                    want = TUI_DASH_BELOW;
                else
                    want = TUI_DASH_NONE;
                CHECK_MSG(L.dash_place == want, "%dx%d flags %u: dash %d want %d", c, r, flags, L.dash_place,
                          want);
                switch (L.dash_place) {
                case TUI_DASH_NONE:
                    CHECK(area(L.dash) == 0 && area(L.chat) > 0);
                    break;
                case TUI_DASH_FULL:
                    CHECK(area(L.chat) == 0 && area(L.dash) > 0);
                    break;
                case TUI_DASH_RIGHT:
                    CHECK(L.dash.x == L.chat.x + L.chat.w && L.dash.y == L.chat.y && L.dash.h == L.chat.h);
                    CHECK(L.dash.w >= 40 && L.chat.w >= 50);
                    break;
                case TUI_DASH_BELOW:
                    CHECK(L.dash.y == L.chat.y + L.chat.h && L.dash.w == c && L.chat.w == c);
                    CHECK(L.dash.h >= 6 && L.chat.h >= 4);
                    break;
                }
            }
        }
    }
    // spot checks of the sizes the issue names
    struct tui_layout L;
    tui_layout_compute(1, 1, 1, 0, &L);
    CHECK(L.mode == TUI_LAYOUT_TOO_SMALL && L.msg.x == 0 && L.msg.y == 0 && L.msg.w == 1 && L.msg.h == 1);
    tui_layout_compute(20, 10, 1, 0, &L);
    CHECK(L.mode == TUI_LAYOUT_MINIMAL && L.chat.h >= 5);
    tui_layout_compute(80, 24, 1, 0, &L);
    CHECK(L.dash_place == TUI_DASH_BELOW && L.chat.h >= 8 && L.dash.h >= 8);
    tui_layout_compute(160, 48, 1, 0, &L);
    CHECK(L.dash_place == TUI_DASH_RIGHT && L.dash.w >= 60 && L.chat.w >= 90);
    tui_layout_compute(160, 48, 1, TUI_LAYOUT_COLLAPSED, &L);
    CHECK(L.dash_place == TUI_DASH_NONE && L.chat.w == 160);
    tui_layout_compute(300, 100, 30, 0, &L);
    CHECK(L.input.h == TUI_INPUT_MAX_ROWS && L.dash.w <= 80);
}

static void test_dash_plan(void) {
    static const struct tui_rect inners[] = {{0, 0, 0, 0},     {1, 1, 1, 1},    {0, 10, 80, 9},
                                             {100, 1, 59, 30}, {96, 1, 63, 44}, {0, 1, 159, 30},
                                             {5, 5, 37, 2}};
    for (size_t i = 0; i < sizeof inners / sizeof inners[0]; i++) {
        for (int gw = 1; gw < 90; gw += 11) {
            for (int gh = 0; gh < 90; gh += 13) {
                struct tui_dash_plan P;
                struct tui_rect in = inners[i];
                tui_dash_plan_compute(in, gw, gh, 10, &P);
                CHECK(tui_rect_inside(P.info, in) && tui_rect_inside(P.grid, in));
                CHECK(!tui_rect_overlap(P.info, P.grid));
                CHECK(P.info.w >= 0 && P.info.h >= 0 && P.grid.w >= 0 && P.grid.h >= 0);
                if (P.side_by_side) CHECK(P.info.w >= TUI_DASH_INFO_MIN_W && P.grid.w == gw);
                if (!P.side_by_side && in.w > 0 && in.h > 0) {
                    int keep = gh < (in.h / 2 > 3 ? in.h / 2 : 3) ? gh : (in.h / 2 > 3 ? in.h / 2 : 3);
                    int want = in.h - keep < 10 ? in.h - keep : 10;
                    if (want < 0) want = 0;
                    CHECK_MSG(P.info.h == want && P.info.h + P.grid.h == in.h,
                              "plan %dx%d gh %d: info %d grid %d", in.w, in.h, gh, P.info.h, P.grid.h);
                }
            }
        }
    }
}

// ---- text ------------------------------------------------------------------------------------------------

// Wraps and returns the lines joined by '|' (for compact expectations) in out.
static int wrap_str(const char *s, int width, char *out, size_t cap) {
    struct tui_wrap_line lines[64];
    int n = tui_wrap(s, strlen(s), width, lines, 64);
    size_t o = 0;
    out[0] = 0;
    for (int i = 0; i < n && i < 64; i++) {
        int len = (int)(lines[i].end - lines[i].start);
        o += (size_t)snprintf(out + o, cap - o, "%s%.*s", i ? "|" : "", len, s + lines[i].start);
        if (lines[i].cols > width && tui_str_width(s + lines[i].start, lines[i].end - lines[i].start) > 2)
            return -1; // only a lone over-wide character may exceed the width
        if (lines[i].cols != tui_str_width(s + lines[i].start, lines[i].end - lines[i].start)) return -2;
    }
    return n;
}

#define CHECK_WRAP(s, w, expect)                                                                             \
    do {                                                                                                     \
        char got_[512];                                                                                      \
        int n_ = wrap_str(s, w, got_, sizeof got_);                                                          \
        CHECK_MSG(n_ > 0 && strcmp(got_, expect) == 0, "wrap(\"%s\", %d) = \"%s\" (n %d), want \"%s\"", s,   \
                  w, got_, n_, expect);                                                                      \
    } while (0)

static void test_utf8(void) {
    size_t i = 0;
    const char *s = "a\xC3\xA9\xE4\xB8\xAD\xF0\x9F\x98\x80";
    size_t n = strlen(s);
    CHECK_EQ_INT(tui_utf8_next(s, n, &i), 'a');
    CHECK_EQ_INT(tui_utf8_next(s, n, &i), 0xE9);
    CHECK_EQ_INT(tui_utf8_next(s, n, &i), 0x4E2D);
    CHECK_EQ_INT(tui_utf8_next(s, n, &i), 0x1F600);
    CHECK_EQ_INT(i, n);
    CHECK_EQ_INT(tui_utf8_prev(s, n, n), 6);
    CHECK_EQ_INT(tui_utf8_prev(s, n, 6), 3);
    CHECK_EQ_INT(tui_utf8_prev(s, n, 3), 1);
    // invalid: lone continuation, overlong, surrogate, truncated, > U+10FFFF: one U+FFFD per byte
    const char *bad[] = {"\x80", "\xC0\xAF", "\xED\xA0\x80", "\xE4\xB8", "\xF5\x80\x80\x80", "\xFF"};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        size_t j = 0, bl = strlen(bad[k]);
        CHECK_EQ_INT(tui_utf8_next(bad[k], bl, &j), TUI_CP_REPLACEMENT);
        CHECK_EQ_INT(j, 1);
    }
    char enc[4];
    CHECK_EQ_INT(tui_utf8_encode(0x1F600, enc), 4);
    CHECK(memcmp(enc, "\xF0\x9F\x98\x80", 4) == 0);
    CHECK_EQ_INT(tui_utf8_encode(0xD800, enc), 3); // surrogate -> U+FFFD
    CHECK(memcmp(enc, "\xEF\xBF\xBD", 3) == 0);
    // widths
    CHECK_EQ_INT(tui_cp_width('a'), 1);
    CHECK_EQ_INT(tui_cp_width(0x4E2D), 2);  // CJK
    CHECK_EQ_INT(tui_cp_width(0x1F600), 2); // emoji
    CHECK_EQ_INT(tui_cp_width(0x301), 0);   // combining acute
    CHECK_EQ_INT(tui_cp_width('\n'), 0);
    CHECK_EQ_INT(tui_cp_width(0x1B), 0);
    CHECK_EQ_INT(tui_cp_width(TUI_CP_REPLACEMENT), 1);
    CHECK_EQ_INT(tui_str_width("e\xCC\x81t\xC3\xA9", 5), 3);
    // sanitize
    size_t sl;
    char *c = tui_text_sanitize("a\tb\r\nc\x1b[31m\xFF", 13, &sl);
    CHECK(c && strcmp(c, "a    b\nc[31m\xEF\xBF\xBD") == 0);
    CHECK_EQ_INT(sl, strlen("a    b\nc[31m\xEF\xBF\xBD"));
    free(c);
}

static void test_wrap(void) {
    CHECK_WRAP("", 10, "");
    CHECK_WRAP("hello world", 11, "hello world");
    CHECK_WRAP("hello world", 5, "hello|world");
    CHECK_WRAP("hello world", 8, "hello|world");
    CHECK_WRAP("hello   world", 7, "hello|world");
    CHECK_WRAP("abcdefghij", 4, "abcd|efgh|ij");
    CHECK_WRAP("hi abcdefghij", 5, "hi|abcde|fghij");
    CHECK_WRAP("a\n\nb", 10, "a||b");
    CHECK_WRAP("line\n", 10, "line|");
    CHECK_WRAP("abc   ", 3, "abc");
    CHECK_WRAP("one two three four", 9, "one two|three|four");
    CHECK_WRAP("x", 0, "x");
    // CJK: each 2 columns, never split
    CHECK_WRAP("\xE4\xB8\xAD\xE6\x96\x87\xE5\xAD\x97\xE7\xAC\xA6", 5,
               "\xE4\xB8\xAD\xE6\x96\x87|\xE5\xAD\x97\xE7\xAC\xA6");
    CHECK_WRAP("a\xE4\xB8\xAD", 2, "a|\xE4\xB8\xAD");
    // emoji
    CHECK_WRAP("\xF0\x9F\x98\x80\xF0\x9F\x98\x80\xF0\x9F\x98\x80", 4,
               "\xF0\x9F\x98\x80\xF0\x9F\x98\x80|\xF0\x9F\x98\x80");
    // a wide character in a 1-column area gets a line of its own
    CHECK_WRAP("\xE4\xB8\xAD\xE6\x96\x87", 1, "\xE4\xB8\xAD|\xE6\x96\x87");
    // combining marks stay with their base (decomposed e-acute x4 at width 2)
    CHECK_WRAP("e\xCC\x81"
               "e\xCC\x81"
               "e\xCC\x81"
               "e\xCC\x81",
               2,
               "e\xCC\x81"
               "e\xCC\x81|e\xCC\x81"
               "e\xCC\x81");
    // invalid bytes count one column each
    CHECK_WRAP("\xFF\xFE\xFD", 2, "\xFF\xFE|\xFD");
    // every line within the width for a long mixed text, and lines cover the text in order
    const char *t = "Once upon a time, \xE4\xB8\xAD\xE6\x96\x87 there was a verylongwordthatdoesnotfit and "
                    "\xF0\x9F\x98\x80 emoji e\xCC\x81t\xC3\xA9.\nNew paragraph.";
    for (int w = 1; w < 40; w++) {
        struct tui_wrap_line lines[200];
        int n = tui_wrap(t, strlen(t), w, lines, 200);
        int ok = n > 0 && n <= 200;
        size_t prev_end = 0;
        for (int i = 0; ok && i < n; i++) {
            if (lines[i].cols > w && lines[i].cols > 2) ok = 0;
            if (lines[i].start < prev_end || lines[i].end < lines[i].start) ok = 0;
            prev_end = lines[i].end;
        }
        CHECK_MSG(ok, "mixed text at width %d", w);
        CHECK_EQ_INT(tui_wrap(t, strlen(t), w, NULL, 0), n);
    }
}

// ---- editor ----------------------------------------------------------------------------------------------

static void test_edit(void) {
    struct tui_edit e;
    CHECK(tui_edit_init(&e) == 0);
    tui_edit_insert(&e, "hello world", 11);
    CHECK(strcmp(e.buf, "hello world") == 0 && e.cur == 11);
    tui_edit_word_left(&e);
    CHECK_EQ_INT(e.cur, 6);
    tui_edit_kill_end(&e); // Ctrl+K
    CHECK(strcmp(e.buf, "hello ") == 0);
    tui_edit_yank(&e);
    CHECK(strcmp(e.buf, "hello world") == 0);
    tui_edit_home(&e); // Ctrl+A
    CHECK_EQ_INT(e.cur, 0);
    tui_edit_right(&e);
    tui_edit_right(&e);
    tui_edit_insert(&e, "\xC3\xA9", 2);
    CHECK(strcmp(e.buf, "he\xC3\xA9llo world") == 0 && e.cur == 4);
    tui_edit_left(&e);
    CHECK_EQ_INT(e.cur, 2);
    tui_edit_delete(&e);
    CHECK(strcmp(e.buf, "hello world") == 0 && e.cur == 2);
    tui_edit_end(&e); // Ctrl+E
    CHECK_EQ_INT(e.cur, 11);
    tui_edit_kill_word(&e); // Ctrl+W
    CHECK(strcmp(e.buf, "hello ") == 0);
    tui_edit_kill_word(&e);
    CHECK(strcmp(e.buf, "") == 0);
    tui_edit_insert(&e, "abc def", 7);
    tui_edit_left(&e);
    tui_edit_kill_start(&e); // Ctrl+U
    CHECK(strcmp(e.buf, "f") == 0 && e.cur == 0);
    tui_edit_backspace(&e); // at the start: nothing
    CHECK(strcmp(e.buf, "f") == 0);
    tui_edit_end(&e);
    tui_edit_backspace(&e);
    CHECK(e.len == 0 && e.cur == 0);
    // combining marks and wide characters move and delete as one
    tui_edit_insert(&e, "xe\xCC\x81\xE4\xB8\xAD", 7);
    tui_edit_left(&e);
    CHECK_EQ_INT(e.cur, 4);
    tui_edit_left(&e);
    CHECK_EQ_INT(e.cur, 1);
    tui_edit_right(&e);
    CHECK_EQ_INT(e.cur, 4);
    tui_edit_backspace(&e);
    CHECK(strcmp(e.buf, "x\xE4\xB8\xAD") == 0 && e.cur == 1);
    // sanitize on insert: controls dropped, CR -> newline, invalid -> U+FFFD
    tui_edit_clear(&e);
    tui_edit_insert(&e, "a\x01\rb\xFF", 5);
    CHECK(strcmp(e.buf, "a\nb\xEF\xBF\xBD") == 0);
    // multi-line: up/down keep the column, Home/End are per line
    tui_edit_set(&e, "first line\nsecond\nthird line", 28);
    CHECK_EQ_INT(tui_edit_line_up(&e), 0); // from the end of "third line" (col 10) to the end of "second"
    CHECK_EQ_INT(e.cur, 17);
    CHECK_EQ_INT(tui_edit_line_up(&e), 0);
    CHECK_EQ_INT(e.cur, 6);
    CHECK_EQ_INT(tui_edit_line_up(&e), -1);
    tui_edit_home(&e);
    CHECK_EQ_INT(e.cur, 0);
    CHECK_EQ_INT(tui_edit_line_down(&e), 0);
    CHECK_EQ_INT(e.cur, 11);
    tui_edit_end(&e);
    CHECK_EQ_INT(e.cur, 17);
    tui_edit_kill_end(&e); // at a line break: joins the lines
    CHECK(strcmp(e.buf, "first line\nsecondthird line") == 0);
    CHECK_EQ_INT(tui_edit_line_down(&e), -1);
    // geometry: wrapping and the cursor position
    int row, col;
    tui_edit_set(&e, "abcdefgh", 8);
    CHECK_EQ_INT(tui_edit_geometry(&e, 4, &row, &col), 3); // full last row: cursor on an extra row
    CHECK(row == 2 && col == 0);
    e.cur = 5;
    CHECK_EQ_INT(tui_edit_geometry(&e, 4, &row, &col), 2);
    CHECK(row == 1 && col == 1);
    tui_edit_set(&e, "ab\ncd", 5);
    CHECK_EQ_INT(tui_edit_geometry(&e, 10, &row, &col), 2);
    CHECK(row == 1 && col == 2);
    tui_edit_clear(&e);
    CHECK_EQ_INT(tui_edit_geometry(&e, 10, &row, &col), 1);
    CHECK(row == 0 && col == 0);
    tui_edit_free(&e);
}

static void test_history(void) {
    struct tui_history h;
    tui_history_init(&h, 3);
    CHECK(tui_history_prev(&h, "draft") == NULL);
    tui_history_add(&h, "one");
    tui_history_add(&h, "two");
    tui_history_add(&h, "two"); // duplicate of the newest: ignored
    tui_history_add(&h, "");
    CHECK_EQ_INT(h.n, 2);
    const char *s = tui_history_prev(&h, "typing");
    CHECK(s && strcmp(s, "two") == 0);
    s = tui_history_prev(&h, "ignored");
    CHECK(s && strcmp(s, "one") == 0);
    CHECK(tui_history_prev(&h, "x") == NULL);
    s = tui_history_next(&h);
    CHECK(s && strcmp(s, "two") == 0);
    s = tui_history_next(&h);
    CHECK(s && strcmp(s, "typing") == 0); // the draft comes back
    CHECK(tui_history_next(&h) == NULL);
    tui_history_add(&h, "three");
    tui_history_add(&h, "four"); // max 3: "one" drops
    CHECK(h.n == 3 && strcmp(h.items[0], "two") == 0);

    // file round trip with newlines and backslashes
    char dir[] = "/tmp/kvchat_hist_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char sub[256], path[300];
    snprintf(sub, sizeof sub, "%s/a/b/kvchat", dir);
    CHECK(tui_mkdir_p(sub) == 0);
    CHECK(tui_mkdir_p(sub) == 0); // exists already
    snprintf(path, sizeof path, "%s/history", sub);
    CHECK(tui_history_append_file(path, "multi\nline \\ text") == 0);
    CHECK(tui_history_append_file(path, "plain") == 0);
    struct tui_history h2;
    tui_history_init(&h2, 10);
    CHECK(tui_history_load(&h2, path) == 0);
    CHECK(h2.n == 2 && strcmp(h2.items[0], "multi\nline \\ text") == 0 && strcmp(h2.items[1], "plain") == 0);
    tui_history_free(&h2);
    // a write failure is reported, not fatal
    char bad[300];
    snprintf(bad, sizeof bad, "%s/missing/dir/history", dir);
    CHECK(tui_history_append_file(bad, "x") == -1);
    CHECK(tui_mkdir_p(path) == -1 && errno == ENOTDIR); // a file is in the way
    remove(path);
    char p1[300];
    snprintf(p1, sizeof p1, "%s/a/b/kvchat", dir), rmdir(p1);
    snprintf(p1, sizeof p1, "%s/a/b", dir), rmdir(p1);
    snprintf(p1, sizeof p1, "%s/a", dir), rmdir(p1);
    rmdir(dir);

    char out[256];
    CHECK(tui_history_path(out, sizeof out, "/x/data", "/home/u") == 0 &&
          strcmp(out, "/x/data/kvchat/history") == 0);
    CHECK(tui_history_path(out, sizeof out, "", "/home/u") == 0 &&
          strcmp(out, "/home/u/.local/share/kvchat/history") == 0);
    CHECK(tui_history_path(out, sizeof out, "relative", "/home/u") == 0 &&
          strcmp(out, "/home/u/.local/share/kvchat/history") == 0);
    CHECK(tui_history_path(out, sizeof out, NULL, NULL) == -1);
    CHECK(tui_history_path(out, 8, "/x/data", NULL) == -1);
    tui_history_free(&h);
}

// ---- ring, sparkline, meters, formatting -----------------------------------------------------------------

static void test_ring(void) {
    struct tui_ring r;
    CHECK(tui_ring_init(&r, 4) == 0);
    CHECK_EQ_INT(r.n, 0);
    CHECK(tui_ring_last(&r) == 0);
    unsigned char lv[8];
    CHECK_EQ_INT(tui_spark_levels(&r, 8, 0, lv), 0);
    for (int i = 1; i <= 6; i++)
        tui_ring_push(&r, i);
    CHECK(r.n == 4 && tui_ring_get(&r, 0) == 3 && tui_ring_get(&r, 3) == 6 && tui_ring_last(&r) == 6);
    CHECK(tui_ring_max(&r, 0) == 6 && tui_ring_max(&r, 2) == 6);
    CHECK_EQ_INT(tui_spark_levels(&r, 8, 0, lv), 4);
    CHECK(lv[0] == 4 && lv[3] == 8); // 3/6 -> 4, 6/6 -> 8
    CHECK_EQ_INT(tui_spark_levels(&r, 2, 12, lv), 2);
    CHECK(lv[0] == 4 && lv[1] == 4); // the newest two (5, 6) against 12
    tui_ring_clear(&r);
    tui_ring_push(&r, 0);
    tui_ring_push(&r, 0.001);
    CHECK_EQ_INT(tui_spark_levels(&r, 8, 100, lv), 2);
    CHECK(lv[0] == 0 && lv[1] == 1); // tiny but nonzero still shows
    tui_ring_free(&r);

    int full, eighths;
    tui_meter_cells(0.5, 10, &full, &eighths);
    CHECK(full == 5 && eighths == 0);
    tui_meter_cells(0.0625, 10, &full, &eighths);
    CHECK(full == 0 && eighths == 5);
    tui_meter_cells(2.0, 10, &full, &eighths);
    CHECK(full == 10 && eighths == 0);
    tui_meter_cells(-1, 10, &full, &eighths);
    CHECK(full == 0 && eighths == 0);
    tui_meter_cells(0.999, 3, &full, &eighths);
    CHECK(full + (eighths > 0) <= 3);
}

static void test_fmt(void) {
    char b[64];
    struct {
        uint64_t v;
        const char *s;
    } sizes[] = {{0, "0 B"},
                 {999, "999 B"},
                 {1000, "0.98 KiB"},
                 {1024, "1.00 KiB"},
                 {1536, "1.50 KiB"},
                 {10240, "10.0 KiB"},
                 {1048575, "1.00 MiB"},
                 {5u * 1024 * 1024 + 300 * 1024, "5.29 MiB"},
                 {(uint64_t)123 << 30, "123 GiB"},
                 {(uint64_t)80 << 30, "80.0 GiB"},
                 {(uint64_t)2 << 40, "2.00 TiB"}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        tui_fmt_bytes(sizes[i].v, b, sizeof b);
        CHECK_MSG(strcmp(b, sizes[i].s) == 0, "%llu -> %s want %s", (unsigned long long)sizes[i].v, b,
                  sizes[i].s);
    }
    tui_fmt_int(1234567, b, sizeof b);
    CHECK(strcmp(b, "1,234,567") == 0);
    tui_fmt_int(-12, b, sizeof b);
    CHECK(strcmp(b, "-12") == 0);
    tui_fmt_int(100, b, sizeof b);
    CHECK(strcmp(b, "100") == 0);
    tui_fmt_int(INT64_MIN, b, sizeof b);
    CHECK(strcmp(b, "-9,223,372,036,854,775,808") == 0);
    tui_fmt_rate(0, b, sizeof b);
    CHECK(strcmp(b, "-") == 0);
    tui_fmt_rate(12.34, b, sizeof b);
    CHECK(strcmp(b, "12.3") == 0);
    tui_fmt_rate(4321.6, b, sizeof b);
    CHECK(strcmp(b, "4322") == 0);
    tui_fmt_saving(25, 100, b, sizeof b);
    CHECK(strcmp(b, "-75.0% (4.00x)") == 0);
    tui_fmt_saving(100, 0, b, sizeof b);
    CHECK(strcmp(b, "-") == 0);
    tui_fmt_saving(110, 100, b, sizeof b);
    CHECK(strcmp(b, "+10.0% (0.91x)") == 0);
}

static void test_stats_copy(void) {
    struct tui_stats a = {0}, b = {0};
    CHECK(tui_stats_reserve(&a, 5, 4, 1) == 0);
    for (int i = 0; i < 20; i++)
        a.heads[i].retained = i;
    a.layer_budget[4] = 77;
    a.kv_bytes = 123;
    CHECK(tui_stats_copy(&b, &a) == 0);
    CHECK(b.n_layer == 5 && b.heads != a.heads && b.heads[19].retained == 19 && b.layer_budget[4] == 77);
    CHECK(b.kv_bytes == 123);
    CHECK(tui_stats_reserve(&a, 22, 4, 0) == 0 && a.layer_budget == NULL);
    a.heads[87].retained = 5;
    CHECK(tui_stats_copy(&b, &a) == 0);
    CHECK(b.n_layer == 22 && b.layer_budget == NULL && b.heads[87].retained == 5 && b.cap_heads >= 88);
    tui_stats_release(&a);
    tui_stats_release(&b);
    CHECK(a.heads == NULL && b.heads == NULL);
}

int main(void) {
    if (!setlocale(LC_ALL, "C.UTF-8") && !setlocale(LC_ALL, "en_US.UTF-8")) {
        TEST_SKIP("no UTF-8 locale: width checks use the C locale");
    }
    test_layout_sizes();
    test_dash_plan();
    test_utf8();
    test_wrap();
    test_edit();
    test_history();
    test_ring();
    test_fmt();
    test_stats_copy();
    return test_done();
}
