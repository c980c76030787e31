// tui/dash.c — dashboard drawing: title bar, info lines picked by priority to fit, the layer x KV-head
// policy grid (scrolls for many layers/heads) with retained-token shades and a legend.
#include "tui/dash.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tui/draw.h"
#include "tui/meter.h"
#include "tui/text.h"

#define LABEL_W 8 // width of the info lines' label column

int dash_init(struct dash_state *d) {
    memset(d, 0, sizeof *d);
    if (tui_ring_init(&d->kv, 512) || tui_ring_init(&d->full, 512)) {
        dash_free(d);
        return -1;
    }
    return 0;
}

void dash_free(struct dash_state *d) {
    tui_ring_free(&d->kv);
    tui_ring_free(&d->full);
}

void dash_reset_samples(struct dash_state *d) {
    tui_ring_clear(&d->kv);
    tui_ring_clear(&d->full);
    d->last_kv = d->last_full = 0;
    d->last_n_past = 0;
    d->stride = 1;
    d->pending = 0;
}

void dash_sample(struct dash_state *d, uint64_t kv, uint64_t full, int n_past) {
    if (d->kv.n > 0 && kv == d->last_kv && full == d->last_full && n_past == d->last_n_past) return;
    d->last_kv = kv, d->last_full = full, d->last_n_past = n_past;
    if (d->stride < 1) d->stride = 1;
    if (d->kv.n > 0 && ++d->pending < d->stride) { // same slot: it shows the newest value of its stride
        tui_ring_set_last(&d->kv, (double)kv);
        tui_ring_set_last(&d->full, (double)full);
        return;
    }
    d->pending = 0;
    if (d->kv.n == d->kv.cap) {
        tui_ring_compact(&d->kv);
        tui_ring_compact(&d->full);
        d->stride *= 2;
    }
    tui_ring_push(&d->kv, (double)kv);
    tui_ring_push(&d->full, (double)full);
}

static void clamp_sel(struct dash_state *d, const struct tui_stats *s) {
    if (d->sel_layer >= s->n_layer) d->sel_layer = s->n_layer - 1;
    if (d->sel_head >= s->n_head_kv) d->sel_head = s->n_head_kv - 1;
    if (d->sel_layer < 0) d->sel_layer = 0;
    if (d->sel_head < 0) d->sel_head = 0;
}

void dash_move(struct dash_state *d, const struct tui_stats *s, int dl, int dh) {
    d->sel_layer += dl;
    d->sel_head += dh;
    clamp_sel(d, s);
}

void dash_scroll(struct dash_state *d, const struct tui_stats *s, int dl) { dash_move(d, s, dl, 0); }

static int digits(long long v) {
    int n = 1;
    if (v < 0) v = -v, n++;
    while (v >= 10)
        v /= 10, n++;
    return n;
}

// ---- grid geometry ---------------------------------------------------------------------------------------

struct grid_geom {
    int lw;        // layer label column ("12 ")
    int cw;        // cell width: ndig+2 = glyph + count, 3/2 = glyph + shade (+ gap), 1 = glyph
    int ndig;      // digits of the count in wide cells
    int tw;        // per-layer total column (0 = hidden)
    int vis_heads; // heads that fit
};

static void grid_geometry(const struct tui_stats *s, int avail, struct grid_geom *g) {
    int nh = s->n_head_kv > 0 ? s->n_head_kv : 1;
    g->lw = digits(s->n_layer > 1 ? s->n_layer - 1 : 0) + 2;
    g->ndig = digits(s->n_ctx > 0 ? s->n_ctx : 1);
    g->tw = 7;
    const int opts[4] = {g->ndig + 2, 3, 2, 1};
    for (int k = 0; k < 4; k++) {
        if (g->lw + nh * opts[k] + g->tw <= avail) {
            g->cw = opts[k];
            g->vis_heads = nh;
            return;
        }
    }
    g->tw = 0;
    for (int k = 2; k < 4; k++) {
        if (g->lw + nh * opts[k] <= avail) {
            g->cw = opts[k];
            g->vis_heads = nh;
            return;
        }
    }
    g->cw = 1; // scroll sideways
    g->vis_heads = avail - g->lw - 2 > 1 ? avail - g->lw - 2 : 1;
}

