// kernels/kn_cpu.c — the CPU backend: op table, counted host allocations, thread pool, elementwise ops.
#include "kernels/kn_cpu_impl.h"

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define KN_SIMD 1
#include <immintrin.h>
#endif

#define KN_CPU_MAX_THREADS 256
#define KN_CPU_SPIN 20000 // pause iterations a worker spins before sleeping (decode issues ~200 sections/token)
#define KN_ALLOC_HDR 64   // bytes before each allocation: size and tag

struct kn_cpu {
    struct kn_backend base;
    int n_threads;
    int scalar;
    int int8_act; // 1: decode matmuls quantise activations to int8 (kn_cpu_set_int8_act; off by default)
    char err[256];
    uint64_t ours[KN_MEM_TAGS];
    uint64_t peak;

    // thread pool: n_threads - 1 workers; the caller is thread 0
    pthread_t *workers;
    int n_workers;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n_sleeping;  // guarded by mu
    atomic_uint gen; // bumped for each parallel section (wakes the workers)
    // (section generation << 32) | next task index; a task is claimed by a CAS that checks the generation,
    // so a worker that wakes late can never run a task of another section. Index 0xffffffff: closed.
    _Atomic uint64_t next;
    atomic_int done; // tasks of the current section finished
    atomic_int stop;
    // The current section, written while `next` is closed. All seq_cst: a worker that reads a newer
    // section's values has its CAS on `next` ordered after the close, so it fails.
    _Atomic(kn_cpu_task_fn) fn;
    _Atomic(void *) ctx;
    atomic_int n_tasks;

    // scratch
    void *shared;
    size_t shared_size;
    void **tscr;      // (n_threads) per-thread buffers
    size_t tscr_size;
};

struct kn_alloc_hdr {
    size_t nbytes;
    int tag;
};

static struct kn_cpu *cpu_of(struct kn_backend *be) { return (struct kn_cpu *)be; }

void kn_cpu_set_error(struct kn_cpu *cpu, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cpu->err, sizeof cpu->err, fmt, ap);
    va_end(ap);
}

int kn_cpu_scalar_forced(const struct kn_cpu *cpu) { return cpu->scalar; }
void kn_cpu_force_scalar(struct kn_backend *be, int on) { cpu_of(be)->scalar = on != 0; }
int kn_cpu_int8_act(const struct kn_cpu *cpu) { return cpu->int8_act; }
void kn_cpu_set_int8_act(struct kn_backend *be, int on) { cpu_of(be)->int8_act = on != 0; }

int kn_cpu_n_threads(const struct kn_backend *be) {
    if (!be || !kn_is_cpu(be)) return 0;
    return ((const struct kn_cpu *)be)->n_threads;
}

// ---- counted allocation --------------------------------------------------------------------------

static void count_add(struct kn_cpu *cpu, int tag, uint64_t n) {
    cpu->ours[tag] += n;
    uint64_t sum = 0;
    for (int i = 0; i < KN_MEM_TAGS; i++) sum += cpu->ours[i];
    if (sum > cpu->peak) cpu->peak = sum;
}
static void count_sub(struct kn_cpu *cpu, int tag, uint64_t n) {
    cpu->ours[tag] = cpu->ours[tag] >= n ? cpu->ours[tag] - n : 0;
}

static void *cpu_alloc(struct kn_backend *be, size_t nbytes, int tag) {
    struct kn_cpu *cpu = cpu_of(be);
    if (tag < 0 || tag >= KN_MEM_TAGS) {
        kn_cpu_set_error(cpu, "alloc: bad memory tag %d", tag);
        return NULL;
    }
    size_t body = (nbytes + 63) & ~(size_t)63;
    if (body < nbytes || body > SIZE_MAX - KN_ALLOC_HDR) {
        kn_cpu_set_error(cpu, "alloc: size %zu too large", nbytes);
        return NULL;
    }
    unsigned char *p = aligned_alloc(64, KN_ALLOC_HDR + body);
    if (!p) {
        kn_cpu_set_error(cpu, "alloc: out of host memory (%zu bytes)", nbytes);
        return NULL;
    }
    struct kn_alloc_hdr h = {nbytes, tag};
    memcpy(p, &h, sizeof h);
    count_add(cpu, tag, nbytes);
    return p + KN_ALLOC_HDR;
}

