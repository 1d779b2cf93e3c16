#!/usr/bin/env bash
# Run the whole pipeline for one task: generate -> curate -> train -> evaluate, skipping unchanged
# stages. Usage: scripts/run_pipeline.sh <task> [--quiet] [--keep N] [--force]
# Exit codes: 0 something changed, 10 nothing changed, 2-4 an error (config, budget, lock).
set -uo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/distill run "$@"
