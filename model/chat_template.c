// model/chat_template.c — rendering chat turns for the supported templates.
#include "model/chat_template.h"

#include <stdio.h>
#include <string.h>

static const char *const names[CHAT_TPL_COUNT] = {"raw", "llama2", "zephyr", "gemma", "chatml", "dialogue"};

// The dialogue template's preamble when there is no system prompt: one worked exchange sets the format a
// base model then follows (one-paragraph answers, ended by a newline).
static const char dialogue_preamble[] =
    "A conversation between a user and a helpful, knowledgeable assistant. The assistant answers clearly and "
    "briefly.\n\nUser: What is the capital of France?\nAssistant: The capital of France is Paris.";

int chat_tpl_from_name(const char *name) {
    if (!name) return -1;
    for (int i = 0; i < CHAT_TPL_COUNT; i++)
        if (strcmp(name, names[i]) == 0) return i;
    if (strcmp(name, "tinyllama") == 0) return CHAT_TPL_ZEPHYR;
    if (strcmp(name, "gemma3") == 0) return CHAT_TPL_GEMMA;
    if (strcmp(name, "llama-2") == 0 || strcmp(name, "mistral") == 0) return CHAT_TPL_LLAMA2;
    return -1;
}

const char *chat_tpl_name(int tpl) { return tpl >= 0 && tpl < CHAT_TPL_COUNT ? names[tpl] : "?"; }

size_t chat_tpl_user(int tpl, const char *sys, const char *user, int first, char *out, size_t cap) {
    int has_sys = first && sys && sys[0];
    int n = 0;
    switch (tpl) {
    case CHAT_TPL_LLAMA2:
        if (has_sys)
            n = snprintf(out, cap, "[INST] <<SYS>>\n%s\n<</SYS>>\n\n%s [/INST]", sys, user);
        else
            n = snprintf(out, cap, "%s[INST] %s [/INST]", first ? "" : "<s>", user);
        break;
    case CHAT_TPL_ZEPHYR:
        if (has_sys)
            n = snprintf(out, cap, "<|system|>\n%s</s>\n<|user|>\n%s</s>\n<|assistant|>\n", sys, user);
        else
            n = snprintf(out, cap, "<|user|>\n%s</s>\n<|assistant|>\n", user);
        break;
    case CHAT_TPL_GEMMA: // no system role: the system text opens the first user turn
        if (has_sys)
            n = snprintf(out, cap, "<start_of_turn>user\n%s\n\n%s<end_of_turn>\n<start_of_turn>model\n", sys, user);
        else
            n = snprintf(out, cap, "<start_of_turn>user\n%s<end_of_turn>\n<start_of_turn>model\n", user);
        break;
    case CHAT_TPL_CHATML:
        if (has_sys)
            n = snprintf(out, cap, "<|im_start|>system\n%s<|im_end|>\n<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n",
                         sys, user);
        else
            n = snprintf(out, cap, "<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n", user);
        break;
    case CHAT_TPL_DIALOGUE:
        if (first)
            n = snprintf(out, cap, "%s\n\nUser: %s\nAssistant:", has_sys ? sys : dialogue_preamble, user);
        else
            n = snprintf(out, cap, "\nUser: %s\nAssistant:", user);
        break;
    default:
        if (has_sys)
            n = snprintf(out, cap, "%s\n\n%s", sys, user);
        else
            n = snprintf(out, cap, "%s%s", first ? "" : "\n\n", user);
        break;
    }
    return n < 0 ? 0 : (size_t)n;
}

const char *chat_tpl_reply_end(int tpl) {
    switch (tpl) {
    case CHAT_TPL_LLAMA2: return " </s>";
    case CHAT_TPL_ZEPHYR: return "</s>\n";
    case CHAT_TPL_GEMMA: return "<end_of_turn>\n";
    case CHAT_TPL_CHATML: return "<|im_end|>\n";
    case CHAT_TPL_DIALOGUE: return "\n";
    default: return "";
    }
}

const char *chat_tpl_stop_text(int tpl) { return tpl == CHAT_TPL_DIALOGUE ? "\n" : NULL; }

const char *const *chat_tpl_stops(int tpl) {
    static const char *const gemma[] = {"<end_of_turn>", NULL};
    static const char *const chatml[] = {"<|im_end|>", NULL};
    static const char *const none[] = {NULL};
    switch (tpl) {
    case CHAT_TPL_GEMMA: return gemma;
    case CHAT_TPL_CHATML: return chatml;
    default: return none;
    }
}