static void cpu_dealloc(struct kn_backend *be, void *ptr) {
    if (!ptr) return;
    unsigned char *p = (unsigned char *)ptr - KN_ALLOC_HDR;
    struct kn_alloc_hdr h;
    memcpy(&h, p, sizeof h);
    count_sub(cpu_of(be), h.tag, h.nbytes);
    free(p);
}

static int cpu_upload(struct kn_backend *be, void *dst, const void *src, size_t nbytes) {
    (void)be;
    if (nbytes) memmove(dst, src, nbytes);
    return 0;
}
static int cpu_download(struct kn_backend *be, void *dst, const void *src, size_t nbytes) {
    (void)be;
    if (nbytes) memmove(dst, src, nbytes);
    return 0;
}
static int cpu_memset0(struct kn_backend *be, void *dst, size_t nbytes) {
    (void)be;
    if (nbytes) memset(dst, 0, nbytes);
    return 0;
}

// Zero-copy: the tensor keeps pointing at the caller's (mmapped) bytes; they are counted as weights.
static int cpu_tensor_load(struct kn_backend *be, struct kn_tensor *t, const void *host_data) {
    struct kn_cpu *cpu = cpu_of(be);
    if (!kn_type_block_size(t->type)) {
        kn_cpu_set_error(cpu, "tensor_load: unsupported type %d", t->type);
        return -1;
    }
    if (t->n_cols % kn_type_block_size(t->type) != 0) {
        kn_cpu_set_error(cpu, "tensor_load: %lld columns is not a multiple of the block size",
                         (long long)t->n_cols);
        return -1;
    }
    t->data = (void *)(uintptr_t)host_data;
    t->priv = NULL;
    count_add(cpu, KN_MEM_WEIGHTS, t->nbytes);
    return 0;
}
static void cpu_tensor_unload(struct kn_backend *be, struct kn_tensor *t) {
    if (!t->data) return;
    count_sub(cpu_of(be), KN_MEM_WEIGHTS, t->nbytes);
    t->data = NULL;
}

static void cpu_mem_info(struct kn_backend *be, struct kn_mem *m) {
    struct kn_cpu *cpu = cpu_of(be);
    memset(m, 0, sizeof *m);
    for (int i = 0; i < KN_MEM_TAGS; i++) m->ours[i] = cpu->ours[i];
    m->ours_peak = cpu->peak;
}

static int cpu_sync(struct kn_backend *be) {
    (void)be;
    return 0;
}
static const char *cpu_last_error(struct kn_backend *be) { return cpu_of(be)->err; }

// ---- scratch -------------------------------------------------------------------------------------

static void *scratch_grow(struct kn_cpu *cpu, void *old, size_t old_size, size_t nbytes) {
    if (old) {
        free(old);
        count_sub(cpu, KN_MEM_SCRATCH, old_size);
    }
    size_t body = (nbytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, body ? body : 64);
    if (!p) {
        kn_cpu_set_error(cpu, "scratch: out of host memory (%zu bytes)", nbytes);
        return NULL;
    }
    count_add(cpu, KN_MEM_SCRATCH, body);
    return p;
}

void *kn_cpu_shared_scratch(struct kn_cpu *cpu, size_t nbytes) {
    if (nbytes <= cpu->shared_size && cpu->shared) return cpu->shared;
    size_t want = nbytes + nbytes / 4; // grow with headroom so growth stays rare
    void *p = scratch_grow(cpu, cpu->shared, ((cpu->shared_size + 63) & ~(size_t)63), want);
    cpu->shared = p;
    cpu->shared_size = p ? want : 0;
    return p;
}

