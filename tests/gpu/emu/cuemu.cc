// tests/gpu/emu/cuemu.cc — the CPU emulation of a CUDA device behind the `CUDA=emu` build: fibers for CUDA
// threads (one block at a time, one OS thread), barrier and warp-exchange bookkeeping with divergence and
// deadlock checks, an in-order stream whose work runs at synchronisation points, and the subset of the CUDA
// runtime and cuBLAS that kernels/kn_cuda.c calls, with counted device memory. See cuemu.h for the scope.
// Environment: KN_EMU_ORDER=reverse (threads of a block in reverse order), KN_EMU_MEM_MB (device size),
// KN_EMU_ABORT=1 (abort at a fault), KN_EMU_STATS=FILE (append the runtime call counts at exit),
// KN_EMU_TRACE=1 (each cudaMalloc/cudaFree on stderr).
#include "tests/gpu/emu/cuemu.h"

#include <cublas_v2.h>

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#include <deque>
#include <map>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define KN_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KN_EMU_ASAN 1
#endif
#endif
#ifdef KN_EMU_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace kn_emu {

// ---- context switch ------------------------------------------------------------------------------------
#if defined(__x86_64__)
// Saves the callee-saved registers on the current stack, stores its stack pointer in *save and resumes the
// context whose stack pointer is `to` (System V ABI: everything else is caller-saved).
extern "C" void kn_emu_switch(void **save, void *to);
asm(".text\n"
    ".globl kn_emu_switch\n"
    ".type kn_emu_switch,@function\n"
    "kn_emu_switch:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  movq %rsp, (%rdi)\n"
    "  movq %rsi, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
    "  ret\n"
    ".size kn_emu_switch, .-kn_emu_switch\n");
#endif

enum { W_NONE, W_BLOCK, W_WARP };

struct fiber {
    void *sp = nullptr; // saved stack pointer while switched out
#if !defined(__x86_64__)
    ucontext_t uc;
#endif
    char *stack = nullptr;
    uint3 tid{};
    int lane = 0, warp = 0, done = 0, wait = W_NONE;
    unsigned wait_gen = 0;
    void *asan_fake = nullptr;
};

struct warp_state {
    unsigned gen = 0, count = 0;
    uint32_t present = 0, alive = 0, mask = 0;
    int site = -1;
    uint64_t slot[2][32];
};

struct launch_ctx {
    const char *name = "";
    const std::function<void()> *body = nullptr;
    std::vector<fiber> f;
    std::vector<warp_state> w;
    unsigned gen = 0, count = 0, live = 0;
    int site = -1;
    std::vector<unsigned char> smem;
    void *sched_sp = nullptr;
#if !defined(__x86_64__)
    ucontext_t sched_uc;
#endif
    int failed = 0;
    const void *sched_stack = nullptr;
    size_t sched_stack_size = 0;
};

uint3 block_idx;
dim3 block_dim, grid_dim;
static launch_ctx *g_lc;
static fiber *g_cur;
static cudaError_t g_last = cudaSuccess, g_sticky = cudaSuccess;

#ifdef KN_EMU_ASAN
enum { STACK_BYTES = 512 * 1024 };
#else
enum { STACK_BYTES = 128 * 1024 };
#endif
static char *g_stacks;
static size_t g_n_stacks;

const uint3 &cur_tid() { return g_cur->tid; }
int lane_id() { return g_cur->lane; }
void *dyn_smem() { return g_lc->smem.data(); }

static int order_reverse() {
    const char *o = getenv("KN_EMU_ORDER");
    return o && !strcmp(o, "reverse");
}

// Reports an emulation-detected fault; the launch stops and the device error becomes sticky, as after a
// kernel fault on a GPU. KN_EMU_ABORT=1 aborts instead (for a debugger).
static void fault(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (g_lc && g_cur)
        fprintf(stderr, "kn-emu: %s, block (%u,%u,%u) thread (%u,%u,%u): %s\n", g_lc->name, block_idx.x,
                block_idx.y, block_idx.z, g_cur->tid.x, g_cur->tid.y, g_cur->tid.z, msg);
    else
        fprintf(stderr, "kn-emu: %s%s%s\n", g_lc ? g_lc->name : "", g_lc ? ": " : "", msg);
    const char *ab = getenv("KN_EMU_ABORT");
    if (ab && ab[0] == '1') abort();
    g_sticky = cudaErrorLaunchFailure;
    if (g_lc) g_lc->failed = 1;
}

