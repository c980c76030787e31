// app/eval_sweep.c — `kvchat eval --sweep`: FastGen at T, then SnapKV, PyramidKV, H2O and StreamingLLM with
// --kv-budget = FastGen's measured tokens per layer and KV head (at the end, and matched over the run); one table.
//
// Two matchings on a text. "end": the budget is what FastGen's heads hold at the end of the text, as the sweep is
// specified; but FastGen's ratio-based policies grow with the context while a fixed budget fills at once, so over
// the run FastGen holds less. "mean": the budget whose schedule holds, averaged over the decode steps, what FastGen
// held on average: min(n_past, B) for H2O/StreamingLLM; min(prompt, C) + decoded for SnapKV/PyramidKV, which
// append every decoded token and so cannot average less than half the decoded length (rows left out then).
// On the passkey task (a long prompt, 8 answer tokens) one matching: FastGen's mean over the trials.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/eval.h"
#include "app/json.h"
#include "kvcache/kv_stats.h"

#define SWEEP_MAX_T 2
#define SWEEP_N_CMP 4
#define SWEEP_MAX_LINES (1 + SWEEP_MAX_T * (1 + 2 * SWEEP_N_CMP))

static const int sweep_cmp[SWEEP_N_CMP] = {KV_POLICY_SNAPKV, KV_POLICY_PYRAMIDKV, KV_POLICY_H2O, KV_POLICY_LOCAL};

enum sweep_match { MATCH_NONE, MATCH_END, MATCH_MEAN, MATCH_TRIALS };
static const char *const match_names[] = {"-", "end", "mean", "trials"};

struct sweep_line {
    int policy;
    float recovery; // the FastGen run the line is matched to (0 for the full cache)
    int match;      // enum sweep_match (MATCH_NONE for full and FastGen)
    int budget;     // --kv-budget given; 0 for full and FastGen
    struct eval_row row;
};

// Average tokens a (layer, KV head) holds at the end of a run.
static double kept_per_head(const struct kv_stats *s) {
    int n = s->n_layer * s->n_head_kv;
    return n > 0 ? (double)s->retained_tokens / n : 0.0;
}

// At least the SnapKV window + 1, so that a selection keeps something besides the window.
static int budget_floor(const struct app_params *p, double b) {
    long r = lround(b), lo = (long)p->obs_window + 1;
    return (int)(r < lo ? lo : r);
}

// Text: the decode steps leave n_past = P+1 ... n-1 tokens in context (eval reads the stats after each step).
// Smallest fixed budget B whose min(n_past, B), averaged over those steps, reaches `mean`.
static int fixed_budget_for_mean(int n, int P, double mean) {
    int N = n - 1 - P;
    if (N <= 0) return (int)lround(mean);
    for (int B = 1; B < n; B++) {
        double s = 0.0;
        for (int j = 0; j < N; j++) s += P + 1 + j < B ? P + 1 + j : B;
        if (s / N >= mean) return B;
    }
    return n;
}

// SnapKV/PyramidKV hold min(P, C) of the prompt plus 1 ... N decoded tokens at the N steps (mean (N + 1) / 2):
// the C for a given mean, or -1 when even C = w + 1 would hold more on average.
static int select_budget_for_mean(const struct app_params *p, int n, int P, double mean) {
    double c = mean - (n - P) / 2.0;
    return c < p->obs_window + 1 ? -1 : (int)lround(c);
}

