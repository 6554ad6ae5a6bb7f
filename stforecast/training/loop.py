"""The training loop: recipe + data -> run directory.

One step = one global batch: the model rolls out every next-frame output (scheduled sampling
decides what it is fed), the loss is taken on all of them, and the optimizer updates once (twice
with `reverse_sequences`: the time-reversed sequence gets its own update, as in the CMS-LSTM
authors' code). Validation, logging and checkpoints happen after the step whose number is a
multiple of `val_every`, `log_every`, `checkpoint_every` (in that order), and at the end.

Stopping: at `max_steps`; at `max_time` seconds of this session (so a job that must end before a
cluster's wall-clock limit can set it, then `--resume` in the next job); or after `early_stopping`
validations without a lower validation loss. The end of a run always writes a checkpoint, the
final weights and the model card. A run resumed from its checkpoint continues exactly: data order,
sampling masks and learning rates are functions of (seed, epoch, step), and the checkpoint holds
everything else (see `checkpoint.py`).

Events go to `metrics.jsonl` (`event`: "train" or "validation"; `eta` is the scheduled-sampling
probability, `eta_input` its encoder part under `reverse`) and to the `progress` callback, which
gets after each step `{"event", "step", "max_steps", "epoch", "loss", "lr", "eta", "it_s", "eta_s",
"val"}` (`eta_s`: estimated seconds left; `val`: the latest validation metrics or None).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from stforecast import models
from stforecast.config import Recipe
from stforecast.errors import ConfigError, InputError, StforecastError
from stforecast.rundir.card import build_card, write_card, write_weights
from stforecast.rundir.layout import BEST, CHECKPOINTS, LAST, WEIGHTS, write_recipe
from stforecast.training import distributed, order, sampling, seeding
from stforecast.training.checkpoint import load_checkpoint, remove_stale
from stforecast.training.checkpoint import save_checkpoint as _save_checkpoint
from stforecast.training.metrics_log import MetricsLog
from stforecast.training.objective import Objective, reverse_time
from stforecast.training.schedules import learning_rate
from stforecast.training.validation import validate

if TYPE_CHECKING:
    from stforecast.training.datasets import TrainingData

Tensor = torch.Tensor
Progress = Callable[[dict[str, Any]], None]


class TrainingError(StforecastError):
    """Training could not go on (the loss became NaN or infinite)."""


def _config_key(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, default=str)


class _Run:
    def __init__(
        self,
        recipe: Recipe,
        run_dir: Path,
        data: TrainingData,
        ctx: distributed.Context,
        device: torch.device,
        progress: Progress | None,
    ) -> None:
        self.recipe, self.cfg = recipe, recipe.train
        self.run_dir, self.data, self.ctx, self.device = run_dir, data, ctx, device
        self.progress = progress if ctx.main else None
        cfg = self.cfg
        self.t_in, self.t_out = int(data.input_frames), int(data.output_frames)
        self.global_batch = cfg.batch_size
        if cfg.batch_size % ctx.world_size:
            raise ConfigError(
                f"train.batch_size {cfg.batch_size} is the global batch and must be divisible by "
                f"the number of processes ({ctx.world_size})"
            )
        self.local_batch = cfg.batch_size // ctx.world_size
        self.rows = slice(ctx.rank * self.local_batch, (ctx.rank + 1) * self.local_batch)
        try:
            self.train_size = len(data.train)  # type: ignore[arg-type]
        except TypeError:
            raise ConfigError("the training split must be a map-style dataset") from None
        self.per_epoch = order.batches_per_epoch(self.train_size, cfg.batch_size)
        if self.per_epoch == 0:
            raise InputError(
                f"the training split has {self.train_size} sequences, fewer than one batch "
                f"(train.batch_size = {cfg.batch_size})"
            )
        validation = data.validation
        self.validation = validation if validation is not None and len(validation) else None
        self.sampling_steps = cfg.sampling_steps or sampling.default_steps(cfg.max_steps)

        seeding.seed_everything(cfg.seed)
        m = recipe.model
        try:
            self.net = models.build(
                m.name,
                in_channels=int(data.in_channels),
                frame_size=tuple(int(s) for s in data.frame_size),
                patch_size=m.patch_size,
                hidden_channels=m.hidden_channels,
                kernel_size=m.kernel_size,
                **m.options,
            )
        except ValueError as err:
            raise ConfigError(f"[model]: {err}") from None
        self.net.to(device)
        self.precision = cfg.precision if device.type == "cuda" else "fp32"
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        module: nn.Module = Objective(self.net, cfg.loss)
        if ctx.distributed:
            ids = [device.index] if device.type == "cuda" else None
            module = DistributedDataParallel(module, device_ids=ids)
        if cfg.compile:
            module = torch.compile(module)
        self.module = module
        opt = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt(
            self.net.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
        )
        self.log = MetricsLog(run_dir, enabled=False, tensorboard=False)  # opened by `run`
        # progress through the run
        self.step = 0
        self.epoch = 0
        self.position = 0
        self.best: dict[str, Any] | None = None
        self.stale = 0
        self.last_val: dict[str, Any] | None = None
        self.elapsed_before = 0.0
        self.resumed_from: int | None = None

    # ------------------------------------------------------------------ set-up and state
    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def lr_at(self, step: int) -> float:
        cfg = self.cfg
        return learning_rate(
            step, lr=cfg.lr, max_steps=cfg.max_steps, schedule=cfg.schedule, min_lr=cfg.min_lr
        )

    def eta_at(self, step: int) -> tuple[float, float]:
        return sampling.probabilities(self.cfg.scheduled_sampling, step, self.sampling_steps)

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINTS / LAST

    def state(self, elapsed: float) -> dict[str, Any]:
        eta, eta_in = self.eta_at(self.step)
        lr = self.lr_at(self.step)
        return {
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
            "train_size": self.train_size,
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "scheduler": {"schedule": self.cfg.schedule, "step": self.step, "lr": lr},
            "sampling": {
                "kind": self.cfg.scheduled_sampling,
                "steps": self.sampling_steps,
                "eta": eta,
                "eta_input": eta_in,
            },
            "best": self.best,
            "stale": self.stale,
            "last_validation": self.last_val,
            "rng": seeding.rng_state(),
            "elapsed_s": elapsed,
            "world_size": self.ctx.world_size,
            "architecture": self.net.config,
            "recipe": self.recipe.model_dump_json(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        path = self.checkpoint_path
        if _config_key(state["architecture"]) != _config_key(self.net.config):
            raise ConfigError(
                f"{path}: the checkpoint's model differs from the recipe's [model] and data "
                f"shapes ({state['architecture']} vs {self.net.config})"
            )
        if state["train_size"] != self.train_size:
            raise InputError(
                f"{path}: the training split had {state['train_size']} sequences, now "
                f"{self.train_size}; resuming exactly needs the same data"
            )
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # the recipe wins over the stored values
            group["betas"] = tuple(self.cfg.betas)
            group["weight_decay"] = self.cfg.weight_decay
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        self.best, self.stale = state["best"], state["stale"]
        self.last_val = state["last_validation"]
        self.elapsed_before = float(state["elapsed_s"])
        seeding.set_rng_state(state["rng"])
        self.resumed_from = self.step

    def save_checkpoint(self, elapsed: float) -> None:
        if self.ctx.main:
            _save_checkpoint(self.checkpoint_path, self.state(elapsed))

    # ------------------------------------------------------------------ data
    def loader(self) -> DataLoader:
        train = self.data.train
        if hasattr(train, "set_epoch"):
            train.set_epoch(self.epoch)
        batches = order.epoch_batches(
            self.train_size,
            self.global_batch,
            self.cfg.seed,
            self.epoch,
            self.ctx.rank,
            self.ctx.world_size,
        )[self.position :]
        return DataLoader(
            train,
            batch_sampler=batches,
            num_workers=self.cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=seeding.generator(self.cfg.seed, seeding.WORKERS, self.epoch),
        )

    def to_device(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor | None]:
        def move(t: Tensor) -> Tensor:
            return t.to(self.device, torch.float32, non_blocking=True)

        coverage = batch.get("coverage")
        return (
            move(batch["inputs"]),
            move(batch["targets"]),
            (None if coverage is None else move(coverage)),
        )

    # ------------------------------------------------------------------ one step
    def normalizer(self, inputs: Tensor, targets: Tensor, coverage: Tensor | None) -> Tensor:
        """What the local loss sum is divided by so that DDP's gradient average equals the
        gradient of the global batch's loss (mean over its weighted elements, or sum)."""
        world = self.ctx.world_size
        if self.cfg.reduction == "sum":
            return torch.tensor(1.0 / world, device=self.device)
        B, T = inputs.shape[0], inputs.shape[1] + targets.shape[1]
        if coverage is None:
            count = B * (T - 1) * targets[0, 0].numel()
            return torch.tensor(float(count), device=self.device)
        channels = targets.shape[2]
        weight = coverage[:, 1:].sum() * (channels / coverage.shape[2])
        total = self.ctx.sum(weight.detach().clone())
        return (total / world).clamp_min(1e-12)

    def update(self, *args: Tensor | None) -> Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss = self.module(*args)
        clip = self.cfg.grad_clip
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), clip)
            self.optimizer.step()
        return loss.detach().float()

    def train_step(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor | None, float]:
        cfg = self.cfg
        inputs, targets, coverage = self.to_device(batch)
        mask, input_mask = sampling.masks(
            cfg.scheduled_sampling,
            self.step,
            sampling_steps=self.sampling_steps,
            seed=cfg.seed,
            global_batch=self.global_batch,
            rows=self.rows,
            input_frames=inputs.shape[1],
            output_frames=targets.shape[1],
        )
        mask = None if mask is None else mask.to(self.device)
        input_mask = None if input_mask is None else input_mask.to(self.device)
        lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        norm = self.normalizer(inputs, targets, coverage)
        loss = self.update(inputs, targets, coverage, mask, input_mask, norm)
        loss_rev = None
        if cfg.reverse_sequences:
            r_in, r_out, r_cov = reverse_time(inputs, targets, coverage)
            loss_rev = self.update(r_in, r_out, r_cov, mask, input_mask, norm)
        return loss, loss_rev, lr

    # ------------------------------------------------------------------ validation
    def run_validation(self) -> dict[str, Any] | None:
        if self.validation is None:
            return None
        metrics = validate(
            self.net,
            self.validation,
            batch_size=self.global_batch,
            output_frames=self.t_out,
            loss=self.cfg.loss,
            reduction=self.cfg.reduction,
            device=self.device,
            ctx=self.ctx,
            max_batches=self.cfg.val_batches,
            num_workers=self.cfg.num_workers,
            autocast=self.autocast,
        )
        return None if metrics is None else {"step": self.step, **metrics}

    def scheduled_validation(self) -> dict[str, Any] | None:
        metrics = self.run_validation()
        if metrics is None:
            return None
        improved = self.best is None or metrics["loss"] < self.best["loss"]
        if improved:
            self.best = {"loss": metrics["loss"], "step": self.step, "metrics": metrics}
            self.stale = 0
            if self.ctx.main:
                meta = {"step": str(self.step), "val_loss": repr(metrics["loss"])}
                write_weights(self.run_dir / CHECKPOINTS / BEST, self.net, meta)
        else:
            self.stale += 1
        self.last_val = metrics
        self.log.write(
            {
                "event": "validation",
                "step": self.step,
                "epoch": self.epoch,
                **metrics,
                "improved": improved,
                "best_loss": self.best["loss"] if self.best else None,
                "stale": self.stale,
                "time": _now(),
            }
        )
        return metrics

    # ------------------------------------------------------------------ the run
    def run(self, resume: bool) -> dict[str, Any]:
        ctx = self.ctx
        ckpt_dir = self.run_dir / CHECKPOINTS
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
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            remove_stale(ckpt_dir)
            remove_stale(self.run_dir)
            if self.resumed_from is None:  # a fresh run: no best weights of an earlier attempt
                (ckpt_dir / BEST).unlink(missing_ok=True)
            write_recipe(self.run_dir, self.recipe)
            self.log.truncate(self.step)
        try:
            return self.loop()
        finally:
            self.log.close()

    def loop(self) -> dict[str, Any]:
        ctx, cfg = self.ctx, self.cfg
        start = time.monotonic()
        start_step = self.step
        patience = cfg.early_stopping if self.validation is not None else None
        zero = torch.zeros((), device=self.device)
        window = {"loss": zero.clone(), "rev": zero.clone(), "steps": 0, "bad": zero.clone()}
        stopped = "max_steps"
        batches = None
        loss_value = None
        last_logged: float | None = None

        def elapsed() -> float:
            return self.elapsed_before + time.monotonic() - start

        while True:
            if self.step >= cfg.max_steps:
                stopped = "max_steps"
                break
            if patience is not None and self.stale >= patience:
                stopped = "early_stopping"
                break
            if cfg.max_time is not None and ctx.agree(
                time.monotonic() - start >= cfg.max_time, self.device
            ):
                stopped = "max_time"
                break
            if batches is None:
                if self.position >= self.per_epoch:
                    self.epoch, self.position = self.epoch + 1, 0
                batches = iter(self.loader())
            batch = next(batches, None)
            if batch is None:
                batches, self.position = None, self.per_epoch
                continue
            eta, eta_in = self.eta_at(self.step)
            loss, loss_rev, lr = self.train_step(batch)
            self.step += 1
            self.position += 1
            window["loss"] += loss
            window["bad"] += (~torch.isfinite(loss)).float()
            if loss_rev is not None:
                window["rev"] += loss_rev
                window["bad"] += (~torch.isfinite(loss_rev)).float()
            window["steps"] += 1

            it_s = (self.step - start_step) / max(time.monotonic() - start, 1e-9)
            val = None
            if self.step % cfg.log_every == 0:
                last_logged = self.flush_window(window, lr, eta, eta_in, it_s, elapsed())
            if self.validation is not None and self.step % cfg.val_every == 0:
                self.check_finite(window)
                val = self.scheduled_validation()
            if self.step % cfg.checkpoint_every == 0:
                self.check_finite(window)
                self.save_checkpoint(elapsed())
            if self.progress is not None:
                loss_value = float(loss)
                self.progress(
                    {
                        "event": "validation" if val is not None else "step",
                        "step": self.step,
                        "max_steps": cfg.max_steps,
                        "epoch": self.epoch,
                        "loss": loss_value,
                        "lr": lr,
                        "eta": eta,
                        "it_s": it_s,
                        "eta_s": self._eta_seconds(it_s, time.monotonic() - start),
                        "val": self.last_val,
                    }
                )

        if window["steps"]:
            lr = self.lr_at(self.step - 1)
            eta, eta_in = self.eta_at(self.step - 1)
            it_s = (self.step - start_step) / max(time.monotonic() - start, 1e-9)
            last_logged = self.flush_window(window, lr, eta, eta_in, it_s, elapsed())
        final = self.last_val
        if self.validation is not None and (final is None or final.get("step") != self.step):
            final = self.run_validation()  # reported, but does not change best / early stopping
            if final is not None:
                self.last_val = final
                self.log.write(
                    {"event": "validation", "step": self.step, "epoch": self.epoch, **final}
                    | {"final": True, "time": _now()}
                )
        total = elapsed()
        self.save_checkpoint(total)
        summary = self.finish(stopped, final, total, time.monotonic() - start, last_logged)
        ctx.barrier()
        if self.progress is not None:
            last = self.step - 1 if self.step > start_step else self.step
            loss = last_logged if last_logged is not None else loss_value
            self.progress(
                {
                    "event": "done",
                    "step": self.step,
                    "max_steps": cfg.max_steps,
                    "epoch": self.epoch,
                    "loss": float("nan") if loss is None else loss,
                    "lr": self.lr_at(last),
                    "eta": self.eta_at(last)[0],
                    "it_s": summary["it_s"],
                    "eta_s": 0.0,
                    "val": final,
                    "stopped": stopped,
                }
            )
        return summary

    def _eta_seconds(self, it_s: float, session: float) -> float:
        left = (self.cfg.max_steps - self.step) / max(it_s, 1e-9)
        if self.cfg.max_time is not None:
            left = min(left, max(self.cfg.max_time - session, 0.0))
        return left

    def check_finite(self, window: dict[str, Any]) -> None:
        bad = self.ctx.max(window["bad"].clone())
        if float(bad) > 0:
            raise TrainingError(
                f"training diverged before step {self.step}: the loss is not finite. Lower "
                "train.lr, set train.grad_clip, or check the data for NaN; the last checkpoint "
                "is intact."
            )

    def flush_window(
        self, window: dict[str, Any], lr: float, eta: float, eta_in: float, it_s: float, el: float
    ) -> float | None:
        """Write the mean global loss since the last log record; returns it."""
        self.check_finite(window)
        if not window["steps"]:
            return None
        packed = self.ctx.sum(torch.stack([window["loss"], window["rev"]]).clone())
        packed = packed / (self.ctx.world_size * window["steps"])
        loss = float(packed[0])
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
            record["loss_reversed"] = float(packed[1])
        record.update({"it_s": it_s, "elapsed_s": el, "time": _now()})
        self.log.write(record)
        window.update(loss=torch.zeros_like(window["loss"]), rev=torch.zeros_like(window["rev"]))
        window["steps"] = 0
        return loss

    def finish(
        self,
        stopped: str,
        final: dict[str, Any] | None,
        total: float,
        session: float,
        loss: float | None,
    ) -> dict[str, Any]:
        start_step = self.resumed_from or 0
        it_s = (self.step - start_step) / max(session, 1e-9)
        training = {
            "steps": self.step,
            "epochs": self.epoch + self.position / self.per_epoch,
            "stopped": stopped,
            "wall_time_s": total,
            "device": distributed.describe_device(self.device),
            "precision": self.precision,
            "world_size": self.ctx.world_size,
            "global_batch": self.global_batch,
            "sequences_seen": self.step * self.global_batch,
            "recipe": "recipe.toml",
        }
        best = None if self.best is None else {**self.best["metrics"], "step": self.best["step"]}
        if self.ctx.main:
            sha = write_weights(self.run_dir / WEIGHTS, self.net)
            card = build_card(
                net=self.net,
                data=self.data,
                recipe=self.recipe,
                weights_sha256=sha,
                best_weights=f"{CHECKPOINTS}/{BEST}" if self.best is not None else None,
                training=training,
                metrics={
                    "split": "validation",
                    "units": "model (transformed) units",
                    "final": final,
                    "best": best,
                },
            )
            write_card(self.run_dir, card)
        return {
            "run_dir": str(self.run_dir),
            "steps": self.step,
            "stopped": stopped,
            "loss": loss,
            "val_loss": None if final is None else final["loss"],
            "val_mse": None if final is None else final["mse"],
            "best_val_loss": None if self.best is None else self.best["loss"],
            "best_step": None if self.best is None else self.best["step"],
            "wall_time_s": total,
            "it_s": it_s,
            "epochs": training["epochs"],
            "parameters": sum(p.numel() for p in self.net.parameters()),
            "device": training["device"],
            "world_size": self.ctx.world_size,
            "resumed_from": self.resumed_from,
            "validation": final,
        }


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def train(
    recipe: Recipe,
    run_dir: str | Path,
    *,
    data: TrainingData,
    resume: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train `recipe`'s model on `data` into `run_dir`; returns a summary dict.

    `resume=True` continues from `run_dir/checkpoints/last.pt` when it exists (exactly: same
    weights as an uninterrupted run in deterministic mode), and starts afresh otherwise; without
    it, a run directory that already holds a checkpoint is refused. Under `torchrun` each process
    calls this; rank 0 writes the files and reports progress.
    """
    cfg = recipe.train
    run_dir = Path(run_dir)
    ctx, device = distributed.setup(cfg.device)
    with seeding.deterministic_mode(cfg.deterministic):
        return _Run(recipe, run_dir, data, ctx, device, progress).run(resume)