// The grid width to plan for in an area `avail` wide: the widest cell format with which every head fits
// beside a readable info column; failing that, the widest format at all (the layout then stacks).
static int grid_width_want(const struct tui_stats *s, int avail) {
    struct grid_geom g;
    grid_geometry(s, avail - 2 - TUI_DASH_INFO_MIN_W, &g);
    int nh = s->n_head_kv > 0 ? s->n_head_kv : 1;
    if (g.vis_heads >= nh) return g.lw + nh * g.cw + g.tw;
    grid_geometry(s, 1 << 20, &g);
    return g.lw + nh * g.cw + g.tw;
}

// ---- legend ----------------------------------------------------------------------------------------------

struct legend_item {
    uint32_t comps;
    int count;
    char glyph;
    const char *name;
};

static int cmp_legend(const void *a, const void *b) {
    uint32_t x = ((const struct legend_item *)a)->comps, y = ((const struct legend_item *)b)->comps;
    return x < y ? -1 : x > y;
}

static int legend_collect(const struct tui_stats *s, struct legend_item *it, int max) {
    int n = 0;
    for (int i = 0; i < s->n_layer * s->n_head_kv; i++) {
        const struct tui_head_stats *h = &s->heads[i];
        int k = 0;
        while (k < n && it[k].comps != h->comps)
            k++;
        if (k == n) {
            if (n == max) continue;
            it[n].comps = h->comps, it[n].count = 0, it[n].glyph = h->glyph, it[n].name = h->name;
            n++;
        }
        it[k].count++;
    }
    qsort(it, (size_t)n, sizeof *it, cmp_legend);
    return n;
}

static void legend_text(const struct tui_theme *th, const struct legend_item *it, char *buf, size_t cap) {
    snprintf(buf, cap, "%c %s %s%d", it->glyph ? it->glyph : '?', it->name, th->utf8 ? "\u00d7" : "x",
             it->count);
}

// Lines the legend needs at width w (and draws them when draw is set, from row y).
static int legend_lines(const struct tui_theme *th, const struct legend_item *it, int n, int x, int y, int w,
                        int max_rows, int draw) {
    int rows = n ? 1 : 0, col = 0;
    for (int i = 0; i < n; i++) {
        char buf[64];
        legend_text(th, &it[i], buf, sizeof buf);
        int iw = tui_str_width(buf, strlen(buf));
        if (col > 0 && col + 2 + iw > w) rows++, col = 0;
        if (col > 0) col += 2;
        if (draw && rows <= max_rows) {
            int yy = y + rows - 1;
            attr_t pa = th->attr[tui_theme_policy_style(it[i].comps)];
            tui_put(th, yy, x + col, w - col, buf, 1, pa | A_BOLD);
            tui_puts(th, yy, x + col + 1, w - col - 1, buf + 1, th->attr[TS_NORMAL]);
        }
        col += iw;
    }
    return rows;
}

// ---- grid ------------------------------------------------------------------------------------------------

