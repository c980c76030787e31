// tests/gpu/emu/test_cuemu.cc — the CUDA emulation's own checks: a correct block reduction gives the right sum
// in both thread orders, and each misuse it promises to catch (divergent __syncthreads, divergent warp calls,
// a mask naming exited lanes, deadlock, a host pointer reaching a kernel, too much dynamic shared memory, reading
// results before synchronising) is caught. Compiled like kernels/*.cu (g++ -include cuemu.h).
#include <stdio.h>
#include <stdlib.h>

#include "kernels/kn_cuda_common.cuh"
#include "tests/test.h"

// Sum of x[0..n) by one block: warp sums, then warp 0 sums the warp partials from shared memory.
__global__ void block_sum(float *out, const float *x, int n) {
    __shared__ float part[32];
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += x[i];
    s = kn_warp_sum(s);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x < 32) {
        float v = threadIdx.x < (blockDim.x >> 5) ? part[threadIdx.x] : 0.0f;
        v = kn_warp_sum(v);
        if (threadIdx.x == 0) out[blockIdx.x] = v;
    }
}

// The same without the barrier: warp 0 reads partials other warps may not have written yet.
__global__ void block_sum_racy(float *out, const float *x, int n) {
    __shared__ float part[32];
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += x[i];
    s = kn_warp_sum(s);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = s;
    if (threadIdx.x < 32) {
        float v = threadIdx.x < (blockDim.x >> 5) ? part[threadIdx.x] : 0.0f;
        v = kn_warp_sum(v);
        if (threadIdx.x == 0) out[blockIdx.x] = v;
    }
}

__global__ void divergent_barrier(float *out) {
    if (threadIdx.x < 64) {
        __syncthreads();
    } else {
        __syncthreads();
    }
    out[threadIdx.x] = 1.0f;
}

__global__ void divergent_warp(float *out) {
    float v = (float)threadIdx.x;
    if (threadIdx.x & 1) v = __shfl_xor_sync(KN_FULL_MASK, v, 2);
    else v = __shfl_xor_sync(KN_FULL_MASK, v, 2);
    out[threadIdx.x] = v;
}

__global__ void shfl_after_exit(float *out) {
    if (threadIdx.x >= 16) return;
    out[threadIdx.x] = kn_warp_sum(1.0f); // names lanes 16..31, which exited
}

// Lanes 0..15 wait in a full-mask shuffle for lanes 16..31, which wait at the barrier for them.
__global__ void half_barrier_deadlock(float *out) {
    float v = 1.0f;
    if (threadIdx.x < 16) v = __shfl_xor_sync(KN_FULL_MASK, v, 1);
    else __syncthreads();
    out[threadIdx.x] = v;
}

__global__ void big_smem(float *out) {
    KN_DYN_SMEM(float, sm);
    sm[threadIdx.x] = 1.0f;
    out[threadIdx.x] = sm[threadIdx.x];
}

static int expect_fault(const char *what, int launch_rc) {
    cudaError_t e = cudaStreamSynchronize(nullptr);
    int faulted = launch_rc != 0 || e != cudaSuccess;
    CHECK_MSG(faulted, "%s: not reported", what);
    kn_emu::reset();
    return faulted;
}

