#!/usr/bin/env bash
# The package as users install it: `npm pack`, then a fresh ESM project installs the tarball and
#   - the tarball holds the engine's .wasm once (and the dashboard's copy), no dev artefact, and no source map whose sources are missing;
#   - the README's Quick start (the ```ts block under `## Quick start`) type-checks under
#     --strict with nodenext resolution, with this repository's TypeScript and with the one a
#     new project installs (TYPESCRIPT_LATEST), and runs to exit 0 on both engines, with no warning;
#   - a CommonJS file reaches the package by `import('orrery')` and by `require('orrery')`;
#   - all of it again under Node 24 when scripts/setup.sh has installed it (scripts/node24).
# Expects a built tree (bash scripts/build.sh). Installs come from npm's cache (--prefer-offline):
# warm, the whole script takes about 15 s.
#   bash scripts/package-test.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"
# The TypeScript `npm i -D typescript` installs in a new project (its quick start is compiled with it too).
TYPESCRIPT_LATEST=7.0.2

work=$(mktemp -d "${TMPDIR:-/tmp}/orrery-package-test.XXXXXX")
trap 'rm -rf "$work"' EXIT

npm pack --silent --pack-destination "$work" >/dev/null
tarball=$(ls "$work"/orrery-*.tgz)
printf 'packed %s: %s bytes\n' "$(basename "$tarball")" "$(stat -c %s "$tarball")"

# The same compiler and Node types as this repository, so the install is served from the cache.
version_of() { node -p "require('./node_modules/$1/package.json').version"; }
app="$work/app"
mkdir -p "$app"
cat > "$app/package.json" <<'EOF'
{ "name": "orrery-package-test", "private": true, "type": "module" }
EOF
# --prefix: under `npm test`, npm exports npm_config_local_prefix (this repository) to scripts.
npm install --prefix "$app" --prefer-offline --no-audit --no-fund --loglevel=error \
  "$tarball" "typescript@$(version_of typescript)" "@types/node@$(version_of @types/node)" >/dev/null
installed="$app/node_modules/orrery"