int kn_cpu_thread_scratch_reserve(struct kn_cpu *cpu, size_t nbytes) {
    if (nbytes <= cpu->tscr_size) return 0;
    size_t want = nbytes + nbytes / 4;
    size_t old = (cpu->tscr_size + 63) & ~(size_t)63;
    for (int i = 0; i < cpu->n_threads; i++) {
        cpu->tscr[i] = scratch_grow(cpu, cpu->tscr[i], cpu->tscr[i] ? old : 0, want);
        if (!cpu->tscr[i]) {
            for (int j = 0; j < cpu->n_threads; j++) {
                if (cpu->tscr[j] && j != i) {
                    free(cpu->tscr[j]);
                    count_sub(cpu, KN_MEM_SCRATCH, j < i ? ((want + 63) & ~(size_t)63) : old);
                }
                cpu->tscr[j] = NULL;
            }
            cpu->tscr_size = 0;
            return -1;
        }
    }
    cpu->tscr_size = want;
    return 0;
}

void *kn_cpu_thread_scratch(struct kn_cpu *cpu, int tid) { return cpu->tscr[tid]; }

// ---- thread pool ---------------------------------------------------------------------------------

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

#define KN_CLOSED 0xffffffffu

// Claims and runs tasks of section `g` until none is left.
static void run_tasks(struct kn_cpu *cpu, uint32_t g, int tid) {
    uint64_t v = atomic_load(&cpu->next);
    for (;;) {
        uint32_t idx = (uint32_t)v;
        if ((uint32_t)(v >> 32) != g || idx == KN_CLOSED) return;
        kn_cpu_task_fn fn = atomic_load(&cpu->fn);
        void *ctx = atomic_load(&cpu->ctx);
        int n_tasks = atomic_load(&cpu->n_tasks);
        if (idx >= (uint32_t)n_tasks) return;
        if (!atomic_compare_exchange_weak(&cpu->next, &v, v + 1)) continue;
        fn(ctx, (int)idx, tid);
        atomic_fetch_add_explicit(&cpu->done, 1, memory_order_release);
        v = atomic_load(&cpu->next);
    }
}

struct worker_arg {
    struct kn_cpu *cpu;
    int tid;
};

static void *worker_main(void *arg) {
    struct kn_cpu *cpu = ((struct worker_arg *)arg)->cpu;
    int tid = ((struct worker_arg *)arg)->tid;
    free(arg);
    unsigned seen = 0;
    for (;;) {
        int spins = 0;
        while (atomic_load_explicit(&cpu->gen, memory_order_acquire) == seen) {
            if (++spins < KN_CPU_SPIN) {
                cpu_relax();
                continue;
            }
            pthread_mutex_lock(&cpu->mu);
            cpu->n_sleeping++;
            while (atomic_load(&cpu->gen) == seen && !atomic_load(&cpu->stop)) pthread_cond_wait(&cpu->cv, &cpu->mu);
            cpu->n_sleeping--;
            pthread_mutex_unlock(&cpu->mu);
            break;
        }
        seen = atomic_load_explicit(&cpu->gen, memory_order_acquire);
        if (atomic_load(&cpu->stop)) break;
        // if another section has started since, run_tasks sees its generation in `next` and runs nothing
        run_tasks(cpu, seen, tid);
    }
    return NULL;
}

// The caller runs tasks too and then waits for the tasks (not the workers): a worker that is asleep or
// descheduled costs nothing unless it holds a task.
void kn_cpu_parallel(struct kn_cpu *cpu, int n_tasks, kn_cpu_task_fn fn, void *ctx) {
    if (n_tasks <= 0) return;
    if (cpu->n_workers == 0 || n_tasks == 1) {
        for (int t = 0; t < n_tasks; t++) fn(ctx, t, 0);
        return;
    }
    uint32_t g = atomic_load_explicit(&cpu->gen, memory_order_relaxed) + 1;
    // `next` is closed here (end of the previous section): no task can be claimed while these change
    atomic_store(&cpu->fn, fn);
    atomic_store(&cpu->ctx, ctx);
    atomic_store(&cpu->n_tasks, n_tasks);
    atomic_store_explicit(&cpu->done, 0, memory_order_relaxed);
    atomic_store(&cpu->next, (uint64_t)g << 32);
    atomic_store(&cpu->gen, g); // seq_cst: ordered before the n_sleeping read below
    pthread_mutex_lock(&cpu->mu);
    if (cpu->n_sleeping) pthread_cond_broadcast(&cpu->cv);
    pthread_mutex_unlock(&cpu->mu);
    run_tasks(cpu, g, 0);
    int spins = 0;
    while (atomic_load_explicit(&cpu->done, memory_order_acquire) != n_tasks) {
        if (++spins < 2000) cpu_relax();
        else sched_yield(); // a worker holding a task was preempted: give it the core
    }
    atomic_store(&cpu->next, ((uint64_t)g << 32) | KN_CLOSED);
}

