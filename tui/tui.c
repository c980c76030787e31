// tui/tui.c — the screen: owning and restoring the terminal (signals included), key decoding, key bindings
// and focus, the frame (status bar, chat, dashboard, input, hint bar), redraw throttling, screenshots, log
// ring.
#include "tui/tui.h"

#include <errno.h>
#include <fcntl.h>
#include <langinfo.h>
#include <locale.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <wchar.h>

#include "tui/chat_view.h"
#include "tui/dash.h"
#include "tui/draw.h"
#include "tui/input.h"
#include "tui/layout.h"
#include "tui/meter.h"
#include "tui/text.h"
#include "tui/theme.h"

#if TUI_HAVE_CURSES

#define STREAM_REDRAW_S 0.100 // streamed text and stats redraw at most this often
#define LOG_RING 64
#define LOG_LINE 240
#define HISTORY_MAX 1000
#define KEY_PASTE_BEGIN (KEY_MAX + 1)
#define KEY_PASTE_END (KEY_MAX + 2)

// ---- process-wide terminal state (signal handlers) -------------------------------------------------------

// The one piece of global mutable state in the TUI. Signal handlers can reach nothing else: when the process
// dies while curses owns the terminal, on_crash writes `restore` (precomputed from terminfo: leave the
// alternate screen, show the cursor, reset attributes, bracketed paste and mouse off) and puts back the
// termios saved at open, using only async-signal-safe calls (write, tcsetattr, dup2). The flags carry
// SIGINT (stop the reply) and SIGTERM/SIGHUP (quit) to the UI loop. Only one tui can be open at a time.
static struct {
    volatile sig_atomic_t active;
    struct termios saved;
    int have_saved;
    char restore[512];
    size_t restore_len;
    int saved_stderr; // the original fd 2 (dup), restored before the process dies; -1 when none
} g_term = {.saved_stderr = -1};
static volatile sig_atomic_t g_sig_int, g_sig_quit;

static const int crash_signals[] = {SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL};
static const int flag_signals[] = {SIGINT, SIGTERM, SIGHUP};
#define N_CRASH (int)(sizeof crash_signals / sizeof crash_signals[0])
#define N_FLAG (int)(sizeof flag_signals / sizeof flag_signals[0])

static void restore_terminal_now(void) {
    if (!g_term.active) return;
    g_term.active = 0;
    ssize_t wr = write(STDOUT_FILENO, g_term.restore, g_term.restore_len);
    (void)wr;
    if (g_term.have_saved) tcsetattr(STDIN_FILENO, TCSANOW, &g_term.saved);
    if (g_term.saved_stderr >= 0) dup2(g_term.saved_stderr, STDERR_FILENO);
}

static void on_crash(int sig) {
    restore_terminal_now();
    // SA_RESETHAND made the action the default again and SA_NODEFER lets it be delivered right away.
    raise(sig);
}

static void on_flag(int sig) {
    if (sig == SIGINT)
        g_sig_int = 1;
    else
        g_sig_quit = 1;
}

// ---- the screen object -----------------------------------------------------------------------------------

enum key_kind {
    K_NONE,
    K_CHAR,
    K_ENTER,
    K_NEWLINE,
    K_ESC,
    K_BACKSPACE,
    K_DELETE,
    K_LEFT,
    K_RIGHT,
    K_UP,
    K_DOWN,
    K_HOME,
    K_END,
    K_PGUP,
    K_PGDN,
    K_TAB,
    K_BTAB,
    K_CTRL,
    K_ALT,
    K_WORD_LEFT,
    K_WORD_RIGHT,
    K_ALT_BACKSPACE,
    K_FN,
    K_RESIZE,
    K_WHEEL_UP,
    K_WHEEL_DOWN,
    K_PASTE_BEGIN,
    K_PASTE_END,
    K_CTRL_HOME,
    K_CTRL_END,
};

struct key_ev {
    int kind;
    uint32_t ch; // K_CHAR: code point; K_CTRL/K_ALT: the letter; K_FN: the number
    int y, x;    // mouse position
};

struct tui {
    struct tui_options opt;
    struct tui_theme th;
    SCREEN *scr;
    char old_ctype[64]; // LC_CTYPE before tui_open
    struct sigaction old_crash[N_CRASH], old_flag[N_FLAG];

    struct tui_layout L;
    unsigned layout_flags;
    int focus_dash;
    int frozen;
    int busy;
    double busy_since;
    int in_paste;
    int input_scroll; // first input row shown

    struct chat_view cv;
    struct tui_edit ed;
    struct tui_history hist;
    char hist_path[4096];
    int hist_write; // 1 while writing the history file works
    struct dash_state dash;
    struct tui_stats stats;

    char *feed; // keys queued by tui_feed_keys
    size_t feed_len, feed_pos, feed_cap;

    int dirty;        // redraw at the next tui_draw
    int dirty_stream; // redraw within STREAM_REDRAW_S
    double last_draw;
    double ctrl_c_at; // last Ctrl+C while idle (a second one within 2 s quits)
    char flash[256];
    double flash_until;

    pthread_mutex_t log_mu; // guards the log ring (tui_log is called from any thread)
    char log[LOG_RING][LOG_LINE];
    int log_level[LOG_RING];
    int log_n, log_head;
    char log_flash[LOG_LINE]; // newest warning not yet shown
    int log_flash_set;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void set_err(char *err, size_t n, const char *fmt, ...) {
    if (!err || !n) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
}

// Appends a terminfo string capability to the restore sequence, without "$<..>" padding.
static void restore_add_cap(const char *name) {
    char *cap = tigetstr(name);
    if (!cap || cap == (char *)-1) return;
    for (const char *p = cap; *p; p++) {
        if (p[0] == '$' && p[1] == '<') {
            const char *q = strchr(p, '>');
            if (q) {
                p = q;
                continue;
            }
        }
        if (g_term.restore_len + 1 < sizeof g_term.restore) g_term.restore[g_term.restore_len++] = *p;
    }
}

static void restore_add(const char *s) {
    size_t n = strlen(s);
    if (g_term.restore_len + n < sizeof g_term.restore) {
        memcpy(g_term.restore + g_term.restore_len, s, n);
        g_term.restore_len += n;
    }
}

static void install_signals(struct tui *t) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_crash;
    sa.sa_flags = SA_RESETHAND | SA_NODEFER;
    for (int i = 0; i < N_CRASH; i++)
        sigaction(crash_signals[i], &sa, &t->old_crash[i]);
    sa.sa_handler = on_flag;
    sa.sa_flags = 0; // no SA_RESTART: a pending read returns so the loop sees the flag at once
    for (int i = 0; i < N_FLAG; i++)
        sigaction(flag_signals[i], &sa, &t->old_flag[i]);
}