// ---- fibers --------------------------------------------------------------------------------------------
static void to_scheduler(fiber *f, int final) {
    launch_ctx *lc = g_lc;
#ifdef KN_EMU_ASAN
    __sanitizer_start_switch_fiber(final ? nullptr : &f->asan_fake, lc->sched_stack, lc->sched_stack_size);
#else
    (void)final;
#endif
#if defined(__x86_64__)
    kn_emu_switch(&f->sp, lc->sched_sp);
#else
    swapcontext(&f->uc, &lc->sched_uc);
#endif
#ifdef KN_EMU_ASAN
    __sanitizer_finish_switch_fiber(f->asan_fake, nullptr, nullptr);
#endif
}

static void release_if_complete(launch_ctx *lc) {
    if (lc->count > 0 && lc->count == lc->live) {
        lc->count = 0;
        lc->gen++;
        lc->site = -1;
    }
}
static void warp_release_if_complete(warp_state *w) {
    if (w->count > 0 && w->count == (unsigned)__builtin_popcount(w->mask & w->alive)) {
        w->count = 0;
        w->gen++;
        w->site = -1;
    }
}

static void fiber_main() {
#ifdef KN_EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
    fiber *f = g_cur;
    launch_ctx *lc = g_lc;
    (*lc->body)();
    f->done = 1;
    lc->live--;
    warp_state *w = &lc->w[f->warp];
    w->alive &= ~(1u << f->lane);
    if (w->count > 0) {
        if (w->mask & (1u << f->lane))
            fault("a lane exited while its warp waits for it in a *_sync call (mask 0x%08x)", w->mask);
        warp_release_if_complete(w);
    }
    release_if_complete(lc);
    to_scheduler(f, 1);
    abort(); // a finished fiber is never resumed
}

#if defined(__x86_64__)
static void fiber_entry_trampoline() { fiber_main(); }
#else
static void fiber_entry_uc() { fiber_main(); }
#endif

static void prepare(fiber *f, char *stack) {
    f->stack = stack;
#if defined(__x86_64__)
    uintptr_t top = ((uintptr_t)stack + STACK_BYTES) & ~(uintptr_t)15;
    void **sp = (void **)top;
    *--sp = nullptr;                               // the trampoline's (never used) return address
    *--sp = (void *)&fiber_entry_trampoline;       // popped by `ret`
    for (int i = 0; i < 6; i++) *--sp = nullptr;   // rbp rbx r12 r13 r14 r15
    f->sp = sp;
#else
    getcontext(&f->uc);
    f->uc.uc_stack.ss_sp = stack;
    f->uc.uc_stack.ss_size = STACK_BYTES;
    f->uc.uc_link = nullptr;
    makecontext(&f->uc, fiber_entry_uc, 0);
#endif
}

static void resume(launch_ctx *lc, fiber *f) {
    g_cur = f;
#ifdef KN_EMU_ASAN
    void *fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, f->stack, STACK_BYTES);
#endif
#if defined(__x86_64__)
    kn_emu_switch(&lc->sched_sp, f->sp);
#else
    swapcontext(&lc->sched_uc, &f->uc);
#endif
#ifdef KN_EMU_ASAN
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
    g_cur = nullptr;
}

static int reserve_stacks(size_t n) {
    if (n <= g_n_stacks) return 0;
    if (g_stacks) munmap(g_stacks, g_n_stacks * STACK_BYTES);
    void *p = mmap(nullptr, n * STACK_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED) {
        g_stacks = nullptr;
        g_n_stacks = 0;
        return -1;
    }
    g_stacks = (char *)p;
    g_n_stacks = n;
    return 0;
}