static void pool_stop(struct kn_cpu *cpu) {
    if (!cpu->workers) return;
    atomic_store(&cpu->stop, 1);
    pthread_mutex_lock(&cpu->mu);
    atomic_fetch_add(&cpu->gen, 1);
    pthread_cond_broadcast(&cpu->cv);
    pthread_mutex_unlock(&cpu->mu);
    for (int i = 0; i < cpu->n_workers; i++) pthread_join(cpu->workers[i], NULL);
    free(cpu->workers);
    cpu->workers = NULL;
    cpu->n_workers = 0;
}

// ---- elementwise ops -----------------------------------------------------------------------------

// y(n_rows, dim) = x / sqrt(mean(x^2) + eps) * w(dim); y may equal x.
static void cpu_rmsnorm(struct kn_backend *be, float *y, const float *x, const struct kn_tensor *w, int n_rows,
                        int dim, float eps) {
    struct kn_cpu *cpu = cpu_of(be);
    if (w->type != KN_F32 || w->n_cols * w->n_rows < dim) {
        kn_cpu_set_error(cpu, "rmsnorm: weight must be F32 with %d values", dim);
        return;
    }
    const float *wd = (const float *)w->data;
    for (int r = 0; r < n_rows; r++) {
        const float *xr = x + (size_t)r * dim;
        float *yr = y + (size_t)r * dim;
        int i = 0;
        float ss = 0.0f;
#ifdef KN_SIMD
        if (!cpu->scalar) {
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
            for (; i + 16 <= dim; i += 16) {
                __m256 v0 = _mm256_loadu_ps(xr + i), v1 = _mm256_loadu_ps(xr + i + 8);
                a0 = _mm256_fmadd_ps(v0, v0, a0);
                a1 = _mm256_fmadd_ps(v1, v1, a1);
            }
            a0 = _mm256_add_ps(a0, a1);
            __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(a0), _mm256_extractf128_ps(a0, 1));
            s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
            s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
            ss = _mm_cvtss_f32(s4);
        }
#endif
        for (; i < dim; i++) ss += xr[i] * xr[i];
        float inv = 1.0f / sqrtf(ss / (float)dim + eps);
        for (int j = 0; j < dim; j++) yr[j] = xr[j] * inv * wd[j];
    }
}

#define KN_ROPE_MAX_PAIRS 1024

// x(n_tok, n_head, head_dim): rotate the first n_rot dims of each head; angles in double so that large
// positions keep their accuracy.
static void cpu_rope(struct kn_backend *be, float *x, const int32_t *pos, int n_tok, int n_head, int head_dim,
                     int n_rot, float freq_base, float freq_scale, int mode) {
    struct kn_cpu *cpu = cpu_of(be);
    if (n_rot > head_dim || n_rot % 2 || n_rot / 2 > KN_ROPE_MAX_PAIRS) {
        kn_cpu_set_error(cpu, "rope: n_rot %d invalid for head_dim %d", n_rot, head_dim);
        return;
    }
    int half = n_rot / 2;
    float cs[2 * KN_ROPE_MAX_PAIRS];
    for (int t = 0; t < n_tok; t++) {
        double p = (double)pos[t] * (double)freq_scale;
        for (int i = 0; i < half; i++) {
            double inv = pow((double)freq_base, -2.0 * i / (double)n_rot);
            double th = p * inv;
            cs[2 * i] = (float)cos(th);
            cs[2 * i + 1] = (float)sin(th);
        }
        for (int h = 0; h < n_head; h++) {
            float *v = x + ((size_t)t * n_head + h) * head_dim;
            for (int i = 0; i < half; i++) {
                int a = mode == KN_ROPE_NEOX ? i : 2 * i;
                int b = mode == KN_ROPE_NEOX ? i + half : 2 * i + 1;
                float x0 = v[a], x1 = v[b], c = cs[2 * i], s = cs[2 * i + 1];
                v[a] = x0 * c - x1 * s;
                v[b] = x0 * s + x1 * c;
            }
        }
    }
}