static void uninstall_signals(struct tui *t) {
    for (int i = 0; i < N_CRASH; i++)
        sigaction(crash_signals[i], &t->old_crash[i], NULL);
    for (int i = 0; i < N_FLAG; i++)
        sigaction(flag_signals[i], &t->old_flag[i], NULL);
}

static void history_setup(struct tui *t) {
    tui_history_init(&t->hist, HISTORY_MAX);
    if (t->opt.no_history) return;
    if (t->opt.history_path) {
        snprintf(t->hist_path, sizeof t->hist_path, "%s", t->opt.history_path);
    } else if (tui_history_path(t->hist_path, sizeof t->hist_path, getenv("XDG_DATA_HOME"), getenv("HOME"))) {
        return;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", t->hist_path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = 0;
        if (tui_mkdir_p(dir)) {
            char msg[4300];
            snprintf(msg, sizeof msg, "history disabled: cannot create %s (%s)", dir, strerror(errno));
            chat_view_add(&t->cv, TUI_ROLE_NOTICE, msg, strlen(msg), 0);
            t->hist_path[0] = 0;
            return;
        }
    }
    if (tui_history_load(&t->hist, t->hist_path) && errno != ENOENT) {
        char msg[4300];
        snprintf(msg, sizeof msg, "history not loaded from %s (%s)", t->hist_path, strerror(errno));
        chat_view_add(&t->cv, TUI_ROLE_NOTICE, msg, strlen(msg), 0);
    }
    t->hist_write = 1;
}

struct tui *tui_open(const struct tui_options *opt, const char *log_path, char *err, size_t errlen) {
    if (g_term.active) {
        set_err(err, errlen, "the terminal is already in use by another screen");
        return NULL;
    }
    if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)) {
        set_err(err, errlen, "stdin and stdout must be a terminal for the full-screen chat");
        return NULL;
    }
    struct tui *t = calloc(1, sizeof *t);
    if (!t) {
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    if (opt) t->opt = *opt;
    const char *nc = getenv("NO_COLOR");
    if (nc && *nc) t->opt.no_color = 1;
    pthread_mutex_init(&t->log_mu, NULL);
    chat_view_init(&t->cv);
    if (tui_edit_init(&t->ed) || dash_init(&t->dash)) {
        set_err(err, errlen, "out of memory");
        tui_edit_free(&t->ed);
        free(t);
        return NULL;
    }
    history_setup(t);

    // Only LC_CTYPE: number formatting (LC_NUMERIC) stays "C" for the rest of the program. The previous
    // setting comes back at tui_close.
    const char *old_ctype = setlocale(LC_CTYPE, NULL);
    snprintf(t->old_ctype, sizeof t->old_ctype, "%s", old_ctype ? old_ctype : "C");
    setlocale(LC_CTYPE, "");
    int utf8 = strcmp(nl_langinfo(CODESET), "UTF-8") == 0;

    g_term.have_saved = tcgetattr(STDIN_FILENO, &g_term.saved) == 0;
    install_signals(t);
    t->scr = newterm(NULL, stdout, stdin);
    if (!t->scr) {
        uninstall_signals(t);
        setlocale(LC_CTYPE, t->old_ctype);
        const char *term = getenv("TERM");
        set_err(err, errlen, "cannot use terminal type '%s' (check $TERM)", term ? term : "(unset)");
        tui_history_free(&t->hist);
        tui_edit_free(&t->ed);
        dash_free(&t->dash);
        free(t);
        return NULL;
    }
    char *cup = tigetstr("cup");
    if (!cup || cup == (char *)-1) { // e.g. TERM=dumb: nothing can be placed on screen
        endwin();
        delscreen(t->scr);
        uninstall_signals(t);
        setlocale(LC_CTYPE, t->old_ctype);
        set_err(err, errlen, "terminal type '%s' cannot move the cursor",
                getenv("TERM") ? getenv("TERM") : "?");
        tui_history_free(&t->hist);
        tui_edit_free(&t->ed);
        dash_free(&t->dash);
        chat_view_free(&t->cv);
        free(t);
        return NULL;
    }
    raw();
    noecho();
    nonl();
    keypad(stdscr, TRUE);
    set_escdelay(25);
    define_key("\033[200~", KEY_PASTE_BEGIN);
    define_key("\033[201~", KEY_PASTE_END);
    if (!t->opt.no_mouse) {
        mousemask(BUTTON4_PRESSED | BUTTON5_PRESSED, NULL);
        mouseinterval(0);
    }
    tui_theme_init(&t->th, !t->opt.no_color, utf8);

    g_term.restore_len = 0;
    restore_add("\033[?2004l");
    if (!t->opt.no_mouse) restore_add("\033[?1000l\033[?1002l\033[?1006l");
    restore_add_cap("sgr0");
    restore_add_cap("cnorm");
    restore_add_cap("rmkx");
    restore_add_cap("rmcup");

    // stderr would scribble over the screen: send it to the log file (or nowhere) while curses owns it.
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    int fd = open(log_path && *log_path ? log_path : "/dev/null", O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd < 0) fd = open("/dev/null", O_WRONLY);
    if (saved >= 0 && fd >= 0) {
        dup2(fd, STDERR_FILENO);
        g_term.saved_stderr = saved;
    } else if (saved >= 0) {
        close(saved);
    }
    if (fd >= 0) close(fd);

    fputs("\033[?2004h", stdout); // bracketed paste: pasted newlines stay in the input
    fflush(stdout);
    g_sig_int = g_sig_quit = 0;
    g_term.active = 1;
    t->dirty = 1;
    return t;
}

void tui_close(struct tui *t) {
    if (!t) return;
    if (g_term.active) {
        g_term.active = 0;
        fputs("\033[?2004l", stdout);
        fflush(stdout);
        if (!t->opt.no_mouse) mousemask(0, NULL);
        endwin();
        fflush(stdout);
        if (g_term.have_saved) tcsetattr(STDIN_FILENO, TCSANOW, &g_term.saved);
        if (g_term.saved_stderr >= 0) {
            fflush(stderr);
            dup2(g_term.saved_stderr, STDERR_FILENO);
            close(g_term.saved_stderr);
            g_term.saved_stderr = -1;
        }
        uninstall_signals(t);
    }
    if (t->scr) delscreen(t->scr);
    setlocale(LC_CTYPE, t->old_ctype);
    chat_view_free(&t->cv);
    tui_edit_free(&t->ed);
    tui_history_free(&t->hist);
    dash_free(&t->dash);
    tui_stats_release(&t->stats);
    free(t->feed);
    pthread_mutex_destroy(&t->log_mu);
    free(t);
}

