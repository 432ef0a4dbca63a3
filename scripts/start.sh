#!/usr/bin/env bash
# Orrery's main job: set up and build what is missing, then run the agents example on both engines
# and the workflow demo (a crash mid-run and its resume, native engine).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
bash scripts/setup.sh
bash scripts/build.sh
node examples/agents.mjs "$@"
node examples/workflow-crash-demo.mjs
