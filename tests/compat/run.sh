#!/usr/bin/env bash
# Runs `sluice test` over Nango's integration-templates corpus and prints one
# line per tested script, then the counts per integration and in total.
#
#   tests/compat/run.sh /path/to/integration-templates [integration ...]
#
# The checkout must be at 293274a7f (= 13eb2c88f^, the last commit with
# nango.yaml). Each integration runs as the nango-integrations folder the
# original expects: a temporary folder with nango.yaml at its root (its
# `${PWD}` key replaced by the integration's name) and the integration's
# directory beside it. Provider definitions come from
# ../shared/compat/providers.yaml (or $SLUICE_PROVIDERS). The three
# scripts whose original tests pin the clock run with the same time.
set -euo pipefail

corpus=${1:?usage: $0 /path/to/integration-templates [integration ...]}
shift
here=$(cd "$(dirname "$0")/../.." && pwd)
providers=${SLUICE_PROVIDERS:-$here/../shared/compat/providers.yaml}
sluice=${SLUICE:-$here/target/release/sluice}
# Builds are kept between runs: an unchanged integration is not rebuilt.
builds=${COMPAT_BUILD_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice/compat}
[ -x "$sluice" ] || (cd "$here" && cargo build --release -p sluice >&2)

# Scripts whose original test pins the clock (vi.setSystemTime).
declare -A pinned=(
  [outlook/emails]=2025-06-10T01:00:00Z
  [outlook/events]=2025-05-27T15:49:10.826Z
  [zoom/recording-files]=2024-12-05T01:00:00Z
)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
results=$work/results.txt
: > "$results"

if [ $# -gt 0 ]; then
  integrations=("$@")
else
  integrations=()
  for dir in "$corpus"/integrations/*/; do
    name=$(basename "$dir")
    # Aliases (symlinked nango.yaml) test the same scripts again.
    [ -f "$dir/nango.yaml" ] && [ ! -L "$dir/nango.yaml" ] && [ -d "$dir/mocks" ] || continue
    integrations+=("$name")
  done
fi

for name in "${integrations[@]}"; do
  project=$work/$name
  mkdir -p "$project"
  sed "s/\${PWD}/$name/" "$corpus/integrations/$name/nango.yaml" > "$project/nango.yaml"
  ln -s "$(cd "$corpus/integrations/$name" && pwd)" "$project/$name"
  out=$work/$name.out
  "$sluice" test --dir "$project" --providers "$providers" --integration "$name" \
    --build-dir "$builds/$name" > "$out" 2> "$work/$name.err" || true
  if ! grep -q ' passed, ' "$out"; then
    echo "✗ $name: $(tail -n 3 "$work/$name.err" | tr '\n' ' ')" >> "$results"
    continue
  fi
  for key in "${!pinned[@]}"; do
    [ "${key%%/*}" = "$name" ] || continue
    script=${key#*/}
    grep -v "^[✓✗] $name/$script " "$out" > "$out.rest" || true
    "$sluice" test --dir "$project" --providers "$providers" --integration "$name" \
      --build-dir "$builds/$name" --script "$script" --now "${pinned[$key]}" 2>/dev/null \
      | grep "^[✓✗]" >> "$out.rest" || true
    mv "$out.rest" "$out"
  done
  grep '^[✓✗]' "$out" >> "$results" || true
done

# The corpus's bar is the scripts the original tests: those with a
# generated test file. Other scripts with mocks are reported apart.
tested=$work/tested.txt
untested=$work/untested.txt
: > "$tested"
: > "$untested"
while IFS= read -r line; do
  key=$(printf '%s\n' "$line" | sed -n 's/^[✓✗] \([^ ]*\/[^ ]*\) .*/\1/p')
  if [ -z "$key" ]; then
    echo "$line" >> "$tested"
    continue
  fi
  name=${key%%/*}
  script=${key#*/}
  if [ -f "$corpus/integrations/$name/tests/$name-$script.test.ts" ]; then
    echo "$line" >> "$tested"
  else
    echo "$line" >> "$untested"
  fi
done < "$results"

echo "== Scripts the original tests (a generated test file exists)"
cat "$tested"
echo
echo "== Scripts with mocks but no test in the original (not counted)"
cat "$untested"
echo
passed=$(grep -c '^✓' "$tested" || true)
failed=$(grep -c '^✗' "$tested" || true)
with=$(grep '^✓' "$tested" | sed 's/^✓ \([^/]*\)\/.*/\1/' | sort -u | wc -l)
syncs=$(grep -c '^✓ .*(sync,' "$tested" || true)
actions=$(grep -c '^✓ .*(action,' "$tested" || true)
echo "integrations with a passing script: $with; passing syncs: $syncs, actions: $actions"
echo "$passed passed, $failed failed"
