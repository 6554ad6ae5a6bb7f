"""End-to-end latency and peak memory of `stforecast forecast`, stage by stage, and the same
forecast by the optical-flow extrapolation baseline.

    python bench/bench_forecast.py --model runs/radar_nowcast \
        --data ../shared/data/radar-bom-66-20201031 --hours 4

Each forecast is a fresh process (`stforecast forecast ... --log-json`), timed from before the
process starts to its exit; the stage times come from its JSON log and the peak memory from
`getrusage` of the finished child. `--help` is timed the same way. Then the same forecasts through
a resident server (`stforecast serve`, started once; each client is a fresh process with
`--socket`), with the server's start-up time and peak memory. Results are printed as Markdown
tables for docs/benchmarks.md.

`--onnx FILE` adds the forecast without PyTorch: the same fresh-process forecasts with
`--model FILE` (exported from `--model` first when FILE does not exist), stage by stage beside
the run directory's, the largest difference between the two files, and pysteps' own
extrapolation nowcast (Lucas-Kanade motion, semi-Lagrangian advection, on the same newest files
at their own resolution) as a fresh process too. `--onnx-only` skips the rest:

    python bench/bench_forecast.py --model runs/radar_nowcast --onnx radar.onnx --onnx-only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def command() -> list[str]:
    beside = Path(sys.executable).parent / "stforecast"
    return [str(beside)] if beside.exists() else [shutil.which("stforecast") or "stforecast"]


def timed(args: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MB of the child, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    res = subprocess.run(args, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak, before) / 1024.0, res.stdout


def bench_help(repeats: int) -> float:
    return statistics.median(timed([*command(), "--help"])[0] for _ in range(repeats))


def bench_forecast(
    model: str, data: str, hours: float, out: Path, newest: int = 0, server: str | None = None
) -> dict:
    """One forecast in a fresh process; `newest` > 0 passes only the newest files of a
    directory, as examples/cron/forecast-latest.sh does; `server`: through that socket."""
    sources = [data]
    if newest and Path(data).is_dir():
        sources = [str(p) for p in sorted(Path(data).iterdir())[-newest:]]
    args = [*command(), "forecast", *sources, "--hours", str(hours), "--model", model,
            "--out", f"{out}/", "--log-json", "--device", "cpu"]  # fmt: skip
    if server:
        args += ["--socket", server]
    wall, _, stdout = timed(args)
    events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    summary = events[-1]
    t = summary["timings_s"]
    return {
        "hours": hours,
        "steps": summary["steps"],
        "wall": wall,
        "start_up": t.get("start_up") or 0.0,
        "import": t.get("import") or 0.0,
        "load_model": t["load_model"],
        "open": t["open"],
        "read": t["read"] + t["prepare"],
        "model": t["model"],
        "write": t["write"],
        "peak_mb": summary["peak_mb"],
        "grid": summary.get("tiles"),
    }


PYSTEPS = """
import sys, time
t0 = time.perf_counter()
import os, contextlib, io
os.environ.setdefault("PYSTEPS_QUIET", "1")
import numpy as np, xarray as xr
with contextlib.redirect_stdout(io.StringIO()):
    from pysteps import motion, nowcasts
t1 = time.perf_counter()
files, steps, out = sys.argv[1:-2], int(sys.argv[-2]), sys.argv[-1]
fields, times = [], []
for name in files:  # one frame per file, its time in a scalar variable
    with xr.open_dataset(name) as ds:
        fields.append(ds["precipitation"].values)
        times.append(ds["valid_time"].values)
        y, x = ds["y"].values, ds["x"].values
rate = np.stack(fields).astype(np.float64) * 6.0  # mm per 10 min -> mm/h
db = np.where(rate >= 0.1, 10 * np.log10(np.maximum(rate, 0.1)), -15.0)
t2 = time.perf_counter()
v = motion.get_method("LK")(db[-4:])
fc = nowcasts.get_method("extrapolation")(db[-1], v, steps, extrap_kwargs={"outval": -15.0})
fc = np.where(fc >= -10.0, 10 ** (fc / 10), 0.0).astype(np.float32)
t3 = time.perf_counter()
valid = times[-1] + (times[-1] - times[-2]) * np.arange(1, steps + 1)
ds = xr.Dataset({"precipitation": (("time", "y", "x"), fc, {"units": "mm h-1"})},
                coords={"time": valid, "y": y, "x": x})
