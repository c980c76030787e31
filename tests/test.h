// tests/test.h — a tiny check harness: CHECK macros and the closing "N passed, N failed" line.
#pragma once
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_n_pass;
static int test_n_fail;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (cond) {                                                                    \
            test_n_pass++;                                                             \
        } else {                                                                       \
            test_n_fail++;                                                             \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);            \
        }                                                                              \
    } while (0)

#define CHECK_MSG(cond, ...)                                                           \
    do {                                                                               \
        if (cond) {                                                                    \
            test_n_pass++;                                                             \
        } else {                                                                       \
            test_n_fail++;                                                             \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);            \
            fprintf(stderr, __VA_ARGS__);                                              \
            fputc('\n', stderr);                                                       \
        }                                                                              \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                          \
    do {                                                                               \
        double ca_ = (double)(a), cb_ = (double)(b);                                   \
        CHECK_MSG(fabs(ca_ - cb_) <= (tol), "%.9g vs %.9g (tol %.3g)", ca_, cb_,       \
                  (double)(tol));                                                      \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                             \
    do {                                                                               \
        long long ca_ = (long long)(a), cb_ = (long long)(b);                          \
        CHECK_MSG(ca_ == cb_, "%lld vs %lld", ca_, cb_);                               \
    } while (0)

// Prints a skip notice (not counted as pass or fail).
#define TEST_SKIP(...)                                                                 \
    do {                                                                               \
        fprintf(stdout, "SKIP: ");                                                     \
        fprintf(stdout, __VA_ARGS__);                                                  \
        fputc('\n', stdout);                                                           \
    } while (0)

// Prints the closing line and returns the process exit code.
static inline int test_done(void) {
    printf("%d passed, %d failed\n", test_n_pass, test_n_fail);
    return test_n_fail ? 1 : 0;
}

// Path to ../shared/models (or $KVCHAT_SHARED/models); NULL when absent.
static inline const char *test_shared_models(void) {
    static char buf[4096];
    const char *env = getenv("KVCHAT_SHARED");
    snprintf(buf, sizeof buf, "%s/models", env ? env : "../shared");
    FILE *f;
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/stories260K/stories260K.bin", buf);
    f = fopen(probe, "rb");
    if (!f) return NULL;
    fclose(f);
    return buf;
}
