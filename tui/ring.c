// tui/ring.c — the sample ring behind the dashboard's sparkline, and its level mapping.
#include "tui/ring.h"

#include <math.h>
#include <stdlib.h>

int tui_ring_init(struct tui_ring *r, int cap) {
    if (cap < 1) cap = 1;
    r->v = calloc((size_t)cap, sizeof *r->v);
    r->cap = r->v ? cap : 0;
    r->n = r->head = 0;
    return r->v ? 0 : -1;
}

void tui_ring_free(struct tui_ring *r) {
    free(r->v);
    r->v = NULL;
    r->cap = r->n = r->head = 0;
}

void tui_ring_clear(struct tui_ring *r) { r->n = r->head = 0; }

void tui_ring_push(struct tui_ring *r, double v) {
    if (r->cap == 0) return;
    r->v[r->head] = v;
    r->head = (r->head + 1) % r->cap;
    if (r->n < r->cap) r->n++;
}

double tui_ring_get(const struct tui_ring *r, int i) {
    int start = (r->head - r->n + r->cap) % r->cap;
    return r->v[(start + i) % r->cap];
}

double tui_ring_last(const struct tui_ring *r) { return r->n ? tui_ring_get(r, r->n - 1) : 0.0; }

double tui_ring_max(const struct tui_ring *r, int count) {
    if (count <= 0 || count > r->n) count = r->n;
    double m = 0;
    for (int i = r->n - count; i < r->n; i++) {
        double v = tui_ring_get(r, i);
        if (i == r->n - count || v > m) m = v;
    }
    return m;
}

int tui_spark_levels(const struct tui_ring *r, int width, double scale, unsigned char *levels) {
    if (width <= 0 || r->n == 0) return 0;
    int count = r->n < width ? r->n : width;
    if (scale <= 0) scale = tui_ring_max(r, count);
    for (int k = 0; k < count; k++) {
        double v = tui_ring_get(r, r->n - count + k);
        int lv = 0;
        if (v > 0 && scale > 0) {
            lv = (int)ceil(v / scale * 8.0 - 1e-9);
            if (lv < 1) lv = 1;
            if (lv > 8) lv = 8;
        }
        levels[k] = (unsigned char)lv;
    }
    return count;
}
