#!/bin/sh
# tests/e2e_tui.sh — drives the real full-screen chat in tmux with stories260K: streaming, the layer x head
# grid, memory numbers against --json, Ctrl+C, resize, terminal restore. Prints "N passed, N failed".
# Options: --screens DIR  also save capture-pane screenshots (80x24, 160x48) to DIR (e.g. assets/screens).
# Env: KVCHAT_BIN (default ./kvchat), KVCHAT_SHARED (default ../shared).

screens_dir=""
[ "$1" = "--screens" ] && screens_dir=$2

pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
cur="" # the session under test: its screen is shown when a check fails
bad() {
    fail=$((fail + 1))
    echo "FAIL $1"
    [ -n "$cur" ] && T capture-pane -p -t "$cur" 2>/dev/null | sed 's/^/    | /'
}
check() { if [ "$1" = 0 ]; then ok "$2"; else bad "$2"; fi; }

shared=${KVCHAT_SHARED:-../shared}
model=$shared/models/stories260K/stories260K.bin
tokm=$shared/models/stories260K/tok512.model
if ! command -v tmux >/dev/null 2>&1; then
    echo "SKIP: tmux not installed"
    echo "0 passed, 0 failed"
    exit 0
fi
if [ ! -f "$model" ] || [ ! -f "$tokm" ]; then
    echo "SKIP: $shared/models/stories260K not found"
    echo "0 passed, 0 failed"
    exit 0
