// tui/chat_view.h — the conversation pane: messages, wrap cache, bottom-anchored scrolling, drawing.
// Internal to tui/. The message store and line arithmetic work without a terminal.
#pragma once
#include <stddef.h>

#include "tui/layout.h"
#include "tui/text.h"
#include "tui/theme.h"

struct cv_msg {
    int role;   // enum tui_role
    char *text; // sanitized UTF-8
    size_t len, cap;
    char *note;    // dim suffix line ("[stopped]"), or NULL
    int streaming; // text is still arriving
    // wrap cache: valid while wrap_w and wrap_len match
    int wrap_w;
    size_t wrap_len;
    struct tui_wrap_line *lines;
    int n_lines, cap_lines;
};

struct chat_view {
    struct cv_msg *msgs;
    int n, cap;
    int scroll;     // lines hidden below the view (0 = following the newest text)
    int last_total; // total lines at the last layout (to keep a scrolled view still while text arrives)
    int last_h;     // view height at the last draw (page size)
};

void chat_view_init(struct chat_view *cv);
void chat_view_free(struct chat_view *cv);
void chat_view_clear(struct chat_view *cv);
// Adds a message (text sanitized). 0 ok, -1 out of memory.
int chat_view_add(struct chat_view *cv, int role, const char *text, size_t len, int streaming);
// Appends to the last message (or starts a streaming assistant message). 0 ok, -1 oom.
int chat_view_append(struct chat_view *cv, const char *text, size_t len);
// Ends streaming of the last message and attaches an optional note.
void chat_view_end(struct chat_view *cv, const char *note);
// Removes the last message when it has `role`. 0 removed, -1 not.
int chat_view_drop_last(struct chat_view *cv, int role);

// Lines the whole conversation takes at `width` columns (message gutters and blank separators included).
int chat_view_total_lines(struct chat_view *cv, int width);
// Scrolling by lines (positive = towards older text); clamped at draw time.
void chat_view_scroll(struct chat_view *cv, int delta);
void chat_view_scroll_home(struct chat_view *cv); // oldest
void chat_view_scroll_end(struct chat_view *cv);  // newest (follow)

// Draws the pane into r. spinner: the glyph shown in a streaming message that has no text yet.
void chat_view_draw(struct chat_view *cv, const struct tui_theme *th, struct tui_rect r, const char *spinner);
