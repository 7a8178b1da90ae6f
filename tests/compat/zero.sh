#!/usr/bin/env bash
# Runs `sluice test` over Nango's integration-templates in the zero-yaml
# format (the newest snapshot, HEAD 3196dff2e) and prints one line per test
# file, the counts per integration, the totals, and the compile wall time.
#
#   tests/compat/zero.sh /path/to/integration-templates [integration ...]
#
# The checkout is used unmodified: its `integrations/` folder is the
# project (index.ts, .nango/). Alias folders (symlinks) are tested under
# their own name after their target's real folders. Provider definitions
# come from ../shared/compat/providers-0.71.3.yaml (or $SLUICE_PROVIDERS).
# Integrations are compiled and tested $JOBS at a time (default: the number
# of cores); builds are kept in $COMPAT_BUILD_DIR, so a second run reuses
# every unchanged component.
set -euo pipefail

corpus=${1:?usage: $0 /path/to/integration-templates [integration ...]}
shift
here=$(cd "$(dirname "$0")/../.." && pwd)
providers=${SLUICE_PROVIDERS:-$here/../shared/compat/providers-0.71.3.yaml}
sluice=${SLUICE:-$here/target/release/sluice}
builds=${COMPAT_BUILD_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice/compat-zero}
jobs=${JOBS:-$(nproc)}
[ -x "$sluice" ] || (cd "$here" && cargo build --release -p sluice >&2)
project=$(cd "$corpus/integrations" && pwd)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ $# -gt 0 ]; then
  integrations=("$@")
else
  real=()
  aliases=()
  for dir in "$project"/*/; do
    name=$(basename "$dir")
    [ -d "$dir/tests" ] || continue
    if [ -L "${dir%/}" ]; then aliases+=("$name"); else real+=("$name"); fi
  done
  integrations=("${real[@]}" "${aliases[@]}")
fi

started=$(date +%s)
# One integration: its test lines, or one ✗ line when it did not compile.
run_one() {
  local name=$1
  local out=$work/$name.out err=$work/$name.err
  local t0 target
  t0=$(date +%s)
  # An alias builds in its target's folder: the same component.
  target=$(basename "$(readlink -f "$project/$name")")
  "$sluice" test --dir "$project" --providers "$providers" --integration "$name" \
    --build-dir "$builds/$target" > "$out" 2> "$err" || true
  echo "$name $(( $(date +%s) - t0 ))" > "$work/$name.time"
  if ! grep -q ' passed, ' "$out"; then
    echo "✗ $name: $(grep -v '^Compil\|^Precompil' "$err" | tail -n 4 | tr '\n' ' ')" > "$out"
  fi
}
export -f run_one
export sluice project providers builds work
printf '%s\n' "${integrations[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one "$@"' _ {}
elapsed=$(( $(date +%s) - started ))

results=$work/results.txt
: > "$results"
for name in "${integrations[@]}"; do
  grep '^[✓✗-]' "$work/$name.out" >> "$results" || true
done
cat "$results"
echo
echo "== Per integration (passed / failed / hand-written not run)"
for name in "${integrations[@]}"; do
  p=$(grep -c "^✓ $name/" "$work/$name.out" || true)
  f=$(grep -c "^✗ $name" "$work/$name.out" || true)
  h=$(grep -c "^- $name/" "$work/$name.out" || true)
  alias=""
  [ -L "$project/$name" ] && alias=" (alias)"
  echo "$name$alias: $p / $f / $h"
done
echo
real_pass=0; real_fail=0; real_hand=0
for name in "${integrations[@]}"; do
  [ -L "$project/$name" ] && continue
  real_pass=$(( real_pass + $(grep -c "^✓ $name/" "$work/$name.out" || true) ))
  real_fail=$(( real_fail + $(grep -c "^✗ $name" "$work/$name.out" || true) ))
  real_hand=$(( real_hand + $(grep -c "^- $name/" "$work/$name.out" || true) ))
done
passed=$(grep -c '^✓' "$results" || true)
failed=$(grep -c '^✗' "$results" || true)
hand=$(grep -c '^- ' "$results" || true)
echo "real folders: $real_pass passed, $real_fail failed, $real_hand hand-written not run"
echo "with aliases: $passed passed, $failed failed, $hand hand-written not run"
echo "wall time: ${elapsed}s for ${#integrations[@]} integrations, $jobs at a time"