// Runs one block to completion; returns nonzero after a fault.
static int run_block(launch_ctx *lc) {
    const unsigned n = block_dim.x * block_dim.y * block_dim.z;
    const unsigned n_warp = (n + 31) / 32;
    lc->f.assign(n, fiber());
    lc->w.assign(n_warp, warp_state());
    for (unsigned i = 0; i < n_warp; i++) {
        unsigned lanes = n - 32 * i < 32 ? n - 32 * i : 32;
        lc->w[i].present = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1);
        lc->w[i].alive = lc->w[i].present;
    }
    lc->gen = lc->count = 0;
    lc->live = n;
    lc->site = -1;
    // dynamic shared memory starts as NaN bytes each block: reading it before writing it shows up
    if (!lc->smem.empty()) memset(lc->smem.data(), 0xff, lc->smem.size());
    for (unsigned t = 0; t < n; t++) {
        fiber *f = &lc->f[t];
        f->tid = make_uint3(t % block_dim.x, (t / block_dim.x) % block_dim.y, t / (block_dim.x * block_dim.y));
        f->lane = (int)(t % 32);
        f->warp = (int)(t / 32);
        prepare(f, g_stacks + (size_t)t * STACK_BYTES);
    }
    const int rev = order_reverse();
    unsigned done = 0;
    while (done < n && !lc->failed) {
        int progressed = 0;
        for (unsigned k = 0; k < n && !lc->failed; k++) {
            fiber *f = &lc->f[rev ? n - 1 - k : k];
            if (f->done) continue;
            if (f->wait == W_BLOCK && f->wait_gen == lc->gen) continue;
            if (f->wait == W_WARP && f->wait_gen == lc->w[f->warp].gen) continue;
            f->wait = W_NONE;
            resume(lc, f);
            progressed = 1;
            if (f->done) done++;
        }
        if (!progressed && done < n) {
            unsigned at_bar = 0, at_warp = 0;
            for (unsigned t = 0; t < n; t++) {
                if (lc->f[t].done) continue;
                if (lc->f[t].wait == W_BLOCK) at_bar++;
                else at_warp++;
            }
            fault("deadlock in block (%u,%u,%u): %u threads wait at __syncthreads, %u in warp *_sync calls, "
                  "%u exited",
                  block_idx.x, block_idx.y, block_idx.z, at_bar, at_warp, done);
        }
    }
    return lc->failed;
}

// ---- barriers ------------------------------------------------------------------------------------------
void sync_block(int site) {
    fiber *f = g_cur;
    launch_ctx *lc = g_lc;
    if (lc->count == 0) lc->site = site;
    else if (lc->site != site) {
        fault("threads of a block wait at different __syncthreads calls (lines %d and %d)", lc->site, site);
        to_scheduler(f, 0);
        return;
    }
    const unsigned gen = lc->gen;
    lc->count++;
    release_if_complete(lc);
    if (lc->gen != gen) return;
    f->wait = W_BLOCK;
    f->wait_gen = gen;
    to_scheduler(f, 0);
}

uint64_t warp_exchange(int site, uint32_t mask, uint64_t v, int src_lane, uint32_t *ballot) {
    fiber *f = g_cur;
    launch_ctx *lc = g_lc;
    warp_state *w = &lc->w[f->warp];
    if (!(mask & (1u << f->lane))) {
        fault("a *_sync call whose mask 0x%08x leaves out the calling lane %d", mask, f->lane);
        to_scheduler(f, 0);
        return 0;
    }
    if (mask & ~w->alive) {
        fault("a *_sync call names lanes that do not exist or have exited (mask 0x%08x, live lanes 0x%08x)", mask,
              w->alive);
        to_scheduler(f, 0);
        return 0;
    }
    if (w->count == 0) {
        w->mask = mask;
        w->site = site;
    } else if (w->mask != mask || w->site != site) {
        fault("lanes of one warp are in different *_sync calls (divergent warp-synchronous code)");
        to_scheduler(f, 0);
        return 0;
    }
    const unsigned gen = w->gen;
    w->slot[gen & 1][f->lane] = v;
    w->count++;
    warp_release_if_complete(w);
    if (w->gen == gen) {
        f->wait = W_WARP;
        f->wait_gen = gen;
        to_scheduler(f, 0);
        if (lc->failed) return 0;
    }
    if (ballot) {
        uint32_t b = 0;
        for (int l = 0; l < 32; l++)
            if ((mask >> l & 1) && w->slot[gen & 1][l]) b |= 1u << l;
        *ballot = b;
    }
    if (src_lane < 0 || src_lane > 31 || !(mask >> src_lane & 1)) {
        fault("a shuffle reads lane %d, outside the mask 0x%08x", src_lane, mask);
        return 0;
    }
    return w->slot[gen & 1][src_lane];
}

