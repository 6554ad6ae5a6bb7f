"""What a training run writes into its run directory, all through `stforecast.rundir`: the
directory readied at the start, the best weights whenever validation improves, and at the end the
final weights and the model card. Rank 0 alone calls these; checkpoints (`checkpoint`) and
`metrics.jsonl` (`metrics_log`) have their own modules.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stforecast.config import Recipe
from stforecast.errors import writing
from stforecast.models import SequenceModel
from stforecast.rundir.card import build_card, write_card, write_weights
from stforecast.rundir.layout import BEST, CHECKPOINTS, LAST, WEIGHTS, write_recipe
from stforecast.training.checkpoint import remove_stale

if TYPE_CHECKING:
    from stforecast.training.datasets import TrainingData


def checkpoint_path(run_dir: Path) -> Path:
    """Where the run's resumable checkpoint lives."""
    return run_dir / CHECKPOINTS / LAST


def ready(run_dir: Path, recipe: Recipe, *, fresh: bool) -> None:
    """Make `checkpoints/`, sweep the temporary files a killed writer left, drop the best weights
    of an earlier attempt when the run starts afresh, and write the resolved recipe."""
    ckpt_dir = run_dir / CHECKPOINTS
    with writing(run_dir, "write the run"):  # read-only, full, /proc: exit 3 naming the run
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        remove_stale(ckpt_dir)
        remove_stale(run_dir)
        if fresh:
            (ckpt_dir / BEST).unlink(missing_ok=True)
        write_recipe(run_dir, recipe)


def save_best(run_dir: Path, net: SequenceModel, step: int, loss: float) -> None:
    """The weights of the best validation so far, with its step and loss as metadata."""
    meta = {"step": str(step), "val_loss": repr(loss)}
    write_weights(run_dir / CHECKPOINTS / BEST, net, meta)


def write_final(
    run_dir: Path,
    *,
    net: SequenceModel,
    data: TrainingData,
    recipe: Recipe,
    training: dict[str, Any],
    final: dict[str, Any] | None,
    best: dict[str, Any] | None,
) -> None:
    """The final weights and the model card (`best`: the best validation's metrics and step,
    None when the run had no validation)."""
    sha = write_weights(run_dir / WEIGHTS, net)
    best_file = run_dir / CHECKPOINTS / BEST
    best_sha = hashlib.sha256(best_file.read_bytes()).hexdigest() if best is not None else None
    card = build_card(
        net=net,
        data=data,
        recipe=recipe,
        weights_sha256=sha,
        best_weights=f"{CHECKPOINTS}/{BEST}" if best is not None else None,
        best_sha256=best_sha,
        training=training,
        metrics={
            "split": "validation",
            "units": "model (transformed) units",
            "final": final,
            "best": best,
        },
    )
    write_card(run_dir, card)
