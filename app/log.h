// app/log.h — logging through one sink, so nothing writes to the terminal while curses owns it.
#pragma once
#include <stdarg.h>

enum app_log_level { APP_LOG_DEBUG, APP_LOG_INFO, APP_LOG_WARN, APP_LOG_ERROR };

typedef void (*app_log_sink)(void *ud, int level, const char *msg);

// Sets the sink (NULL = stderr for WARN and above).
void app_log_set_sink(app_log_sink sink, void *ud);
// Opens a log file that receives every message (in addition to the sink); 0 ok, -1 on failure.
int app_log_open_file(const char *path);
void app_log_close_file(void);
void app_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