// ---- device memory -------------------------------------------------------------------------------------
static std::map<uintptr_t, size_t> g_dev, g_pinned; // base -> bytes
static size_t g_dev_used;
static std::map<const void *, int> g_fn_smem; // kernel -> opted-in dynamic shared memory

static size_t mem_total() {
    const char *m = getenv("KN_EMU_MEM_MB");
    long v = m ? atol(m) : 0;
    return v > 0 ? (size_t)v << 20 : (size_t)16 << 30;
}

// The allocation in `m` holding [p, p + n), or end().
static std::map<uintptr_t, size_t>::iterator find_range(std::map<uintptr_t, size_t> &m, const void *p, size_t n) {
    const uintptr_t a = (uintptr_t)p;
    auto it = m.upper_bound(a);
    if (it == m.begin()) return m.end();
    --it;
    if (a >= it->first && a + n <= it->first + it->second) return it;
    return m.end();
}

int check_kernel_ptr(const char *kernel, int arg, const void *p) {
    if (!p || find_range(g_dev, p, 0) != g_dev.end()) return 0;
    const char *kind = find_range(g_pinned, p, 0) != g_pinned.end() ? "pinned host" : "host";
    fprintf(stderr, "kn-emu: %s: argument %d is a %s pointer %p, not device memory\n", kernel, arg, kind, p);
    g_last = cudaErrorIllegalAddress;
    g_sticky = cudaErrorIllegalAddress;
    return 1;
}

// ---- the stream ----------------------------------------------------------------------------------------
// One in-order queue stands for every stream (a legal schedule of any set of streams). Work runs when the
// host synchronises, so host code that reads results or reuses buffers too early sees it.
static std::deque<std::function<void()>> g_queue;

// Host-visible traffic, for checking that decoding does no per-token allocation or extra round trip:
// KN_EMU_STATS=FILE appends one line of counts at exit.
static struct {
    unsigned long long launches, mallocs, frees, host_allocs, waits, h2d, d2h, d2d, memsets;
} g_count;

static struct stats_writer {
    ~stats_writer() {
        const char *path = getenv("KN_EMU_STATS");
        FILE *f = path && *path ? fopen(path, "a") : nullptr;
        if (!f) return;
        fprintf(f, "launches %llu mallocs %llu frees %llu host_allocs %llu waits %llu h2d %llu d2h %llu d2d %llu "
                "memsets %llu\n",
                g_count.launches, g_count.mallocs, g_count.frees, g_count.host_allocs, g_count.waits, g_count.h2d,
                g_count.d2h, g_count.d2d, g_count.memsets);
        fclose(f);
    }
} g_stats_writer;

static void flush() {
    while (!g_queue.empty()) {
        std::function<void()> job = std::move(g_queue.front());
        g_queue.pop_front();
        if (g_sticky == cudaSuccess) job();
    }
}

void launch(const void *fn, const char *name, dim3 grid, dim3 block, size_t smem, cudaStream_t st,
            std::function<void()> body) {
    (void)st;
    const unsigned long long nt = (unsigned long long)block.x * block.y * block.z;
    if (g_sticky != cudaSuccess) {
        g_last = g_sticky;
        return;
    }
    if (nt == 0 || nt > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 ||
        grid.z > 65535) {
        fprintf(stderr, "kn-emu: %s: invalid launch configuration grid (%u,%u,%u) block (%u,%u,%u)\n", name, grid.x,
                grid.y, grid.z, block.x, block.y, block.z);
        g_last = cudaErrorInvalidConfiguration;
        return;
    }
    auto it = g_fn_smem.find(fn);
    const size_t smem_max = it != g_fn_smem.end() ? (size_t)it->second : 48 * 1024;
    if (smem > smem_max) {
        fprintf(stderr, "kn-emu: %s: %zu bytes of dynamic shared memory, above the %zu allowed\n", name, smem,
                smem_max);
        g_last = cudaErrorInvalidValue;
        return;
    }
    g_count.launches++;
    g_queue.push_back([=]() {
        if (reserve_stacks(nt)) {
            fprintf(stderr, "kn-emu: %s: cannot map fiber stacks\n", name);
            g_sticky = cudaErrorMemoryAllocation;
            return;
        }
        launch_ctx lc;
        lc.name = name;
        lc.body = &body;
        lc.smem.assign(smem, 0);
#ifdef KN_EMU_ASAN
        pthread_attr_t attr;
        pthread_getattr_np(pthread_self(), &attr);
        void *lo = nullptr;
        size_t sz = 0;
        pthread_attr_getstack(&attr, &lo, &sz);
        pthread_attr_destroy(&attr);
        lc.sched_stack = lo;
        lc.sched_stack_size = sz;
#endif
        g_lc = &lc;
        block_dim = block;
        grid_dim = grid;
        for (unsigned z = 0; z < grid.z && !lc.failed; z++)
            for (unsigned y = 0; y < grid.y && !lc.failed; y++)
                for (unsigned x = 0; x < grid.x && !lc.failed; x++) {
                    block_idx = make_uint3(x, y, z);
                    run_block(&lc);
                }
        g_lc = nullptr;
    });
}

