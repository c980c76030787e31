// tui/dash.h — the KV-cache dashboard: layer x head policy grid, retained tokens, memory meters,
// sparkline, speed and the selected head. Internal to tui/. Draws only from the tui's own stats copy.
#pragma once
#include <stdint.h>

#include "tui/layout.h"
#include "tui/ring.h"
#include "tui/theme.h"
#include "tui/tui.h"

struct dash_state {
    int sel_layer, sel_head;  // the selected head
    int top_layer, left_head; // grid scroll (many layers / heads)
    int grid_rows, grid_cols; // layers and heads visible at the last draw (page sizes)
    struct tui_ring kv, full; // kv_bytes and kv_bytes_full samples over the conversation
    int stride, pending;      // one slot per `stride` samples (doubles whenever the ring fills up)
    uint64_t last_kv, last_full;
    int last_n_past;
};

int dash_init(struct dash_state *d); // 0 ok, -1 out of memory
void dash_free(struct dash_state *d);
// Adds a sparkline sample when it differs from the previous one. When the ring is full its history is
// compacted to half resolution, so the sparkline always spans the whole conversation.
void dash_sample(struct dash_state *d, uint64_t kv_bytes, uint64_t kv_bytes_full, int n_past);
void dash_reset_samples(struct dash_state *d);
// Moves the selection by dl layers and dh heads (clamped), e.g. from arrow keys.
void dash_move(struct dash_state *d, const struct tui_stats *s, int dl, int dh);
// Scrolls the grid's view by dl layers (mouse wheel) without moving the selection off-screen rules.
void dash_scroll(struct dash_state *d, const struct tui_stats *s, int dl);

// Draws the dashboard into r (its top row is the title bar; with left_border a vertical rule fills r's
// first column). focused: the dashboard has keyboard focus; frozen: the numbers are held.
void dash_draw(struct dash_state *d, const struct tui_stats *s, const struct tui_theme *th, struct tui_rect r,
               int left_border, int focused, int frozen);