ds.to_netcdf(out, encoding={"precipitation": {"zlib": True}})
t4 = time.perf_counter()
print({"import": t1 - t0, "read": t2 - t1, "model": t3 - t2, "write": t4 - t3,
       "grid": list(fc.shape[1:])})
"""


def bench_pysteps(data: str, hours: float, out: Path, newest: int = 6) -> dict:
    """pysteps' extrapolation nowcast of the newest files, in a fresh process."""
    import ast

    files = [str(p) for p in sorted(Path(data).iterdir())[-newest:]]
    steps = round(hours * 6)  # 10-minute frames
    wall, peak, stdout = timed([sys.executable, "-c", PYSTEPS, *files, str(steps),
                                str(out / "pysteps.nc")])  # fmt: skip
    return {"wall": wall, "peak_mb": peak, **ast.literal_eval(stdout.strip().splitlines()[-1])}


def bench_onnx(args: argparse.Namespace, out: Path) -> None:
    """Fresh-process forecasts with the run directory and with its ONNX export, side by side,
    the two files compared, and pysteps' nowcast of the same newest files."""
    import numpy as np
    import xarray as xr

    if not Path(args.onnx).exists():
        t0 = time.perf_counter()
        timed([*command(), "export", "--model", args.model, "--format", "onnx", "--out",
               args.onnx])  # fmt: skip
        print(f"exported {args.onnx} in {time.perf_counter() - t0:.1f} s")
    keys = ("start_up", "import", "load_model", "open", "read", "model", "write", "wall")
    for label, newest in (("newest 6 files", 6), ("whole directory", 0)):
        best = {}
        for name, model in (("run directory", args.model), ("onnx", args.onnx)):
            sub = out / name.replace(" ", "_")
            sub.mkdir(exist_ok=True)
            runs = [bench_forecast(model, args.data, args.hours, sub, newest)
                    for _ in range(args.repeats)]  # fmt: skip
            best[name] = min(runs, key=lambda r: r["wall"])
            best[name]["walls"] = [r["wall"] for r in runs]
        print(f"\n{label}, fresh process, best of {args.repeats}\n")
        print("| stage (s) | run directory | onnx |\n|---|---:|---:|")
        for key in keys:
            print(f"| {key} | {best['run directory'][key]:.2f} | {best['onnx'][key]:.2f} |")
        print(
            f"| peak MB | {best['run directory']['peak_mb']:.0f} | {best['onnx']['peak_mb']:.0f} |"
        )
        for name in best:
            print(f"{name}: walls " + ", ".join(f"{w:.2f}" for w in best[name]["walls"]))
        files = [next((out / n).glob("*.nc")) for n in ("run_directory", "onnx")]
        a, b = (xr.load_dataset(f) for f in files)
        var = next(v for v, d in a.data_vars.items() if d.dims[-2:] == ("y", "x"))
        print(f"largest difference of the two files: {float(np.nanmax(abs(a[var] - b[var]))):.2e}")
    runs = [bench_pysteps(args.data, args.hours, out) for _ in range(args.repeats)]
    p = min(runs, key=lambda r: r["wall"])
    print(
        f"\npysteps extrapolation, newest 6 files, {p['grid'][0]}x{p['grid'][1]}, fresh process: "
        f"wall {p['wall']:.2f} s (import {p['import']:.2f}, read {p['read']:.2f}, "
        f"motion + extrapolation {p['model']:.2f}, write {p['write']:.2f}), "
        f"peak {p['peak_mb']:.0f} MB; walls " + ", ".join(f"{r['wall']:.2f}" for r in runs)
    )


