// app/json.h — the JSON stats object (SPEC §1) and small JSON string helpers.
#pragma once
#include <stdio.h>

#include "app/engine.h"

// Writes s as a JSON string literal (quotes included), escaping control characters and invalid UTF-8.
void app_json_str(FILE *f, const char *s);
// Writes the common stats fields (no braces): "model": ..., ..., "gpu_mem_used": ...
void app_json_stats_fields(FILE *f, const struct engine_stats *s);
// Writes one complete stats object and a newline.
void app_json_stats(FILE *f, const struct engine_stats *s);