static void print_table(const struct eval_info *in, const struct app_params *p, const struct sweep_line *ln,
                        int n) {
    printf("kvchat eval --sweep: %s (%s) on %s, KV bits %d\n", in->model, in->arch, in->device, p->kv_bits);
    if (in->passkey)
        printf("task: passkey, %d trials of ~%d tokens, greedy answer\n", in->n_prompt, in->n_tok);
    else
        printf("text: %s, %d tokens: a %d-token prompt, then %d scored one decode step at a time\n", in->text,
               in->n_tok, in->n_prompt, in->n_tok - in->n_prompt);
    printf("budget: --kv-budget given (tokens per layer and KV head); kept: tokens a layer's KV head holds at the "
           "end; kept~: mean over the %s\n",
           in->passkey ? "trials" : "decode steps");
    if (in->passkey)
        printf("match trials: budget = FastGen's kept~\n");
    else
        printf("match end: budget = FastGen's kept; mean: the budget whose schedule averages FastGen's kept~\n");
    printf("kv_saving = 1 - kv_bytes / fp16 K+V of the context, at the end; mean_sav: averaged like kept~\n\n");
    printf("%-10s %-12s %6s %7s %7s %10s %9s %10s %11s %8s\n", "policy", "match", "budget", "kept", "kept~",
           "kv_saving", "mean_sav", "ppl_ratio", "top1_agree", "passkey");
    for (int i = 0; i < n; i++) {
        const struct sweep_line *l = &ln[i];
        const struct eval_row *r = &l->row;
        char match[32] = "-", budget[16] = "-", ppl[16] = "-", top1[16] = "-", pk[24] = "-";
        if (l->recovery > 0)
            snprintf(match, sizeof match, "T=%.2f%s%s", (double)l->recovery, l->match != MATCH_NONE ? " " : "",
                     l->match != MATCH_NONE ? match_names[l->match] : "");
        if (l->budget > 0) snprintf(budget, sizeof budget, "%d", l->budget);
        if (!in->passkey) {
            snprintf(ppl, sizeof ppl, "%.4f", r->ppl_full > 0 ? r->ppl / r->ppl_full : 0.0);
            snprintf(top1, sizeof top1, "%.1f%%", 100.0 * r->top1_agree);
        } else {
            snprintf(pk, sizeof pk, "%d/%d", r->pk_ok, r->pk_n);
        }
        printf("%-10s %-12s %6s %7.1f %7.1f %9.1f%% %8.1f%% %10s %11s %8s\n", kv_policy_name(l->policy), match,
               budget, kept_per_head(&r->kv), r->kept_mean, 100.0 * r->kv_saving, 100.0 * r->kv_saving_mean, ppl,
               top1, pk);
    }
}

static void print_json(const struct eval_info *in, const struct app_params *p, const struct sweep_line *ln, int n) {
    printf("{\"sweep\": true, \"model\": ");
    app_json_str(stdout, in->model);
    printf(", \"arch\": ");
    app_json_str(stdout, in->arch);
    printf(", \"device\": ");
    app_json_str(stdout, in->device);
    printf(", \"kv_bits\": %d, \"obs_window\": %d, \"pyramid_beta\": %g, \"kv_sinks\": %d", p->kv_bits,
           p->obs_window, (double)p->pyramid_beta, p->sink_tokens);
    if (in->passkey) {
        printf(", \"task\": \"passkey\", \"passkey_trials\": %d, \"passkey_tokens\": %d", in->n_prompt, in->n_tok);
    } else {
        printf(", \"text\": ");
        app_json_str(stdout, in->text);
        printf(", \"eval_tokens\": %d, \"eval_prompt\": %d", in->n_tok, in->n_prompt);
    }
    printf(", \"rows\": [");
    for (int i = 0; i < n; i++) {
        const struct sweep_line *l = &ln[i];
        const struct eval_row *r = &l->row;
        printf("%s\n  {\"policy\": \"%s\"", i ? "," : "", kv_policy_name(l->policy));
        if (l->recovery > 0)
            printf(", \"matched_recovery\": %.2f", (double)l->recovery);
        else
            printf(", \"matched_recovery\": null");
        if (l->match != MATCH_NONE)
            printf(", \"match\": \"%s\"", match_names[l->match]);
        else
            printf(", \"match\": null");
        if (l->budget > 0)
            printf(", \"budget\": %d", l->budget);
        else
            printf(", \"budget\": null");
        printf(", \"kept_per_head\": %.3f, \"kept_mean\": %.3f, \"retained_tokens\": %lld", kept_per_head(&r->kv),
               r->kept_mean, (long long)r->kv.retained_tokens);
        printf(", \"kv_bytes\": %llu, \"kv_bytes_full\": %llu, \"kv_saving\": %.6f, \"kv_saving_mean\": %.6f",
               (unsigned long long)r->kv.kv_bytes, (unsigned long long)r->kv.kv_bytes_full, r->kv_saving,
               r->kv_saving_mean);
        if (!in->passkey)
            printf(", \"ppl\": %.6f, \"ppl_full\": %.6f, \"ppl_ratio\": %.6f, \"top1_agree\": %.6f, \"passkey\": null",
                   r->ppl, r->ppl_full, r->ppl_full > 0 ? r->ppl / r->ppl_full : 0.0, r->top1_agree);
        else
            printf(", \"ppl_ratio\": null, \"top1_agree\": null, \"passkey\": %.6f, \"passkey_ok\": %d, "
                   "\"passkey_n\": %d",
                   r->pk_n ? (double)r->pk_ok / r->pk_n : 0.0, r->pk_ok, r->pk_n);
        putchar('}');
    }
    printf("\n]}\n");
}

