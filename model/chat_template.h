// model/chat_template.h — chat templates (Llama 2 [INST], Zephyr/TinyLlama <|user|>, Gemma <start_of_turn>,
// ChatML; "dialogue", a plain User:/Assistant: transcript that base models continue sensibly; raw text),
// rendered one turn at a time so the context grows incrementally.
#pragma once
#include <stddef.h>

enum chat_tpl {
    CHAT_TPL_RAW, CHAT_TPL_LLAMA2, CHAT_TPL_ZEPHYR, CHAT_TPL_GEMMA, CHAT_TPL_CHATML, CHAT_TPL_DIALOGUE, CHAT_TPL_COUNT
};

int chat_tpl_from_name(const char *name); // -1 when unknown
const char *chat_tpl_name(int tpl);
// Text of one user turn up to and including the assistant header. `first` marks the first turn (where
// the system prompt goes; BOS is added by the caller as a token). Returns the length the text needs;
// writes at most cap-1 bytes plus NUL.
size_t chat_tpl_user(int tpl, const char *system, const char *user, int first, char *out, size_t cap);
// Text that closes an assistant reply (appended before the next user turn).
const char *chat_tpl_reply_end(int tpl);
// Pieces (besides EOS) that end a reply, NULL-terminated.
const char *const *chat_tpl_stops(int tpl);
// Text that ends a reply when the generated text contains it (not part of the reply), or NULL.
const char *chat_tpl_stop_text(int tpl);
