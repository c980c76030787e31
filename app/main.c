// app/main.c — entry point: parse options, pick the mode, create and free the engine (the only exit).
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/cli.h"
#include "app/engine.h"
#include "app/log.h"
#include "app/modes.h"

#define DEFAULT_MODEL "assets/models/gemma-3-270m-q4_k_m.gguf"

// The default model: $KVCHAT_MODEL, else assets/models/... beside the executable, else in the cwd.
static const char *default_model(char *buf, size_t cap) {
    const char *env = getenv("KVCHAT_MODEL");
    if (env && env[0]) return env;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            snprintf(buf, cap, "%s/%s", exe, DEFAULT_MODEL);
            if (access(buf, R_OK) == 0) return buf;
        }
    }
    return DEFAULT_MODEL;
}

int main(int argc, char **argv) {
    struct app_params p;
    char err[1024];
    int rc = app_cli_parse(argc, argv, &p, err, sizeof err);
    if (rc == APP_CLI_HELP) {
        fputs(app_cli_usage(), stdout);
        return 0;
    }
    if (rc == APP_CLI_VERSION) {
        printf("kvchat %s\n", KVCHAT_VERSION);
        return 0;
    }
    if (rc != APP_CLI_OK) {
        fprintf(stderr, "kvchat: %s\n", err);
        return 1;
    }
    char model_buf[PATH_MAX + 64];
    if (!p.model_path) {
        p.model_path = default_model(model_buf, sizeof model_buf);
        if (access(p.model_path, R_OK) != 0) {
            fprintf(stderr, "kvchat: no model at %s: run 'make model' or pass -m FILE\n", p.model_path);
            return 1;
        }
    }
    if (p.log_file && app_log_open_file(p.log_file)) {
        fprintf(stderr, "kvchat: cannot open log file %s\n", p.log_file);
        return 1;
    }
    if (p.mode == APP_MODE_EVAL) return app_eval(&p);
    if (p.mode == APP_MODE_BENCH) return app_bench(&p);
    struct engine *e = engine_init(&p, err, sizeof err);
    if (!e) {
        fprintf(stderr, "kvchat: %s\n", err);
        app_log_close_file();
        return 1;
    }
    if (p.mode == APP_MODE_ONESHOT)
        rc = app_oneshot(e, &p);
    else if (!p.no_tui && isatty(0) && isatty(1))
        rc = app_chat_tui(e, &p);
    else
        rc = app_chat_line(e, &p);
    engine_free(e);
    app_log_close_file();
    return rc;
}
