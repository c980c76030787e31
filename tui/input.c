// tui/input.c — line editor operations, input history (memory + file) and input-area geometry.
#include "tui/input.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tui/text.h"

// ---- editor ----------------------------------------------------------------------------------------------

static int edit_reserve(struct tui_edit *e, size_t need) {
    if (need + 1 <= e->cap) return 0;
    size_t cap = e->cap ? e->cap : 64;
    while (cap < need + 1)
        cap *= 2;
    char *b = realloc(e->buf, cap);
    if (!b) return -1;
    e->buf = b;
    e->cap = cap;
    return 0;
}

int tui_edit_init(struct tui_edit *e) {
    memset(e, 0, sizeof *e);
    if (edit_reserve(e, 63)) return -1;
    e->buf[0] = 0;
    return 0;
}

void tui_edit_free(struct tui_edit *e) {
    free(e->buf);
    free(e->kill);
    memset(e, 0, sizeof *e);
}

void tui_edit_clear(struct tui_edit *e) {
    e->len = e->cur = 0;
    if (e->buf) e->buf[0] = 0;
}

int tui_edit_set(struct tui_edit *e, const char *s, size_t n) {
    if (edit_reserve(e, n)) return -1;
    memmove(e->buf, s, n);
    e->buf[n] = 0;
    e->len = e->cur = n;
    return 0;
}

// Inserts raw (already clean) bytes at the cursor.
static int edit_insert_raw(struct tui_edit *e, const char *s, size_t n) {
    if (edit_reserve(e, e->len + n)) return -1;
    memmove(e->buf + e->cur + n, e->buf + e->cur, e->len - e->cur + 1);
    memcpy(e->buf + e->cur, s, n);
    e->len += n;
    e->cur += n;
    return 0;
}

int tui_edit_insert(struct tui_edit *e, const char *s, size_t n) {
    size_t cn;
    char *clean = tui_text_sanitize(s, n, &cn);
    if (!clean) return -1;
    int rc = edit_insert_raw(e, clean, cn);
    free(clean);
    return rc;
}

// Removes bytes [a, b) and puts the cursor at a.
static void edit_remove(struct tui_edit *e, size_t a, size_t b) {
    if (b <= a) return;
    memmove(e->buf + a, e->buf + b, e->len - b + 1);
    e->len -= b - a;
    e->cur = a;
}

// Like edit_remove, and keeps the removed text for Ctrl+Y.
static void edit_kill(struct tui_edit *e, size_t a, size_t b) {
    if (b <= a) return;
    char *k = realloc(e->kill, b - a);
    if (k) { // when out of memory the text is still removed, only not kept
        memcpy(k, e->buf + a, b - a);
        e->kill = k;
        e->kill_len = b - a;
    }
    edit_remove(e, a, b);
}

// A zero-width code point that belongs to the character before it (combining marks, ZWJ, selectors).
static int is_mark(uint32_t cp) { return cp >= 0x300 && tui_cp_width(cp) == 0; }

static size_t next_char(const struct tui_edit *e, size_t i) {
    if (i >= e->len) return e->len;
    tui_utf8_next(e->buf, e->len, &i);
    while (i < e->len) {
        size_t j = i;
        if (!is_mark(tui_utf8_next(e->buf, e->len, &j))) break;
        i = j;
    }
    return i;
}

static size_t prev_char(const struct tui_edit *e, size_t i) {
    while (i > 0) {
        size_t p = tui_utf8_prev(e->buf, e->len, i);
        size_t q = p;
        uint32_t cp = tui_utf8_next(e->buf, e->len, &q);
        i = p;
        if (!is_mark(cp)) break;
    }
    return i;
}

static size_t line_start(const struct tui_edit *e, size_t i) {
    while (i > 0 && e->buf[i - 1] != '\n')
        i--;
    return i;
}

static size_t line_end(const struct tui_edit *e, size_t i) {
    while (i < e->len && e->buf[i] != '\n')
        i++;
    return i;
}

static int is_space(char c) { return c == ' ' || c == '\n'; }

