"""Evaluation throughput and peak memory on the BOM radar day.

    python bench/bench_evaluate.py --model runs/radar_nowcast \
        --data ../shared/data/radar-bom-66-20201031

Two runs, each in a fresh process so that peak memory is its own: the test split of the run's
recipe (windows from the prepared store), and a hindcast over the archive through the forecast
code path. Prints cases per second, the time in scoring versus the report, and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap

CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    from stforecast.evaluation import evaluate as ev
    model, out, mode, data, start, end = sys.argv[1:7]
    spent = {"report": 0.0}
    import stforecast.evaluation.report as report
    original = report.write_report
    def timed_report(*a, **k):
        t = time.perf_counter(); r = original(*a, **k)
        spent["report"] = time.perf_counter() - t
        return r
    report.write_report = timed_report
    t0 = time.perf_counter()
    kwargs = {"device": "cpu"}
    if mode == "hindcast":
        kwargs.update(sources=[data], start=start, end=end)
    doc = ev.evaluate(model, out, **kwargs)
    total = time.perf_counter() - t0
    print(json.dumps({"cases": doc["cases"], "total": total, "report": spent["report"],
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "summary": {m: doc["methods"][m]["summary"] for m in doc["methods"]}}))
    """
)


def run(model: str, mode: str, data: str, start: str, end: str) -> dict:
    with tempfile.TemporaryDirectory() as out:
        res = subprocess.run(
            [sys.executable, "-c", CHILD, model, out, mode, data, start, end],
            capture_output=True, text=True,
        )  # fmt: skip
    if res.returncode != 0:
        raise SystemExit(res.stderr[-2000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", default="../shared/data/radar-bom-66-20201031")
    parser.add_argument("--start", default="2020-10-31T09:00")
    parser.add_argument("--end", default="2020-10-31T11:30")
    args = parser.parse_args()
    print("| mode | cases | total s | scoring s | cases/s | report s | peak MB |")
    print("|---|---|---|---|---|---|---|")
    for mode in ("test-split", "hindcast"):
        r = run(args.model, mode, args.data, args.start, args.end)
        scoring = r["total"] - r["report"]
        print(f"| {mode} | {r['cases']} | {r['total']:.1f} | {scoring:.1f} | "
              f"{r['cases'] / scoring:.2f} | {r['report']:.1f} | {r['peak_mb']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