def start_server(model: str, sock: Path) -> tuple[subprocess.Popen, float]:
    """`stforecast serve` with the model preloaded; (process, seconds until it listens)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([*command(), "serve", "--socket", str(sock), "-m", model,
                             "--device", "cpu"], stderr=subprocess.PIPE, text=True)  # fmt: skip
    first = json.loads(proc.stderr.readline() or "{}")
    if first.get("event") != "listening":
        proc.kill()
        raise SystemExit(f"stforecast serve did not start: {first}")
    return proc, time.perf_counter() - t0


def peak_of(pid: int) -> float:
    """Peak RSS (MB) of a running process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def report(label: str, runs: list[dict]) -> None:
    best = min(runs, key=lambda r: r["wall"])
    print(f"\n{label}\n\n| stage | seconds |\n|---|---|")
    for key in ("start_up", "import", "load_model", "open", "read", "model", "write", "wall"):
        print(f"| {key} | {best[key]:.3f} |")
    outside = best["wall"] - best["model"]
    print(f"\nleads {best['steps']}, peak {best['peak_mb']:.0f} MB; outside the model "
          f"{outside:.2f} s, of which interpreter start, imports and model load "
          f"{best['start_up'] + best['import'] + best['load_model']:.2f} s; walls "
          + ", ".join(f"{r['wall']:.2f}" for r in runs))  # fmt: skip


def bench_extrapolation(data: str, hours: float, out: Path) -> dict:
    """The same forecast by the extrapolation baseline, in-process, on the model's grid."""
    import numpy as np

    t0 = time.perf_counter()
    from stforecast.evaluation.baselines import extrapolation
    from stforecast.io import open_frames

    t_import = time.perf_counter() - t0
    t1 = time.perf_counter()
    da = open_frames([data])
    step = int(da.attrs["time_step"])
    frames = np.asarray(da.isel(time=slice(-4, None)).values, np.float32) * 3600 / step
    t_read = time.perf_counter() - t1
    steps = round(hours * 3600 / step)
    t2 = time.perf_counter()
    fc = extrapolation(frames, steps)
    t_flow = time.perf_counter() - t2
    t3 = time.perf_counter()
    ds = da.isel(time=slice(-steps, None)).copy(data=fc).to_dataset(name="precipitation")
    ds.attrs = {}
    ds["precipitation"].attrs = {"units": "mm h-1"}
    ds.to_netcdf(out / "extrapolation.nc", encoding={"precipitation": {"zlib": True}})
    t_write = time.perf_counter() - t3
    return {
        "grid": list(frames.shape[-2:]),
        "steps": steps,
        "import": t_import,
        "read": t_read,
        "model": t_flow,
        "write": t_write,
        "total": t_import + t_read + t_flow + t_write,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", default="../shared/data/radar-bom-66-20201031")
    parser.add_argument("--hours", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-hours", default="1,4,8", help="leads for the memory check")
    parser.add_argument("--onnx", help="an ONNX export of --model (made when missing)")
    parser.add_argument("--onnx-only", action="store_true", help="only the --onnx comparison")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")  # fmt: skip
    print(f"`stforecast --help`: {bench_help(args.repeats):.3f} s (median of {args.repeats})")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if args.onnx:
            bench_onnx(args, out)
            if args.onnx_only:
                return
        for label, newest in (("whole directory", 0), ("newest 6 files", 6)):
            runs = [bench_forecast(args.model, args.data, args.hours, out, newest)
                    for _ in range(args.repeats)]  # fmt: skip
            report(label, runs)
        sock = out / "serve.sock"
        proc, started = start_server(args.model, sock)
        try:
            for label, newest in (("whole directory", 0), ("newest 6 files", 6)):
                runs = [
                    bench_forecast(args.model, args.data, args.hours, out, newest, str(sock))
                    for _ in range(args.repeats + 1)
                ][1:]  # the first job warms the readers
                report(f"{label}, through `stforecast serve`", runs)
            print(f"\nserver: listening {started:.2f} s after start (model loaded), "
                  f"peak {peak_of(proc.pid):.0f} MB")  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(60)
        print("\n| hours | leads | peak MB | wall s |\n|---|---|---|---|")
        for h in (float(v) for v in args.memory_hours.split(",")):
            r = bench_forecast(args.model, args.data, h, out)
            print(f"| {h:g} | {r['steps']} | {r['peak_mb']:.0f} | {r['wall']:.2f} |")
        e = bench_extrapolation(args.data, args.hours, out)
        print(f"\nextrapolation baseline on {e['grid'][0]}x{e['grid'][1]}, {e['steps']} leads: "
              + ", ".join(f"{k} {e[k]:.2f} s" for k in ("import", "read", "model", "write",
                                                        "total"))
              + f", peak {e['peak_mb']:.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