static void draw_grid(struct dash_state *d, const struct tui_stats *s, const struct tui_theme *th,
                      struct tui_rect r, int focused) {
    if (r.w <= 0 || r.h <= 0 || s->n_layer <= 0 || s->n_head_kv <= 0) return;
    struct grid_geom g;
    grid_geometry(s, r.w, &g);
    struct legend_item items[32];
    int n_items = legend_collect(s, items, 32);
    int leg_rows = legend_lines(th, items, n_items, 0, 0, r.w, 0, 0);
    if (1 + s->n_layer + leg_rows > r.h) leg_rows = r.h >= 8 && leg_rows > 0 ? 1 : 0; // layers first
    int rows_for_layers = r.h - 1 - leg_rows;
    if (rows_for_layers < 1 && r.h >= 2) { // too short for the whole legend: shrink it first
        leg_rows = r.h - 2 > 0 ? (leg_rows < r.h - 2 ? leg_rows : r.h - 2) : 0;
        rows_for_layers = r.h - 1 - leg_rows;
    }
    if (rows_for_layers < 1) rows_for_layers = 1;
    int show_header = r.h >= 2;
    if (!show_header) rows_for_layers = 1, leg_rows = 0;
    int vis_layers = rows_for_layers < s->n_layer ? rows_for_layers : s->n_layer;
    // keep the selection in view
    if (d->sel_layer < d->top_layer) d->top_layer = d->sel_layer;
    if (d->sel_layer >= d->top_layer + vis_layers) d->top_layer = d->sel_layer - vis_layers + 1;
    if (d->top_layer > s->n_layer - vis_layers) d->top_layer = s->n_layer - vis_layers;
    if (d->top_layer < 0) d->top_layer = 0;
    if (d->sel_head < d->left_head) d->left_head = d->sel_head;
    if (d->sel_head >= d->left_head + g.vis_heads) d->left_head = d->sel_head - g.vis_heads + 1;
    if (d->left_head > s->n_head_kv - g.vis_heads) d->left_head = s->n_head_kv - g.vis_heads;
    if (d->left_head < 0) d->left_head = 0;
    d->grid_rows = vis_layers;
    d->grid_cols = g.vis_heads;
    int vis_heads = g.vis_heads < s->n_head_kv ? g.vis_heads : s->n_head_kv;
    int cells_x = r.x + g.lw + (d->left_head > 0 ? 1 : 0);
    int y = r.y;

    if (show_header) {
        attr_t ha = th->attr[TS_DIM];
        tui_puts(th, y, r.x, g.lw, d->top_layer > 0 ? th->g->up : "L", ha);
        if (g.cw >= 2) {
            for (int k = 0; k < vis_heads; k++) {
                int h = d->left_head + k;
                char lab[16];
                if (g.cw >= g.ndig + 2)
                    snprintf(lab, sizeof lab, "%*d", g.ndig + 1, h);
                else
                    snprintf(lab, sizeof lab, "%d", h % 10);
                tui_puts(th, y, cells_x + k * g.cw, g.cw, lab, h == d->sel_head ? th->attr[TS_BOLD] : ha);
            }
        } else {
            tui_putf(th, y, cells_x, vis_heads, ha, "heads %d-%d", d->left_head,
                     d->left_head + vis_heads - 1);
        }
        if (d->left_head > 0) tui_puts(th, y, cells_x - 1, 1, th->g->left, ha);
        if (d->left_head + vis_heads < s->n_head_kv)
            tui_puts(th, y, cells_x + vis_heads * g.cw, 1, th->g->right, ha);
        if (g.tw)
            tui_puts(th, y, cells_x + vis_heads * g.cw + (d->left_head + vis_heads < s->n_head_kv), g.tw,
                     "   kept", ha);
        y++;
    }
    int n_past = s->n_past > 0 ? s->n_past : 1;
    for (int li = 0; li < vis_layers; li++) {
        int l = d->top_layer + li;
        int last_row = li == vis_layers - 1 && l < s->n_layer - 1;
        attr_t la = l == d->sel_layer ? th->attr[TS_BOLD] : th->attr[TS_DIM];
        if (last_row) tui_puts(th, y, r.x, 1, th->g->down, th->attr[TS_DIM]);
        tui_putf(th, y, r.x + (last_row ? 1 : 0), g.lw - 1 - (last_row ? 1 : 0), la, "%*d",
                 g.lw - 1 - (last_row ? 1 : 0), l);
        long long layer_kept = 0;
        for (int h = 0; h < s->n_head_kv; h++)
            layer_kept += s->heads[l * s->n_head_kv + h].retained;
        for (int k = 0; k < vis_heads; k++) {
            int h = d->left_head + k;
            const struct tui_head_stats *hs = &s->heads[l * s->n_head_kv + h];
            int x = cells_x + k * g.cw;
            attr_t pa = th->attr[tui_theme_policy_style(hs->comps)];
            int selected = l == d->sel_layer && h == d->sel_head;
            if (selected) pa = focused ? th->attr[TS_SELECT] : (pa | A_UNDERLINE | A_BOLD);
            char glyph[2] = {hs->glyph ? hs->glyph : '?', 0};
            if (g.cw >= g.ndig + 2) {
                char num[24];
                snprintf(num, sizeof num, "%c%*d", glyph[0], g.ndig, hs->retained);
                tui_puts(th, y, x, g.cw - 1, num, pa);
            } else if (g.cw >= 2) {
                double ratio = (double)hs->retained / n_past;
                int lv = (int)(ratio * 5.0);
                if (lv > 4) lv = 4;
                if (lv < 0) lv = 0;
                tui_puts(th, y, x, 1, glyph, pa);
                tui_puts(th, y, x + 1, 1, th->g->shade[lv], selected ? pa : (pa & ~A_BOLD));
            } else {
                tui_puts(th, y, x, 1, glyph, pa);
            }
        }
        if (g.tw) {
            char kept[32];
            if (layer_kept < 1000000)
                snprintf(kept, sizeof kept, "%*lld", g.tw, layer_kept);
            else
                snprintf(kept, sizeof kept, "%*.1fM", g.tw - 1, (double)layer_kept / 1e6);
            int kx = cells_x + vis_heads * g.cw + (d->left_head + vis_heads < s->n_head_kv);
            tui_puts(th, y, kx, g.tw, kept, th->attr[TS_NORMAL]);
            // the layer's share of everything it could hold, as a bar in the remaining width
            int bx = kx + g.tw + 1, bw = r.x + r.w - bx;
            if (bw >= 6) {
                double frac = (double)layer_kept / ((double)n_past * s->n_head_kv);
                tui_meter(th, y, bx, bw > 24 ? 24 : bw, frac, th->attr[TS_SPARK], th->attr[TS_METER_EMPTY]);
            }
        }
        y++;
    }
    if (leg_rows > 0 && y < r.y + r.h) legend_lines(th, items, n_items, r.x, y, r.w, r.y + r.h - y, 1);
}

