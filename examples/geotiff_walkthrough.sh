#!/usr/bin/env bash
# GeoTIFF in, GeoTIFF out: frames arrive as one GeoTIFF per time step (as many radar and
# satellite feeds deliver them), a model is trained on the directory, and the forecast is one
# multi-band GeoTIFF (band k = lead k) that any GIS opens. The frames are made here from the
# built-in synthetic rain cells (64 x 64 km at 1 km, every 10 minutes, a day), so the example
# needs no download and runs in about three minutes on 2 CPU cores.
#
# Usage: bash examples/geotiff_walkthrough.sh
# Settings (environment variables):
#   WORK      working directory (default: geotiff_walkthrough): frames/, run/, forecasts/
#   MAX_TIME  training time limit in seconds (default 120; FAST=1: 30)
#   FAST=1    a smoke run for CI
#   STFORECAST  the command (default: stforecast)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
read -r -a stf <<<"${STFORECAST:-stforecast}" # allows STFORECAST="python -m stforecast"
work="${WORK:-geotiff_walkthrough}"
max_time="${MAX_TIME:-120}"
[[ "${FAST:-0}" == 1 ]] && max_time="${MAX_TIME:-30}"
python="${PYTHON:-python3}"
mkdir -p "$work/frames" "$work/forecasts"

# 1. one GeoTIFF per frame: synthetic rain cells (CF NetCDF) split into float32 GeoTIFFs with
#    the CRS, the transform, nodata, the units and the time (in the name and in the tags)
"${stf[@]}" synthetic rain-cells --out "$work/rain_cells.nc" --frames 144 --overwrite
"$python" - "$work/rain_cells.nc" "$work/frames" <<'PY'
import sys
from pathlib import Path

import numpy as np
import rasterio
import xarray as xr
from rasterio.transform import from_origin

source, folder = sys.argv[1], Path(sys.argv[2])
with xr.open_dataset(source) as ds:
    rain = ds["rainrate"].load()
    wkt = ds["crs"].attrs["crs_wkt"]
x, y = rain["x"].values, rain["y"].values
dx, dy = float(x[1] - x[0]), float(y[0] - y[1])  # rows run north to south
transform = from_origin(x[0] - dx / 2, y[0] + dy / 2, dx, dy)
for frame in rain:
    when = np.datetime_as_string(frame["time"].values, unit="s")  # 2024-01-01T00:10:00
    name = folder / f"rain_{when.replace('-', '').replace(':', '')}.tif"  # rain_20240101T001000
    values = np.where(np.isfinite(frame.values), frame.values, -9999.0).astype("float32")
    profile = dict(driver="GTiff", width=x.size, height=y.size, count=1, dtype="float32",
                   crs=wkt, transform=transform, nodata=-9999.0, compress="deflate")
    with rasterio.open(name, "w", **profile) as dst:
        dst.write(values, 1)
        dst.set_band_unit(1, rain.attrs["units"])
        dst.update_tags(valid_time=when + "Z", long_name=rain.attrs["long_name"])
print(f"wrote {rain.sizes['time']} GeoTIFFs to {folder}")
PY

# 2. train the quickstart model on the directory of GeoTIFFs (a small CMS-LSTM, 1 h in, 1 h out)
rm -rf "$work/run"
"${stf[@]}" train "$here/../recipes/quickstart.toml" --set "data.sources=[\"$work/frames\"]" \
    --set "train.max_time=$max_time" --out "$work/run" --quiet

# 3. forecast one hour from the newest frames, as a GeoTIFF
forecast="$("${stf[@]}" forecast "$work/frames" --model "$work/run" --hours 1 \
    --format geotiff --out "$work/forecasts/")"

# 4. what is inside: bands, their descriptions and tags, read with rasterio
"$python" - "$forecast" <<'PY'
import sys

import rasterio

with rasterio.open(sys.argv[1]) as src:
    print(f"{sys.argv[1]}: {src.count} bands of {src.width} x {src.height}, {src.crs}, "
          f"nodata {src.nodata}, {getattr(src.compression, 'value', src.compression)}")
    tags = src.tags()
    print("file tags:", {k: tags[k] for k in ("TIFFTAG_DATETIME", "TIFFTAG_SOFTWARE", "units")})
    for band in range(1, src.count + 1):
        t = src.tags(band)
        values = src.read(band, masked=True)
        print(f"band {band}: {src.descriptions[band - 1]:>7}  valid {t['valid_time']}  "
              f"max {values.max():.2f} {t['units']}")
PY

# 5. a quick look: the leads side by side
if "${stf[@]}" plot --help >/dev/null 2>&1; then
    "${stf[@]}" plot "$forecast" --out "$work/forecast.png" >/dev/null
    echo "quick look: $work/forecast.png"
fi
echo "frames: $work/frames   run: $work/run   forecast: $forecast"