void tui_edit_left(struct tui_edit *e) { e->cur = prev_char(e, e->cur); }
void tui_edit_right(struct tui_edit *e) { e->cur = next_char(e, e->cur); }

void tui_edit_word_left(struct tui_edit *e) {
    size_t i = e->cur;
    while (i > 0 && is_space(e->buf[i - 1]))
        i--;
    while (i > 0 && !is_space(e->buf[i - 1]))
        i = prev_char(e, i);
    e->cur = i;
}

void tui_edit_word_right(struct tui_edit *e) {
    size_t i = e->cur;
    while (i < e->len && is_space(e->buf[i]))
        i++;
    while (i < e->len && !is_space(e->buf[i]))
        i = next_char(e, i);
    e->cur = i;
}

void tui_edit_home(struct tui_edit *e) { e->cur = line_start(e, e->cur); }
void tui_edit_end(struct tui_edit *e) { e->cur = line_end(e, e->cur); }

// Byte offset in the line starting at `start` whose display column is the largest <= col.
static size_t col_to_offset(const struct tui_edit *e, size_t start, int col) {
    size_t end = line_end(e, start), i = start;
    int c = 0;
    while (i < end) {
        size_t j = next_char(e, i);
        int w = tui_str_width(e->buf + i, j - i);
        if (c + w > col) break;
        c += w;
        i = j;
    }
    return i;
}

int tui_edit_line_up(struct tui_edit *e) {
    size_t ls = line_start(e, e->cur);
    if (ls == 0) return -1;
    int col = tui_str_width(e->buf + ls, e->cur - ls);
    e->cur = col_to_offset(e, line_start(e, ls - 1), col);
    return 0;
}

int tui_edit_line_down(struct tui_edit *e) {
    size_t le = line_end(e, e->cur);
    if (le >= e->len) return -1;
    size_t ls = line_start(e, e->cur);
    int col = tui_str_width(e->buf + ls, e->cur - ls);
    e->cur = col_to_offset(e, le + 1, col);
    return 0;
}

void tui_edit_backspace(struct tui_edit *e) { edit_remove(e, prev_char(e, e->cur), e->cur); }

void tui_edit_delete(struct tui_edit *e) {
    size_t c = e->cur;
    edit_remove(e, c, next_char(e, c));
    e->cur = c;
}

void tui_edit_kill_end(struct tui_edit *e) {
    size_t c = e->cur, end = line_end(e, c);
    if (end == c && c < e->len) end = c + 1; // at a line break: join the lines
    edit_kill(e, c, end);
    e->cur = c;
}

void tui_edit_kill_start(struct tui_edit *e) { edit_kill(e, line_start(e, e->cur), e->cur); }

void tui_edit_kill_word(struct tui_edit *e) {
    size_t end = e->cur, i = end;
    while (i > 0 && e->buf[i - 1] == ' ')
        i--;
    while (i > 0 && !is_space(e->buf[i - 1]))
        i = prev_char(e, i);
    if (i == end && i > 0 && e->buf[i - 1] == '\n') i--; // at a line start: remove the line break
    edit_kill(e, i, end);
}

int tui_edit_yank(struct tui_edit *e) { return e->kill_len ? edit_insert_raw(e, e->kill, e->kill_len) : 0; }

int tui_edit_geometry(const struct tui_edit *e, int width, int *cur_row, int *cur_col) {
    if (width < 1) width = 1;
    const char *s = e->buf ? e->buf : "";
    int n = tui_wrap(s, e->len, width, NULL, 0);
    struct tui_wrap_line stackv[16], *lines = stackv;
    if (n > 16) {
        lines = malloc((size_t)n * sizeof *lines);
        if (!lines) { // out of memory: a plausible answer instead of a crash
            *cur_row = 0, *cur_col = 0;
            return 1;
        }
    }
    tui_wrap(s, e->len, width, lines, n);
    int row = 0;
    for (int k = 0; k < n; k++)
        if (lines[k].start <= e->cur) row = k;
    size_t upto = e->cur < lines[row].end ? e->cur : lines[row].end;
    int col = tui_str_width(s + lines[row].start, upto - lines[row].start);
    int rows = n;
    if (col >= width) {
        if (row == n - 1) rows++;
        row++, col = 0;
    }
    if (lines != stackv) free(lines);
    *cur_row = row;
    *cur_col = col;
    return rows;
}