// ---- info lines ------------------------------------------------------------------------------------------

enum info_line {
    IL_KV,
    IL_BAR,
    IL_SPLIT1,
    IL_SPLIT2,
    IL_EXACT,
    IL_SPARK,
    IL_CTX,
    IL_SPEED,
    IL_TOKENS,
    IL_WEIGHTS,
    IL_GPU,
    IL_SEL1,
    IL_SEL2,
    IL_SEL3,
    IL_COUNT
};

// Lower = more important; lines are kept by priority, then drawn in enum order.
static const int info_priority[IL_COUNT] = {
    [IL_KV] = 0,    [IL_BAR] = 1,  [IL_SPLIT1] = 4, [IL_SPLIT2] = 4, [IL_EXACT] = 3,
    [IL_SPARK] = 5, [IL_CTX] = 1,  [IL_SPEED] = 2,  [IL_TOKENS] = 6, [IL_WEIGHTS] = 6,
    [IL_GPU] = 3,   [IL_SEL1] = 2, [IL_SEL2] = 3,   [IL_SEL3] = 5,
};

// Whether a line has something to say for these stats.
static int info_available(const struct tui_stats *s, int which) {
    if (which == IL_GPU) return s->dev_total > 0;
    if (which == IL_SPLIT2) return s->bits != 16 || s->bytes_codes > 0 || s->bytes_scales > 0;
    return 1;
}

static int info_count(const struct tui_stats *s) {
    int n = 0;
    for (int i = 0; i < IL_COUNT; i++)
        n += info_available(s, i);
    return n;
}

static void label(const struct tui_theme *th, int y, int x, int w, const char *text) {
    tui_puts(th, y, x, w < LABEL_W ? w : LABEL_W, text, th->attr[TS_DIM]);
}

static attr_t level_attr(const struct tui_theme *th, double frac) {
    return th->attr[frac < 0.6 ? TS_METER_LOW : frac < 0.85 ? TS_METER_MID : TS_METER_HIGH];
}

