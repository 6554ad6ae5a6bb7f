"""`prepare` throughput and peak memory on real archives (../shared/data).

    python bench/bench_prepare.py                 # BOM day, FMI event, BOM at 1/4, 1/2, all frames

Cases: the BOM day (144 per-frame NetCDF, 512 x 512, mm per 10 min -> mm/h, log1p) and the FMI
event (40 GeoTIFFs of 7316 x 4963 dBZ, -> mm/h with Z = 200 R^1.6, coarsened 8x, log1p). Each case
runs in its own process; peak memory is that process's maximum resident set size. The scaling
rows prepare the first quarter, half and all of the BOM day: peak memory must stay flat.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(
    os.environ.get(
        "STFORECAST_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"
    )
)

CASES = {
    "bom": dict(
        folder="radar-bom-66-20201031",
        pattern="*.nc",
        fields=dict(units="mm/h", transform="log1p", input_frames=6, output_frames=6),
    ),
    "fmi": dict(
        folder="radar-fmi-geotiff-20160928",
        pattern="*.tif",
        fields=dict(
            units="mm/h",
            coarsen=8,
            transform="log1p",
            input_frames=6,
            output_frames=6,
            split={"fractions": [0.6, 0.2, 0.2]},
        ),
    ),
}


def run_one(case: str, frames: int | None) -> dict:
    from stforecast.config import data_config
    from stforecast.data.contract import DataContract
    from stforecast.data.prepare import prepare

    spec = CASES[case]
    files = sorted(glob.glob(str(DATA / spec["folder"] / spec["pattern"])))
    if frames:
        files = files[:frames]
    cfg = data_config(None, sources=files, **spec["fields"])
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        manifest = prepare(cfg, Path(tmp) / "store")
        seconds = time.perf_counter() - t
    n = manifest["time"]["frames"]
    return {
        "case": case,
        "frames": n,
        "grid": list(DataContract.from_manifest(manifest).grid.shape),
        "seconds": seconds,
        "frames_per_s": n / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="bom,fmi,bom:36,bom:72")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        case, _, frames = args.one.partition(":")
        print(json.dumps(run_one(case, int(frames) if frames else None)))
        return
    print("| case | frames | grid | time (s) | frames/s | peak RSS (MB) |")
    print("|---|---:|---|---:|---:|---:|")
    for item in args.cases.split(","):
        out = subprocess.run(
            [sys.executable, __file__, "--one", item], capture_output=True, text=True, check=True
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"| {r['case']} | {r['frames']} | {r['grid'][0]}x{r['grid'][1]} | {r['seconds']:.1f} "
            f"| {r['frames_per_s']:.1f} | {r['peak_rss_mb']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
