#!/usr/bin/env bash
# Orrery's main job: set up and build what is missing, run the agents example on both engines and
# the workflow demo (a crash mid-run and its resume, native engine), then `orrery serve`: the HTTP
# API, the dashboard and a demo mesh, with a short tour of the API through the `orrery` command.
# On a terminal it keeps serving until Ctrl-C; without one (CI) it stops after the tour.
#   npm start [-- native|wasm]...   (the engines of the agents example)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
bash scripts/setup.sh
bash scripts/build.sh
node examples/agents.mjs "$@"
node examples/workflow-crash-demo.mjs
serve=(serve --tour)
if ! { [ -t 0 ] && [ -t 1 ]; }; then serve+=(--exit --port 0); fi
exec node dist/cli/main.js "${serve[@]}"
