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

# Per-integration outputs go to $COMPAT_WORK_DIR when set (and stay there),
# else to a temporary folder removed at the end.
if [ -n "${COMPAT_WORK_DIR:-}" ]; then
  work=$COMPAT_WORK_DIR
  mkdir -p "$work"
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi

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
echo "== Per integration: generated-shape tests passed / failed; hand-written tests passed / failed / not run"
count() { grep -c "$1" "$2" || true; }
for name in "${integrations[@]}"; do
  f=$work/$name.out
  p=$(grep '^✓ ' "$f" | grep -vc 'hand-written' || true)
  x=$(grep '^✗ ' "$f" | grep -vc 'hand-written' || true)
  hp=$(grep '^✓ ' "$f" | grep -c 'hand-written' || true)
  hx=$(grep '^✗ ' "$f" | grep -c 'hand-written' || true)
  hn=$(count "^- $name/" "$f")
  alias=""
  [ -L "$project/$name" ] && alias=" (alias)"
  echo "$name$alias: $p / $x; $hp / $hx / $hn"
done
echo
sum() { # $1: which lines, $2: real|all
  local total=0 n name f
  for name in "${integrations[@]}"; do
    [ "$2" = real ] && [ -L "$project/$name" ] && continue
    f=$work/$name.out
    case $1 in
      pass) n=$(grep '^✓ ' "$f" | grep -vc 'hand-written' || true) ;;
      fail) n=$(grep '^✗ ' "$f" | grep -vc 'hand-written' || true) ;;
      hpass) n=$(grep '^✓ ' "$f" | grep -c 'hand-written' || true) ;;
      hfail) n=$(grep '^✗ ' "$f" | grep -c 'hand-written' || true) ;;
      hnot) n=$(grep -c '^- ' "$f" || true) ;;
    esac
    total=$(( total + n ))
  done
  echo "$total"
}
echo "real folders: generated shapes $(sum pass real) passed, $(sum fail real) failed; hand-written $(sum hpass real) passed, $(sum hfail real) failed, $(sum hnot real) not run"
echo "with aliases: generated shapes $(sum pass all) passed, $(sum fail all) failed; hand-written $(sum hpass all) passed, $(sum hfail all) failed, $(sum hnot all) not run"
echo "wall time: ${elapsed}s for ${#integrations[@]} integrations, $jobs at a time"