// ---- small state setters ---------------------------------------------------------------------------------

// Copies src into dst (cap bytes), cutting at a UTF-8 character boundary when it does not fit.
static void copy_utf8(char *dst, size_t cap, const char *src) {
    size_t n = strlen(src);
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(dst, src, n);
    dst[n] = 0;
}

void tui_flash(struct tui *t, const char *msg) {
    copy_utf8(t->flash, sizeof t->flash, msg);
    t->flash_until = now_s() + 4.0;
    t->dirty = 1;
}

void tui_set_busy(struct tui *t, int busy) {
    if (busy && !t->busy) t->busy_since = now_s();
    t->busy = busy;
    t->dirty = 1;
}

int tui_is_busy(const struct tui *t) { return t->busy; }

void tui_set_stats(struct tui *t, const struct tui_stats *s) {
    if (t->frozen) return;
    if (tui_stats_copy(&t->stats, s) == 0) {
        if (s->n_layer > 0) dash_sample(&t->dash, s->kv_bytes, s->kv_bytes_full, s->n_past);
        t->dirty_stream = 1;
    }
}

void tui_add_sample(struct tui *t, uint64_t kv_bytes, uint64_t kv_bytes_full, int n_past) {
    if (t->frozen) return;
    dash_sample(&t->dash, kv_bytes, kv_bytes_full, n_past);
    t->dirty_stream = 1;
}

void tui_reset_samples(struct tui *t) {
    dash_reset_samples(&t->dash);
    t->dirty = 1;
}

int tui_chat_add(struct tui *t, int role, const char *text) {
    t->dirty = 1;
    if (role == TUI_ROLE_USER) chat_view_scroll_end(&t->cv);
    return chat_view_add(&t->cv, role, text, strlen(text), 0);
}

int tui_chat_stream(struct tui *t, const char *utf8, size_t len) {
    t->dirty_stream = 1;
    if (t->cv.n == 0 || !t->cv.msgs[t->cv.n - 1].streaming ||
        t->cv.msgs[t->cv.n - 1].role != TUI_ROLE_ASSISTANT)
        t->dirty = 1; // a new message (spinner): show at once
    return chat_view_append(&t->cv, utf8, len);
}

void tui_chat_end(struct tui *t, const char *note) {
    chat_view_end(&t->cv, note);
    t->dirty = 1;
}

int tui_chat_drop_last(struct tui *t, int role) {
    t->dirty = 1;
    return chat_view_drop_last(&t->cv, role);
}

void tui_chat_clear(struct tui *t) {
    chat_view_clear(&t->cv);
    t->dirty = 1;
}

void tui_chat_notef(struct tui *t, int role, const char *fmt, ...) {
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    tui_chat_add(t, role, buf);
}

int tui_feed_keys(struct tui *t, const char *utf8) {
    size_t n = strlen(utf8);
    if (t->feed_pos == t->feed_len) t->feed_pos = t->feed_len = 0;
    if (t->feed_len + n > t->feed_cap) {
        size_t cap = t->feed_cap ? t->feed_cap : 256;
        while (cap < t->feed_len + n)
            cap *= 2;
        char *f = realloc(t->feed, cap);
        if (!f) return -1;
        t->feed = f;
        t->feed_cap = cap;
    }
    memcpy(t->feed + t->feed_len, utf8, n);
    t->feed_len += n;
    return 0;
}

int tui_feed_pending(const struct tui *t) { return t->feed_pos < t->feed_len; }

int tui_input_empty(const struct tui *t) { return t->ed.len == 0; }

void tui_log(struct tui *t, int level, const char *msg) {
    pthread_mutex_lock(&t->log_mu);
    int slot = (t->log_head + t->log_n) % LOG_RING;
    if (t->log_n == LOG_RING)
        t->log_head = (t->log_head + 1) % LOG_RING;
    else
        t->log_n++;
    copy_utf8(t->log[slot], LOG_LINE, msg);
    t->log_level[slot] = level;
    if (level >= 2) { // warnings and errors also flash in the status bar
        copy_utf8(t->log_flash, sizeof t->log_flash, msg);
        t->log_flash_set = 1;
    }
    pthread_mutex_unlock(&t->log_mu);
}

void tui_show_log(struct tui *t) {
    static const char *names[] = {"debug", "info", "warn", "error"};
    char *buf = malloc(LOG_RING * (LOG_LINE + 16) + 64);
    if (!buf) return;
    size_t o = 0;
    pthread_mutex_lock(&t->log_mu);
    o += (size_t)sprintf(buf + o, "log (%d message%s):", t->log_n, t->log_n == 1 ? "" : "s");
    for (int i = 0; i < t->log_n; i++) {
        int slot = (t->log_head + i) % LOG_RING;
        int lv = t->log_level[slot];
        o += (size_t)sprintf(buf + o, "\n%s: %s", names[lv >= 0 && lv <= 3 ? lv : 1], t->log[slot]);
    }
    pthread_mutex_unlock(&t->log_mu);
    tui_chat_add(t, TUI_ROLE_NOTICE, buf);
    free(buf);
}

// ---- keys ------------------------------------------------------------------------------------------------

// Reads the rest of a CSI/SS3 sequence whose introducer was already read and maps the few we know.
static void read_csi(struct key_ev *ev) {
    char seq[32];
    int n = 0;
    wint_t wc;
    wtimeout(stdscr, 0);
    for (;;) {
        int r = wget_wch(stdscr, &wc);
        if (r != OK) break;
        if (n < (int)sizeof seq - 1) seq[n++] = (char)wc;
        if (wc >= 0x40 && wc <= 0x7E) break; // final byte
    }
    seq[n] = 0;
    ev->kind = K_NONE;
    if (!strcmp(seq, "200~"))
        ev->kind = K_PASTE_BEGIN;
    else if (!strcmp(seq, "201~"))
        ev->kind = K_PASTE_END;
    else if (n && (seq[n - 1] == 'C' || seq[n - 1] == 'D')) {
        int word = strchr(seq, ';') != NULL; // Ctrl/Alt + arrow: "1;5C"
        ev->kind = seq[n - 1] == 'C' ? (word ? K_WORD_RIGHT : K_RIGHT) : (word ? K_WORD_LEFT : K_LEFT);
    } else if (n && seq[n - 1] == 'A')
        ev->kind = K_UP;
    else if (n && seq[n - 1] == 'B')
        ev->kind = K_DOWN;
    else if (n && seq[n - 1] == 'H')
        ev->kind = strchr(seq, ';') ? K_CTRL_HOME : K_HOME;
    else if (n && seq[n - 1] == 'F')
        ev->kind = strchr(seq, ';') ? K_CTRL_END : K_END;
    else if (!strcmp(seq, "5~"))
        ev->kind = K_PGUP;
    else if (!strcmp(seq, "6~"))
        ev->kind = K_PGDN;
    else if (!strcmp(seq, "3~"))
        ev->kind = K_DELETE;
}

