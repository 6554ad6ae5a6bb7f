"""The training loop: recipe + data -> run directory.

One step = one global batch: the model rolls out every next-frame output (scheduled sampling
decides what it is fed), the loss is taken on all of them, and the optimizer updates once (twice
with `reverse_sequences`: the time-reversed sequence gets its own update, as in the CMS-LSTM
authors' code). Validation, logging and checkpoints happen after the step whose number is a
multiple of `val_every`, `log_every`, `checkpoint_every` (in that order), and at the end.

Stopping: at `max_steps`; at `max_time` seconds of this session (so a job that must end before a
cluster's wall-clock limit can set it, then `--resume` in the next job); or after `early_stopping`
validations without a lower validation loss. The end of a run always writes a checkpoint, the
final weights and the model card. When the caller's `stop()` says so (the command line on SIGINT
or SIGTERM), the run stops after the step in progress with a checkpoint only, for a resume, and
raises `StoppedError`. A run resumed from its checkpoint continues exactly: data order,
sampling masks and learning rates are functions of (seed, epoch, step), and the checkpoint holds
everything else (see `checkpoint.py`).

Events go to `metrics.jsonl` (`event`: "train" or "validation"; `eta` is the scheduled-sampling
probability, `eta_input` its encoder part under `reverse`) and to the `progress` callback, which
gets after each step `{"event", "step", "max_steps", "epoch", "loss", "lr", "eta", "it_s", "eta_s",
"val"}` (`eta_s`: estimated seconds left; `val`: the latest validation metrics or None), and
once a `warning` when validation takes most of the time.

Beside this module: `augment` (windows as trained on), `batches`, `step` (the update),
`running_loss`, `selection` (validation, best weights), `checkpoint` and `outputs`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from stforecast.config import Recipe
from stforecast.devices import describe_device
from stforecast.errors import ConfigError, InputError, StoppedError
from stforecast.models.memory import TooLargeError, check_fits, meta_build, training_bytes
from stforecast.models.registry import build_from_config
from stforecast.training import distributed, outputs, sampling, seeding, warmstart
from stforecast.training.augment import splits
from stforecast.training.batches import Batches
from stforecast.training.checkpoint import load_checkpoint, save_checkpoint
from stforecast.training.metrics_log import MetricsLog, utc_now
from stforecast.training.objective import area_term, balance_levels, check_guide
from stforecast.training.running_loss import RunningLoss, TrainingError
from stforecast.training.schedules import learning_rate
from stforecast.training.selection import Selection, selection_event
from stforecast.training.step import Stepper

if TYPE_CHECKING:
    from stforecast.training.datasets import TrainingData

__all__ = ["Progress", "Trainer", "TrainingError", "train"]

Tensor = torch.Tensor
Progress = Callable[[dict[str, Any]], None]


def _config_key(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, default=str)


@dataclass
class _Session:
    """This process's share of the run (a resumed run starts a new session)."""

    start: float  # time.monotonic() at its start
    start_step: int
    patience: int | None  # early stopping, when the run validates
    running: RunningLoss
    last_logged: float | None = None  # the latest mean loss written to metrics.jsonl
    last_loss: float | None = None  # the latest step's loss, as reported to `progress`
    data_s: float = 0.0  # waiting for batches

    def elapsed(self, before: float) -> float:
        """Training time over all sessions, `before` being that of the earlier ones."""
        return before + time.monotonic() - self.start

    def it_s(self, step: int) -> float:
        return (step - self.start_step) / max(time.monotonic() - self.start, 1e-9)


