#!/usr/bin/env bash
# Fuzzes every decoder that takes bytes from outside (fuzz/fuzz_targets: frames, snapshot,
# disk_records, store_wire) with cargo-fuzz and libFuzzer, each target for the given seconds.
#   bash scripts/fuzz.sh [seconds per target] [target...]   (default 60 s, every target)
# The test command runs 10 s each. Without a sanitizer (`-s none`), so the stable toolchain builds
# it: what is caught is a panic, an abort (an allocation that fails), a failed assertion and, with
# debug assertions on (`-O` keeps them), an arithmetic overflow. Corpora grow in fuzz/corpus
# (git-ignored) from run to run; a crash leaves its input in fuzz/artifacts/<target>/ and fails the
# run: turn it into a test in crates/core/tests/fuzz_regressions.rs once fixed.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frames snapshot disk_records store_wire)

cd fuzz
cargo fuzz build -s none -O
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  # -rss_limit_mb: a decoder asking for gigabytes on small input is a finding, not a slow run.
  # -max_len 4096: the targets' structured modes edit real batches and bodies of about 1 KiB.
  cargo fuzz run -s none -O "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 2>&1 \
    | grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+== ERROR|SUMMARY|artifact_prefix|thread .* panicked)' \
    | sed "s/^/$target: /" || true
  # libFuzzer's exit code is lost in the pipe: a crash is an artifact.
  if compgen -G "artifacts/$target/*" > /dev/null; then
    echo "fuzz target $target found a crash: $(ls "artifacts/$target")" >&2
    exit 1
  fi
done
