#!/usr/bin/env bash
# The README's main job on the embedded default data (no download): generate two days of
# synthetic rain cells as a CF NetCDF, prepare them for training, and show the models.
# Usage: bash examples/quickstart.sh [WORKDIR]   (default: ./quickstart)
set -euo pipefail
work="${1:-quickstart}"
stf="${STFORECAST:-stforecast}"
mkdir -p "$work"
"$stf" synthetic rain-cells --out "$work/rain_cells.nc" --overwrite
"$stf" prepare "$work/rain_cells.nc" --out "$work/prepared" --overwrite \
    --input-frames 6 --output-frames 6 --transform log1p
"$stf" models cms_lstm sa_convlstm convlstm predrnn --frame-size 64 --patch-size 4
echo "prepared store: $work/prepared (manifest: $work/prepared/manifest.json)"
