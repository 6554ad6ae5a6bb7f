#!/usr/bin/env bash
# The README's main job on the embedded default data (no download), end to end:
#   1. generate two days of synthetic rain cells as a CF NetCDF archive;
#   2. prepare them with the quickstart recipe (log1p, 1 h in -> 1 h out, chronological split);
#   3. train the recipe's small CMS-LSTM (about two and a half minutes on 2 CPU cores; the GPU
#      when there is one);
#   4. forecast one hour from the newest frames of the archive (CF-1.10 NetCDF) and draw it;
#   5. evaluate the model against persistence and optical-flow extrapolation on the test split.
# Usage: bash examples/quickstart.sh [WORKDIR]   (default: ./quickstart)
# TRAIN_ARGS adds options to `train`, e.g. TRAIN_ARGS="--set train.max_steps=20" for a short run.
set -euo pipefail
work="${1:-quickstart}"
stf="${STFORECAST:-stforecast}"
recipe="$(dirname "$0")/../recipes/quickstart.toml"
read -r -a train_args <<< "${TRAIN_ARGS:-}"
mkdir -p "$work"
"$stf" synthetic rain-cells --out "$work/rain_cells.nc" --overwrite
"$stf" prepare "$recipe" --set "data.sources=[\"$work/rain_cells.nc\"]" \
    --out "$work/prepared" --overwrite
rm -rf "$work/run" "$work/forecasts" "$work/evaluation"
"$stf" train "$recipe" --set "data.store=$work/prepared" --set "data.sources=[]" \
    --out "$work/run" "${train_args[@]}"
mkdir -p "$work/forecasts"
# The archive ends 2024-01-02T23:50Z: forecast as if that were now (a live feed would leave
# --reference-time out, and a late feed would be reported).
forecast=$("$stf" forecast "$work/rain_cells.nc" --hours 1 --model "$work/run" \
    --reference-time 2024-01-02T23:50Z --out "$work/forecasts/")
"$stf" plot "$forecast" --out "$work/forecasts/forecast.gif" > /dev/null
"$stf" evaluate --model "$work/run" --out "$work/evaluation"
echo
echo "forecast:   $forecast"
echo "animation:  $work/forecasts/forecast.gif"
echo "report:     $work/evaluation/report.html  (metrics: $work/evaluation/metrics.json)"