echo "tarball contents"
node - "$installed" <<'EOF'
// Every file the package carries, checked from the installed copy.
const { readdirSync, readFileSync, existsSync, statSync } = require('node:fs')
const { join, dirname, resolve, relative } = require('node:path')
const root = process.argv[2]
const files = []
const walk = (dir) => { for (const e of readdirSync(dir, { withFileTypes: true })) e.isDirectory() ? walk(join(dir, e.name)) : files.push(relative(root, join(dir, e.name))) }
walk(root)
const problems = []
// The engine's module once (bindings/), and the dashboard's own copy (dist/dashboard/assets/: its
// demo runs the engine in the page, and the built app is served alone by `orrery serve`).
const dashboardWasm = files.filter((f) => f.startsWith('dist/dashboard/') && f.endsWith('.wasm'))
const wasm = files.filter((f) => f.endsWith('.wasm') && !dashboardWasm.includes(f))
if (dashboardWasm.length !== 1) problems.push(`expected the dashboard's one .wasm, found ${dashboardWasm.length}: ${dashboardWasm.join(', ')}`)
if (!files.includes('dist/dashboard/index.html')) problems.push('missing dist/dashboard/index.html (scripts/build.sh dashboard)')
for (const doc of ['README.md', 'CHANGELOG.md', 'LICENSE-MIT', 'LICENSE-APACHE']) if (!files.includes(doc)) problems.push(`missing ${doc}`)
if (wasm.length !== 1) problems.push(`expected one .wasm, found ${wasm.length}: ${wasm.join(', ')}`)
for (const f of files) {
  if (/\.tsbuildinfo$|(^|\/)(test|tests|scripts|target|benches|crates|src)\//.test(f)) problems.push(`dev artefact: ${f}`)
}
let maps = 0
for (const f of files.filter((f) => f.endsWith('.map'))) {
  maps++
  const map = JSON.parse(readFileSync(join(root, f), 'utf8'))
  map.sources.forEach((source, i) => {
    if (map.sourcesContent?.[i] != null) return
    const path = resolve(dirname(join(root, f)), map.sourceRoot ?? '', source)
    if (!existsSync(path)) problems.push(`${f} points at ${relative(root, path)}, which the package lacks`)
  })
}
if (problems.length) { console.error(problems.map((p) => `  ${p}`).join('\n')); process.exit(1) }
const bytes = files.reduce((n, f) => n + statSync(join(root, f)).size, 0)
console.log(`  ${files.length} files, ${bytes} bytes unpacked; ${maps} source maps, each with its sources; one engine .wasm (${wasm[0]}) and the dashboard's (${dashboardWasm[0]})`)
EOF

# The Quick start, exactly as the README shows it.
awk '
  /^## / { inside = ($0 ~ /^## Quick start[[:space:]]*$/) ; next }
  inside && !code && /^```ts[[:space:]]*$/ { code = 1; next }
  inside && code && /^```[[:space:]]*$/ { exit }
  inside && code { print }
' README.md > "$app/quickstart.ts"
if [ ! -s "$app/quickstart.ts" ]; then
  echo "README.md has no \`\`\`ts block under its '## Quick start' heading" >&2
  exit 1
fi
echo "Quick start: $(wc -l < "$app/quickstart.ts") lines from README.md"

# A user's strict compile, without skipLibCheck: the package's own .d.ts are checked too.
(cd "$app" && node_modules/.bin/tsc --strict --module nodenext --moduleResolution nodenext --target es2022 \
  --outDir out quickstart.ts)
echo "  compiles under --strict, nodenext (TypeScript $(version_of typescript))"
# Again with the TypeScript a new project gets from `npm i -D typescript` (7: @types/node only
# when listed, as the README says), installed beside the first under another name.
npm install --prefix "$app" --prefer-offline --no-audit --no-fund --loglevel=error "typescript-latest@npm:typescript@$TYPESCRIPT_LATEST" >/dev/null
(cd "$app" && node node_modules/typescript-latest/bin/tsc --strict --module nodenext --moduleResolution nodenext --target es2022 \
  --types node --noEmit quickstart.ts)
echo "  compiles under --strict, nodenext, --types node (TypeScript $TYPESCRIPT_LATEST)"

cat > "$app/from-commonjs.cjs" <<'EOF'
// A CommonJS caller: dynamic import works everywhere; require(esm) from Node 20.19 on
// (package.json `engines`). Both must give the engine ORRERY_ENGINE names, or native by default.
const assert = require('node:assert/strict')
const expected = process.env.ORRERY_ENGINE || 'native'
const required = require('orrery')
import('orrery').then(async ({ Orrery }) => {
  assert.equal(required.Orrery, Orrery)
  const orrery = await Orrery.create()
  assert.equal(orrery.engine, expected)
  orrery.close()
})
EOF

nodes=(node)
[ -x "$NODE24" ] && nodes+=("$NODE24")
for bin in "${nodes[@]}"; do
  for engine in '' native wasm; do
    label="node $("$bin" --version), ORRERY_ENGINE=${engine:-(unset)}"
    for program in out/quickstart.js from-commonjs.cjs; do
      # stderr must stay empty: a fallback or a deprecation would print a warning there.
      if ! (cd "$app" && ORRERY_ENGINE=$engine "$bin" "$program" 2> "$work/stderr"); then
        echo "$program failed on $label:" >&2; cat "$work/stderr" >&2; exit 1
      fi
      if [ -s "$work/stderr" ]; then
        echo "$program wrote to stderr on $label:" >&2; cat "$work/stderr" >&2; exit 1
      fi
    done
    echo "  quickstart and CommonJS import: exit 0 on $label"
  done
done
[ -x "$NODE24" ] || echo "  (Node 24 not installed: run scripts/setup.sh)"

# The `orrery` bin as npm links it (package.json "bin"): its help, and a client's exit code 3 when
# no server answers.
(cd "$app" && node_modules/.bin/orrery --help > /dev/null) || { echo "node_modules/.bin/orrery --help failed" >&2; exit 1; }
bin_status=0
(cd "$app" && ORRERY_URL=http://127.0.0.1:1 node_modules/.bin/orrery status 2> /dev/null) || bin_status=$?
[ "$bin_status" -eq 3 ] || { echo "orrery status with no server: exit $bin_status, not 3" >&2; exit 1; }
# serve from the installed package: its engine, Fastify and the dashboard resolve there.
served=$(cd "$app" && node_modules/.bin/orrery serve --port 0 --exit --json --no-demo) \
  || { echo "orrery serve --exit from the installed package failed" >&2; exit 1; }
# The dashboard is packed when it was built (bash scripts/build.sh dashboard).
if [ -f dist/dashboard/index.html ]; then
  grep -q '"dashboard":true' <<<"$served" || { echo "orrery serve from the package: no dashboard ($served)" >&2; exit 1; }
fi
echo "  the orrery bin: --help, exit 3 with no server, serve starts and stops ($served)"