// ---- history ---------------------------------------------------------------------------------------------

int tui_history_init(struct tui_history *h, int max) {
    memset(h, 0, sizeof *h);
    h->max = max < 1 ? 1 : max;
    return 0;
}

void tui_history_free(struct tui_history *h) {
    for (int i = 0; i < h->n; i++)
        free(h->items[i]);
    free(h->items);
    free(h->draft);
    memset(h, 0, sizeof *h);
}

void tui_history_stop(struct tui_history *h) {
    h->pos = h->n;
    free(h->draft);
    h->draft = NULL;
}

int tui_history_add(struct tui_history *h, const char *text) {
    tui_history_stop(h);
    if (!text || !*text) return 0;
    if (h->n > 0 && strcmp(h->items[h->n - 1], text) == 0) return 0;
    char *copy = strdup(text);
    if (!copy) return -1;
    if (h->n == h->max) {
        free(h->items[0]);
        memmove(h->items, h->items + 1, (size_t)(h->n - 1) * sizeof *h->items);
        h->n--;
    }
    if (h->n == h->cap) {
        int cap = h->cap ? h->cap * 2 : 32;
        if (cap > h->max) cap = h->max;
        char **it = realloc(h->items, (size_t)cap * sizeof *it);
        if (!it) {
            free(copy);
            return -1;
        }
        h->items = it;
        h->cap = cap;
    }
    h->items[h->n++] = copy;
    h->pos = h->n;
    return 0;
}

const char *tui_history_prev(struct tui_history *h, const char *current) {
    if (h->pos > h->n) h->pos = h->n;
    if (h->pos == 0) return NULL;
    if (h->pos == h->n) {
        free(h->draft);
        h->draft = strdup(current ? current : "");
    }
    h->pos--;
    return h->items[h->pos];
}

const char *tui_history_next(struct tui_history *h) {
    if (h->pos >= h->n) return NULL;
    h->pos++;
    if (h->pos == h->n) return h->draft ? h->draft : "";
    return h->items[h->pos];
}

int tui_history_load(struct tui_history *h, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t got;
    int rc = 0;
    while ((got = getline(&line, &lcap, f)) >= 0) {
        size_t n = (size_t)got;
        if (n && line[n - 1] == '\n') line[--n] = 0;
        size_t o = 0;
        for (size_t i = 0; i < n; i++) { // unescape in place
            if (line[i] == '\\' && i + 1 < n) {
                i++;
                line[o++] = line[i] == 'n' ? '\n' : line[i];
            } else {
                line[o++] = line[i];
            }
        }
        line[o] = 0;
        if (tui_history_add(h, line)) {
            rc = -1;
            errno = ENOMEM;
            break;
        }
    }
    free(line);
    fclose(f);
    return rc;
}

int tui_history_append_file(const char *path, const char *text) {
    FILE *f = fopen(path, "a");
    if (!f) return -1;
    for (const char *p = text; *p; p++) {
        if (*p == '\\')
            fputs("\\\\", f);
        else if (*p == '\n')
            fputs("\\n", f);
        else
            fputc(*p, f);
    }
    fputc('\n', f);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) return -1;
    return 0;
}

int tui_history_path(char *out, size_t cap, const char *xdg, const char *home) {
    int n;
    if (xdg && xdg[0] == '/')
        n = snprintf(out, cap, "%s/kvchat/history", xdg);
    else if (home && home[0])
        n = snprintf(out, cap, "%s/.local/share/kvchat/history", home);
    else
        return -1;
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

int tui_mkdir_p(const char *dir) {
    char buf[4096];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(buf, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != 0) continue;
        char save = buf[i];
        buf[i] = 0;
        if (mkdir(buf, 0700) != 0 && errno != EEXIST) return -1;
        buf[i] = save;
    }
    struct stat st;
    if (stat(buf, &st) != 0) return -1;
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}
