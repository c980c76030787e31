// tui/ring.h — a fixed-size ring of samples and sparkline levels drawn from it (pure: no terminal needed).
#pragma once
#include <stdint.h>

struct tui_ring {
    double *v;
    int cap;  // slots
    int n;    // samples held (<= cap)
    int head; // slot the next sample goes to
};

// 0 ok, -1 out of memory (cap < 1 acts as 1).
int tui_ring_init(struct tui_ring *r, int cap);
void tui_ring_free(struct tui_ring *r);
void tui_ring_clear(struct tui_ring *r);
// Adds a sample, dropping the oldest when full.
void tui_ring_push(struct tui_ring *r, double v);
// Sample i, 0 = oldest, n-1 = newest (i must be < n).
double tui_ring_get(const struct tui_ring *r, int i);
double tui_ring_last(const struct tui_ring *r); // 0 when empty
// Largest of the newest `count` samples (all when count <= 0 or > n); 0 when empty.
double tui_ring_max(const struct tui_ring *r, int count);

// Replaces the newest sample (pushes when empty).
void tui_ring_set_last(struct tui_ring *r, double v);
// Halves the samples held by keeping the later of each pair (oldest first), freeing room while keeping
// the whole history at half the resolution.
void tui_ring_compact(struct tui_ring *r);

// Sparkline of the newest min(n, width) samples, oldest first, written to levels[] as 0..8 (0 = nothing,
// 8 = a full cell) scaled so `scale` maps to 8; scale <= 0 means the largest of those samples. Any sample
// above zero gets at least level 1. Returns the number of levels written.
int tui_spark_levels(const struct tui_ring *r, int width, double scale, unsigned char *levels);
// Sparkline of all samples fitted into at most `width` columns: with more samples than columns each column
// shows the largest sample of its share. Same levels and scale rule as tui_spark_levels. Returns the count.
int tui_spark_fit(const struct tui_ring *r, int width, double scale, unsigned char *levels);
