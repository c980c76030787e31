// app/log.c — the log sink: a callback (the TUI installs one) plus an optional log file.
#include "app/log.h"

#include <pthread.h>
#include <stdio.h>
#include <time.h>

// Process-wide logging configuration: the only mutable globals outside the TUI, guarded by a mutex.
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static app_log_sink log_sink;
static void *log_ud;
static FILE *log_file;

void app_log_set_sink(app_log_sink sink, void *ud) {
    pthread_mutex_lock(&log_mu);
    log_sink = sink;
    log_ud = ud;
    pthread_mutex_unlock(&log_mu);
}

int app_log_open_file(const char *path) {
    FILE *f = fopen(path, "a");
    if (!f) return -1;
    pthread_mutex_lock(&log_mu);
    if (log_file) fclose(log_file);
    log_file = f;
    pthread_mutex_unlock(&log_mu);
    return 0;
}

void app_log_close_file(void) {
    pthread_mutex_lock(&log_mu);
    if (log_file) fclose(log_file);
    log_file = NULL;
    pthread_mutex_unlock(&log_mu);
}

void app_log(int level, const char *fmt, ...) {
    static const char *names[] = {"debug", "info", "warn", "error"};
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (level < APP_LOG_DEBUG || level > APP_LOG_ERROR) level = APP_LOG_INFO;
    pthread_mutex_lock(&log_mu);
    if (log_file) {
        time_t now = time(NULL);
        struct tm tmv;
        char ts[32];
        localtime_r(&now, &tmv);
        strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%S", &tmv);
        fprintf(log_file, "%s %s: %s\n", ts, names[level], msg);
        fflush(log_file);
    }
    if (log_sink)
        log_sink(log_ud, level, msg);
    else if (level >= APP_LOG_WARN)
        fprintf(stderr, "kvchat: %s\n", msg);
    pthread_mutex_unlock(&log_mu);
}