static void cpu_add(struct kn_backend *be, float *y, const float *x, size_t n) {
    (void)be;
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}
static void cpu_scale(struct kn_backend *be, float *y, float s, size_t n) {
    (void)be;
    for (size_t i = 0; i < n; i++) y[i] *= s;
}

struct glu_ctx {
    float *y;
    const float *gate, *up;
    size_t n;
    int act;
    int scalar;
};
#define KN_GLU_CHUNK 4096

static void glu_task(void *vctx, int task, int tid) {
    (void)tid;
    const struct glu_ctx *c = vctx;
    size_t i0 = (size_t)task * KN_GLU_CHUNK;
    size_t i1 = i0 + KN_GLU_CHUNK < c->n ? i0 + KN_GLU_CHUNK : c->n;
    if (c->act == KN_ACT_SILU) {
        size_t i = i0;
#ifdef KN_SIMD
        if (!c->scalar) {
            for (; i + 8 <= i1; i += 8) {
                __m256 g = _mm256_loadu_ps(c->gate + i);
                __m256 den = _mm256_add_ps(_mm256_set1_ps(1.0f), kn_exp256(_mm256_sub_ps(_mm256_setzero_ps(), g)));
                __m256 s = _mm256_div_ps(g, den);
                _mm256_storeu_ps(c->y + i, _mm256_mul_ps(s, _mm256_loadu_ps(c->up + i)));
            }
        }
#endif
        for (; i < i1; i++) {
            float g = c->gate[i];
            c->y[i] = g / (1.0f + expf(-g)) * c->up[i];
        }
    } else {
        const float k0 = 0.7978845608028654f; // sqrt(2/pi)
        size_t i = i0;
#ifdef KN_SIMD
        if (!c->scalar) {
            const __m256 one = _mm256_set1_ps(1.0f), two = _mm256_set1_ps(2.0f);
            for (; i + 8 <= i1; i += 8) {
                __m256 g = _mm256_loadu_ps(c->gate + i);
                __m256 g3 = _mm256_mul_ps(_mm256_mul_ps(g, g), g);
                __m256 u = _mm256_mul_ps(_mm256_set1_ps(k0), _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), g3, g));
                // 1 + tanh(u) = 2 - 2 / (exp(2u) + 1)
                __m256 e = kn_exp256(_mm256_add_ps(u, u));
                __m256 t1 = _mm256_sub_ps(two, _mm256_div_ps(two, _mm256_add_ps(e, one)));
                __m256 r = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), g), t1);
                _mm256_storeu_ps(c->y + i, _mm256_mul_ps(r, _mm256_loadu_ps(c->up + i)));
            }
        }
#endif
        for (; i < i1; i++) {
            float g = c->gate[i];
            float u = k0 * (g + 0.044715f * g * g * g);
            c->y[i] = 0.5f * g * (1.0f + tanhf(u)) * c->up[i];
        }
    }
}

// y(n) = act(gate) * up; y may equal gate or up.
static void cpu_glu(struct kn_backend *be, float *y, const float *gate, const float *up, size_t n, int act) {
    struct kn_cpu *cpu = cpu_of(be);
    struct glu_ctx c = {y, gate, up, n, act, cpu->scalar};
    int n_tasks = (int)((n + KN_GLU_CHUNK - 1) / KN_GLU_CHUNK);
    if (n < 4 * KN_GLU_CHUNK) {
        for (int t = 0; t < n_tasks; t++) glu_task(&c, t, 0);
    } else {
        kn_cpu_parallel(cpu, n_tasks, glu_task, &c);
    }
}