class Trainer:
    """One training run in this process: its parts, its position, the loop and its end."""

    def __init__(
        self,
        recipe: Recipe,
        run_dir: Path,
        data: TrainingData,
        ctx: distributed.Context,
        device: torch.device,
        progress: Progress | None,
        stop: Callable[[], bool] | None = None,
    ) -> None:
        self.recipe, self.cfg = recipe, recipe.train
        self.stop = stop  # polled between steps (rank 0 decides)
        self.run_dir, self.data, self.ctx, self.device = run_dir, data, ctx, device
        self.progress = progress if ctx.main else None
        cfg, output_frames = self.cfg, int(data.output_frames)
        guide = check_guide(recipe.model.options.get("guidance", False), data.contract)
        self.guided = bool(guide)
        train, validation = splits(data.train, data.validation, cfg, guide, output_frames)
        self.batches = Batches(train, cfg, ctx, device)
        self.sampling_steps = cfg.sampling_steps or sampling.default_steps(cfg.max_steps)

        shape = {
            "in_channels": int(data.in_channels),
            "frame_size": tuple(int(s) for s in data.frame_size),
        }
        config = recipe.model.model_dump() | shape
        try:
            need = training_bytes(
                meta_build(config), max(1, cfg.batch_size // ctx.world_size),
                int(data.input_frames), output_frames,
            )  # fmt: skip
            check_fits(sum(need.values()), "one training step", device)
            seeding.seed_everything(cfg.seed)  # the initial weights follow the seed
            self.net = warmstart.load(build_from_config(config), cfg.init)
        except TooLargeError as err:
            raise ConfigError(str(err)) from None
        except ValueError as err:
            raise ConfigError(f"[model]: {err}") from None
        levels = balance_levels(data.contract) if cfg.balanced else None
        self.stepper = Stepper(self.net, cfg, ctx, device, levels, area_term(cfg, data.contract))
        self.selection = Selection(
            self.net,
            validation,
            cfg=cfg,
            ctx=ctx,
            device=device,
            output_frames=output_frames,
            autocast=self.stepper.autocast,
            run_dir=run_dir,
            event=selection_event(cfg.select, data.contract),
        )
        self.log = MetricsLog(run_dir, enabled=False, tensorboard=False)  # opened by `run`
        # the position in the run, saved in checkpoints
        self.step = 0
        self.epoch = 0
        self.position = 0  # global batches of this epoch done
        self.elapsed_before = 0.0
        self.resumed_from: int | None = None
        self._epoch_batches: Iterator[dict[str, Any]] | None = None

    # ------------------------------------------------------------------ schedules and state
    def lr_at(self, step: int) -> float:
        cfg = self.cfg
        return learning_rate(
            step, lr=cfg.lr, max_steps=cfg.max_steps, schedule=cfg.schedule, min_lr=cfg.min_lr
        )

    def eta_at(self, step: int) -> tuple[float, float]:
        return sampling.probabilities(self.cfg.scheduled_sampling, step, self.sampling_steps)

    @property
    def checkpoint_path(self) -> Path:
        return outputs.checkpoint_path(self.run_dir)

    def state(self, elapsed: float) -> dict[str, Any]:
        """The checkpoint of the run at this step (see `checkpoint.py` for the keys)."""
        eta, eta_in = self.eta_at(self.step)
        lr = self.lr_at(self.step)
        return {
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
            "train_size": self.batches.train_size,
            **self.stepper.state(),
            "scheduler": {"schedule": self.cfg.schedule, "step": self.step, "lr": lr},
            "sampling": {
                "kind": self.cfg.scheduled_sampling,
                "steps": self.sampling_steps,
                "eta": eta,
                "eta_input": eta_in,
            },
            **self.selection.state(),
            "rng": seeding.rng_state(),
            "elapsed_s": elapsed,
            "world_size": self.ctx.world_size,
            "architecture": self.net.config,
            "recipe": self.recipe.model_dump_json(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint, refusing one of another model or training split."""
        path = self.checkpoint_path
        if _config_key(state["architecture"]) != _config_key(self.net.config):
            raise ConfigError(
                f"{path}: the checkpoint's model differs from the recipe's [model] and data "
                f"shapes ({state['architecture']} vs {self.net.config})"
            )
        train_size = self.batches.train_size
        if state["train_size"] != train_size:
            raise InputError(
                f"{path}: the training split had {state['train_size']} sequences, now "
                f"{train_size}; resuming exactly needs the same data"
            )
        self.stepper.load(state)
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        self.selection.load(state)
        self.elapsed_before = float(state["elapsed_s"])
        seeding.set_rng_state(state["rng"])
        self.resumed_from = self.step

    def save_checkpoint(self, elapsed: float) -> None:
        if self.ctx.main:
            save_checkpoint(self.checkpoint_path, self.state(elapsed))

    # ------------------------------------------------------------------ one step
    def next_batch(self) -> dict[str, Any] | None:
        """The next batch of the epoch, opening the next epoch when this one is done; None at
        the end of an epoch (the caller checks its stopping rules before the next one)."""
        if self._epoch_batches is None:
            if self.position >= self.batches.per_epoch:
                self.epoch, self.position = self.epoch + 1, 0
            self._epoch_batches = iter(self.batches.loader(self.epoch, self.position))
        batch = next(self._epoch_batches, None)
        if batch is None:
            self._epoch_batches, self.position = None, self.batches.per_epoch
        return batch

    def train_step(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor | None, float]:
        """Draw this step's sampling masks and update: (loss, reversed loss or None, lr)."""
        cfg = self.cfg
        inputs, targets, coverage, guide = self.batches.to_device(batch)
        mask, input_mask = sampling.masks(
            cfg.scheduled_sampling,
            self.step,
            sampling_steps=self.sampling_steps,
            seed=cfg.seed,
            global_batch=self.batches.global_batch,
            rows=self.batches.rows,
            input_frames=inputs.shape[1],
            output_frames=targets.shape[1],
        )
        mask = None if mask is None else mask.to(self.device)
        input_mask = None if input_mask is None else input_mask.to(self.device)
        lr = self.lr_at(self.step)
        loss, loss_rev = self.stepper.step(inputs, targets, coverage, mask, input_mask, lr, guide)
        return loss, loss_rev, lr

    # ------------------------------------------------------------------ the run
    def run(self, resume: bool) -> dict[str, Any]:
        ctx = self.ctx
        if self.checkpoint_path.exists():
            if not resume:
                raise ConfigError(
                    f"{self.run_dir} already holds a training run; resume it or use another "
                    "run directory"
                )
            self.restore(load_checkpoint(self.checkpoint_path))
        ctx.barrier()  # every rank has read the checkpoint before rank 0 writes anything
        if ctx.main:
            self.log = MetricsLog(self.run_dir, enabled=True, tensorboard=self.cfg.tensorboard)
            # a fresh run: no best weights of an earlier attempt
            outputs.ready(self.run_dir, self.recipe, fresh=self.resumed_from is None)
            self.log.truncate(self.step)
        try:
            return self.loop()
        finally:
            self.log.close()

    def loop(self) -> dict[str, Any]:
        session = _Session(
            start=time.monotonic(),
            start_step=self.step,
            patience=self.cfg.early_stopping if self.selection.enabled else None,
            running=RunningLoss(self.device),
        )
        if self.guided and self.step == 0 and self.selection.enabled:  # the extrapolation itself
            self.selection.scheduled(0, self.epoch, self.log)
        try:
            while (stopped := self.stop_reason(session)) is None:
                waited = time.monotonic()
                batch = self.next_batch()
                session.data_s += time.monotonic() - waited
                if batch is None:
                    continue
                eta, eta_in = self.eta_at(self.step)
                loss, loss_rev, lr = self.train_step(batch)
                self.step += 1
                self.position += 1
                session.running.add(loss, loss_rev)
                self.after_step(session, loss, lr, eta, eta_in)
        finally:
            self._epoch_batches = None  # let the loader's workers go
        if stopped == "stopped":  # asked to: resumable as after any step, no final outputs
            self.save_checkpoint(session.elapsed(self.elapsed_before))
            self.ctx.barrier()  # no rank ends (and makes torchrun stop the others) before it
            raise StoppedError(
                f"training stopped after step {self.step} of {self.cfg.max_steps}; "
                f"{self.checkpoint_path} holds it: resume to continue"
            )
        return self.wind_up(session, stopped)

    def stop_reason(self, session: _Session) -> str | None:
        """Why the run stops before the next step, or None to go on."""
        cfg = self.cfg
        if self.stop is not None and self.ctx.agree(self.stop(), self.device):
            return "stopped"
        if self.step >= cfg.max_steps:
            return "max_steps"
        if session.patience is not None and self.selection.stale >= session.patience:
            return "early_stopping"
        if cfg.max_time is not None and self.ctx.agree(
            time.monotonic() - session.start >= cfg.max_time, self.device
        ):
            return "max_time"
        return None

    def after_step(
        self, session: _Session, loss: Tensor, lr: float, eta: float, eta_in: float
    ) -> None:
        """Log, validate, checkpoint (each when its step comes) and report progress."""
        cfg = self.cfg
        it_s = session.it_s(self.step)
        val = None
        if self.step % cfg.log_every == 0:
            elapsed = session.elapsed(self.elapsed_before)
            session.last_logged = self.log_train(session.running, lr, eta, eta_in, it_s, elapsed)
        if self.selection.enabled and self.step % cfg.val_every == 0:
            session.running.check_finite(self.ctx, self.step)
            val = self.selection.scheduled(self.step, self.epoch, self.log)
            busy = time.monotonic() - session.start
            self.selection.check_share(self.step - session.start_step, busy, self.log)
        if self.step % cfg.checkpoint_every == 0:
            session.running.check_finite(self.ctx, self.step)
            self.save_checkpoint(session.elapsed(self.elapsed_before))
        if self.progress is not None:
            session.last_loss = float(loss)
            event = "validation" if val is not None else "step"
            eta_s = self.eta_seconds(it_s, time.monotonic() - session.start)
            report = self.event(event, session.last_loss, lr, eta, it_s, eta_s, self.selection.last)
            if self.selection.warning is not None:
                report["warning"], self.selection.warning = self.selection.warning, None
            self.progress(report)

    def wind_up(self, session: _Session, stopped: str) -> dict[str, Any]:
        """The end of a run: the last log record, the final validation, checkpoint, weights and
        card, and the `done` event."""
        if session.running.steps:
            lr = self.lr_at(self.step - 1)
            eta, eta_in = self.eta_at(self.step - 1)
            it_s = session.it_s(self.step)
            elapsed = session.elapsed(self.elapsed_before)
            session.last_logged = self.log_train(session.running, lr, eta, eta_in, it_s, elapsed)
        final = self.selection.final(self.step, self.epoch, self.log)
        total = session.elapsed(self.elapsed_before)
        self.save_checkpoint(total)
        summary = self.finish(
            stopped, final, total, time.monotonic() - session.start, session.last_logged
        )
        self.ctx.barrier()
        if self.progress is not None:
            last = self.step - 1 if self.step > session.start_step else self.step
            loss = session.last_logged if session.last_logged is not None else session.last_loss
            loss = float("nan") if loss is None else loss
            lr, eta = self.lr_at(last), self.eta_at(last)[0]
            event = self.event("done", loss, lr, eta, summary["it_s"], 0.0, final)
            self.progress({**event, "stopped": stopped})
        summary["data_wait_fraction"] = session.data_s / max(time.monotonic() - session.start, 1e-9)
        return summary

    # ------------------------------------------------------------------ reports
    def event(
        self,
        kind: str,
        loss: float,
        lr: float,
        eta: float,
        it_s: float,
        eta_s: float,
        val: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """A `progress` event (see the module docstring)."""
        return {"event": kind, "step": self.step, "max_steps": self.cfg.max_steps,
                "epoch": self.epoch, "loss": loss, "lr": lr, "eta": eta, "it_s": it_s,
                "eta_s": eta_s, "val": val}  # fmt: skip

    def eta_seconds(self, it_s: float, session: float) -> float:
        """Seconds left until `max_steps`, or until `max_time` when that comes first."""
        left = (self.cfg.max_steps - self.step) / max(it_s, 1e-9)
        if self.cfg.max_time is not None:
            left = min(left, max(self.cfg.max_time - session, 0.0))
        return left

    def log_train(
        self,
        running: RunningLoss,
        lr: float,
        eta: float,
        eta_in: float,
        it_s: float,
        elapsed: float,
    ) -> float | None:
        """Write the mean global loss since the last log record; returns it."""
        running.check_finite(self.ctx, self.step)
        if not running.steps:
            return None
        loss, loss_reversed = running.take(self.ctx)
        record: dict[str, Any] = {
            "event": "train",
            "step": self.step,
            "epoch": self.epoch,
            "loss": loss,
            "lr": lr,
            "eta": eta,
        }
        if self.cfg.scheduled_sampling == "reverse":
            record["eta_input"] = eta_in
        if self.cfg.reverse_sequences:
            record["loss_reversed"] = loss_reversed
        record.update({"it_s": it_s, "elapsed_s": elapsed, "time": utc_now()})
        self.log.write(record)
        return loss

    def finish(
        self,
        stopped: str,
        final: dict[str, Any] | None,
        total: float,
        session: float,
        loss: float | None,
    ) -> dict[str, Any]:
        """Write the final weights and the card (rank 0); returns the summary of the run."""
        start_step = self.resumed_from or 0
        it_s = (self.step - start_step) / max(session, 1e-9)
        global_batch = self.batches.global_batch
        training = {
            "steps": self.step,
            "epochs": self.epoch + self.position / self.batches.per_epoch,
            "stopped": stopped,
            "wall_time_s": total,
            "device": describe_device(self.device),
            "precision": self.stepper.precision,
            "world_size": self.ctx.world_size,
            "global_batch": global_batch,
            "sequences_seen": self.step * global_batch,
            "recipe": "recipe.toml",
        }
        best = self.selection.best
        if self.ctx.main:
            outputs.write_final(
                self.run_dir,
                net=self.net,
                data=self.data,
                recipe=self.recipe,
                training=training,
                final=final,
                best=self.selection.best_record(),
            )
        return {
            "run_dir": str(self.run_dir),
            "steps": self.step,
            "stopped": stopped,
            "loss": loss,
            "val_loss": None if final is None else final["loss"],
            "val_mse": None if final is None else final["mse"],
            "best_val_loss": None if best is None else best["loss"],
            "best_step": None if best is None else best["step"],
            "wall_time_s": total,
            "it_s": it_s,
            "epochs": training["epochs"],
            "parameters": sum(p.numel() for p in self.net.parameters()),
            "device": training["device"],
            "world_size": self.ctx.world_size,
            "resumed_from": self.resumed_from,
            "validation": final,
        }


def train(
    recipe: Recipe,
    run_dir: str | Path,
    *,
    data: TrainingData,
    resume: bool = False,
    progress: Progress | None = None,
    stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Train `recipe`'s model on `data` into `run_dir`; returns a summary dict.

    `resume=True` continues from `run_dir/checkpoints/last.pt` when it exists (exactly: same
    weights as an uninterrupted run in deterministic mode), and starts afresh otherwise; without
    it, a run directory that already holds a checkpoint is refused. Under `torchrun` each process
    calls this; rank 0 writes the files and reports progress. `stop` is polled before each step:
    once it returns True the run checkpoints and raises `StoppedError` (resume to go on).
    """
    cfg = recipe.train
    run_dir = Path(run_dir)
    ctx, device = distributed.setup(cfg.device)
    with seeding.deterministic_mode(cfg.deterministic):
        return Trainer(recipe, run_dir, data, ctx, device, progress, stop).run(resume)
