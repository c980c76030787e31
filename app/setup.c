// app/setup.c — backend selection and KV cache parameters shared by chat, eval and bench.
#include "app/setup.h"

#include <stdio.h>

#include "app/log.h"

struct kn_backend *app_backend_create(const struct app_params *p, char *err, size_t errlen) {
    int n_dev = kn_cuda_device_count();
    if (p->device == APP_DEVICE_CUDA) {
        if (n_dev <= 0) {
            char why[256];
            struct kn_backend *be = kn_cuda_init(0, why, sizeof why);
            if (be) return be;
            snprintf(err, errlen, "--device cuda: no usable CUDA device (%s)", why);
            return NULL;
        }
        return kn_cuda_init(0, err, errlen);
    }
    if (p->device == APP_DEVICE_AUTO && n_dev > 0) {
        char why[256];
        struct kn_backend *be = kn_cuda_init(0, why, sizeof why);
        if (be) return be;
        app_log(APP_LOG_WARN, "CUDA device present but unusable (%s); using the CPU", why);
    }
    struct kn_backend *be = kn_cpu_init(p->n_threads, err, errlen);
    if (be) kn_cpu_set_int8_act(be, p->int8_matmul);
    return be;
}

void app_kv_params(const struct app_params *p, const struct model *m, int n_ctx, struct kv_cache_params *kp) {
    const struct model_config *c = model_get_config(m);
    kv_cache_params_default(kp);
    kp->n_layer = c->n_layer;
    kp->n_head_kv = c->n_head_kv;
    kp->n_head = c->n_head;
    kp->head_dim = c->head_dim;
    kp->n_ctx = n_ctx;
    kp->layer_window = model_layer_windows(m);
    kp->policy = p->kv_policy;
    kp->recovery = p->recovery;
    kp->local_ratio = p->local_ratio;
    kp->heavy_ratio = p->heavy_ratio;
    kp->bits = p->kv_bits;
    kp->group = p->kv_group;
    kp->residual = p->kv_residual;
    kp->flush = p->kv_flush;
    kp->budget = p->kv_budget;
    kp->pyramid_beta = p->pyramid_beta;
    kp->obs_window = p->obs_window;
    kp->sink_tokens = p->sink_tokens;
}
