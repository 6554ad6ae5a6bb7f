"""Train the shipped radar nowcaster from its recipe and write it into the package.

    python tools/ship_model.py                 # train recipes/radar.toml, blend, ship
    python tools/ship_model.py --run runs/radar --no-train   # ship a run already trained

1. `stforecast train recipes/radar.toml --out RUN` (needs ../shared/data and the [pysteps]
   extra: the model is guided by S-PROG);
2. `stforecast blend -m RUN`: the weights of the model against the extrapolation, lead by lead,
   fitted on the recipe's validation blocks;
3. `stforecast/pretrained/radar/`: the selected weights as `model.safetensors` and the run's
   card, made portable: no paths of this machine (the prepared store's, the data files' are
   reduced to their names), `input.accepts` (any precipitation variable, by any name) and a
   `pretrained` section naming the recipe and this command.

Same recipe, same seed, same card: what differs between two runs is the creation time, the
wall times and the weights file's sha256 (its tensors are bit-identical; safetensors writes the
metadata entries in a varying order). Checked on this machine (docs/pretrained.md).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "radar.toml"
TARGET = ROOT / "stforecast" / "pretrained" / "radar"
CLI = [sys.executable, "-m", "stforecast"]
ACCEPTS = ["rate", "accumulation", "reflectivity"]


def portable(card: dict, weights: bytes) -> dict:
    """The run's card for the package: its selected weights as the only file, no local paths."""
    card = dict(card)
    selected = card["weights"].get("selected", "final")
    card["weights"] = {
        "file": "model.safetensors",
        "format": "safetensors",
        "sha256": hashlib.sha256(weights).hexdigest(),
        "selected": "final",  # the one file shipped: the run's selected weights
        "selected_by": card["weights"].get("selected_by"),
        "from_run": selected,  # which of the run's weights these are (best or final)
    }
    card["input"] = {**card["input"], "store": None, "accepts": ACCEPTS}
    training = dict(card.get("training") or {})
    training["data_checksums"] = [
        {**c, "path": Path(c["path"]).name} for c in training.get("data_checksums") or []
    ]
    training.pop("recipe", None)
    card["training"] = training
    card["pretrained"] = {
        "name": "radar",
        "recipe": "recipes/radar.toml",
        "command": "python tools/ship_model.py",
        "documentation": "docs/pretrained.md",
    }
    return card


def ship(run: Path) -> Path:
    from stforecast.rundir.card import read_card, write_card

    card = read_card(run)
    name = card["weights"].get("selected", "final")
    weights = run / ("checkpoints/best.safetensors" if name == "best" else "model.safetensors")
    data = weights.read_bytes()
    TARGET.mkdir(parents=True, exist_ok=True)
    (TARGET / "model.safetensors").write_bytes(data)
    write_card(TARGET, portable(card, data))
    return TARGET


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "radar")
    parser.add_argument("--no-train", action="store_true", help="ship --run as it is")
    args = parser.parse_args()
    if not args.no_train:
        if args.run.exists():
            shutil.rmtree(args.run)
        subprocess.run([*CLI, "train", RECIPE, "--out", args.run, "--quiet"], check=True)
    subprocess.run([*CLI, "blend", "-m", args.run], check=True)
    target = ship(args.run)
    size = (target / "model.safetensors").stat().st_size
    print(f"shipped {args.run} -> {target} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