// Index of the first maximum of x(n).
static int cpu_argmax(struct kn_backend *be, const float *x, int n) {
    (void)be;
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return n > 0 ? best : -1;
}

// ---- construction --------------------------------------------------------------------------------

static void cpu_free(struct kn_backend *be) {
    struct kn_cpu *cpu = cpu_of(be);
    pool_stop(cpu);
    if (cpu->tscr) {
        for (int i = 0; i < cpu->n_threads; i++) free(cpu->tscr[i]);
        free(cpu->tscr);
    }
    free(cpu->shared);
    pthread_mutex_destroy(&cpu->mu);
    pthread_cond_destroy(&cpu->cv);
    free(cpu);
}

static const struct kn_ops cpu_ops = {
    .name = "cpu",
    .free = cpu_free,
    .alloc = cpu_alloc,
    .dealloc = cpu_dealloc,
    .upload = cpu_upload,
    .download = cpu_download,
    .memset0 = cpu_memset0,
    .tensor_load = cpu_tensor_load,
    .tensor_unload = cpu_tensor_unload,
    .mem_info = cpu_mem_info,
    .sync = cpu_sync,
    .matmul = kn_cpu_matmul,
    .get_rows = kn_cpu_get_rows,
    .rmsnorm = cpu_rmsnorm,
    .rope = cpu_rope,
    .add = cpu_add,
    .scale = cpu_scale,
    .glu = cpu_glu,
    .attention = kn_cpu_attention,
    .kv_store = kn_cpu_kv_store,
    .kv_move = kn_cpu_kv_move,
    .kv_quant = kn_cpu_kv_quant,
    .argmax = cpu_argmax,
    .last_error = cpu_last_error,
};

static int online_cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

struct kn_backend *kn_cpu_init(int n_threads, char *err, size_t errlen) {
    if (n_threads < 0) {
        if (err && errlen) snprintf(err, errlen, "cpu backend: negative thread count %d", n_threads);
        return NULL;
    }
    if (n_threads == 0) n_threads = online_cpus();
    if (n_threads > KN_CPU_MAX_THREADS) n_threads = KN_CPU_MAX_THREADS;
    struct kn_cpu *cpu = calloc(1, sizeof *cpu);
    if (!cpu) {
        if (err && errlen) snprintf(err, errlen, "cpu backend: out of memory");
        return NULL;
    }
    cpu->base.ops = &cpu_ops;
    cpu->n_threads = n_threads;
    pthread_mutex_init(&cpu->mu, NULL);
    pthread_cond_init(&cpu->cv, NULL);
    atomic_init(&cpu->gen, 0);
    atomic_init(&cpu->next, (uint64_t)KN_CLOSED);
    atomic_init(&cpu->fn, (kn_cpu_task_fn)NULL);
    atomic_init(&cpu->ctx, NULL);
    atomic_init(&cpu->n_tasks, 0);
    atomic_init(&cpu->done, 0);
    atomic_init(&cpu->stop, 0);
    cpu->tscr = calloc((size_t)n_threads, sizeof *cpu->tscr);
    if (n_threads > 1) cpu->workers = calloc((size_t)n_threads - 1, sizeof *cpu->workers);
    if (!cpu->tscr || (n_threads > 1 && !cpu->workers)) {
        if (err && errlen) snprintf(err, errlen, "cpu backend: out of memory");
        cpu_free(&cpu->base);
        return NULL;
    }
    for (int i = 1; i < n_threads; i++) {
        struct worker_arg *a = malloc(sizeof *a);
        int rc = -1;
        if (a) {
            a->cpu = cpu;
            a->tid = i;
            rc = pthread_create(&cpu->workers[i - 1], NULL, worker_main, a);
        }
        if (rc != 0) {
            free(a);
            if (err && errlen) snprintf(err, errlen, "cpu backend: cannot start thread %d of %d", i, n_threads);
            cpu_free(&cpu->base);
            return NULL;
        }
        cpu->n_workers++;
    }
    return &cpu->base;
}