static void draw_info_line(struct dash_state *d, const struct tui_stats *s, const struct tui_theme *th,
                           int which, int y, int x, int w) {
    char a[40], b[40], c[96];
    int lx = x + LABEL_W, lw = w - LABEL_W;
    if (lw > 64) lw = 64; // meters wider than this read worse, not better
    if (lw < 1) return;
    switch (which) {
    case IL_KV: {
        label(th, y, x, w, "KV");
        tui_fmt_bytes(s->kv_bytes, a, sizeof a);
        tui_fmt_bytes(s->kv_bytes_full, b, sizeof b);
        tui_fmt_saving(s->kv_bytes, s->kv_bytes_full, c, sizeof c);
        // "12.3 KiB of 48.0 KiB fp16  -74.4% (3.90x)", shortened until it fits
        char line[sizeof a + sizeof b + sizeof c + 16];
        int variant;
        for (variant = 0; variant < 3; variant++) {
            snprintf(line, sizeof line, "%s of %s%s  %s", a, b, variant == 0 ? " fp16" : "", c);
            if (variant == 2) {
                char *paren = strchr(line, '(');
                if (paren && paren > line) paren[-1] = 0;
            }
            if (tui_str_width(line, strlen(line)) <= lw) break;
        }
        int used = tui_puts(th, y, lx, lw, a, th->attr[TS_BOLD]);
        const char *rest = line + strlen(a);
        const char *sav = strstr(rest, "  ");
        size_t head = sav ? (size_t)(sav - rest) : strlen(rest);
        used += tui_put(th, y, lx + used, lw - used, rest, head, th->attr[TS_NORMAL]);
        if (sav) {
            attr_t sa = s->kv_bytes <= s->kv_bytes_full ? th->attr[TS_GOOD] : th->attr[TS_METER_HIGH];
            tui_puts(th, y, lx + used, lw - used, sav, sa);
        }
        break;
    }
    case IL_BAR: {
        double frac = s->kv_bytes_full ? (double)s->kv_bytes / (double)s->kv_bytes_full : 0;
        snprintf(c, sizeof c, " %.1f%%", frac * 100.0);
        int cw = tui_str_width(c, strlen(c));
        int mw = lw - cw;
        if (mw > 0) tui_meter(th, y, lx, mw, frac, level_attr(th, frac), th->attr[TS_METER_EMPTY]);
        tui_puts(th, y, lx + (mw > 0 ? mw : 0), lw - (mw > 0 ? mw : 0), c, th->attr[TS_NORMAL]);
        break;
    }
    case IL_SPLIT1:
        label(th, y, x, w, "parts");
        tui_fmt_bytes(s->bytes_fp, a, sizeof a);
        tui_fmt_bytes(s->bytes_meta, b, sizeof b);
        tui_putf(th, y, lx, lw, th->attr[TS_NORMAL], "fp %s  meta %s", a, b);
        break;
    case IL_SPLIT2:
        tui_fmt_bytes(s->bytes_codes, a, sizeof a);
        tui_fmt_bytes(s->bytes_scales, b, sizeof b);
        tui_putf(th, y, lx, lw, th->attr[TS_NORMAL], "codes %s  scales %s", a, b);
        break;
    case IL_EXACT:
        label(th, y, x, w, "bytes");
        tui_putf(th, y, lx, lw, th->attr[TS_NORMAL], "%llu of %llu", (unsigned long long)s->kv_bytes,
                 (unsigned long long)s->kv_bytes_full);
        break;
    case IL_SPARK: {
        label(th, y, x, w, "history");
        unsigned char lv[512];
        double top = tui_ring_max(&d->full, 0), kvmax = tui_ring_max(&d->kv, 0);
        int n = tui_spark_fit(&d->kv, lw < 512 ? lw : 512, kvmax > top ? kvmax : top, lv);
        for (int i = 0; i < n; i++)
            tui_puts(th, y, lx + i, 1, th->g->spark[lv[i]], th->attr[TS_SPARK]);
        if (n == 0) tui_puts(th, y, lx, lw, "-", th->attr[TS_DIM]);
        break;
    }
    case IL_CTX: {
        label(th, y, x, w, "context");
        double frac = s->n_ctx > 0 ? (double)s->n_past / s->n_ctx : 0;
        snprintf(c, sizeof c, "%d/%d %.0f%% ", s->n_past, s->n_ctx, frac * 100.0);
        int used = tui_puts(th, y, lx, lw, c, th->attr[TS_NORMAL]);
        if (lw - used >= 4)
            tui_meter(th, y, lx + used, lw - used, frac, level_attr(th, frac), th->attr[TS_METER_EMPTY]);
        break;
    }
    case IL_SPEED:
        label(th, y, x, w, "tok/s");
        tui_fmt_rate(s->prefill_tok_s, a, sizeof a);
        tui_fmt_rate(s->decode_tok_s, b, sizeof b);
        tui_putf(th, y, lx, lw, th->attr[TS_NORMAL], "prefill %s  decode %s", a, b);
        break;
    case IL_TOKENS: {
        label(th, y, x, w, "kept");
        long long all = (long long)s->n_past * s->n_layer * s->n_head_kv;
        tui_putf(th, y, lx, lw, th->attr[TS_NORMAL], "%lld of %lld token-heads (%.0f%%)",
                 (long long)s->retained_tokens, all,
                 all > 0 ? 100.0 * (double)s->retained_tokens / (double)all : 0.0);
        break;
    }
    case IL_WEIGHTS:
        label(th, y, x, w, "weights");
        tui_fmt_bytes(s->weights_bytes, a, sizeof a);
        tui_putf(th, y, lx, lw, th->attr[TS_NORMAL], "%s", a);
        break;
    case IL_GPU: {
        label(th, y, x, w, "GPU");
        double frac = (double)s->dev_used / (double)s->dev_total;
        tui_fmt_bytes(s->dev_used, a, sizeof a);
        tui_fmt_bytes(s->dev_total, b, sizeof b);
        snprintf(c, sizeof c, " %s/%s", a, b);
        int cw = tui_str_width(c, strlen(c));
        int mw = lw - cw;
        if (mw >= 4)
            tui_meter(th, y, lx, mw, frac, level_attr(th, frac), th->attr[TS_METER_EMPTY]);
        else
            mw = 0;
        tui_puts(th, y, lx + mw, lw - mw, c, th->attr[TS_NORMAL]);
        break;
    }
    case IL_SEL1:
    case IL_SEL2:
    case IL_SEL3: {
        if (s->n_layer <= 0 || s->n_head_kv <= 0) break;
        clamp_sel(d, s);
        const struct tui_head_stats *h = &s->heads[d->sel_layer * s->n_head_kv + d->sel_head];
        if (which == IL_SEL1) {
            label(th, y, x, w, "head");
            int used = tui_putf(th, y, lx, lw, th->attr[TS_BOLD], "L%d H%d ", d->sel_layer, d->sel_head);
            char g[2] = {h->glyph ? h->glyph : '?', 0};
            used +=
                tui_puts(th, y, lx + used, lw - used, g, th->attr[tui_theme_policy_style(h->comps)] | A_BOLD);
            tui_putf(th, y, lx + used, lw - used, th->attr[TS_NORMAL], " %s", h->name);
        } else if (which == IL_SEL2) {
            if (h->budget >= 0)
                snprintf(a, sizeof a, "kept %d/%d", h->retained, h->budget);
            else
                snprintf(a, sizeof a, "kept %d", h->retained);
            if (h->recovery >= 0)
                snprintf(b, sizeof b, "  rec %.3f (min %.3f)", h->recovery,
                         h->recovery_min >= 0 ? h->recovery_min : h->recovery);
            else
                snprintf(b, sizeof b, "  rec -");
            tui_putf(th, y, lx, lw, th->attr[TS_NORMAL], "%s%s", a, b);
        } else {
            tui_fmt_bytes(h->bytes, a, sizeof a);
            int used =
                tui_putf(th, y, lx, lw, th->attr[TS_NORMAL], "%s (%llu B)", a, (unsigned long long)h->bytes);
            if (s->layer_budget)
                tui_putf(th, y, lx + used, lw - used, th->attr[TS_DIM], "  layer budget %d",
                         s->layer_budget[d->sel_layer]);
        }
        break;
    }
    }
}

