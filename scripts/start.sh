#!/usr/bin/env bash
# Orrery's main job: set up and build what is missing, then run the agents example on both engines.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
bash scripts/setup.sh
bash scripts/build.sh
node examples/agents.mjs "$@"
