#!/bin/sh
# tests/eval_sweep.sh — `kvchat eval --sweep` on stories260K: every policy has a row, the comparison budgets equal
# FastGen's kept tokens per layer and head, fixed-budget policies stay within them; text table and JSON agree.
# Run from the repository root; $KVCHAT_BIN overrides ./kvchat; models from $KVCHAT_SHARED or ../shared.
bin="${KVCHAT_BIN:-./kvchat}"
shared="${KVCHAT_SHARED:-../shared}/models/stories260K"
if [ ! -f "$shared/stories260K.bin" ] || ! command -v python3 >/dev/null 2>&1; then
    echo "SKIP: eval --sweep needs $shared/stories260K.bin and python3"
    echo "0 passed, 0 failed"
    exit 0
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvchat_sweep.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
m="-m $shared/stories260K.bin --tokenizer $shared/tok512.model --eval-tokens 96 -t 1"
"$bin" eval --sweep --json $m >"$tmp/sweep.json" 2>"$tmp/err1"
rc1=$?
"$bin" eval --sweep $m >"$tmp/sweep.txt" 2>"$tmp/err2"
rc2=$?
"$bin" eval --sweep --json --recovery 0.9 $m >"$tmp/one.json" 2>"$tmp/err3"
rc3=$?
python3 - "$tmp" "$rc1" "$rc2" "$rc3" <<'EOF'
import json, sys
tmp, rcs = sys.argv[1], sys.argv[2:5]
npass = nfail = 0
def check(cond, what):
    global npass, nfail
    if cond:
        npass += 1
    else:
        nfail += 1
        print("FAIL:", what)
check(rcs == ["0", "0", "0"], "exit codes %s" % rcs)
def load(name):
    try:
        return json.load(open(tmp + "/" + name))
    except Exception as e:
        print("FAIL: %s is not one JSON object: %s" % (name, e))
        return None
def sched_mean(n, P, B):
    N = n - 1 - P
    return sum(min(P + 1 + j, B) for j in range(N)) / N
def rows_ok(d, recs):
    rows = d["rows"]
    check(rows and rows[0]["policy"] == "full", "full row first")
    if not rows:
        return
    check(abs(rows[0]["ppl_ratio"] - 1.0) < 1e-9 and rows[0]["top1_agree"] == 1.0, "full row is the reference")
    fgs = [i for i, r in enumerate(rows) if r["policy"] == "fastgen"]
    check(len(fgs) == len(recs), "one fastgen row per T: %s" % [r["policy"] for r in rows])
    n, P, w = d["eval_tokens"], d["eval_prompt"], d["obs_window"]
    for t, i0 in enumerate(fgs):
        fg = rows[i0]
        check(abs(fg["matched_recovery"] - recs[t]) < 1e-6, "fastgen at T=%s" % recs[t])
        group = rows[i0 + 1: fgs[t + 1] if t + 1 < len(fgs) else len(rows)]
        end = [r for r in group if r["match"] == "end"]
        mean = [r for r in group if r["match"] == "mean"]
        check([r["policy"] for r in end] == ["snapkv", "pyramidkv", "h2o", "local"], "end rows: %s" % [r["policy"] for r in end])
        check(len(end) + len(mean) == len(group), "every row matched")
        b_end = max(round(fg["kept_per_head"]), w + 1)
        for r in group:
            check(r["matched_recovery"] == fg["matched_recovery"], "%s matched to its FastGen row" % r["policy"])
            check(0 < r["ppl_ratio"] < 10 and 0 <= r["top1_agree"] <= 1, "%s metrics in range" % r["policy"])
            check(r["kv_bytes"] > 0 and r["kv_bytes_full"] > 0, "%s bytes reported" % r["policy"])
        for r in end:
            check(r["budget"] == b_end, "%s budget %s == FastGen's kept %s" % (r["policy"], r["budget"], b_end))
            if r["policy"] in ("h2o", "local"):
                check(r["kept_per_head"] <= b_end + 1e-9, "%s keeps at most its budget" % r["policy"])
        fixed = [r for r in mean if r["policy"] in ("h2o", "local")]
        check([r["policy"] for r in fixed] == ["h2o", "local"], "mean rows for h2o and local")
        for r in fixed:
            B = r["budget"]
            check(sched_mean(n, P, B) >= fg["kept_mean"] - 1e-3 and (B <= w + 1 or sched_mean(n, P, B - 1) < fg["kept_mean"]),
                  "%s mean budget %d is the smallest reaching FastGen's mean %.2f" % (r["policy"], B, fg["kept_mean"]))
            check(abs(r["kept_mean"] - sched_mean(n, P, B)) < 1e-3, "%s holds min(n_past, B) on average" % r["policy"])
        for r in mean:
            if r["policy"] in ("snapkv", "pyramidkv"):
                check(abs(r["budget"] - (fg["kept_mean"] - (n - P) / 2)) <= 0.5 + 1e-9, "%s mean budget" % r["policy"])
d = load("sweep.json")
if d:
    check(d["sweep"] is True and d["eval_tokens"] == 96 and d["eval_prompt"] == 24, "header fields")
    rows_ok(d, [0.95, 0.98])
    txt = open(tmp + "/sweep.txt").read().splitlines()
    body = [l.split() for l in txt if l.split() and l.split()[0] in ("full", "fastgen", "snapkv", "pyramidkv", "h2o", "local")]
    check(len(body) == len(d["rows"]), "text table has every row")
    for l, r in zip(body, d["rows"]):
        check(l[0] == r["policy"] and abs(float(l[-7]) - r["kept_per_head"]) < 0.051, "text row %s matches JSON" % l[0])
d1 = load("one.json")
if d1:
    rows_ok(d1, [0.9])
print("%d passed, %d failed" % (npass, nfail))
sys.exit(1 if nfail else 0)
EOF
