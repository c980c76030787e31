// tui/stats.c — allocation and deep copy of the plain-data stats the dashboard draws from.
#include <stdlib.h>
#include <string.h>

#include "tui/tui.h"

int tui_stats_reserve(struct tui_stats *s, int n_layer, int n_head_kv, int with_budget) {
    if (n_layer < 0) n_layer = 0;
    if (n_head_kv < 0) n_head_kv = 0;
    int nh = n_layer * n_head_kv;
    if (nh > s->cap_heads) {
        struct tui_head_stats *h = realloc(s->heads, (size_t)nh * sizeof *h);
        if (!h) return -1;
        s->heads = h;
        s->cap_heads = nh;
    }
    if (with_budget) {
        if (n_layer > s->cap_layers || !s->layer_budget) {
            int cap = n_layer > s->cap_layers ? n_layer : s->cap_layers;
            int *b = realloc(s->layer_budget, (size_t)(cap ? cap : 1) * sizeof *b);
            if (!b) return -1;
            s->layer_budget = b;
            s->cap_layers = cap;
        }
    } else {
        free(s->layer_budget);
        s->layer_budget = NULL;
        s->cap_layers = 0;
    }
    if (nh) memset(s->heads, 0, (size_t)nh * sizeof *s->heads);
    if (with_budget && n_layer) memset(s->layer_budget, 0, (size_t)n_layer * sizeof *s->layer_budget);
    s->n_layer = n_layer;
    s->n_head_kv = n_head_kv;
    return 0;
}

int tui_stats_copy(struct tui_stats *dst, const struct tui_stats *src) {
    struct tui_stats tmp = *dst; // keeps dst's arrays while growing them
    if (tui_stats_reserve(&tmp, src->n_layer, src->n_head_kv, src->layer_budget != NULL)) {
        // reserve may have moved arrays before failing; keep whatever dst now owns consistent
        dst->heads = tmp.heads, dst->cap_heads = tmp.cap_heads;
        dst->layer_budget = tmp.layer_budget, dst->cap_layers = tmp.cap_layers;
        if (!dst->layer_budget) dst->cap_layers = 0;
        return -1;
    }
    struct tui_head_stats *heads = tmp.heads;
    int *budget = tmp.layer_budget;
    int cap_h = tmp.cap_heads, cap_l = tmp.cap_layers;
    *dst = *src;
    dst->heads = heads, dst->cap_heads = cap_h;
    dst->layer_budget = budget, dst->cap_layers = cap_l;
    int nh = src->n_layer * src->n_head_kv;
    if (nh && src->heads) memcpy(dst->heads, src->heads, (size_t)nh * sizeof *src->heads);
    if (budget && src->layer_budget)
        memcpy(dst->layer_budget, src->layer_budget, (size_t)src->n_layer * sizeof *budget);
    return 0;
}

void tui_stats_release(struct tui_stats *s) {
    free(s->heads);
    free(s->layer_budget);
    memset(s, 0, sizeof *s);
}
