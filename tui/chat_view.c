// tui/chat_view.c — conversation messages, their wrap cache, scrolling and drawing.
#include "tui/chat_view.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tui/draw.h"
#include "tui/tui.h"

#define GUTTER 2

void chat_view_init(struct chat_view *cv) { memset(cv, 0, sizeof *cv); }

static void msg_free(struct cv_msg *m) {
    free(m->text);
    free(m->note);
    free(m->lines);
    memset(m, 0, sizeof *m);
}

void chat_view_clear(struct chat_view *cv) {
    for (int i = 0; i < cv->n; i++)
        msg_free(&cv->msgs[i]);
    cv->n = 0;
    cv->scroll = 0;
    cv->last_total = 0;
}

void chat_view_free(struct chat_view *cv) {
    chat_view_clear(cv);
    free(cv->msgs);
    memset(cv, 0, sizeof *cv);
}

static int msg_append(struct cv_msg *m, const char *text, size_t len) {
    size_t cn;
    char *clean = tui_text_sanitize(text, len, &cn);
    if (!clean) return -1;
    if (m->len + cn + 1 > m->cap) {
        size_t cap = m->cap ? m->cap : 128;
        while (cap < m->len + cn + 1)
            cap *= 2;
        char *t = realloc(m->text, cap);
        if (!t) {
            free(clean);
            return -1;
        }
        m->text = t;
        m->cap = cap;
    }
    memcpy(m->text + m->len, clean, cn);
    m->len += cn;
    m->text[m->len] = 0;
    free(clean);
    return 0;
}

int chat_view_add(struct chat_view *cv, int role, const char *text, size_t len, int streaming) {
    if (cv->n == cv->cap) {
        int cap = cv->cap ? cv->cap * 2 : 16;
        struct cv_msg *m = realloc(cv->msgs, (size_t)cap * sizeof *m);
        if (!m) return -1;
        cv->msgs = m;
        cv->cap = cap;
    }
    struct cv_msg *m = &cv->msgs[cv->n];
    memset(m, 0, sizeof *m);
    m->role = role;
    m->streaming = streaming;
    m->wrap_w = -1;
    if (msg_append(m, text ? text : "", text ? len : 0)) {
        msg_free(m);
        return -1;
    }
    cv->n++;
    return 0;
}

int chat_view_append(struct chat_view *cv, const char *text, size_t len) {
    if (cv->n == 0 || cv->msgs[cv->n - 1].role != TUI_ROLE_ASSISTANT || !cv->msgs[cv->n - 1].streaming) {
        if (chat_view_add(cv, TUI_ROLE_ASSISTANT, "", 0, 1)) return -1;
    }
    return msg_append(&cv->msgs[cv->n - 1], text, len);
}

void chat_view_end(struct chat_view *cv, const char *note) {
    if (cv->n == 0) return;
    struct cv_msg *m = &cv->msgs[cv->n - 1];
    m->streaming = 0;
    free(m->note);
    m->note = note && *note ? strdup(note) : NULL;
}

int chat_view_drop_last(struct chat_view *cv, int role) {
    if (cv->n == 0 || cv->msgs[cv->n - 1].role != role) return -1;
    msg_free(&cv->msgs[--cv->n]);
    return 0;
}

// Wraps a message's text for a text width (cached).
static void msg_wrap(struct cv_msg *m, int tw) {
    if (m->wrap_w == tw && m->wrap_len == m->len && m->lines) return;
    int n = tui_wrap(m->text, m->len, tw, NULL, 0);
    if (n > m->cap_lines) {
        struct tui_wrap_line *l = realloc(m->lines, (size_t)n * sizeof *l);
        if (!l) { // out of memory: show nothing of this message rather than crash
            m->n_lines = 0;
            return;
        }
        m->lines = l;
        m->cap_lines = n;
    }
    m->n_lines = tui_wrap(m->text, m->len, tw, m->lines, n);
    m->wrap_w = tw;
    m->wrap_len = m->len;
}

// Whether a blank line separates message i from the one before it.
static int msg_gap(const struct chat_view *cv, int i) {
    if (i == 0) return 0;
    int a = cv->msgs[i - 1].role, b = cv->msgs[i].role;
    int a_note = a == TUI_ROLE_NOTICE || a == TUI_ROLE_ERROR,
        b_note = b == TUI_ROLE_NOTICE || b == TUI_ROLE_ERROR;
    return !(a_note && b_note);
}

