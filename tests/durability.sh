#!/usr/bin/env bash
# The longer SIGKILL run the README reports: a real `sluice serve` killed at
# random points of a long sync, 1,000 times by default, restarted each time;
# no acknowledged batchSave may be lost and the store must open every time.
#   tests/durability.sh [KILLS]
set -euo pipefail
cd "$(dirname "$0")/.."
SLUICE_KILLS="${1:-1000}" cargo test -p sluice-tests --test all -- \
  durability::sigkill_during_a_sync_loses_no_acknowledged_batch --exact --nocapture
