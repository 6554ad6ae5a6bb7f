"""Why the extrapolation baseline falls below persistence on the BOM day: CSI of both baselines on
all covered pixels, and only on those whose extrapolation departure point lies inside the coverage
(where extrapolation has an upstream observation); plus nearest-neighbour sampling of the same
departure points, to rule out bilinear smoothing.

    python bench/extrapolation_inflow.py --model runs/radar_nowcast

Hindcasts every frame from --start to --end, on the model card's grid (units, coarsening), 6
input frames, 6 leads, threshold --threshold (mm/h). Prints one row of CSI per lead and method.
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import ndimage as ndi

from stforecast import motion
from stforecast.data.resample import grid_frames
from stforecast.evaluation import baselines
from stforecast.forecasting.inputs import processing_config
from stforecast.io import open_frames
from stforecast.rundir.load import load_run


def counts(forecast: np.ndarray, truth: np.ndarray, mask: np.ndarray, thr: float) -> np.ndarray:
    f, o = forecast[mask] >= thr, truth[mask] >= thr
    return np.array([(f & o).sum(), (f & ~o).sum(), (~f & o).sum()], dtype=float)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", default="../shared/data/radar-bom-66-20201031")
    parser.add_argument("--start", default="2020-10-31T09:00")
    parser.add_argument("--end", default="2020-10-31T12:30")
    parser.add_argument("--threshold", type=float, default=1.0)
    args = parser.parse_args()
    run = load_run(args.model, device="cpu")
    contract = run.contract
    da = open_frames([args.data], variable=contract.selection)
    v = grid_frames(processing_config(contract), da, run.step).values.astype(np.float32)
    times = da["time"].values
    first = int(np.argmax(times >= np.datetime64(args.start)))
    last = int(np.argmax(times >= np.datetime64(args.end)))
    t_in, steps = 6, 6
    rows = ("persistence", "extrapolation", "persistence, upstream inside",
            "extrapolation, upstream inside", "extrapolation, nearest neighbour")  # fmt: skip
    tables = {name: np.zeros((steps, 3)) for name in rows}
    speeds = []
    for t0 in range(first, last - steps + 1):
        x, y = v[t0 - t_in + 1 : t0 + 1], v[t0 + 1 : t0 + 1 + steps]
        pers = baselines.persistence(x, steps)
        extr = baselines.extrapolation(x, steps)
        flow = motion.estimate_motion(x)
        speeds.append(float(np.hypot(*flow).mean()))
        cov = np.isfinite(x[-1])
        filled = np.where(cov, x[-1], np.nanmin(x[-1]))
        for k, at in enumerate(motion.departures(flow, steps)):
            inside = ndi.map_coordinates(cov.astype(float), at, order=0, cval=0.0) > 0
            nearest = ndi.map_coordinates(filled, at, order=0, cval=float(np.nanmin(x[-1])))
            m = cov & np.isfinite(y[k])
            for name, f, mask in zip(rows, (pers[k], extr[k], pers[k], extr[k], nearest),
                                     (m, m, m & inside, m & inside, m), strict=True):  # fmt: skip
                tables[name][k] += counts(f, y[k], mask, args.threshold)
    print(f"{last - steps + 1 - first} hindcasts, mean motion {np.mean(speeds):.2f} px/step; "
          f"CSI >= {args.threshold:g} per lead (1..{steps})")  # fmt: skip
    for name, c in tables.items():
        print(f"{name:34s}", " ".join(f"{csi:.3f}" for csi in c[:, 0] / c.sum(axis=1)))


if __name__ == "__main__":
    main()
