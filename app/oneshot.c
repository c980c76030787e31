// app/oneshot.c — `kvchat -m MODEL -p TEXT`: the completion streamed to stdout, stats as JSON on request.
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "app/json.h"
#include "app/log.h"
#include "app/modes.h"

static volatile sig_atomic_t oneshot_stop; // set by SIGINT: stop generating, still print the stats

static void on_sigint(int sig) {
    (void)sig;
    oneshot_stop = 1;
}

static int put_piece(void *ud, const char *s, size_t n) {
    (void)ud;
    fwrite(s, 1, n, stdout);
    fflush(stdout);
    return 0;
}

int app_oneshot(struct engine *e, const struct app_params *p) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    if (!p->no_echo && !p->chat) {
        fputs(p->prompt, stdout);
        fflush(stdout);
    }
    int rc = p->chat ? engine_chat_turn(e, p->prompt, put_piece, NULL, (const volatile int *)&oneshot_stop)
                     : engine_complete(e, p->prompt, put_piece, NULL, (const volatile int *)&oneshot_stop);
    fputc('\n', stdout);
    int failed = rc == ENGINE_STOP_ERROR;
    if (p->json) {
        struct engine_stats st;
        memset(&st, 0, sizeof st);
        engine_snapshot(e, &st);
        app_json_stats(stdout, &st);
        engine_stats_release(&st);
    }
    fflush(stdout);
    return failed ? 1 : 0;
}
