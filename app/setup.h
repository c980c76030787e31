// app/setup.h — shared set-up steps of the modes: the backend for --device, the cache parameters.
#pragma once
#include <stddef.h>

#include "app/params.h"
#include "kernels/kn.h"
#include "kvcache/kv_cache.h"
#include "model/model.h"

// The backend --device asks for (auto: CUDA when a device exists, else the CPU with a notice).
struct kn_backend *app_backend_create(const struct app_params *p, char *err, size_t errlen);
// Cache parameters from the options and the model's shape, for a context of n_ctx tokens.
void app_kv_params(const struct app_params *p, const struct model *m, int n_ctx, struct kv_cache_params *kp);