fi
bin=${KVCHAT_BIN:-./kvchat}
case $bin in /*) ;; *) bin=$(pwd)/$bin ;; esac
case $model in /*) ;; *) model=$(pwd)/$model tokm=$(pwd)/$tokm ;; esac
if [ ! -x "$bin" ]; then
    echo "FAIL kvchat binary $bin not built"
    echo "0 passed, 1 failed"
    exit 1
fi
[ -n "$screens_dir" ] && { mkdir -p "$screens_dir" && screens_dir=$(cd "$screens_dir" && pwd); }

work=$(mktemp -d /tmp/kvchat-e2e.XXXXXX)
sock=kvchat-e2e-$$
T() { tmux -L "$sock" "$@"; }
cleanup() { T kill-server >/dev/null 2>&1; rm -rf "$work"; }
trap cleanup EXIT INT TERM

# The chat under test: C.UTF-8, a private history dir, greedy sampling so a one-shot run can reproduce it.
common="-m $model --tokenizer $tokm --kv-policy fastgen --temp 0 -s 7"
# start NAME COLS ROWS ENV ARGS: runs kvchat in a new session; afterwards its exit code and stty land in files
start() {
    T new-session -d -s "$1" -x "$2" -y "$3" \
        "cd $work && env LANG=C.UTF-8 LC_ALL=C.UTF-8 XDG_DATA_HOME=$work/xdg $4 $bin $common $5; \
         echo \$? > $work/$1.exit; stty -a > $work/$1.stty; sleep 60"
}
cap() { T capture-pane -p -t "$1"; }
capj() { T capture-pane -p -J -S -200 -t "$1"; }
# wait_for NAME PATTERN [SECONDS]: polls the screen until grep -E matches
wait_for() {
    i=0
    lim=$(( ${3:-15} * 10 ))
    while [ $i -lt $lim ]; do
        cap "$1" 2>/dev/null | grep -Eq -- "$2" && return 0
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}
wait_file() {
    i=0
    while [ $i -lt 100 ] && [ ! -s "$1" ]; do sleep 0.1; i=$((i + 1)); done
    [ -s "$1" ]
}
# stty_sane FILE: echo and icanon on after the TUI left
stty_sane() { grep -Eq '(^| )icanon( |$)' "$1" && grep -Eq '(^| )echo( |$)' "$1"; }

prompt="Once upon a time"

# ---- 1. a streamed reply, the grid, memory numbers ------------------------------------------------------
cur=a
start a 100 30 "KVCHAT_SLOWMO_MS=30" "-n 60 --json"
wait_for a 'ready' 20
check $? "the chat starts (status bar says ready)"
wait_for a 'KV cache: fastgen +5x4 heads'
check $? "the dashboard title names the policy and 5x4 KV heads"
T send-keys -t a "$prompt" Enter
wait_for a 'generating' 10
check $? "status shows generation in progress"
sleep 0.7
mid=$(cap a)
wait_for a '\[reply length limit\]' 30
check $? "the reply completes (60 tokens)"
end=$(cap a)
n_mid=$(printf '%s\n' "$mid" | cut -c1-58 | grep -c '[a-z]')
n_end=$(printf '%s\n' "$end" | cut -c1-58 | grep -c '[a-z]')
printf '%s\n' "$mid" | grep -q 'generating' && [ "$n_end" -gt "$n_mid" ]
check $? "text streamed: more lines at the end ($n_end) than mid-reply ($n_mid)"
# every layer row shows all 4 KV heads: " 3 F 65 L 20 F 65 F 65     215"
rows=0
for l in 0 1 2 3 4; do
    printf '%s\n' "$end" | grep -Eq "│ +$l( [A-Za-z?] *[0-9]+){4} +[0-9]+" && rows=$((rows + 1))
done
[ $rows = 5 ]
check $? "grid shows 5 layers x 4 KV heads (found $rows layer rows)"
printf '%s\n' "$end" | grep -Eq 'L +0 +1 +2 +3 +kept'
check $? "grid header lists heads 0..3"
dash_kv=$(printf '%s\n' "$end" | sed -n 's/.*bytes   \([0-9][0-9]*\) of \([0-9][0-9]*\).*/\1 \2/p' | head -n 1)
[ -n "$dash_kv" ]
check $? "dashboard shows exact byte counts ($dash_kv)"
T send-keys -t a "/stats" Enter
wait_for a 'kv_bytes_full [0-9]+' 5
check $? "/stats prints exact kv bytes"
st=$(cap a)
st_kv=$(printf '%s\n' "$st" | sed -n 's/^  kv_bytes \([0-9][0-9]*\).*/\1/p' | tail -n 1)
st_full=$(printf '%s\n' "$st" | sed -n 's/^  kv_bytes_full \([0-9][0-9]*\).*/\1/p' | tail -n 1)
[ "$dash_kv" = "$st_kv $st_full" ]
check $? "dashboard bytes equal /stats ($st_kv of $st_full)"
T send-keys -t a F12
wait_for a 'screen saved to kvchat-screen-1.txt' 5 && grep -q 'KV cache' "$work/kvchat-screen-1.txt"
check $? "F12 writes the screen as text"
T send-keys -t a "/quit" Enter
wait_file "$work/a.stty"
[ "$(cat "$work/a.exit" 2>/dev/null)" = 0 ]
check $? "/quit exits with status 0"
stty_sane "$work/a.stty"
check $? "terminal restored after /quit (echo, icanon)"
json=$(capj a | grep -E '^\{"model"' | tail -n 1)
js_kv=$(printf '%s' "$json" | sed -n 's/.*"kv_bytes": \([0-9]*\).*/\1/p')
js_full=$(printf '%s' "$json" | sed -n 's/.*"kv_bytes_full": \([0-9]*\).*/\1/p')
[ -n "$js_kv" ] && [ "$js_kv $js_full" = "$st_kv $st_full" ]
check $? "--json of the same run equals the TUI's numbers ($js_kv of $js_full)"
# the same prompt as a one-shot chat turn (same seed, greedy) holds the same cache
one=$(cd "$work" && env LANG=C.UTF-8 XDG_DATA_HOME="$work/xdg" "$bin" $common -n 60 --chat --json -p "$prompt" </dev/null 2>/dev/null |
    grep -E '^\{"model"' | tail -n 1)
one_kv=$(printf '%s' "$one" | sed -n 's/.*"kv_bytes": \([0-9]*\).*/\1/p')
one_full=$(printf '%s' "$one" | sed -n 's/.*"kv_bytes_full": \([0-9]*\).*/\1/p')
[ -n "$one_kv" ] && [ "$one_kv $one_full" = "$st_kv $st_full" ]
check $? "one-shot --chat --json run gives the same kv bytes ($one_kv of $one_full)"
# on a GPU the dashboard has a GPU meter, on the CPU none
if printf '%s' "$json" | grep -q '"gpu_mem_used": null'; then
    ! printf '%s\n' "$end" | grep -Eq '│ GPU '
    check $? "CPU run: no GPU meter"
