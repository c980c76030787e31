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

// The prompt is echoed once it has been accepted (tokenized and prefilled), so a prompt that does not fit
// gives only the error line.
struct echo {
    const char *prompt; // NULL once printed, or when not echoing
    int printed;        // anything written to stdout yet
};

static void echo_prompt(struct echo *ec) {
    if (!ec->prompt) return;
    fputs(ec->prompt, stdout);
    ec->prompt = NULL;
    ec->printed = 1;
}

static int put_piece(void *ud, const char *s, size_t n) {
    struct echo *ec = ud;
    echo_prompt(ec);
    ec->printed = 1;
    fwrite(s, 1, n, stdout);
    fflush(stdout);
    return 0;
}

int app_oneshot(struct engine *e, const struct app_params *p) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    struct echo ec = {!p->no_echo && !p->chat ? p->prompt : NULL, 0};
    int rc = p->chat ? engine_chat_turn(e, p->prompt, put_piece, &ec, (const volatile int *)&oneshot_stop)
                     : engine_complete(e, p->prompt, put_piece, &ec, (const volatile int *)&oneshot_stop);
    int failed = rc == ENGINE_STOP_ERROR;
    if (!failed) echo_prompt(&ec); // nothing generated (-n 0, or an immediate end of turn)
    if (ec.printed) fputc('\n', stdout);
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
