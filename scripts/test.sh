#!/usr/bin/env bash
# Every test Orrery has, each phase timed: set-up, builds, cargo test, fuzzing, clippy, the wasm32 build of
# the core, the TypeScript type check, Biome (format, lint, import cycles), the vitest suite once per engine (native, wasm in Node)
# and once more in Debian's chromium (the browser entry; files that need Node are listed in
# vitest.config.ts), the package as users install it
# (scripts/package-test.sh), and the engine suites again under Node 24. The transport tests run against
# real servers (Redis on 127.0.0.1:16379; scripts/servers.sh).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
# The transport tests' broker servers (scripts/servers.sh) are installed by setup.sh and started and
# stopped by vitest's global setup (test/transports/global-setup.ts). Should a run be cut short, no
# server started during it outlives this script; one already running before it is left alone.
servers_running() { bash scripts/servers.sh status | awk '$2 == "running" { print $1 }'; }
servers_before=$(servers_running)
stop_new_servers() {
  local name
  for name in $(servers_running); do
    grep -qx "$name" <<<"$servers_before" || bash scripts/servers.sh stop "$name" || true
  done
}
# The end of the log is what a reader sees first: the phase times, then every failed test by name.
failed_phases=()
report_failures() {
  local f
  for f in target/vitest.json target/vitest-node24.json; do
    [ -f "$f" ] && node scripts/failed-tests.mjs "$f" || true
  done
  [ ${#failed_phases[@]} -eq 0 ] || printf 'failed phase: %s\n' "${failed_phases[@]}"
}
trap 'stop_new_servers; phase_report; report_failures' EXIT

phase_start "set-up (install what is missing)"; bash scripts/setup.sh; phase_end
phase_start "build native engine"; bash scripts/build.sh native; phase_end
phase_start "build wasm engine (core for wasm32)"; bash scripts/build.sh wasm; phase_end
phase_start "build TypeScript package"; bash scripts/build.sh ts; phase_end
phase_start "cargo test"; cargo test --workspace --quiet; phase_end
# Every decoder of outside bytes under libFuzzer, 10 s a target (scripts/fuzz.sh 60 for longer).
phase_start "fuzz (4 targets x 10 s)"; bash scripts/fuzz.sh 10; phase_end
phase_start "cargo fmt --check, clippy -D warnings"
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
phase_end
phase_start "typecheck (package, tests, examples, dashboard), API reference"
tsc -p tsconfig.test.json; tsc -p tsconfig.examples.json; tsc -p dashboard/tsconfig.json
# The API reference builds from the types with no warning (a broken doc link or an unexported
# public type fails the run), into docs/api (git-ignored).
typedoc --treatWarningsAsErrors --logLevel Warn
phase_end
# Biome (biome.jsonc): formatting, lint and import cycles over ts/, test/, examples/ (lint only for
# examples/*.ts: they are the docs' code blocks), benches/*.mjs.
# An unformatted file or an import cycle fails the run; `npx biome check --write` fixes most.
phase_start "biome ci (format, lint, import cycles)"; biome ci; phase_end
phase_start "vitest (native, wasm, browser: chromium)"
mkdir -p target
rm -f target/vitest.json target/vitest-node24.json
status=0
vitest run --reporter=default --reporter=json --outputFile.json=target/vitest.json || { status=1; failed_phases+=(vitest); }
phase_end
phase_start "package (pack, install, Quick start)"; bash scripts/package-test.sh || { status=1; failed_phases+=(package); }; phase_end
# The machines run Node 20; users run 22 and 24. The addon is N-API, so the same build serves.
phase_start "vitest under Node 24 (native, wasm)"
"$NODE24" node_modules/vitest/vitest.mjs run --project native --project wasm \
  --reporter=default --reporter=json --outputFile.json=target/vitest-node24.json || { status=1; failed_phases+=("vitest under Node 24"); }
phase_end
exit $status
