"""Speckle at the patch scale: the forecast's power at wavelengths p/2 .. 2p pixels over the
observation's (`stforecast.evaluation.spectrum.patch_power_ratio`), per lead, on a store's test
windows, for a run and for the extrapolation baseline (a reference that has no patches).

    python bench/speckle.py --model quickstart/run --store quickstart/prepared [--png panel.png]

Prints the median ratio per lead for the model and for extrapolation (rain windows only: at least
2 % of the truth above 1 mm/h). `--png` draws one test window: truth, model and extrapolation.
"""

from __future__ import annotations

import argparse

import numpy as np

from stforecast.data import transforms
from stforecast.data.dataset import WindowDataset
from stforecast.evaluation import baselines
from stforecast.evaluation.spectrum import patch_power_ratio
from stforecast.forecasting.tiling import predict
from stforecast.rundir.load import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--weights", default="selected")
    parser.add_argument("--png", default=None)
    args = parser.parse_args()
    run = load_run(args.model, device="cpu", weights=args.weights)
    contract = run.contract
    transform, _ = transforms.from_dict({**contract.transform.to_dict(), "params": {}})
    params = contract.transform.per_channel(1)[0]
    test = WindowDataset(args.store, "test")
    p = int(run.net.patch_size)
    ratios: dict[str, list[list[float]]] = {"model": [], "extrapolation": []}
    shown = None
    for i in range(len(test)):
        item = test[i]
        x, y = item["inputs"].numpy(), item["targets"].numpy()[:, 0]
        truth = np.asarray(transform.inverse(y, params))
        if (truth > 1.0).mean() < 0.02:
            continue
        lead = np.stack(list(predict(run.net, x, y.shape[0])))[:, 0]
        model = np.asarray(transform.inverse(lead, params))
        extra = baselines.extrapolation(np.asarray(transform.inverse(x[:, 0], params)), len(y))
        ratios["model"].append(
            [patch_power_ratio(f, o, p) for f, o in zip(model, truth, strict=True)]
        )
        ratios["extrapolation"].append(
            [patch_power_ratio(f, o, p) for f, o in zip(extra, truth, strict=True)]
        )
        shown = shown or (truth, model, extra)
    print(f"{args.model} ({args.weights} weights), patch {p}, {len(ratios['model'])} windows")
    for name, rows in ratios.items():
        med = np.median(np.asarray(rows), axis=0)
        print(f"{name:14s}", " ".join(f"{v:5.2f}" for v in med))
    if args.png and shown is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        truth, model, extra = shown
        leads = [0, len(truth) // 2, len(truth) - 1]
        fig, axes = plt.subplots(3, len(leads), figsize=(3 * len(leads), 9))
        for col, k in enumerate(leads):
            for row, (name, f) in enumerate(
                [("truth", truth), ("model", model), ("extrap.", extra)]
            ):
                axes[row, col].imshow(f[k], vmin=0, vmax=max(1.0, float(truth.max())), cmap="Blues")
                axes[row, col].set_title(f"{name}, lead {k + 1}")
                axes[row, col].axis("off")
        fig.tight_layout()
        fig.savefig(args.png, dpi=80)
        print("panel:", args.png)


if __name__ == "__main__":
    main()
