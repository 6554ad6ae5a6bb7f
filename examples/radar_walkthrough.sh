#!/usr/bin/env bash
# Radar nowcasting on real data, end to end: train recipes/radar_nowcast.toml on a directory of
# per-frame NetCDF files (the BOM Brisbane radar day: one CF file per 10-minute frame, 512 x 512,
# mm per 10 min), forecast one hour from the newest frames of the directory as cron would, draw
# the forecast, and score the run against persistence and extrapolation on the recipe's test split.
#
# Usage: bash examples/radar_walkthrough.sh
# Settings (environment variables):
#   DATA      directory of frames (default: ../shared/data/radar-bom-66-20201031 beside the repo)
#   RUN       run directory (default: runs/radar_walkthrough); an existing trained run is reused,
#             an interrupted one resumed
#   WORK      where forecasts, plots and the evaluation go (default: radar_walkthrough)
#   MAX_TIME  training time limit in seconds (default: the recipe's 3000 steps, an hour or more on
#             2 CPU cores, minutes on a GPU)
#   FAST=1    a smoke run for CI: 60 steps or MAX_TIME (default 60 s) of training, a short
#             validation, 4 test sequences scored; a few minutes on 2 CPU cores, forecasts poor
#   UNTIL     forecast from the newest frames up to this file name instead of the newest of all,
#             e.g. UNTIL=66_20201031_100000.prcp-c10.nc (mid-morning rain; the day ends dry)
#   STFORECAST  the command (default: stforecast)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
stf="${STFORECAST:-stforecast}"
read -r -a stf <<<"$stf" # allows STFORECAST="python -m stforecast"
data="${DATA:-$here/../../shared/data/radar-bom-66-20201031}"
run="${RUN:-runs/radar_walkthrough}"
work="${WORK:-radar_walkthrough}"
fast="${FAST:-0}"

if [[ ! -d "$data" ]]; then
    echo "error: $data: no such directory; set DATA to a directory of radar frames" >&2
    exit 3
fi
data="$(cd "$data" && pwd)" # absolute: recipe paths are relative to the recipe, not here
mkdir -p "$work/forecasts"

# 1. train (data.sources = the directory: prepared into the cache on first use)
sets=(--set "data.sources=[\"$data\"]")
if [[ "$fast" == 1 ]]; then
    sets+=(--set train.max_steps=60 --set "train.max_time=${MAX_TIME:-60}"
        --set train.val_every=30 --set train.val_batches=2 --set train.checkpoint_every=30)
elif [[ -n "${MAX_TIME:-}" ]]; then
    sets+=(--set "train.max_time=$MAX_TIME")
fi
if [[ -f "$run/model.safetensors" ]]; then
    echo "== reusing the trained run $run (remove it to train again)"
else
    resume=()
    [[ -d "$run/checkpoints" ]] && resume=(--resume)
    echo "== training $run on $data"
    "${stf[@]}" train "$here/../recipes/radar_nowcast.toml" "${sets[@]}" --out "$run" \
        "${resume[@]}" --quiet
fi

# 2. forecast one hour from the newest frames, as the cron job does (the lock, the atomic write
#    and the exit codes are those of `stforecast forecast`)
echo "== forecasting from the newest frames of $data"
until_=()
[[ -n "${UNTIL:-}" ]] && until_=(--until "$UNTIL")
forecast="$(STFORECAST="${stf[*]}" bash "$here/cron/forecast-latest.sh" --count 6 "${until_[@]}" \
    "$data" -- --model "$run" --hours 1 --out "$work/forecasts/")"

# 3. a quick look: an animated GIF of the leads
quicklook="(stforecast plot not available)"
if "${stf[@]}" plot --help >/dev/null 2>&1; then
    quicklook="$("${stf[@]}" plot "$forecast" --out "$work/forecast.gif")"
fi

# 4. score the run and the baselines on the recipe's test split (09:00-12:30 UTC)
echo "== evaluating against persistence and extrapolation"
evaluate=()
[[ "$fast" == 1 ]] && evaluate=(--set evaluate.max_sequences=4)
"${stf[@]}" evaluate --model "$run" --out "$work/evaluation" "${evaluate[@]}"

echo
echo "run:        $run (model.safetensors, model.json, metrics.jsonl)"
echo "forecast:   $forecast"
echo "quick look: $quicklook"
echo "evaluation: $work/evaluation/metrics.json, $work/evaluation/report.html"
