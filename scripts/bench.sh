#!/usr/bin/env bash
# Runs the cross-engine benchmark suites (benches/<suite>.mjs, each writing
# benches/results/<suite>.json) after building whatever is stale. Each contender of a scenario
# runs in a child process of its own, rounds interleaved (benches/lib/runner.mjs).
#   bash scripts/bench.sh [suite...]   (default: every suite; npm run bench -- bus, npm run bench -- store,
#   npm run bench -- leak: 5,000 create/close cycles and 5 M acked messages per engine,
#   npm run bench -- workflow: workflow runs on both engines against a SQLite checkpointing baseline,
#   npm run bench -- transports: the bus bound to Redis Streams, NATS JetStream and Kafka on both engines
#   against each server's own tool on the same server (redis-benchmark, `nats bench`, Kafka's
#   ProducerPerformance and ConsumerPerformance), request-reply-remote (a responder in another process) on
#   NATS and Redis against Moleculer over NATS, durable-publish (the durable transport) against
#   better-sqlite3; starts scripts/servers.sh's redis, nats and kafka if they are down)
#   ORRERY_BENCH_QUICK=1 npm run bench -- bus   (bus, store, registry, workflow, transports: two short rounds each, to
#   check the harness; prints the table, writes no results)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

suites=("$@")
if [ ${#suites[@]} -eq 0 ]; then
  for file in benches/*.mjs; do suites+=("$(basename "$file" .mjs)"); done
fi
for suite in "${suites[@]}"; do
  [ -f "benches/$suite.mjs" ] || { echo "unknown suite $suite (have: $(cd benches && ls -- *.mjs | sed 's/\.mjs$//' | tr '\n' ' '))" >&2; exit 2; }
done

phase_start build
bash scripts/build.sh
# The transports suite's rust-redis and rust-nats contenders (the Rust clients alone) and the
# store suite's redb-alone: not a workspace member, so the core's build never compiles them.
if [[ " ${suites[*]} " == *" transports "* || " ${suites[*]} " == *" store "* ]]; then
  cargo build --release --quiet --manifest-path benches/rust-clients/Cargo.toml
fi
phase_end
for suite in "${suites[@]}"; do
  phase_start "bench $suite"
  # --expose-gc: suites force a GC between rounds and before memory readings; the heap limit
  # leaves room for the 10M-message JS baseline (about 4 GB resident). Children inherit both.
  node --expose-gc --max-old-space-size=12000 "benches/$suite.mjs"
  phase_end
done
phase_report
