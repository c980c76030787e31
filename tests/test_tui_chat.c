// tests/test_tui_chat.c — the TUI's terminal-free logic: conversation store and line counts, scrolling,
// sparkline history compaction, dashboard selection, and tui_open refusing a non-terminal.
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/test.h"
#include "tui/chat_view.h"
#include "tui/dash.h"
#include "tui/ring.h"
#include "tui/tui.h"

static void test_chat_store(void) {
    struct chat_view cv;
    chat_view_init(&cv);
    CHECK_EQ_INT(chat_view_total_lines(&cv, 40), 0);
    CHECK(chat_view_add(&cv, TUI_ROLE_NOTICE, "welcome", 7, 0) == 0);
    CHECK_EQ_INT(chat_view_total_lines(&cv, 40), 1);
    CHECK(chat_view_add(&cv, TUI_ROLE_NOTICE, "second notice", 13, 0) == 0);
    CHECK_EQ_INT(chat_view_total_lines(&cv, 40), 2); // notices stack without a blank line
    CHECK(chat_view_add(&cv, TUI_ROLE_USER, "hello there", 11, 0) == 0);
    CHECK_EQ_INT(chat_view_total_lines(&cv, 40), 4); // blank + the user line
    // streaming: an empty assistant message is one (spinner) line
    CHECK(chat_view_append(&cv, "", 0) == 0);
    CHECK(cv.n == 4 && cv.msgs[3].role == TUI_ROLE_ASSISTANT && cv.msgs[3].streaming);
    CHECK_EQ_INT(chat_view_total_lines(&cv, 40), 6);
    // pieces append to the same message and wrap at width - gutter (38 columns here)
    const char *piece = "Once upon a time there was a cat. ";
    for (int i = 0; i < 4; i++)
        CHECK(chat_view_append(&cv, piece, strlen(piece)) == 0);
    CHECK(cv.n == 4);
    int text_lines = tui_wrap(cv.msgs[3].text, cv.msgs[3].len, 38, NULL, 0);
    CHECK(text_lines >= 4);
    CHECK_EQ_INT(chat_view_total_lines(&cv, 40), 5 + text_lines);
    // ending with a note adds a line
    chat_view_end(&cv, "[stopped]");
    CHECK(!cv.msgs[3].streaming);
    CHECK_EQ_INT(chat_view_total_lines(&cv, 40), 6 + text_lines);
    // the wrap cache follows the width
    int narrow = chat_view_total_lines(&cv, 20);
    CHECK(narrow > 6 + text_lines);
    CHECK_EQ_INT(chat_view_total_lines(&cv, 40), 6 + text_lines);
    // a new stream after an ended one starts a new message
    CHECK(chat_view_append(&cv, "x", 1) == 0);
    CHECK(cv.n == 5);
    // drop_last only drops the given role
    CHECK(chat_view_drop_last(&cv, TUI_ROLE_USER) == -1);
    CHECK(chat_view_drop_last(&cv, TUI_ROLE_ASSISTANT) == 0);
    CHECK(cv.n == 4);
    // sanitized: controls gone, tabs expanded, invalid bytes replaced
    CHECK(chat_view_add(&cv, TUI_ROLE_ASSISTANT, "a\tb\x1b[2Jc\xff", 9, 0) == 0);
    CHECK(strcmp(cv.msgs[4].text, "a    b[2Jc\xEF\xBF\xBD") == 0);
    // scrolling clamps at zero; home is clamped when drawn
    chat_view_scroll(&cv, -5);
    CHECK_EQ_INT(cv.scroll, 0);
    chat_view_scroll(&cv, 3);
    CHECK_EQ_INT(cv.scroll, 3);
    chat_view_scroll_end(&cv);
    CHECK_EQ_INT(cv.scroll, 0);
    chat_view_clear(&cv);
    CHECK(cv.n == 0 && chat_view_total_lines(&cv, 40) == 0);
    // huge text and a 1-column pane do not break the arithmetic
    char *big = malloc(100000);
    memset(big, 'w', 99999);
    big[99999] = 0;
    CHECK(chat_view_add(&cv, TUI_ROLE_ASSISTANT, big, 99999, 0) == 0);
    CHECK_EQ_INT(chat_view_total_lines(&cv, 1), 99999);
    CHECK_EQ_INT(chat_view_total_lines(&cv, 3), 99999);
    CHECK_EQ_INT(chat_view_total_lines(&cv, 102), 1000);
    free(big);
    chat_view_free(&cv);
}

