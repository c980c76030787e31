// tui/tui.h — the full-screen chat screen: an opaque handle, plain-data stats it draws, high-level actions.
// No ncurses types here. One thread (the UI thread) calls everything except tui_log, which any thread may
// call.
#pragma once
#include <stddef.h>
#include <stdint.h>

struct tui;

// One KV head as the dashboard shows it (filled by app/ from kvcache's kv_head_stats).
struct tui_head_stats {
    uint32_t comps;     // the head's policy components (enum kv_comp bits; picks the colour)
    char glyph;         // grid glyph (kv_comps_glyph)
    char name[32];      // policy name (kv_comps_name), e.g. "special+punct"
    int32_t retained;   // tokens held
    int32_t budget;     // tokens the policy allows now (-1 = unbounded)
    float recovery;     // attention recovered at the last profile (-1 unknown)
    float recovery_min; // min over the group's query heads (-1 unknown)
    uint64_t bytes;     // bytes the head holds
};

// Everything the status bar and dashboard show. The arrays are owned by the struct (tui_stats_reserve).
struct tui_stats {
    char model[128], arch[32], device[96];
    char policy[24];       // --kv-policy name
    int bits;              // 16, 4 or 2
    float recovery_target; // FastGen T
    int n_ctx, n_past;     // context capacity and tokens used
    int n_prompt, n_gen;   // last turn
    double prefill_tok_s, decode_tok_s;
    uint64_t weights_bytes;
    uint64_t dev_used, dev_total; // GPU (0 on the CPU)
    uint64_t kv_bytes, kv_bytes_full;
    uint64_t bytes_fp, bytes_codes, bytes_scales, bytes_meta;
    int64_t retained_tokens;
    int n_layer, n_head_kv;
    int *layer_budget;            // (n_layer) or NULL when the policy has no per-layer budget
    struct tui_head_stats *heads; // (n_layer * n_head_kv), layer-major
    int cap_heads, cap_layers;    // allocated sizes
    uint64_t seq;                 // changes whenever the numbers change
};

// Makes room for n_layer x n_head_kv heads (and a layer_budget array when with_budget, else sets it to
// NULL); keeps the scalar fields. 0 ok, -1 out of memory.
int tui_stats_reserve(struct tui_stats *s, int n_layer, int n_head_kv, int with_budget);
// Deep copy into dst (dst's arrays are reused or grown). 0 ok, -1 out of memory (dst unchanged).
int tui_stats_copy(struct tui_stats *dst, const struct tui_stats *src);
void tui_stats_release(struct tui_stats *s);

struct tui_options {
    int no_color;             // glyphs and bold/reverse only (also when $NO_COLOR is set and non-empty)
    int no_history;           // neither read nor write the history file
    int no_mouse;             // leave the mouse to the terminal (no wheel scrolling)
    const char *history_path; // NULL: $XDG_DATA_HOME/kvchat/history or ~/.local/share/kvchat/history
};

enum tui_role { TUI_ROLE_USER, TUI_ROLE_ASSISTANT, TUI_ROLE_NOTICE, TUI_ROLE_ERROR };

enum tui_action {
    TUI_ACT_NONE,   // nothing for the app to do
    TUI_ACT_SUBMIT, // the user sent a line (text or /command): *text is set
    TUI_ACT_STOP,   // stop the reply being generated (Ctrl+C, Esc, SIGINT)
    TUI_ACT_QUIT,   // leave (Ctrl+D on an empty line, SIGTERM, SIGHUP)
};

// Takes over the terminal (alternate screen, raw keys, bracketed paste, signal handlers that restore the
// terminal on crash and turn SIGTERM/SIGHUP into TUI_ACT_QUIT), and sends stderr to /dev/null or to
// log_path while it owns the screen. NULL + one line in err when the terminal cannot be used.
struct tui *tui_open(const struct tui_options *opt, const char *log_path, char *err, size_t errlen);
// Restores the terminal exactly as it was and frees everything. NULL is ignored.
void tui_close(struct tui *t);

// Waits up to timeout_ms for input, handles every key that is the screen's business (editing, history,
// scrolling, focus, dashboard selection, freeze, screenshots) and returns what the app must do.
// For TUI_ACT_SUBMIT, *text receives a malloc'ed copy of the line (the caller frees it).
int tui_step(struct tui *t, int timeout_ms, char **text);
// Redraws when something changed: at once after keys, at most every 100 ms for streamed text and stats.
void tui_draw(struct tui *t);

// Busy: a reply is being generated (spinner; Enter keeps the text in the input; Ctrl+C means stop).
void tui_set_busy(struct tui *t, int busy);
int tui_is_busy(const struct tui *t);
// Latest stats (copied; ignored while the dashboard is frozen). Also feeds the KV sparkline.
void tui_set_stats(struct tui *t, const struct tui_stats *s);
// One more sparkline sample (e.g. per generated token; ignored while frozen). tui_set_stats samples too.
void tui_add_sample(struct tui *t, uint64_t kv_bytes, uint64_t kv_bytes_full, int n_past);
// Forgets the sparkline's samples (a new conversation).
void tui_reset_samples(struct tui *t);

// Conversation pane. Text is sanitized for display; all return 0 or -1 when out of memory.
int tui_chat_add(struct tui *t, int role, const char *text);
// Appends streamed text to the last message (starting an assistant message if the last is not one).
int tui_chat_stream(struct tui *t, const char *utf8, size_t len);
// Marks the end of the streamed message; `note` (may be NULL) is shown after it, dimmed, e.g. "[stopped]".
void tui_chat_end(struct tui *t, const char *note);
// Removes the last message if it has this role (for /regen). 0 removed, -1 not.
int tui_chat_drop_last(struct tui *t, int role);
void tui_chat_clear(struct tui *t);
// A notice line in the conversation, printf-style.
void tui_chat_notef(struct tui *t, int role, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

// Feeds text as if typed (the demo mode): each character goes through the same key handling as the
// keyboard, '\r' is Enter. 0 ok, -1 out of memory.
int tui_feed_keys(struct tui *t, const char *utf8);
// 1 when keys fed by tui_feed_keys are still waiting to be processed.
int tui_feed_pending(const struct tui *t);
// 1 when the input line holds no text.
int tui_input_empty(const struct tui *t);

// Keeps a log message for the in-TUI log ring (thread-safe; safe as an app_log sink).
void tui_log(struct tui *t, int level, const char *msg);
// Adds the log ring's lines to the conversation as a notice (for /log).
void tui_show_log(struct tui *t);
// A short message in the status bar for a few seconds.
void tui_flash(struct tui *t, const char *msg);

// Writes the current screen as plain UTF-8 text to the first free kvchat-screen-N.txt in the cwd
// (never overwriting); the name goes to path. 0 ok, -1 with the reason in path.
int tui_screenshot(struct tui *t, char *path, size_t cap);