static void draw_info(struct dash_state *d, const struct tui_stats *s, const struct tui_theme *th,
                      struct tui_rect r) {
    if (r.w <= 0 || r.h <= 0) return;
    int keep[IL_COUNT] = {0};
    int rows = 0;
    for (int p = 0; p <= 6 && rows < r.h; p++)
        for (int i = 0; i < IL_COUNT && rows < r.h; i++)
            if (info_priority[i] == p && !keep[i] && info_available(s, i)) keep[i] = 1, rows++;
    int y = r.y;
    for (int i = 0; i < IL_COUNT; i++)
        if (keep[i]) draw_info_line(d, s, th, i, y++, r.x, r.w);
}

// ---- the whole dashboard ---------------------------------------------------------------------------------

void dash_draw(struct dash_state *d, const struct tui_stats *s, const struct tui_theme *th, struct tui_rect r,
               int left_border, int focused, int frozen) {
    if (r.w <= 0 || r.h <= 0) return;
    attr_t ba = focused ? th->attr[TS_FOCUS] : th->attr[TS_BORDER];
    // title bar
    tui_repeat(th, r.y, r.x, r.w, th->g->hline, ba);
    char title[160];
    if (s->n_layer > 0) {
        char extra[32] = "";
        if (s->bits != 16) snprintf(extra, sizeof extra, " %d-bit", s->bits);
        snprintf(title, sizeof title, " KV cache: %s%s  %dx%d heads ", s->policy[0] ? s->policy : "?", extra,
                 s->n_layer, s->n_head_kv);
    } else {
        snprintf(title, sizeof title, " KV cache ");
    }
    int tx = r.x + (left_border ? 1 : 0) + 1;
    int used = tui_puts(th, r.y, tx, r.w - (tx - r.x), title, ba | A_BOLD);
    if (frozen) tui_puts(th, r.y, tx + used, r.w - (tx - r.x) - used, " FROZEN (f) ", th->attr[TS_STATUS_HI]);
    struct tui_rect in = {r.x, r.y + 1, r.w, r.h - 1};
    if (left_border) {
        tui_puts(th, r.y, r.x, 1, th->g->cross_down, ba);
        for (int yy = in.y; yy < in.y + in.h; yy++)
            tui_puts(th, yy, r.x, 1, th->g->vline, ba);
        in.x += 2, in.w -= 2; // rule + one column of air
    }
    if (in.w <= 0 || in.h <= 0) return;
    if (s->n_layer <= 0) {
        tui_puts_fit(th, in.y, in.x, in.w, "waiting for the first stats...", th->attr[TS_DIM]);
        return;
    }
    clamp_sel(d, s);
    struct legend_item items[32];
    int n_items = legend_collect(s, items, 32);
    // Side by side when the grid keeps its widest cells there, or when stacking cannot show every layer;
    // otherwise stacked (a tall narrow pane reads better with full-width rows).
    int gw_best = grid_width_want(s, 1 << 20);
    int gw = gw_best;
    int gh = 1 + s->n_layer + legend_lines(th, items, n_items, 0, 0, in.w, 0, 0);
    if (in.w < gw_best + 2 + TUI_DASH_INFO_MIN_W && info_count(s) + 1 + gh > in.h)
        gw = grid_width_want(s, in.w);
    struct tui_dash_plan P;
    tui_dash_plan_compute(in, gw, gh, info_count(s), &P);
    draw_info(d, s, th, P.info);
    if (!P.side_by_side && P.info.h > 0 && P.grid.h > 1) {
        // a thin rule between info and grid when stacked
        P.grid.y++, P.grid.h--;
        tui_repeat(th, P.grid.y - 1, P.grid.x, P.grid.w, th->g->hline, th->attr[TS_BORDER]);
    }
    draw_grid(d, s, th, P.grid, focused);
}
