// app/chat_line.c — line-mode chat on stdin/stdout (pipes, scripts): one line per user turn.
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/json.h"
#include "app/log.h"
#include "app/modes.h"

static volatile sig_atomic_t line_stop; // Ctrl+C stops the reply in progress

static void on_sigint(int sig) {
    (void)sig;
    line_stop = 1;
}

static int put_piece(void *ud, const char *s, size_t n) {
    (void)ud;
    fwrite(s, 1, n, stdout);
    fflush(stdout);
    return 0;
}

int app_chat_line(struct engine *e, const struct app_params *p) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    int tty = isatty(0);
    char *line = NULL;
    size_t cap = 0;
    int status = 0;
    for (;;) {
        if (tty) {
            fputs("> ", stdout);
            fflush(stdout);
        }
        line_stop = 0;
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0) break;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        if (n == 0) continue;
        if (strcmp(line, "/quit") == 0 || strcmp(line, "/exit") == 0) break;
        if (strcmp(line, "/clear") == 0) {
            engine_reset(e);
            puts("(conversation cleared)");
            continue;
        }
        if (strcmp(line, "/stats") == 0) {
            struct engine_stats st;
            memset(&st, 0, sizeof st);
            engine_snapshot(e, &st);
            app_json_stats(stdout, &st);
            engine_stats_release(&st);
            continue;
        }
        int rc = engine_chat_turn(e, line, put_piece, NULL, (const volatile int *)&line_stop);
        fputc('\n', stdout);
        if (rc == ENGINE_STOP_USER) fputs("(stopped)\n", stdout);
        if (rc == ENGINE_STOP_CTX) fputs("(context full: /clear starts over)\n", stdout);
        if (rc == ENGINE_STOP_ERROR) status = 1;
        fflush(stdout);
    }
    free(line);
    if (p->json) {
        struct engine_stats st;
        memset(&st, 0, sizeof st);
        engine_snapshot(e, &st);
        app_json_stats(stdout, &st);
        engine_stats_release(&st);
    }
    return status;
}
