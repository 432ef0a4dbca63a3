#!/usr/bin/env bash
# Fuzzes every decoder that takes bytes from outside (fuzz/fuzz_targets: frames, snapshot,
# disk_records, store_wire) with cargo-fuzz and libFuzzer, each target for the given seconds.
#   bash scripts/fuzz.sh [seconds per target] [target...]   (default 60 s, every target)
# The test command runs 10 s each. Without a sanitizer (`-s none`), so the stable toolchain builds
# it: what is caught is a panic, an abort (an allocation that fails), a failed assertion and, with
# debug assertions and overflow checks on (`-a`, which `-O` alone turns off), an arithmetic overflow. Corpora grow in fuzz/corpus
# (git-ignored) from run to run; a crash leaves its input in fuzz/artifacts/<target>/ and fails the
# run: turn it into a test in crates/core/tests/fuzz_regressions.rs once fixed.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frames snapshot disk_records store_wire)

cd fuzz
cargo fuzz build -s none -O -a
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" target
  log="target/$target.log"
  # -rss_limit_mb: a decoder asking for gigabytes on small input is a finding, not a slow run.
  # -max_len 4096: the targets' structured modes edit real batches and bodies of about 1 KiB.
  status=0
  cargo fuzz run -s none -O -a "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 > "$log" 2>&1 || status=$?
  grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$log" | sed "s/^/$target: /" || true
  if [ "$status" -ne 0 ]; then
    # A crash, a failed assertion, an abort or a run that could not start: show why.
    grep -v '^#' "$log" | tail -40 >&2
    echo "fuzz target $target failed (exit $status); its input, if it crashed: $(ls "artifacts/$target" 2>/dev/null | tr '\n' ' ')" >&2
    exit 1
  fi
done