static int map_function_key(wint_t wc, struct key_ev *ev) {
    switch (wc) {
    case KEY_PASTE_BEGIN:
        ev->kind = K_PASTE_BEGIN;
        break;
    case KEY_PASTE_END:
        ev->kind = K_PASTE_END;
        break;
    case KEY_ENTER:
        ev->kind = K_ENTER;
        break;
    case KEY_BACKSPACE:
        ev->kind = K_BACKSPACE;
        break;
    case KEY_DC:
        ev->kind = K_DELETE;
        break;
    case KEY_LEFT:
        ev->kind = K_LEFT;
        break;
    case KEY_RIGHT:
        ev->kind = K_RIGHT;
        break;
    case KEY_UP:
        ev->kind = K_UP;
        break;
    case KEY_DOWN:
        ev->kind = K_DOWN;
        break;
    case KEY_HOME:
        ev->kind = K_HOME;
        break;
    case KEY_END:
        ev->kind = K_END;
        break;
    case KEY_PPAGE:
        ev->kind = K_PGUP;
        break;
    case KEY_NPAGE:
        ev->kind = K_PGDN;
        break;
    case KEY_BTAB:
        ev->kind = K_BTAB;
        break;
    case KEY_RESIZE:
        ev->kind = K_RESIZE;
        break;
    case KEY_SLEFT:
        ev->kind = K_WORD_LEFT;
        break;
    case KEY_SRIGHT:
        ev->kind = K_WORD_RIGHT;
        break;
    case KEY_MOUSE: {
        MEVENT me;
        ev->kind = K_NONE;
        if (getmouse(&me) == OK) {
            if (me.bstate & BUTTON4_PRESSED) ev->kind = K_WHEEL_UP;
#ifdef BUTTON5_PRESSED
            else if (me.bstate & BUTTON5_PRESSED)
                ev->kind = K_WHEEL_DOWN;
#endif
            ev->y = me.y, ev->x = me.x;
        }
        break;
    }
    default:
        if (wc >= KEY_F(1) && wc <= KEY_F(24)) {
            ev->kind = K_FN;
            ev->ch = (uint32_t)(wc - KEY_F(0));
        } else {
            // Ctrl+arrows and friends have terminal-specific codes; ask ncurses for their names.
            const char *name = keyname((int)wc);
            if (name && (!strcmp(name, "kLFT5") || !strcmp(name, "kLFT3")))
                ev->kind = K_WORD_LEFT;
            else if (name && (!strcmp(name, "kRIT5") || !strcmp(name, "kRIT3")))
                ev->kind = K_WORD_RIGHT;
            else if (name && !strcmp(name, "kHOM5"))
                ev->kind = K_CTRL_HOME;
            else if (name && !strcmp(name, "kEND5"))
                ev->kind = K_CTRL_END;
            else
                ev->kind = K_NONE;
        }
    }
    return ev->kind != K_NONE;
}

static void map_char(wint_t wc, struct key_ev *ev) {
    ev->ch = (uint32_t)wc;
    if (wc == '\r')
        ev->kind = K_ENTER;
    else if (wc == '\n')
        ev->kind = K_NEWLINE; // Ctrl+J
    else if (wc == '\t')
        ev->kind = K_TAB;
    else if (wc == 127 || wc == 8)
        ev->kind = K_BACKSPACE;
    else if (wc == 27)
        ev->kind = K_ESC;
    else if (wc < 32) {
        ev->kind = K_CTRL;
        ev->ch = (uint32_t)wc + 'a' - 1;
    } else
        ev->kind = K_CHAR;
}

// Next key: fed keys first, then the terminal (waiting up to timeout_ms). 0 when none.
static int read_key(struct tui *t, int timeout_ms, struct key_ev *ev) {
    memset(ev, 0, sizeof *ev);
    if (t->feed_pos < t->feed_len) {
        uint32_t cp = tui_utf8_next(t->feed, t->feed_len, &t->feed_pos);
        map_char((wint_t)cp, ev);
        return 1;
    }
    wint_t wc;
    wtimeout(stdscr, timeout_ms);
    int r = wget_wch(stdscr, &wc);
    if (r == ERR) return 0;
    if (r == KEY_CODE_YES) {
        map_function_key(wc, ev); // unknown keys come back as K_NONE, which nothing acts on
        return 1;
    }
    if (wc != 27) {
        map_char(wc, ev);
        return 1;
    }
    // ESC: alone (Esc key), or the start of Alt+key or of a sequence ncurses did not know
    wint_t w2;
    wtimeout(stdscr, 0);
    int r2 = wget_wch(stdscr, &w2);
    if (r2 == ERR) {
        ev->kind = K_ESC;
    } else if (r2 == KEY_CODE_YES) {
        map_function_key(w2, ev); // Alt+function key: treat as the key
    } else if (w2 == '\r' || w2 == '\n') {
        ev->kind = K_NEWLINE; // Alt+Enter
    } else if (w2 == '[' || w2 == 'O') {
        read_csi(ev);
    } else if (w2 == 127 || w2 == 8) {
        ev->kind = K_ALT_BACKSPACE;
    } else if (w2 == 'b') {
        ev->kind = K_WORD_LEFT;
    } else if (w2 == 'f') {
        ev->kind = K_WORD_RIGHT;
    } else {
        ev->kind = K_ALT;
        ev->ch = (uint32_t)w2;
    }
    return 1;
}

// ---- key bindings ----------------------------------------------------------------------------------------

static int dash_visible(const struct tui *t) { return t->L.dash.w > 0 && t->L.dash.h > 0; }

static void relayout(struct tui *t); // below