static int text_width(int width) { return width > GUTTER + 1 ? width - GUTTER : 1; }

// Lines message i takes, separator included.
static int msg_height(struct chat_view *cv, int i, int width) {
    struct cv_msg *m = &cv->msgs[i];
    msg_wrap(m, text_width(width));
    int n = m->n_lines;
    if (m->len == 0 && !m->streaming && !m->note) n = 1;
    if (m->note) n += 1;
    return n + msg_gap(cv, i);
}

int chat_view_total_lines(struct chat_view *cv, int width) {
    int total = 0;
    for (int i = 0; i < cv->n; i++)
        total += msg_height(cv, i, width);
    return total;
}

void chat_view_scroll(struct chat_view *cv, int delta) {
    cv->scroll += delta;
    if (cv->scroll < 0) cv->scroll = 0;
}

void chat_view_scroll_home(struct chat_view *cv) { cv->scroll = 1 << 29; }
void chat_view_scroll_end(struct chat_view *cv) { cv->scroll = 0; }

static attr_t role_attr(const struct tui_theme *th, int role) {
    switch (role) {
    case TUI_ROLE_USER:
        return th->attr[TS_BOLD];
    case TUI_ROLE_NOTICE:
        return th->attr[TS_NOTICE];
    case TUI_ROLE_ERROR:
        return th->attr[TS_ERROR];
    default:
        return th->attr[TS_ASSIST];
    }
}

void chat_view_draw(struct chat_view *cv, const struct tui_theme *th, struct tui_rect r,
                    const char *spinner) {
    if (r.w <= 0 || r.h <= 0) return;
    int total = chat_view_total_lines(cv, r.w);
    if (cv->scroll > 0 && total > cv->last_total) cv->scroll += total - cv->last_total; // hold the view still
    cv->last_total = total;
    cv->last_h = r.h;
    int max_scroll = total > r.h ? total - r.h : 0;
    if (cv->scroll > max_scroll) cv->scroll = max_scroll;
    int first = total > r.h ? total - r.h - cv->scroll : 0; // index of the top visible line
    int gut = r.w > GUTTER + 1 ? GUTTER : 0;
    int line = 0; // running line index
    for (int i = 0; i < cv->n && line < first + r.h; i++) {
        int h = msg_height(cv, i, r.w);
        if (line + h <= first) {
            line += h;
            continue;
        }
        struct cv_msg *m = &cv->msgs[i];
        attr_t ta = role_attr(th, m->role);
        line += msg_gap(cv, i);
        int n_text = m->n_lines;
        if (m->len == 0 && !m->streaming && !m->note) n_text = 1;
        for (int k = 0; k < n_text + (m->note ? 1 : 0); k++, line++) {
            if (line < first || line >= first + r.h) continue;
            int y = r.y + line - first;
            if (k == 0 && gut) {
                if (m->role == TUI_ROLE_USER)
                    tui_puts(th, y, r.x, 1, th->g->user_mark, th->attr[TS_USER]);
                else if (m->role == TUI_ROLE_ERROR)
                    tui_puts(th, y, r.x, 1, "!", th->attr[TS_ERROR]);
                else if (m->role == TUI_ROLE_NOTICE)
                    tui_puts(th, y, r.x, 1, "*", th->attr[TS_NOTICE]);
            }
            if (k >= n_text) {
                tui_puts_fit(th, y, r.x + gut, r.w - gut, m->note, th->attr[TS_DIM]);
                continue;
            }
            if (m->len == 0 && m->streaming) {
                tui_puts(th, y, r.x + gut, r.w - gut, spinner ? spinner : "", th->attr[TS_NOTICE]);
                continue;
            }
            if (k < m->n_lines) {
                const struct tui_wrap_line *wl = &m->lines[k];
                tui_put(th, y, r.x + gut, r.w - gut, m->text + wl->start, wl->end - wl->start, ta);
            }
        }
    }
    if (cv->scroll > 0) {
        char msg[96];
        snprintf(msg, sizeof msg, " %s %d more (End) ", th->g->down, cv->scroll);
        int w = tui_str_width(msg, strlen(msg));
        if (w > r.w) w = r.w;
        tui_puts(th, r.y + r.h - 1, r.x + r.w - w, w, msg, th->attr[TS_STATUS]);
    }
}
