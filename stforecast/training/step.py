"""One optimiser step: the model as trained (objective, DDP, compile), the optimiser, mixed
precision, gradient clipping, and the normaliser that makes data-parallel gradients those of the
global batch.

Kept apart from the loop so that what an update does (and what of it a checkpoint must hold) is
in one place; the loop only decides when to step and with which learning rate and masks.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from stforecast.config import TrainConfig
from stforecast.errors import ConfigError
from stforecast.models import SequenceModel
from stforecast.training.distributed import Context
from stforecast.training.objective import Area, Objective, reverse_time

Tensor = torch.Tensor


def cpu_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX), the case where CPU
    autocast is faster than fp32 rather than an emulation several times slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def precision_on(precision: str, device: torch.device) -> str:
    """The precision a run gets on `device`: bf16 autocast on CUDA and on CPUs with native bf16,
    fp16 on CUDA only; anything else is refused (a silent fp32 run would mislead a benchmark)."""
    if precision == "fp32" or device.type == "cuda":
        return precision
    if device.type == "cpu" and precision == "bf16":
        if cpu_bf16():
            return precision
        raise ConfigError(
            "train.precision = 'bf16' needs a CPU with native bf16 (AVX-512 BF16 or AMX); "
            "this one has none: use 'fp32'"
        )
    raise ConfigError(
        f"train.precision = {precision!r} is not supported on {device.type}: "
        + ("use 'bf16' or 'fp32'" if device.type == "cpu" else "use 'fp32'")
    )


class Stepper:
    """The net, what wraps it for training, its optimiser, and one update."""

    def __init__(
        self,
        net: SequenceModel,
        cfg: TrainConfig,
        ctx: Context,
        device: torch.device,
        levels: tuple[float, ...] | None = None,
        area: Area | None = None,
    ) -> None:
        self.net, self.cfg, self.ctx, self.device = net, cfg, ctx, device
        net.to(device)
        self.precision = precision_on(cfg.precision, device)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        module: nn.Module = Objective(net, cfg.loss, levels, area)
        if ctx.distributed:
            ids = [device.index] if device.type == "cuda" else None
            module = DistributedDataParallel(module, device_ids=ids)
        if cfg.compile:
            module = torch.compile(module)
        self.module = module
        opt = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt(
            net.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
        )

    def autocast(self) -> contextlib.AbstractContextManager:
        """The mixed-precision context of the run (none in fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

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
        """One optimiser update on the objective's loss; returns that loss, detached."""
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

    def step(
        self,
        inputs: Tensor,
        targets: Tensor,
        coverage: Tensor | None,
        mask: Tensor | None,
        input_mask: Tensor | None,
        lr: float,
        guide: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """The updates of one step at rate `lr`: (loss, loss of the time-reversed sequence or
        None without `reverse_sequences`)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        norm = self.normalizer(inputs, targets, coverage)
        loss = self.update(inputs, targets, coverage, mask, input_mask, norm, guide)
        loss_rev = None
        if self.cfg.reverse_sequences:
            r_in, r_out, r_cov = reverse_time(inputs, targets, coverage)
            loss_rev = self.update(r_in, r_out, r_cov, mask, input_mask, norm)
        return loss, loss_rev

    def state(self) -> dict[str, Any]:
        """The checkpoint's `model`, `optimizer` and `scaler` entries."""
        return {
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
        }

    def load(self, state: dict[str, Any]) -> None:
        """Take back what `state` saved; the recipe's betas and weight decay win over the
        stored ones."""
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:
            group["betas"] = tuple(self.cfg.betas)
            group["weight_decay"] = self.cfg.weight_decay
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
