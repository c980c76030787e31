// tui/input.h — the input line editor (UTF-8 buffer + cursor, pure editing operations), input history
// (navigation, persistence) and the input area's wrap/cursor geometry. No terminal needed.
#pragma once
#include <stddef.h>

struct tui_edit {
    char *buf;  // UTF-8 text, NUL-terminated; may hold '\n' (multi-line input)
    size_t len; // bytes of text
    size_t cap; // bytes allocated
    size_t cur; // cursor: byte offset in [0, len], always on a code point boundary
    char *kill; // last text removed by a kill operation (Ctrl+K/U/W), for Ctrl+Y
    size_t kill_len;
};

int tui_edit_init(struct tui_edit *e); // 0 ok, -1 out of memory
void tui_edit_free(struct tui_edit *e);
void tui_edit_clear(struct tui_edit *e);
// Replaces the whole text (cursor at the end). 0 ok, -1 out of memory (text unchanged).
int tui_edit_set(struct tui_edit *e, const char *s, size_t n);
// Inserts n bytes at the cursor and moves the cursor after them (the bytes are sanitized: invalid UTF-8
// becomes U+FFFD, '\r' becomes '\n', other controls are dropped, tabs become spaces). 0 ok, -1 oom.
int tui_edit_insert(struct tui_edit *e, const char *s, size_t n);
// Cursor motion. Left/right step over a whole character together with its combining marks.
void tui_edit_left(struct tui_edit *e);
void tui_edit_right(struct tui_edit *e);
void tui_edit_word_left(struct tui_edit *e);
void tui_edit_word_right(struct tui_edit *e);
void tui_edit_home(struct tui_edit *e); // start of the current line (Home, Ctrl+A)
void tui_edit_end(struct tui_edit *e);  // end of the current line (End, Ctrl+E)
// Moves to the previous/next line of a multi-line text at the same display column (or the line's end).
// Returns 0 when moved, -1 when already on the first/last line.
int tui_edit_line_up(struct tui_edit *e);
int tui_edit_line_down(struct tui_edit *e);
// Deletion. Each is a no-op at the relevant edge.
void tui_edit_backspace(struct tui_edit *e);  // the character (with its marks) before the cursor
void tui_edit_delete(struct tui_edit *e);     // the character (with its marks) under the cursor
void tui_edit_kill_end(struct tui_edit *e);   // Ctrl+K: to the end of the line (joins lines at a '\n')
void tui_edit_kill_start(struct tui_edit *e); // Ctrl+U: from the start of the line to the cursor
void tui_edit_kill_word(struct tui_edit *e);  // Ctrl+W: the spaces and then the word before the cursor
int tui_edit_yank(struct tui_edit *e);        // Ctrl+Y: inserts the last killed text. 0 ok, -1 oom

// Geometry of the input area: the text is wrapped (tui_wrap) to `width` columns; returns the number of rows
// it takes and the cursor's row and column in them (a cursor at the very end of a full row moves to the
// start of an extra row, which the count includes).
int tui_edit_geometry(const struct tui_edit *e, int width, int *cur_row, int *cur_col);

// Input history, newest last, at most `max` entries. Browsing keeps the unsent text as a draft.
struct tui_history {
    char **items;
    int n, cap, max;
    int pos;     // index being shown while browsing; n when not browsing
    char *draft; // the text that was in the editor when browsing started
};

int tui_history_init(struct tui_history *h, int max);
void tui_history_free(struct tui_history *h);
// Adds an entry (ignored when empty or equal to the newest) and stops browsing. 0 ok, -1 oom.
int tui_history_add(struct tui_history *h, const char *text);
// Older entry: returns the text to show, or NULL when there is none older (then nothing changes).
// `current` is the editor's text, kept as the draft when browsing starts.
const char *tui_history_prev(struct tui_history *h, const char *current);
// Newer entry; past the newest returns the draft; NULL when not browsing.
const char *tui_history_next(struct tui_history *h);
void tui_history_stop(struct tui_history *h); // leave browsing mode (after an edit or a send)

// History file: one entry per line, '\\' and '\n' escaped as "\\\\" and "\\n". Loading keeps the newest
// `max` entries. Both return 0 ok, -1 with errno set.
int tui_history_load(struct tui_history *h, const char *path);
int tui_history_append_file(const char *path, const char *text);
// "$XDG_DATA_HOME/kvchat/history" when xdg is set and absolute, else "$HOME/.local/share/kvchat/history".
// 0 ok, -1 when neither gives a path (or it does not fit).
int tui_history_path(char *out, size_t cap, const char *xdg_data_home, const char *home);
// Creates every missing directory of `dir` (mode 0700 for new ones). 0 ok, -1 with errno set.
int tui_mkdir_p(const char *dir);
