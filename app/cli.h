// app/cli.h — command-line parsing (pure) and the usage text.
#pragma once
#include <stddef.h>

#include "app/params.h"

enum app_cli_result { APP_CLI_OK = 0, APP_CLI_HELP = 1, APP_CLI_VERSION = 2, APP_CLI_ERROR = -1 };

// Fills p from argv (defaults first). On APP_CLI_ERROR err holds one line. String fields point into argv.
int app_cli_parse(int argc, char **argv, struct app_params *p, char *err, size_t errlen);
const char *app_cli_usage(void);

#define KVCHAT_VERSION "0.1.0"