static void test_ring_history(void) {
    struct tui_ring r;
    tui_ring_init(&r, 8);
    for (int i = 1; i <= 8; i++)
        tui_ring_push(&r, i);
    tui_ring_compact(&r); // keeps the later of each pair: 2 4 6 8
    CHECK(r.n == 4 && tui_ring_get(&r, 0) == 2 && tui_ring_get(&r, 3) == 8);
    tui_ring_push(&r, 9);
    CHECK(r.n == 5 && tui_ring_last(&r) == 9);
    tui_ring_compact(&r); // 4 8 + the unpaired newest 9
    CHECK(r.n == 3 && tui_ring_get(&r, 0) == 4 && tui_ring_get(&r, 1) == 8 && tui_ring_get(&r, 2) == 9);
    tui_ring_set_last(&r, 10);
    CHECK(tui_ring_last(&r) == 10 && r.n == 3);
    // fitting more samples than columns: each column shows the max of its share
    tui_ring_clear(&r);
    for (int i = 1; i <= 8; i++)
        tui_ring_push(&r, i);
    unsigned char lv[8];
    CHECK_EQ_INT(tui_spark_fit(&r, 4, 8, lv), 4);
    CHECK(lv[0] == 2 && lv[1] == 4 && lv[2] == 6 && lv[3] == 8);
    CHECK_EQ_INT(tui_spark_fit(&r, 16, 8, lv), 8); // fewer samples than columns: one each
    CHECK(lv[0] == 1 && lv[7] == 8);
    tui_ring_free(&r);

    // the dashboard history: never more than the ring holds, always ending with the newest value
    struct dash_state d;
    CHECK(dash_init(&d) == 0);
    for (int i = 1; i <= 5000; i++)
        dash_sample(&d, (uint64_t)i * 10, (uint64_t)i * 40, i);
    CHECK(d.kv.n <= d.kv.cap && d.kv.n > d.kv.cap / 4);
    CHECK(tui_ring_last(&d.kv) == 50000 && tui_ring_last(&d.full) == 200000);
    CHECK(d.stride >= 8);
    int n = d.kv.n;
    dash_sample(&d, 50000, 200000, 5000); // unchanged: ignored
    CHECK_EQ_INT(d.kv.n, n);
    dash_reset_samples(&d);
    CHECK(d.kv.n == 0 && d.full.n == 0);
    dash_free(&d);
}

static void test_dash_selection(void) {
    struct tui_stats s = {0};
    CHECK(tui_stats_reserve(&s, 22, 4, 0) == 0);
    struct dash_state d;
    dash_init(&d);
    dash_move(&d, &s, 5, 1);
    CHECK(d.sel_layer == 5 && d.sel_head == 1);
    dash_move(&d, &s, 100, 100);
    CHECK(d.sel_layer == 21 && d.sel_head == 3);
    dash_move(&d, &s, -100, -100);
    CHECK(d.sel_layer == 0 && d.sel_head == 0);
    dash_scroll(&d, &s, 3);
    CHECK(d.sel_layer == 3);
    // a smaller model after /set: the selection follows
    d.sel_layer = 21;
    CHECK(tui_stats_reserve(&s, 5, 4, 1) == 0 && s.layer_budget != NULL);
    dash_move(&d, &s, 0, 0);
    CHECK(d.sel_layer == 4);
    dash_free(&d);
    tui_stats_release(&s);
}

static void test_open_without_tty(void) {
    if (isatty(0) && isatty(1)) {
        TEST_SKIP("stdin/stdout are a terminal: not testing the refusal");
        return;
    }
    char err[256] = "";
    struct tui *t = tui_open(NULL, NULL, err, sizeof err);
    CHECK(t == NULL);
    CHECK(strstr(err, "terminal") != NULL);
    tui_close(NULL); // harmless
}

int main(void) {
    if (!setlocale(LC_ALL, "C.UTF-8")) setlocale(LC_ALL, "en_US.UTF-8");
    test_chat_store();
    test_ring_history();
    test_dash_selection();
    test_open_without_tty();
    return test_done();
}