else
    printf '%s\n' "$end" | grep -Eq '│ GPU .*[0-9.]+ [KMGT]iB/[0-9.]+ [KMGT]iB'
    check $? "GPU run: GPU used/total meter shown"
fi
grep -qx "$prompt" "$work/xdg/kvchat/history" 2>/dev/null
check $? "input history persisted under \$XDG_DATA_HOME/kvchat/history"

# ---- 2. Ctrl+C stops a long reply; typed text survives; resize reflows -------------------------------------
cur=b
start b 100 30 "KVCHAT_SLOWMO_MS=40" ""
wait_for b 'ready' 20
T send-keys -t b "$prompt" Enter
wait_for b 'generating' 10
sleep 1
T send-keys -t b "keep this text"
sleep 0.3
T send-keys -t b C-c
wait_for b '\[stopped\]' 5
check $? "Ctrl+C stops a long reply ([stopped] shown)"
wait_for b 'ready' 5
check $? "status back to ready after the stop"
cap b | grep -Eq '^❯ keep this text'
check $? "text typed during the reply is still in the input"
T resize-window -t b -x 80 -y 24
wait_for b '^─ KV cache' 5
check $? "80x24: dashboard moves below the chat"
T resize-window -t b -x 160 -y 48
wait_for b '┬─ KV cache' 5
check $? "160x48: dashboard beside the chat"
T resize-window -t b -x 30 -y 10
i=0
while [ $i -lt 50 ]; do # until the dashboard is gone and the input is drawn
    scr=$(cap b)
    ! printf '%s\n' "$scr" | grep -q 'KV cache' && printf '%s\n' "$scr" | grep -q '^❯' && break
    sleep 0.1
    i=$((i + 1))
done
[ $i -lt 50 ]
check $? "30x10: minimal view (input, no dashboard)"
T resize-window -t b -x 12 -y 4
wait_for b 'too small' 5
check $? "12x4: one-line 'terminal too small'"
T resize-window -t b -x 1 -y 1
sleep 0.3
T resize-window -t b -x 100 -y 30
wait_for b '┬─ KV cache' 5
check $? "survives 1x1 and reflows back to 100x30"
T send-keys -t b C-u C-d
wait_file "$work/b.stty"
[ "$(cat "$work/b.exit" 2>/dev/null)" = 0 ]
check $? "Ctrl+D on an empty line exits with status 0"
stty_sane "$work/b.stty"
check $? "terminal restored after Ctrl+D (echo, icanon)"

# ---- 3. SIGTERM mid-reply restores the terminal; NO_COLOR draws no colours --------------------------------
cur=c
start c 100 30 "NO_COLOR=1 KVCHAT_SLOWMO_MS=40" ""
wait_for c 'ready' 20
T send-keys -t c "$prompt" Enter
wait_for c 'generating' 10
T capture-pane -e -p -t c | grep -Eq "$(printf '\033')\[3[0-7]m"
[ $? != 0 ]
check $? "NO_COLOR: no colour escapes on screen"
pid=$(T list-panes -t c -F '#{pane_pid}')
kid=$(pgrep -P "$pid" -f "$bin" | head -n 1)
[ -n "$kid" ] && kill -TERM "$kid"
wait_file "$work/c.stty"
[ "$(cat "$work/c.exit" 2>/dev/null)" = 0 ]
check $? "SIGTERM during a reply: clean exit"
stty_sane "$work/c.stty"
check $? "terminal restored after SIGTERM (echo, icanon)"

# ---- screenshots for the README (only with --screens DIR) ---------------------------------------------------
if [ -n "$screens_dir" ]; then
    cur=d
    start d 80 24 "" "-n 100"
    wait_for d 'ready' 20
    T send-keys -t d "$prompt" Enter
    wait_for d '\[reply length limit\]' 30 && sleep 0.3 && cap d >"$screens_dir/tui-80x24.txt"
    check $? "screenshot 80x24 saved"
    T resize-window -t d -x 160 -y 48
    T send-keys -t d "The little dog" Enter
    sleep 0.5
    wait_for d 'ready' 30 && sleep 0.3 && cap d >"$screens_dir/tui-160x48.txt"
    check $? "screenshot 160x48 saved"
    T send-keys -t d "/quit" Enter
fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
