#!/usr/bin/env bash
# The README's main job on the embedded default data (no download): generate two days of
# synthetic rain cells as a CF NetCDF, prepare them with the quickstart recipe, and train the
# recipe's small CMS-LSTM (about two and a half minutes on 2 CPU cores; the GPU when there is one).
# Usage: bash examples/quickstart.sh [WORKDIR]   (default: ./quickstart)
set -euo pipefail
work="${1:-quickstart}"
stf="${STFORECAST:-stforecast}"
recipe="$(dirname "$0")/../recipes/quickstart.toml"
mkdir -p "$work"
"$stf" synthetic rain-cells --out "$work/rain_cells.nc" --overwrite
"$stf" prepare "$recipe" --set "data.sources=[\"$work/rain_cells.nc\"]" \
    --out "$work/prepared" --overwrite
rm -rf "$work/run"
"$stf" train "$recipe" --set "data.store=$work/prepared" --set "data.sources=[]" \
    --out "$work/run"
echo "prepared store: $work/prepared   run: $work/run (model.safetensors, model.json, metrics.jsonl)"