static int submit(struct tui *t, char **text) {
    // trailing newlines and spaces (a paste often ends with one) are not part of the message
    while (t->ed.len > 0 && (t->ed.buf[t->ed.len - 1] == '\n' || t->ed.buf[t->ed.len - 1] == ' '))
        t->ed.buf[--t->ed.len] = 0;
    if (t->ed.cur > t->ed.len) t->ed.cur = t->ed.len;
    size_t lead = 0;
    while (lead < t->ed.len && (t->ed.buf[lead] == '\n' || t->ed.buf[lead] == ' '))
        lead++;
    if (lead == t->ed.len) { // only blanks: nothing to send
        tui_edit_clear(&t->ed);
        return TUI_ACT_NONE;
    }
    if (t->busy && t->ed.buf[0] != '/') {
        tui_flash(t, "still answering: Ctrl+C stops the reply (your text stays here)");
        return TUI_ACT_NONE;
    }
    char *copy = strdup(t->ed.buf);
    if (!copy) {
        tui_flash(t, "out of memory");
        return TUI_ACT_NONE;
    }
    tui_history_add(&t->hist, copy);
    if (t->hist_write && t->hist_path[0] && tui_history_append_file(t->hist_path, copy)) {
        t->hist_write = 0;
        char msg[4300];
        snprintf(msg, sizeof msg, "history not saved to %s (%s)", t->hist_path, strerror(errno));
        chat_view_add(&t->cv, TUI_ROLE_NOTICE, msg, strlen(msg), 0);
    }
    tui_edit_clear(&t->ed);
    t->input_scroll = 0;
    chat_view_scroll_end(&t->cv);
    *text = copy;
    return TUI_ACT_SUBMIT;
}

static void show_history_text(struct tui *t, const char *s) {
    if (s) tui_edit_set(&t->ed, s, strlen(s));
}

static int handle_input_key(struct tui *t, const struct key_ev *ev, char **text) {
    struct tui_edit *e = &t->ed;
    int edited = 1;
    switch (ev->kind) {
    case K_CHAR: {
        char u[4];
        int n = tui_utf8_encode(ev->ch, u);
        tui_edit_insert(e, u, (size_t)n);
        break;
    }
    case K_ENTER:
        if (t->in_paste) {
            tui_edit_insert(e, "\n", 1);
            break;
        }
        return submit(t, text);
    case K_NEWLINE:
        tui_edit_insert(e, "\n", 1);
        break;
    case K_BACKSPACE:
        tui_edit_backspace(e);
        break;
    case K_DELETE:
        tui_edit_delete(e);
        break;
    case K_ALT_BACKSPACE:
        tui_edit_kill_word(e);
        break;
    case K_LEFT:
        tui_edit_left(e), edited = 0;
        break;
    case K_RIGHT:
        tui_edit_right(e), edited = 0;
        break;
    case K_WORD_LEFT:
        tui_edit_word_left(e), edited = 0;
        break;
    case K_WORD_RIGHT:
        tui_edit_word_right(e), edited = 0;
        break;
    case K_HOME:
        if (e->len == 0)
            chat_view_scroll_home(&t->cv);
        else
            tui_edit_home(e);
        edited = 0;
        break;
    case K_END:
        if (e->len == 0)
            chat_view_scroll_end(&t->cv);
        else
            tui_edit_end(e);
        edited = 0;
        break;
    case K_UP:
        if (tui_edit_line_up(e) != 0) show_history_text(t, tui_history_prev(&t->hist, e->buf));
        edited = 0;
        break;
    case K_DOWN:
        if (tui_edit_line_down(e) != 0) show_history_text(t, tui_history_next(&t->hist));
        edited = 0;
        break;
    case K_CTRL:
        switch (ev->ch) {
        case 'a':
            tui_edit_home(e), edited = 0;
            break;
        case 'e':
            tui_edit_end(e), edited = 0;
            break;
        case 'b':
            tui_edit_left(e), edited = 0;
            break;
        case 'f':
            tui_edit_right(e), edited = 0;
            break;
        case 'k':
            tui_edit_kill_end(e);
            break;
        case 'u':
            tui_edit_kill_start(e);
            break;
        case 'w':
            tui_edit_kill_word(e);
            break;
        case 'y':
            tui_edit_yank(e);
            break;
        case 'h':
            tui_edit_backspace(e);
            break;
        case 'p':
            show_history_text(t, tui_history_prev(&t->hist, e->buf)), edited = 0;
            break;
        case 'n':
            show_history_text(t, tui_history_next(&t->hist)), edited = 0;
            break;
        default:
            edited = 0;
            break;
        }
        break;
    default:
        edited = 0;
        break;
    }
    if (edited) tui_history_stop(&t->hist);
    return TUI_ACT_NONE;
}

static int handle_dash_key(struct tui *t, const struct key_ev *ev, char **text) {
    struct dash_state *d = &t->dash;
    switch (ev->kind) {
    case K_LEFT:
        dash_move(d, &t->stats, 0, -1);
        break;
    case K_RIGHT:
        dash_move(d, &t->stats, 0, 1);
        break;
    case K_UP:
        dash_move(d, &t->stats, -1, 0);
        break;
    case K_DOWN:
        dash_move(d, &t->stats, 1, 0);
        break;
    case K_PGUP:
        dash_move(d, &t->stats, -(d->grid_rows > 1 ? d->grid_rows - 1 : 1), 0);
        break;
    case K_PGDN:
        dash_move(d, &t->stats, d->grid_rows > 1 ? d->grid_rows - 1 : 1, 0);
        break;
    case K_HOME:
        dash_move(d, &t->stats, -(1 << 20), -(1 << 20));
        break;
    case K_END:
        dash_move(d, &t->stats, 1 << 20, 1 << 20);
        break;
    case K_ENTER:
        t->focus_dash = 0;
        break;
    case K_CHAR:
        if (ev->ch == 'f') {
            t->frozen = !t->frozen;
            tui_flash(t, t->frozen ? "dashboard frozen (f to resume)" : "dashboard live");
        } else if (ev->ch == 'z') {
            t->layout_flags ^= TUI_LAYOUT_ZOOM;
        } else if (ev->ch == 'c') {
            t->layout_flags ^= TUI_LAYOUT_COLLAPSED;
            t->layout_flags &= ~TUI_LAYOUT_ZOOM;
        } else if (ev->ch == 'h' || ev->ch == 'j' || ev->ch == 'k' || ev->ch == 'l') {
            int dl = ev->ch == 'j'   ? 1
                     : ev->ch == 'k' ? -1
                                     : 0,
                dh = ev->ch == 'l'   ? 1
                     : ev->ch == 'h' ? -1
                                     : 0;
            dash_move(d, &t->stats, dl, dh);
        } else {
            t->focus_dash = 0; // typing goes to the input
            return handle_input_key(t, ev, text);
        }
        break;
    default:
        t->focus_dash = 0;
        return handle_input_key(t, ev, text);
    }
    return TUI_ACT_NONE;
}

