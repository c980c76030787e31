#!/bin/sh
# tests/run_tests.sh BUILD_DIR TEST... — runs each test (binary or .sh), sums their "N passed, N failed" lines.
build=$1; shift
total_pass=0; total_fail=0; broken=""
export KVCHAT_BIN="${KVCHAT_BIN:-$build/kvchat}"
for t in "$@"; do
  name=$(basename "$t")
  case "$t" in
    *.sh) out=$(sh "$t" 2>&1); rc=$? ;;
    *) out=$("$t" 2>&1); rc=$? ;;
  esac
  line=$(printf '%s\n' "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -n 1)
  if [ -z "$line" ]; then
    printf '%s\n' "$out" | tail -n 20
    echo "[$name] crashed or printed no summary (exit $rc)"
    total_fail=$((total_fail + 1)); broken="$broken $name"
    continue
  fi
  p=$(echo "$line" | cut -d' ' -f1); f=$(echo "$line" | cut -d' ' -f3)
  if [ "$f" != 0 ] || [ "$rc" != 0 ]; then
    printf '%s\n' "$out" | grep -E 'FAIL|SKIP|error' | head -n 40
    [ "$f" = 0 ] && f=1
    broken="$broken $name"
  else
    printf '%s\n' "$out" | grep -E '^SKIP' | sed "s/^/[$name] /"
  fi
  echo "[$name] $line"
  total_pass=$((total_pass + p)); total_fail=$((total_fail + f))
done
[ -n "$broken" ] && echo "failing:$broken"
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" = 0 ]