int main(void) {
    const int n = 1000, threads = 256;
    float *hx = (float *)malloc(n * sizeof(float));
    double want = 0;
    for (int i = 0; i < n; i++) {
        hx[i] = (float)((i * 37) % 101) - 50.0f;
        want += hx[i];
    }
    float *dx = nullptr, *dout = nullptr, *pinned = nullptr;
    CHECK(cudaMalloc((void **)&dx, n * sizeof(float)) == cudaSuccess);
    CHECK(cudaMalloc((void **)&dout, 1024 * sizeof(float)) == cudaSuccess);
    CHECK(cudaHostAlloc((void **)&pinned, 1024 * sizeof(float), cudaHostAllocDefault) == cudaSuccess);
    CHECK(cudaMemcpyAsync(dx, hx, n * sizeof(float), cudaMemcpyHostToDevice, nullptr) == cudaSuccess);

    // a correct kernel, both schedules
    for (int rev = 0; rev < 2; rev++) {
        setenv("KN_EMU_ORDER", rev ? "reverse" : "forward", 1);
        KN_LAUNCH((block_sum), 1, threads, 0, nullptr, dout, dx, n);
        CHECK(cudaGetLastError() == cudaSuccess);
        float got = 0;
        CHECK(cudaMemcpyAsync(&got, dout, sizeof got, cudaMemcpyDeviceToHost, nullptr) == cudaSuccess);
        CHECK_MSG(got == (float)want, "block_sum order %d: %g, want %g", rev, got, want);
    }

    // the missing barrier shows in at least one of the two schedules
    int wrong = 0;
    for (int rev = 0; rev < 2; rev++) {
        setenv("KN_EMU_ORDER", rev ? "reverse" : "forward", 1);
        KN_LAUNCH((block_sum_racy), 1, threads, 0, nullptr, dout, dx, n);
        float got = 0;
        CHECK(cudaMemcpyAsync(&got, dout, sizeof got, cudaMemcpyDeviceToHost, nullptr) == cudaSuccess);
        wrong += got != (float)want;
    }
    CHECK_MSG(wrong > 0, "a reduction without its __syncthreads gave the right sum in both schedules");
    unsetenv("KN_EMU_ORDER");

    fprintf(stderr, "test_cuemu: the faults below are expected\n");
    KN_LAUNCH((divergent_barrier), 1, 128, 0, nullptr, dout);
    expect_fault("threads at different __syncthreads", cudaGetLastError());
    KN_LAUNCH((divergent_warp), 1, 32, 0, nullptr, dout);
    expect_fault("lanes in different warp calls", cudaGetLastError());
    KN_LAUNCH((shfl_after_exit), 1, 32, 0, nullptr, dout);
    expect_fault("a shuffle naming exited lanes", cudaGetLastError());
    KN_LAUNCH((half_barrier_deadlock), 1, 64, 0, nullptr, dout);
    expect_fault("a deadlock", cudaGetLastError());
    KN_LAUNCH((block_sum), 1, threads, 0, nullptr, dout, hx, n);
    expect_fault("a host pointer passed to a kernel", cudaGetLastError());
    KN_LAUNCH((big_smem), 1, 32, 64 * 1024, nullptr, dout);
    expect_fault("64 KiB of dynamic shared memory without the opt-in", cudaGetLastError());
    CHECK(cudaFuncSetAttribute(reinterpret_cast<const void *>(&big_smem),
                               cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024) == cudaSuccess);
    KN_LAUNCH((big_smem), 1, 32, 64 * 1024, nullptr, dout);
    CHECK(cudaGetLastError() == cudaSuccess);
    CHECK(cudaStreamSynchronize(nullptr) == cudaSuccess);
    CHECK(cudaMemcpyAsync(dout, dx, n * sizeof(float), cudaMemcpyHostToDevice, nullptr) != cudaSuccess);
    kn_emu::reset();

    // work runs at synchronisation: a pinned download is not there before cudaStreamSynchronize
    pinned[0] = -1.0f;
    KN_LAUNCH((block_sum), 1, threads, 0, nullptr, dout, dx, n);
    CHECK(cudaMemcpyAsync(pinned, dout, sizeof(float), cudaMemcpyDeviceToHost, nullptr) == cudaSuccess);
    CHECK_MSG(pinned[0] == -1.0f, "the copy into pinned memory completed before the host synchronised");
    CHECK(cudaStreamSynchronize(nullptr) == cudaSuccess);
    CHECK_MSG(pinned[0] == (float)want, "after synchronising: %g", pinned[0]);

    // fresh device memory is not zero
    float *fresh = nullptr, probe = 0;
    CHECK(cudaMalloc((void **)&fresh, 64) == cudaSuccess);
    CHECK(cudaMemcpyAsync(&probe, fresh, sizeof probe, cudaMemcpyDeviceToHost, nullptr) == cudaSuccess);
    CHECK(probe != probe);

    // memory accounting
    size_t fr = 0, tot = 0;
    CHECK(cudaMemGetInfo(&fr, &tot) == cudaSuccess);
    CHECK_EQ_INT((long long)(tot - fr), (long long)(n * sizeof(float) + 1024 * sizeof(float) + 64));
    cudaFree(fresh);
    cudaFree(dx);
    cudaFree(dout);
    cudaFreeHost(pinned);
    CHECK(cudaMemGetInfo(&fr, &tot) == cudaSuccess);
    CHECK_EQ_INT((long long)(tot - fr), 0LL);
    free(hx);
    return test_done();
}