static int handle_key(struct tui *t, const struct key_ev *ev, char **text) {
    t->dirty = 1;
    if (t->in_paste && ev->kind != K_PASTE_END) {
        // pasted text: everything is literal, newlines stay in the input
        if (ev->kind == K_CHAR || ev->kind == K_ENTER || ev->kind == K_NEWLINE || ev->kind == K_TAB) {
            struct key_ev e2 = *ev;
            if (ev->kind == K_TAB) e2.kind = K_CHAR, e2.ch = ' ';
            t->focus_dash = 0;
            return handle_input_key(t, &e2, text);
        }
        return TUI_ACT_NONE;
    }
    switch (ev->kind) {
    case K_NONE:
        t->dirty = 0;
        return TUI_ACT_NONE;
    case K_PASTE_BEGIN:
        t->in_paste = 1;
        return TUI_ACT_NONE;
    case K_PASTE_END:
        t->in_paste = 0;
        return TUI_ACT_NONE;
    case K_RESIZE:
        relayout(t);
        return TUI_ACT_NONE;
    case K_TAB:
    case K_BTAB:
        if (dash_visible(t))
            t->focus_dash = !t->focus_dash;
        else
            tui_flash(t, "the dashboard is hidden: F3 shows it, F4 zooms it");
        return TUI_ACT_NONE;
    case K_ESC:
        if (t->busy) return TUI_ACT_STOP;
        t->focus_dash = 0;
        return TUI_ACT_NONE;
    case K_WHEEL_UP:
    case K_WHEEL_DOWN: {
        int dir = ev->kind == K_WHEEL_UP ? -1 : 1;
        struct tui_rect dr = t->L.dash;
        if (dash_visible(t) && ev->x >= dr.x && ev->x < dr.x + dr.w && ev->y >= dr.y && ev->y < dr.y + dr.h)
            dash_scroll(&t->dash, &t->stats, dir * 3);
        else
            chat_view_scroll(&t->cv, -dir * 3);
        return TUI_ACT_NONE;
    }
    case K_CTRL_HOME:
        chat_view_scroll_home(&t->cv);
        return TUI_ACT_NONE;
    case K_CTRL_END:
        chat_view_scroll_end(&t->cv);
        return TUI_ACT_NONE;
    case K_FN:
        switch (ev->ch) {
        case 1:
            *text = strdup("/help");
            return *text ? TUI_ACT_SUBMIT : TUI_ACT_NONE;
        case 2:
            t->frozen = !t->frozen;
            tui_flash(t, t->frozen ? "dashboard frozen (F2 to resume)" : "dashboard live");
            return TUI_ACT_NONE;
        case 3:
            t->layout_flags ^= TUI_LAYOUT_COLLAPSED;
            t->layout_flags &= ~TUI_LAYOUT_ZOOM;
            return TUI_ACT_NONE;
        case 4:
            t->layout_flags ^= TUI_LAYOUT_ZOOM;
            return TUI_ACT_NONE;
        case 12: {
            char path[512], msg[600];
            if (tui_screenshot(t, path, sizeof path) == 0)
                snprintf(msg, sizeof msg, "screen saved to %s", path);
            else
                snprintf(msg, sizeof msg, "screenshot failed: %s", path);
            tui_flash(t, msg);
            return TUI_ACT_NONE;
        }
        default:
            return TUI_ACT_NONE;
        }
    case K_CTRL:
        if (ev->ch == 'c') {
            if (t->busy) return TUI_ACT_STOP;
            double now = now_s();
            if (t->ed.len == 0 && now - t->ctrl_c_at < 2.0) return TUI_ACT_QUIT;
            t->ctrl_c_at = now;
            tui_flash(t, t->ed.len ? "nothing to stop (Ctrl+U clears the line; Ctrl+D or /quit leaves)"
                                   : "nothing to stop: Ctrl+C again, Ctrl+D or /quit leaves");
            return TUI_ACT_NONE;
        }
        if (ev->ch == 'd') {
            if (t->ed.len == 0) return TUI_ACT_QUIT;
            tui_edit_delete(&t->ed);
            return TUI_ACT_NONE;
        }
        if (ev->ch == 'l') {
            clearok(curscr, TRUE);
            return TUI_ACT_NONE;
        }
        break;
    case K_PGUP:
    case K_PGDN:
        if (!t->focus_dash) {
            int page = t->cv.last_h > 2 ? t->cv.last_h - 1 : 1;
            chat_view_scroll(&t->cv, ev->kind == K_PGUP ? page : -page);
            return TUI_ACT_NONE;
        }
        break;
    default:
        break;
    }
    if (t->focus_dash && dash_visible(t)) return handle_dash_key(t, ev, text);
    t->focus_dash = 0;
    return handle_input_key(t, ev, text);
}

int tui_step(struct tui *t, int timeout_ms, char **text) {
    *text = NULL;
    if (g_sig_quit) return TUI_ACT_QUIT;
    if (g_sig_int) {
        g_sig_int = 0;
        if (t->busy) return TUI_ACT_STOP;
    }
    pthread_mutex_lock(&t->log_mu);
    if (t->log_flash_set) {
        t->log_flash_set = 0;
        char msg[LOG_LINE + 8];
        snprintf(msg, sizeof msg, "log: %s", t->log_flash);
        pthread_mutex_unlock(&t->log_mu);
        tui_flash(t, msg);
    } else {
        pthread_mutex_unlock(&t->log_mu);
    }
    struct key_ev ev;
    int wait = tui_feed_pending(t) ? 0 : timeout_ms;
    // Handle everything already typed (a paste can be thousands of keys) before drawing again.
    for (int k = 0; k < 4096; k++) {
        if (!read_key(t, k == 0 ? wait : 0, &ev)) break;
        int act = handle_key(t, &ev, text);
        if (act != TUI_ACT_NONE) return act;
        if (g_sig_quit) return TUI_ACT_QUIT;
        if (tui_feed_pending(t) && k > 0) break; // fed keys go one per step: the demo "types"
    }
    if (g_sig_int) {
        g_sig_int = 0;
        if (t->busy) return TUI_ACT_STOP;
    }
    return TUI_ACT_NONE;
}