void reset() {
    g_queue.clear();
    g_sticky = g_last = cudaSuccess;
}

static cudaError_t ret(cudaError_t e) {
    if (e != cudaSuccess) g_last = e;
    return e;
}

} // namespace kn_emu

using namespace kn_emu;

// ---- CUDA runtime --------------------------------------------------------------------------------------
extern "C" {

cudaError_t cudaGetDeviceCount(int *n) {
    *n = 1;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) { return ret(d == 0 ? cudaSuccess : cudaErrorInvalidDevice); }
cudaError_t cudaRuntimeGetVersion(int *v) {
    *v = CUDART_VERSION;
    return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int *v) {
    *v = CUDART_VERSION;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int d) {
    if (d != 0) return ret(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "kn-emu (CUDA execution model on the CPU)");
    p->totalGlobalMem = mem_total();
    p->sharedMemPerBlock = 48 * 1024;
    p->warpSize = 32;
    p->maxThreadsPerBlock = 1024;
    p->maxThreadsDim[0] = p->maxThreadsDim[1] = 1024;
    p->maxThreadsDim[2] = 64;
    p->maxGridSize[0] = 0x7fffffff;
    p->maxGridSize[1] = p->maxGridSize[2] = 65535;
    p->major = 9;
    p->minor = 0;
    p->multiProcessorCount = 4;
    p->sharedMemPerBlockOptin = 227 * 1024;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *v, enum cudaDeviceAttr a, int d) {
    if (d != 0) return ret(cudaErrorInvalidDevice);
    switch (a) {
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = 227 * 1024; break;
    case cudaDevAttrMemoryClockRate: *v = 1000000; break; // kHz: nominal, the emulator has no bandwidth
    case cudaDevAttrGlobalMemoryBusWidth: *v = 64; break;
    case cudaDevAttrMultiProcessorCount: *v = 4; break;
    default: *v = 0; return ret(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}

cudaError_t cudaGetLastError(void) {
    cudaError_t e = g_sticky != cudaSuccess ? g_sticky : g_last;
    g_last = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError(void) { return g_sticky != cudaSuccess ? g_sticky : g_last; }

const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    default: return "emulated CUDA error";
    }
}

cudaError_t cudaFuncSetAttribute(const void *fn, enum cudaFuncAttribute a, int v) {
    if (a != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaSuccess;
    if (v < 0 || v > 227 * 1024) return ret(cudaErrorInvalidValue);
    g_fn_smem[fn] = v;
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **p, size_t n) {
    *p = nullptr;
    if (g_sticky != cudaSuccess) return ret(g_sticky);
    if (n > mem_total() - g_dev_used) return ret(cudaErrorMemoryAllocation);
    void *m = nullptr;
    if (posix_memalign(&m, 256, n ? n : 1)) return ret(cudaErrorMemoryAllocation);
    memset(m, 0xff, n); // fresh device memory is not zero: all-ones bytes read as NaN floats
    g_dev[(uintptr_t)m] = n;
    g_dev_used += n;
    g_count.mallocs++;
    if (getenv("KN_EMU_TRACE")) fprintf(stderr, "kn-emu: cudaMalloc %zu -> %p\n", n, m);
    *p = m;
    return cudaSuccess;
}

cudaError_t cudaFree(void *p) {
    if (!p) return cudaSuccess;
    flush(); // cudaFree waits for the device
    auto it = g_dev.find((uintptr_t)p);
    if (it == g_dev.end()) {
        fprintf(stderr, "kn-emu: cudaFree of %p, which cudaMalloc did not return\n", p);
        return ret(cudaErrorInvalidValue);
    }
    g_dev_used -= it->second;
    g_dev.erase(it);
    g_count.frees++;
    if (getenv("KN_EMU_TRACE")) fprintf(stderr, "kn-emu: cudaFree %p\n", p);
    free(p);
    return cudaSuccess;
}

cudaError_t cudaHostAlloc(void **p, size_t n, unsigned int flags) {
    (void)flags;
    *p = nullptr;
    void *m = nullptr;
    if (posix_memalign(&m, 4096, n ? n : 1)) return ret(cudaErrorMemoryAllocation);
    g_pinned[(uintptr_t)m] = n;
    g_count.host_allocs++;
    *p = m;
    return cudaSuccess;
}

cudaError_t cudaFreeHost(void *p) {
    if (!p) return cudaSuccess;
    flush();
    auto it = g_pinned.find((uintptr_t)p);
    if (it == g_pinned.end()) return ret(cudaErrorInvalidValue);
    g_pinned.erase(it);
    free(p);
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total) {
    *total = mem_total();
    *free_b = *total - g_dev_used;
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags) {
    (void)flags;
    static int token;
    *s = (cudaStream_t)(void *)&token;
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
    (void)s;
    flush();
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    (void)s;
    g_count.waits++;
    flush();
    return ret(g_sticky);
}
cudaError_t cudaDeviceSynchronize(void) {
    g_count.waits++;
    flush();
    return ret(g_sticky);
}

static int in_dev(const void *p, size_t n) { return n == 0 || find_range(g_dev, p, n) != g_dev.end(); }
static int is_pinned(const void *p, size_t n) { return find_range(g_pinned, p, n) != g_pinned.end(); }

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind, cudaStream_t s) {
    (void)s;
    if (g_sticky != cudaSuccess) return ret(g_sticky);
    const int d_dev = in_dev(dst, n), s_dev = in_dev(src, n);
    const int ok = kind == cudaMemcpyHostToDevice   ? d_dev && !s_dev
                   : kind == cudaMemcpyDeviceToHost ? s_dev && !d_dev
                   : kind == cudaMemcpyDeviceToDevice ? d_dev && s_dev
                                                      : 0;
    if (!ok) {
        fprintf(stderr, "kn-emu: cudaMemcpyAsync(%p, %p, %zu, kind %d): a pointer is not where the kind says "
                "(or the range leaves its allocation)\n",
                dst, src, n, (int)kind);
        return ret(cudaErrorInvalidValue);
    }
    (kind == cudaMemcpyHostToDevice ? g_count.h2d : kind == cudaMemcpyDeviceToHost ? g_count.d2h : g_count.d2d)++;
    if (kind == cudaMemcpyHostToDevice && !is_pinned(src, n)) {
        // from pageable memory the runtime stages the bytes before returning: later host writes don't count
        std::vector<unsigned char> copy((const unsigned char *)src, (const unsigned char *)src + n);
        g_queue.push_back([dst, copy]() { memcpy(dst, copy.data(), copy.size()); });
    } else if (kind == cudaMemcpyDeviceToHost && !is_pinned(dst, n)) {
        g_count.waits++;
        flush(); // into pageable memory the call returns with the bytes there
        memcpy(dst, src, n);
    } else {
        g_queue.push_back([dst, src, n]() { memmove(dst, src, n); });
    }
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind) {
    const unsigned long long waits = g_count.waits;
    cudaError_t e = cudaMemcpyAsync(dst, src, n, kind, nullptr);
    g_count.waits = waits + 1; // one wait, whichever path the copy took
    flush();
    return e != cudaSuccess ? e : ret(g_sticky);
}

cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s) {
    (void)s;
    if (g_sticky != cudaSuccess) return ret(g_sticky);
    if (!in_dev(p, n)) {
        fprintf(stderr, "kn-emu: cudaMemsetAsync(%p, %zu) outside device memory\n", p, n);
        return ret(cudaErrorInvalidValue);
    }
    g_count.memsets++;
    g_queue.push_back([p, v, n]() { memset(p, v, n); });
    return cudaSuccess;
}

cudaError_t cudaMemset(void *p, int v, size_t n) {
    cudaError_t e = cudaMemsetAsync(p, v, n, nullptr);
    g_count.waits++;
    flush();
    return e;
}

// ---- cuBLAS --------------------------------------------------------------------------------------------
struct cublasContext {
    int math;
};

cublasStatus_t cublasCreate_v2(cublasHandle_t *h) {
    *h = (cublasHandle_t)calloc(1, sizeof(struct cublasContext));
    return *h ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_ALLOC_FAILED;
}
cublasStatus_t cublasDestroy_v2(cublasHandle_t h) {
    flush();
    free(h);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t s) {
    (void)h;
    (void)s;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t m) {
    h->math = (int)m;
    return CUBLAS_STATUS_SUCCESS;
}

static float load_elem(const void *p, cudaDataType t, size_t i) {
    if (t == CUDA_R_32F) return ((const float *)p)[i];
    if (t == CUDA_R_16F) return __half2float(((const __half *)p)[i]);
    uint32_t b = (uint32_t)((const uint16_t *)p)[i] << 16; // CUDA_R_16BF
    float f;
    memcpy(&f, &b, 4);
    return f;
}

// C (m x n) = alpha op(A) op(B) + beta C, column-major, accumulated in double then rounded (a reference, not
// cuBLAS's order: the tests bound the difference).
static cublasStatus_t gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                           const void *A, cudaDataType at, int lda, const void *B, cudaDataType bt, int ldb,
                           float beta, void *C, cudaDataType ct, int ldc) {
    if (m < 0 || n < 0 || k < 0) return CUBLAS_STATUS_INVALID_VALUE;
    if (ct != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (lda < (ta == CUBLAS_OP_N ? m : k) || ldb < (tb == CUBLAS_OP_N ? k : n) || ldc < m)
        return CUBLAS_STATUS_INVALID_VALUE;
    const size_t a_n = (size_t)lda * (ta == CUBLAS_OP_N ? k : m), b_n = (size_t)ldb * (tb == CUBLAS_OP_N ? n : k);
    const size_t asz = at == CUDA_R_32F ? 4 : 2, bsz = bt == CUDA_R_32F ? 4 : 2;
    if (m && n && k && (!in_dev(A, (a_n - (size_t)lda + (ta == CUBLAS_OP_N ? m : k)) * asz) ||
                        !in_dev(B, (b_n - (size_t)ldb + (tb == CUBLAS_OP_N ? k : n)) * bsz) ||
                        !in_dev(C, ((size_t)ldc * (n - 1) + m) * 4))) {
        fprintf(stderr, "kn-emu: cublas gemm: an operand is not (wholly) in device memory\n");
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    g_queue.push_back([=]() {
        float *c = (float *)C;
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                double acc = 0;
                for (int l = 0; l < k; l++) {
                    size_t ia = ta == CUBLAS_OP_N ? (size_t)i + (size_t)l * lda : (size_t)l + (size_t)i * lda;
                    size_t ib = tb == CUBLAS_OP_N ? (size_t)l + (size_t)j * ldb : (size_t)j + (size_t)l * ldb;
                    acc += (double)load_elem(A, at, ia) * load_elem(B, bt, ib);
                }
                float *out = c + (size_t)i + (size_t)j * ldc;
                *out = (float)(alpha * acc + (beta != 0.0f ? (double)beta * *out : 0.0));
            }
    });
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemm_v2(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                              const float *alpha, const float *A, int lda, const float *B, int ldb,
                              const float *beta, float *C, int ldc) {
    (void)h;
    return gemm(ta, tb, m, n, k, *alpha, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb, *beta, C, CUDA_R_32F, ldc);
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void *alpha, const void *A, cudaDataType at, int lda, const void *B,
                            cudaDataType bt, int ldb, const void *beta, void *C, cudaDataType ct, int ldc,
                            cublasComputeType_t comp, cublasGemmAlgo_t algo) {
    (void)h;
    (void)algo;
    if (comp != CUBLAS_COMPUTE_32F && comp != CUBLAS_COMPUTE_32F_FAST_16F && comp != CUBLAS_COMPUTE_32F_FAST_TF32)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    return gemm(ta, tb, m, n, k, *(const float *)alpha, A, at, lda, B, bt, ldb, *(const float *)beta, C, ct, ldc);
}

} // extern "C"
