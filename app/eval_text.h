// app/eval_text.h — texts `kvchat eval` uses when none is given: the built-in story and passkey filler.
#pragma once

// The built-in text (~5 KB of plain English prose), newly allocated (free it); NULL when out of memory.
char *eval_builtin_text(void);
// Filler sentences for the passkey task: eval_filler(i) cycles through eval_filler_count() sentences.
int eval_filler_count(void);
const char *eval_filler(int i);
