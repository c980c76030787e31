// app/params.h — every command-line option in one plain struct (filled by app/cli.c).
#pragma once
#include <stdint.h>

enum app_mode { APP_MODE_CHAT, APP_MODE_ONESHOT, APP_MODE_EVAL, APP_MODE_BENCH };
enum app_device { APP_DEVICE_AUTO, APP_DEVICE_CPU, APP_DEVICE_CUDA };
enum kv_flush_mode { KV_FLUSH_TOKEN, KV_FLUSH_BLOCK }; // KIVI: ours (default) or the paper's R-block flush

struct app_params {
    int mode;                   // enum app_mode
    const char *model_path;     // -m
    const char *tokenizer_path; // --tokenizer
    int n_ctx;                  // -c (0 = model's training context, capped at 4096)
    int n_predict;              // -n (-1 = until EOS or context end)
    uint64_t seed;              // -s
    int n_threads;              // -t (0 = all cores)
    float temp, top_p, min_p, repeat_penalty;
    int top_k, repeat_last_n;
    const char *system_prompt;  // -sys
    const char *chat_template;  // --chat-template
    const char *prompt;         // -p
    int chat;                   // --chat (with -p)
    int no_tui;                 // --no-tui
    int json;                   // --json
    int device;                 // enum app_device
    int no_echo;                // --no-echo: do not print the prompt before the completion
    // KV cache
    int kv_policy;              // enum kv_policy_kind
    float recovery, local_ratio, heavy_ratio;
    int kv_bits, kv_group, kv_residual, kv_flush;
    int kv_budget;              // pyramidkv/snapkv/h2o/local: average kept tokens per layer
    float pyramid_beta;
    int obs_window;
    int sink_tokens;            // --kv-sinks (local policy: attention sinks kept), default 4
    // eval
    const char *text_file;      // --text
    const char *task;           // --task passkey
    int sweep;                  // --sweep
    int eval_tokens;            // --eval-tokens: tokens of the text to score (default 512)
    // bench
    const char *ctx_list;       // --ctx 512,2048
    int bench_gen;              // --bench-gen: tokens decoded per context (default 32)
    // TUI
    int no_color;
    int int8_matmul;            // 1 (default): CPU decode matmuls quantise activations to int8; --exact-matmul: 0
    const char *log_file, *demo_file, *record_file;
};

// Fills defaults (SPEC §1). The README says why each KV default was chosen.
void app_params_default(struct app_params *p);