// One configuration into ln[*n]; progress on stderr (a sweep takes a while). 0 ok.
static int run_line(struct eval_session *s, const struct app_params *cfg, float recovery, int match, int budget,
                    struct sweep_line *ln, int *n, char *err, size_t errlen) {
    struct sweep_line *l = &ln[*n];
    memset(l, 0, sizeof *l);
    l->policy = cfg->kv_policy;
    l->recovery = recovery;
    l->match = match;
    l->budget = budget;
    if (budget > 0)
        fprintf(stderr, "kvchat: sweep: %s budget %d (%s)\n", kv_policy_name(cfg->kv_policy), budget,
                match_names[match]);
    else
        fprintf(stderr, "kvchat: sweep: %s T=%.2f\n", kv_policy_name(cfg->kv_policy), (double)cfg->recovery);
    if (eval_session_run(s, cfg, &l->row, err, errlen)) {
        kv_stats_release(&l->row.kv);
        return -1;
    }
    (*n)++;
    return 0;
}

int app_eval_sweep(const struct app_params *p) {
    char err[1024];
    float rec[SWEEP_MAX_T];
    int n_rec = 0;
    struct app_params dflt;
    app_params_default(&dflt);
    if (p->recovery != dflt.recovery) { // given: that T alone; the default: the paper's 0.95 and 0.98
        rec[n_rec++] = p->recovery;
    } else {
        rec[n_rec++] = 0.95f;
        rec[n_rec++] = 0.98f;
    }
    struct sweep_line ln[SWEEP_MAX_LINES];
    int n = 0, status = 1;
    struct eval_session *s = eval_session_open(p, err, sizeof err);
    if (!s) goto fail;
    struct eval_info in;
    eval_session_info(s, &in);
    memset(&ln[0], 0, sizeof ln[0]);
    ln[0].policy = KV_POLICY_FULL;
    ln[0].row = *eval_session_full(s);
    memset(&ln[0].row.kv, 0, sizeof ln[0].row.kv);
    if (kv_stats_copy(&ln[0].row.kv, &eval_session_full(s)->kv)) {
        snprintf(err, sizeof err, "out of memory");
        goto fail;
    }
    n = 1;
    for (int t = 0; t < n_rec; t++) {
        struct app_params cfg = *p;
        cfg.kv_policy = KV_POLICY_FASTGEN;
        cfg.recovery = rec[t];
        if (run_line(s, &cfg, rec[t], MATCH_NONE, 0, ln, &n, err, sizeof err)) goto fail;
        double fg_end = kept_per_head(&ln[n - 1].row.kv), fg_mean = ln[n - 1].row.kept_mean;
        // end (text) or trials (passkey): one budget for all four
        int match = in.passkey ? MATCH_TRIALS : MATCH_END;
        int budget = budget_floor(p, in.passkey ? fg_mean : fg_end);
        for (int i = 0; i < SWEEP_N_CMP; i++) {
            cfg = *p;
            cfg.kv_policy = sweep_cmp[i];
            cfg.kv_budget = budget;
            if (run_line(s, &cfg, rec[t], match, budget, ln, &n, err, sizeof err)) goto fail;
        }
        if (in.passkey) continue;
        // mean (text): each family's schedule averaged over the decode steps
        int b_fixed = budget_floor(p, fixed_budget_for_mean(in.n_tok, in.n_prompt, fg_mean));
        int b_sel = select_budget_for_mean(p, in.n_tok, in.n_prompt, fg_mean);
        for (int i = 0; i < SWEEP_N_CMP; i++) {
            int sel = sweep_cmp[i] == KV_POLICY_SNAPKV || sweep_cmp[i] == KV_POLICY_PYRAMIDKV;
            int b = sel ? b_sel : b_fixed;
            if (b < 0) {
                fprintf(stderr,
                        "kvchat: sweep: %s cannot average %.1f tokens per head: the decoded tokens it appends "
                        "alone average %.1f\n",
                        kv_policy_name(sweep_cmp[i]), fg_mean, (in.n_tok - in.n_prompt) / 2.0);
                continue;
            }
            cfg = *p;
            cfg.kv_policy = sweep_cmp[i];
            cfg.kv_budget = b;
            if (run_line(s, &cfg, rec[t], MATCH_MEAN, b, ln, &n, err, sizeof err)) goto fail;
        }
    }
    if (p->json)
        print_json(&in, p, ln, n);
    else
        print_table(&in, p, ln, n);
    status = 0;
    goto done;
fail:
    fprintf(stderr, "kvchat: eval --sweep: %s\n", err);
done:
    for (int i = 0; i < n; i++) kv_stats_release(&ln[i].row.kv);
    eval_session_close(s);
    return status;
}