// ---- drawing ---------------------------------------------------------------------------------------------

static void relayout(struct tui *t) {
    int rows = LINES, cols = COLS;
    int cr, cc;
    int lines = tui_edit_geometry(&t->ed, cols > 3 ? cols - 2 : 1, &cr, &cc);
    tui_layout_compute(cols, rows, lines, t->layout_flags, &t->L);
    if (!dash_visible(t)) t->focus_dash = 0;
}

static const char *basename_of(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static void draw_status(struct tui *t, double now) {
    struct tui_rect r = t->L.status;
    if (r.w <= 0) return;
    const struct tui_theme *th = &t->th;
    tui_fill(r, th->attr[TS_STATUS]);
    const struct tui_stats *s = &t->stats;
    char left[512], rate[32];
    tui_fmt_rate(s->decode_tok_s, rate, sizeof rate);
    const char *sep = th->utf8 ? " \u2502 " : " | ";
    snprintf(left, sizeof left, " kvchat%s%s%s%s%sctx %d/%d%s%s tok/s", sep,
             s->model[0] ? basename_of(s->model) : "-", sep, s->device[0] ? s->device : "-", sep, s->n_past,
             s->n_ctx, sep, rate);
    char right[300];
    if (t->flash[0] && now < t->flash_until) {
        snprintf(right, sizeof right, " %s ", t->flash);
    } else if (t->busy) {
        const struct tui_glyphs *g = th->g;
        int frame = (int)((now - t->busy_since) * 10.0) % g->n_spinner;
        snprintf(right, sizeof right, " %s generating %.1fs  Ctrl+C stops ", g->spinner[frame],
                 now - t->busy_since);
    } else {
        snprintf(right, sizeof right, "%s ready ", t->frozen ? " FROZEN " : "");
    }
    int rw = tui_str_width(right, strlen(right));
    if (rw > r.w) rw = r.w;
    int lw = r.w - rw - 1;
    if (lw > 0) tui_puts_fit(th, r.y, r.x, lw, left, th->attr[TS_STATUS]);
    tui_puts(th, r.y, r.x + r.w - rw, rw, right, th->attr[TS_STATUS_HI]);
}

static void draw_hints(struct tui *t) {
    struct tui_rect r = t->L.hints;
    if (r.w <= 0 || r.h <= 0) return;
    const struct tui_theme *th = &t->th;
    static const char *input_hints[] = {"Enter",     "send",      "Alt+Enter", "newline",    "Tab",
                                        "dashboard", "PgUp/PgDn", "scroll",    "F2",         "freeze",
                                        "F3",        "hide dash", "F12",       "screenshot", "F1",
                                        "help",      "^D",        "quit",      NULL};
    static const char *busy_hints[] = {"^C/Esc", "stop reply", "PgUp/PgDn", "scroll",     "Tab", "dashboard",
                                       "F2",     "freeze",     "F12",       "screenshot", NULL};
    static const char *dash_hints[] = {
        "arrows",    "select head", "f",       "freeze",        "z", "zoom", "c", "hide",
        "PgUp/PgDn", "layers",      "Tab/Esc", "back to input", NULL};
    const char **h = t->focus_dash ? dash_hints : t->busy ? busy_hints : input_hints;
    int x = r.x;
    for (int i = 0; h[i] && h[i + 1]; i += 2) {
        int need = tui_str_width(h[i], strlen(h[i])) + 1 + tui_str_width(h[i + 1], strlen(h[i + 1])) + 2;
        if (x + need > r.x + r.w) break;
        x += tui_puts(th, r.y, x, r.x + r.w - x, h[i], th->attr[TS_HINT_KEY]);
        x += tui_puts(th, r.y, x, r.x + r.w - x, " ", th->attr[TS_HINT]);
        x += tui_puts(th, r.y, x, r.x + r.w - x, h[i + 1], th->attr[TS_HINT]);
        x += 2;
    }
}

// Draws the input area and returns the cursor position on screen via *cy, *cx.
static void draw_input(struct tui *t, int *cy, int *cx) {
    struct tui_rect r = t->L.input;
    *cy = *cx = -1;
    if (r.w <= 0 || r.h <= 0) return;
    const struct tui_theme *th = &t->th;
    int pw = r.w > 3 ? 2 : 0;
    int tw = r.w - pw;
    int cur_row, cur_col;
    int rows = tui_edit_geometry(&t->ed, tw, &cur_row, &cur_col);
    if (cur_row < t->input_scroll) t->input_scroll = cur_row;
    if (cur_row >= t->input_scroll + r.h) t->input_scroll = cur_row - r.h + 1;
    if (t->input_scroll > rows - r.h) t->input_scroll = rows - r.h > 0 ? rows - r.h : 0;
    if (t->input_scroll < 0) t->input_scroll = 0;
    attr_t pa = t->focus_dash ? th->attr[TS_DIM] : th->attr[TS_USER];
    if (pw) tui_puts(th, r.y, r.x, 1, th->g->user_mark, pa);
    if (t->ed.len == 0 && !t->focus_dash) {
        const char *ph =
            t->busy ? "type ahead; Enter waits until the reply ends" : "Type a message, /help for commands";
        tui_puts_fit(th, r.y, r.x + pw, tw, ph, th->attr[TS_DIM]);
    }
    int n = tui_wrap(t->ed.buf, t->ed.len, tw, NULL, 0);
    struct tui_wrap_line one[64], *lines = n <= 64 ? one : malloc((size_t)n * sizeof *lines);
    if (lines) {
        tui_wrap(t->ed.buf, t->ed.len, tw, lines, n);
        for (int k = 0; k < r.h; k++) {
            int li = t->input_scroll + k;
            if (li >= n) break;
            tui_put(th, r.y + k, r.x + pw, tw, t->ed.buf + lines[li].start, lines[li].end - lines[li].start,
                    th->attr[TS_NORMAL]);
        }
        if (lines != one) free(lines);
    }
    if (t->input_scroll > 0) tui_puts(th, r.y, r.x, 1, th->g->up, th->attr[TS_DIM]);
    if (t->input_scroll + r.h < rows) tui_puts(th, r.y + r.h - 1, r.x, 1, th->g->down, th->attr[TS_DIM]);
    *cy = r.y + cur_row - t->input_scroll;
    *cx = r.x + pw + (cur_col < tw ? cur_col : tw - 1);
}

static void draw_frame(struct tui *t, double now) {
    relayout(t);
    erase();
    const struct tui_theme *th = &t->th;
    const struct tui_layout *L = &t->L;
    int cy = -1, cx = -1;
    if (L->mode == TUI_LAYOUT_TOO_SMALL) {
        char full[96];
        snprintf(full, sizeof full, "terminal too small (%dx%d)", L->cols, L->rows);
        const char *msgs[] = {full, "terminal too small", "too small", "small", "!"};
        for (int i = 0; i < 5; i++) {
            if ((int)strlen(msgs[i]) <= L->msg.w || i == 4) {
                tui_puts(th, L->msg.y,
                         L->msg.x + (L->msg.w - (int)strlen(msgs[i])) / 2 > L->msg.x
                             ? L->msg.x + (L->msg.w - (int)strlen(msgs[i])) / 2
                             : L->msg.x,
                         L->msg.w, msgs[i], th->attr[TS_BOLD]);
                break;
            }
        }
    } else if (L->mode != TUI_LAYOUT_EMPTY) {
        draw_status(t, now);
        if (L->chat.w > 0 && L->chat.h > 0) {
            const struct tui_glyphs *g = th->g;
            int frame = (int)((now - t->busy_since) * 10.0) % g->n_spinner;
            char spin[64];
            snprintf(spin, sizeof spin, "%s thinking...", g->spinner[frame < 0 ? 0 : frame]);
            struct tui_rect cr = L->chat;
            if (L->dash_place == TUI_DASH_RIGHT && cr.w > 10) cr.w--; // air before the dashboard's rule
            chat_view_draw(&t->cv, th, cr, spin);
        }
        if (dash_visible(t))
            dash_draw(&t->dash, &t->stats, th, L->dash, L->dash_place == TUI_DASH_RIGHT, t->focus_dash,
                      t->frozen);
        draw_input(t, &cy, &cx);
        draw_hints(t);
    }
    if (cy >= 0 && cx >= 0 && !t->focus_dash) {
        curs_set(1);
        move(cy, cx);
    } else {
        curs_set(0);
    }
    wnoutrefresh(stdscr);
    doupdate();
    t->last_draw = now;
    t->dirty = t->dirty_stream = 0;
}

void tui_draw(struct tui *t) {
    double now = now_s();
    double since = now - t->last_draw;
    int due = t->dirty;
    if (!due && (t->dirty_stream || t->busy) && since >= STREAM_REDRAW_S)
        due = 1; // spinner and streamed text
    if (!due && t->flash[0] && now >= t->flash_until) {
        t->flash[0] = 0;
        due = 1;
    }
    if (due) draw_frame(t, now);
}

// ---- screenshot ------------------------------------------------------------------------------------------

int tui_screenshot(struct tui *t, char *path, size_t cap) {
    int fd = -1;
    for (int n = 1; n < 10000; n++) {
        snprintf(path, cap, "kvchat-screen-%d.txt", n);
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (fd >= 0 || errno != EEXIST) break;
    }
    if (fd < 0) {
        snprintf(path, cap, "%s", strerror(errno));
        return -1;
    }
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        snprintf(path, cap, "%s", strerror(errno));
        return -1;
    }
    int cols = COLS;
    size_t wcap = (size_t)cols * CCHARW_MAX + 1;
    wchar_t *wbuf = malloc(wcap * sizeof *wbuf);
    char *line = malloc(wcap * 4 + 1);
    int rc = 0;
    if (!wbuf || !line) rc = -1;
    for (int y = 0; rc == 0 && y < LINES; y++) {
        int n = mvwinnwstr(stdscr, y, 0, wbuf, (int)wcap - 1);
        size_t o = 0;
        for (int i = 0; n != ERR && i < n && wbuf[i]; i++)
            o += (size_t)tui_utf8_encode((uint32_t)wbuf[i], line + o);
        while (o > 0 && line[o - 1] == ' ')
            o--;
        line[o] = 0;
        fprintf(f, "%s\n", line);
    }
    free(wbuf);
    free(line);
    if (fclose(f) != 0) rc = -1;
    if (rc) snprintf(path, cap, "write failed");
    t->dirty = 1; // reading moved the cursor
    return rc;
}

