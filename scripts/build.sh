#!/usr/bin/env bash
# Builds Orrery: the native engine (napi-rs), the wasm engine (cargo + wasm-bindgen CLI, the `web`
# target: browsers fetch the .wasm beside the glue, Node reads it from disk and passes the bytes),
# the TypeScript package, and the dashboard (Vite: dist/dashboard/). Each step is skipped when its
# output is newer than its inputs, so a second run takes seconds.
#   bash scripts/build.sh [native|wasm|ts|dashboard]...   (default: all four)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

CORE_INPUTS=(Cargo.toml Cargo.lock crates)
WASM_BINDGEN_VERSION=$(sed -n 's/^wasm-bindgen = "=\(.*\)"/\1/p' Cargo.toml)

build_native() {
  local out=bindings/node/orrery.linux-x64-gnu.node
  if up_to_date "$out" "${CORE_INPUTS[@]}" bindings/node/src bindings/node/Cargo.toml package.json; then
    echo "native engine: up to date"; return
  fi
  napi build --platform --release --manifest-path bindings/node/Cargo.toml --package-json-path package.json \
    --output-dir bindings/node --js binding.cjs --dts binding.d.cts
  touch "$out"
}

build_wasm() {
  local wasm=target/wasm/wasm32-unknown-unknown/wasm-release/orrery_wasm.wasm
  local out=bindings/wasm/pkg/web/orrery_wasm_bg.wasm
  if up_to_date "$out" "${CORE_INPUTS[@]}" bindings/wasm/src bindings/wasm/Cargo.toml; then
    echo "wasm engine: up to date"; return
  fi
  # rustup cannot fetch the wasm32 target here; Debian's rustc builds std for wasm32 from source
  # (rust-web-src) with -Zbuild-std. See ARCHITECTURE.md, "Building the wasm engine".
  local cargo=cargo rustc=rustc
  if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    cargo=/usr/bin/cargo rustc=/usr/bin/rustc
    export RUSTC_BOOTSTRAP=1 BUILD_STD=1
  fi
  RUSTC=$rustc CARGO_TARGET_DIR=target/wasm "$cargo" build -p orrery-wasm --profile wasm-release \
    --target wasm32-unknown-unknown ${BUILD_STD:+-Zbuild-std=std,panic_abort}
  # Debian's binaryen (108) cannot parse wasm-bindgen's output, so optimise the raw module first;
  # wasm-bindgen keeps what it needs from it (about 78 KB -> 53 KB after bindgen).
  local opt=target/wasm/orrery_wasm.opt.wasm
  wasm-opt -O3 --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-mutable-globals "$wasm" -o "$opt"
  wasm-bindgen --target web --out-dir bindings/wasm/pkg/web --out-name orrery_wasm "$opt"
  # One glue for both hosts, so the package carries the module once: earlier builds also wrote a
  # `nodejs` copy (a second 363 KB .wasm) here.
  rm -rf bindings/wasm/pkg/node
  printf 'wasm engine: %s bytes raw, %s bytes gzip\n' "$(stat -c %s "$out")" "$(gzip -9c "$out" | wc -c)"
}

# Every module of ts/ has its output (a dist copied with fresh times can be older than the sources).
dist_complete() {
  local src
  while IFS= read -r -d '' src; do
    local base="${src#ts/}"; base="${base%.ts}"
    [ -f "dist/$base.js" ] || return 1
  done < <(find ts -name '*.ts' ! -name '*.d.ts' -print0)
}

build_ts() {
  local complete=yes
  dist_complete || complete=
  if [ -n "$complete" ] && up_to_date dist/node.js ts tsconfig.json bindings/node/binding.d.cts bindings/wasm/pkg/web/orrery_wasm.d.ts; then
    echo "typescript: up to date"; return
  fi
  # tsc --incremental does not emit again what its build info says it wrote.
  [ -n "$complete" ] || rm -f dist/.tsbuildinfo
  tsc -p tsconfig.json
  # tsc never deletes: output whose source was moved or removed would stay in dist and be packed.
  local out
  while IFS= read -r -d '' out; do
    local base="${out#dist/}"; base="${base%.js}"
    [ -f "ts/$base.ts" ] || rm -f "$out" "$out.map" "dist/$base.d.ts" "dist/$base.d.ts.map"
  done < <(find dist -path dist/dashboard -prune -o -name '*.js' -print0)
  find dist -mindepth 1 -type d -empty -delete
  touch dist/node.js
}

# The web app (dashboard/, docs/dashboard.md) bundles the package's browser entry and the wasm
# engine (its demo runs in the page), so both are inputs.
build_dashboard() {
  local out=dist/dashboard/index.html
  if up_to_date "$out" dashboard ts package.json bindings/wasm/pkg/web; then
    echo "dashboard: up to date"; return
  fi
  vite build --config dashboard/vite.config.ts
  touch "$out"
  printf 'dashboard: %s bytes (%s gzip) of JavaScript and CSS\n' \
    "$(cat dist/dashboard/assets/*.js dist/dashboard/assets/*.css | wc -c)" "$(cat dist/dashboard/assets/*.js dist/dashboard/assets/*.css | gzip -9 | wc -c)"
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(native wasm ts dashboard)
for t in "${targets[@]}"; do
  case "$t" in
    native) build_native ;;
    wasm) build_wasm ;;
    ts) build_ts ;;
    dashboard) build_dashboard ;;
    *) echo "unknown build target $t (native|wasm|ts|dashboard)" >&2; exit 2 ;;
  esac
done
