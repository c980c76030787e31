// kernels/kn_cuda.c — CUDA backend entry points; without KN_HAVE_CUDA only the "not built" answers.
#include "kernels/kn.h"

#include <stdio.h>

#ifndef KN_HAVE_CUDA
struct kn_backend *kn_cuda_init(int device, char *err, size_t errlen) {
    (void)device;
    if (err && errlen) snprintf(err, errlen, "this kvchat was built without CUDA (rebuild with nvcc on PATH)");
    return NULL;
}
int kn_cuda_device_count(void) { return 0; }
#endif
