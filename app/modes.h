// app/modes.h — the program's modes; each returns the process exit code (0 ok, 1 error).
#pragma once
#include "app/engine.h"
#include "app/params.h"

int app_oneshot(struct engine *e, const struct app_params *p);   // -p TEXT
int app_chat_line(struct engine *e, const struct app_params *p); // --no-tui, or stdin/stdout not a tty
int app_chat_tui(struct engine *e, const struct app_params *p);  // the full-screen chat
int app_eval(const struct app_params *p);                        // kvchat eval
int app_bench(const struct app_params *p);                       // kvchat bench