#else // built without ncurses headers: no full-screen chat; app/ falls back to line mode

struct tui {
    int unused;
};

struct tui *tui_open(const struct tui_options *opt, const char *log_path, char *err, size_t errlen) {
    (void)opt, (void)log_path;
    if (err && errlen) snprintf(err, errlen, "kvchat was built without ncurses headers");
    return NULL;
}
void tui_close(struct tui *t) { (void)t; }
int tui_step(struct tui *t, int timeout_ms, char **text) {
    (void)t, (void)timeout_ms;
    *text = NULL;
    return TUI_ACT_QUIT;
}
void tui_draw(struct tui *t) { (void)t; }
void tui_set_busy(struct tui *t, int busy) { (void)t, (void)busy; }
int tui_is_busy(const struct tui *t) { return (void)t, 0; }
void tui_set_stats(struct tui *t, const struct tui_stats *s) { (void)t, (void)s; }
void tui_add_sample(struct tui *t, uint64_t kv_bytes, uint64_t kv_bytes_full, int n_past) {
    (void)t, (void)kv_bytes, (void)kv_bytes_full, (void)n_past;
}
void tui_reset_samples(struct tui *t) { (void)t; }
int tui_chat_add(struct tui *t, int role, const char *text) { return (void)t, (void)role, (void)text, 0; }
int tui_chat_stream(struct tui *t, const char *utf8, size_t len) { return (void)t, (void)utf8, (void)len, 0; }
void tui_chat_end(struct tui *t, const char *note) { (void)t, (void)note; }
int tui_chat_drop_last(struct tui *t, int role) { return (void)t, (void)role, -1; }
void tui_chat_clear(struct tui *t) { (void)t; }
void tui_chat_notef(struct tui *t, int role, const char *fmt, ...) { (void)t, (void)role, (void)fmt; }
int tui_feed_keys(struct tui *t, const char *utf8) { return (void)t, (void)utf8, 0; }
int tui_feed_pending(const struct tui *t) { return (void)t, 0; }
int tui_input_empty(const struct tui *t) { return (void)t, 1; }
void tui_log(struct tui *t, int level, const char *msg) { (void)t, (void)level, (void)msg; }
void tui_show_log(struct tui *t) { (void)t; }
void tui_flash(struct tui *t, const char *msg) { (void)t, (void)msg; }
int tui_screenshot(struct tui *t, char *path, size_t cap) {
    (void)t;
    snprintf(path, cap, "no screen");
    return -1;
}
#endif
