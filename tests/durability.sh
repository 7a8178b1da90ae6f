#!/usr/bin/env bash
# The longer SIGKILL run the README reports: a real `sluice serve` killed at
# random points of a long sync, 1,000 times by default, restarted each time;
# no acknowledged batchSave may be lost and the store must open every time.
#   tests/durability.sh [KILLS] [sled|redb|postgres|postgres-failover]
# (postgres: on the server SLUICE_TEST_POSTGRES names, as the suite's test;
# postgres-failover: a standby takes over from each killed server, and the
# killed server's data directory starts the next standby)
set -euo pipefail
cd "$(dirname "$0")/.."
case "${2:-sled}" in
  sled) test=durability::sigkill_during_a_sync_loses_no_acknowledged_batch ;;
  redb) test=durability::sigkill_during_a_sync_loses_no_acknowledged_batch_on_redb ;;
  postgres | postgres-failover)
    test=durability::sigkill_during_a_sync_loses_no_acknowledged_batch_on_postgres
    if [ "$2" = postgres-failover ]; then
      test=failover::sigkill_failovers_lose_no_acknowledged_batch_on_postgres
    fi
    if [ -z "${SLUICE_TEST_POSTGRES:-}" ]; then
      echo "$0: postgres needs SLUICE_TEST_POSTGRES (a connection string whose user may create schemas)" >&2
      exit 2
    fi
    ;;
  *) echo "usage: $0 [KILLS] [sled|redb|postgres|postgres-failover]" >&2; exit 2 ;;
esac
SLUICE_KILLS="${1:-1000}" cargo test -p sluice-tests --test all -- \
  "$test" --exact --nocapture
