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

void tui_ring_set_last(struct tui_ring *r, double v) {
    if (r->n == 0) {
        tui_ring_push(r, v);
        return;
    }
    r->v[(r->head - 1 + r->cap) % r->cap] = v;
}

void tui_ring_compact(struct tui_ring *r) {
    int n = r->n, k = 0;
    double *tmp = r->v;
    int start = (r->head - n + r->cap) % r->cap;
    double *lin = malloc((size_t)(n ? n : 1) * sizeof *lin);
    if (!lin) { // no memory: drop the older half instead
        r->n = n / 2;
        return;
    }
    for (int i = 0; i < n; i++)
        lin[i] = tmp[(start + i) % r->cap];
    for (int i = 1; i < n; i += 2)
        r->v[k++] = lin[i];
    if (n % 2) r->v[k++] = lin[n - 1]; // an unpaired newest sample survives
    free(lin);
    r->n = k;
    r->head = k % r->cap;
}

static int level_of(double v, double scale) {
    if (!(v > 0) || !(scale > 0)) return 0;
    int lv = (int)ceil(v / scale * 8.0 - 1e-9);
    return lv < 1 ? 1 : lv > 8 ? 8 : lv;
}

int tui_spark_fit(const struct tui_ring *r, int width, double scale, unsigned char *levels) {
    if (width <= 0 || r->n == 0) return 0;
    if (r->n <= width) return tui_spark_levels(r, width, scale, levels);
    if (scale <= 0) scale = tui_ring_max(r, 0);
    for (int c = 0; c < width; c++) {
        int a = (int)((long long)c * r->n / width), b = (int)((long long)(c + 1) * r->n / width);
        double m = tui_ring_get(r, a);
        for (int i = a + 1; i < b; i++) {
            double v = tui_ring_get(r, i);
            if (v > m) m = v;
        }
        levels[c] = (unsigned char)level_of(m, scale);
    }
    return width;
}

int tui_spark_levels(const struct tui_ring *r, int width, double scale, unsigned char *levels) {
    if (width <= 0 || r->n == 0) return 0;
    int count = r->n < width ? r->n : width;
    if (scale <= 0) scale = tui_ring_max(r, count);
    for (int k = 0; k < count; k++) {
        levels[k] = (unsigned char)level_of(tui_ring_get(r, r->n - count + k), scale);
    }
    return count;
}
