"""Cases to score: one forecast each, with its inputs and its truth, all in data units.

Cases come from one of three places, all scored by the same `Scores` in data units:

- the **test split** of a prepared store (the run's own, or a recipe's): windows read from the
  store, the model run on the normalised inputs exactly as in training, the truth and the
  baselines' inputs de-normalised, no-coverage pixels excluded;
- a **hindcast** over an archive: at every reference time in `[start, end]` (every `every`),
  the forecast is made by `forecasting`'s plan, the code path of `stforecast forecast`, and
  compared with the archive's frames at the valid times (processed as the model card says);
- the regenerated **Moving MNIST** test set for Moving MNIST runs (uint8 SSIM protocol).

Cases are generated lazily, so that memory stays bounded however many there are.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stforecast.config import EvaluateConfig, Recipe
from stforecast.data import transforms
from stforecast.data.contract import DataContract
from stforecast.data.windows import fmt
from stforecast.errors import ConfigError, InputError

Progress = Callable[[str, int, int], None]


@dataclass
class Case:
    """One forecast to score, first channel only, physical units, NaN = missing:
    `inputs` (T_in, H, W), `truth` and `model` (T_out, H, W)."""

    title: str
    inputs: np.ndarray
    truth: np.ndarray
    model: np.ndarray


@dataclass
class CaseSource:
    """The cases of one evaluation and what `metrics.json` says about where they came from."""

    cases: Iterator[Case]
    total: int
    data_range: float
    leads: int
    data: dict[str, Any]


def choose_cases(
    run: Any,
    recipe: Recipe | None,
    opts: EvaluateConfig,
    *,
    sources: list[str] | None,
    start: str | None,
    end: str | None,
    every: int | None,
    steps: int | None,
    skipped: list[dict[str, str]],
    progress: Progress | None,
    archive: dict[str, Any] | None = None,
) -> CaseSource:
    """`sources` (raw files) -> hindcast; else `recipe` (or the run's own recipe) -> its
    prepared store's test split (prepared into the cache from its sources if needed), or the
    Moving MNIST test set. `archive`: what the hindcast's files do not say, as the fields of a
    `[[data.archives]]` entry (`data.archives.declare`)."""
    card = run.card
    contract = run.contract
    mnist = contract.variable == "moving_mnist"
    step = contract.time_step_seconds
    if sources:
        if mnist:
            raise ConfigError("a Moving MNIST run is evaluated on its test set, not on files")
        from stforecast.rundir.load import check_contract

        check_contract(card, run.path)
        cases, total, data_range = hindcast_cases(
            run, list(sources), start=start, end=end, every=every, steps=steps,
            skipped=skipped, archive=archive,
        )  # fmt: skip
        leads = steps or contract.output_frames
        data = {"mode": "hindcast", "sources": [str(s) for s in sources],
                "start": start, "end": end, "every_seconds": every or step}  # fmt: skip
        if archive:
            data["archive"] = dict(archive)
        return CaseSource(cases, total, data_range, leads, data)
    if archive:
        raise ConfigError("an archive declaration (--archive) applies to a hindcast on DATA files")
    if recipe is not None and recipe.data.moving_mnist:
        cases, total = mnist_cases(run, recipe, opts)
        data = {"mode": "Moving MNIST (regenerated)", "sequences": total}
        return CaseSource(cases, total, 1.0, contract.output_frames, data)
    if recipe is not None:
        if start or end or every:
            raise ConfigError("start, end and every need archive files to hindcast on, not a store")
        store = _store_for(recipe, progress)
        cases, total, data_range = store_cases(run, store, opts)
        data = {"mode": "test split", "store": str(store)}
        return CaseSource(cases, total, data_range, contract.output_frames, data)
    raise ConfigError(f"{run.path} has no recipe.toml; give a recipe or DATA files to evaluate on")


def _store_for(recipe: Recipe, progress: Progress | None) -> Path:
    """The recipe's prepared store: its own, or one prepared into the cache from its sources."""
    cfg = recipe.data
    if cfg.store:
        return Path(cfg.store)
    if cfg.sources:
        from stforecast.data.cache import cache_root, content_key, prepare_cached

        return prepare_cached(cfg, cache_root() / content_key(cfg), progress)
    raise ConfigError("[data] needs a store or sources to evaluate on")


# ------------------------------------------------------------------------------ the model


def _forecast_batch(run: Any, x: np.ndarray, steps: int) -> np.ndarray:
    """Normalised `(B, T, C, H, W)` -> normalised `(B, steps, C, H, W)`: batched when the
    model takes the whole grid, tile by tile (`forecasting`'s `predict`) otherwise."""
    import torch

    from stforecast.forecasting.tiling import batch_guide, grid_multiple, predict, tile_for

    tile = tile_for(run.net, x.shape[-2:])
    if tile is not None:
        return np.stack([np.stack(list(predict(run.net, s, steps, tile=tile))) for s in x])
    H, W = x.shape[-2:]
    m = grid_multiple(run.net)
    guide = batch_guide(run.net, x, steps)
    with torch.inference_mode():

        def padded(a: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(np.ascontiguousarray(a)).to(run.device)
            ph, pw = (-H) % m, (-W) % m
            if ph or pw:
                b, n = t.shape[:2]
                t = torch.nn.functional.pad(t.flatten(0, 1), (0, pw, 0, ph), mode="reflect")
                t = t.unflatten(0, (b, n))
            return t

        g = None if guide is None else padded(guide)
        y = run.net(padded(x), steps, guide=g)[..., :H, :W]
    return y.float().cpu().numpy()


# ------------------------------------------------------------------------------ the three sources


def store_cases(
    run: Any, store: str | Path, opts: EvaluateConfig, split: str = "test"
) -> tuple[Iterator[Case], int, float]:
    """Cases from a prepared store's split; returns (cases, how many, observed data range).
    The model's leads are blended with the extrapolation as the card says (`stforecast
    blend`), as `forecast` and the hindcasts do: the scores are those of the forecast a user
    gets."""
    import zarr

    from stforecast.data.dataset import WindowDataset
    from stforecast.data.store import open_store
    from stforecast.forecasting import blend as blending
    from stforecast.forecasting.plan import card_transform

    ds = WindowDataset(store, split)
    manifest = ds.manifest
    if not len(ds):
        raise InputError(f"{store}: the {split} split has no windows")
    contract = DataContract.from_manifest(manifest)
    transform, params = card_transform(contract.transform, contract.channels)
    t_in, t_out = ds.t_in, ds.t_out
    steps = t_out
    n = len(ds) if opts.max_sequences is None else min(len(ds), opts.max_sequences)
    group = zarr.open_group(str(store), mode="r")
    times = open_store(store)[0]["time"].values
    data_range = _store_range(group, manifest, transform, params, split)
    blend = blending.from_card(run.card, run.path)

    def cases() -> Iterator[Case]:
        for i in range(0, n, opts.batch_size):
            items = [ds[k] for k in range(i, min(i + opts.batch_size, n))]
            x = np.stack([it["inputs"].numpy() for it in items])
            y = np.stack([it["targets"].numpy() for it in items])
            cov = np.stack([it["coverage"].numpy()[:, 0] > 0 for it in items])
            pred = _forecast_batch(run, x, steps)
            phys_x = transforms.denormalise_frames(x, transform, params)[:, :, 0]
            phys_y = transforms.denormalise_frames(y, transform, params)[:, :, 0]
            phys_p = transforms.denormalise_frames(pred, transform, params)[:, :, 0]
            for b, item in enumerate(items):
                c_in, c_out = cov[b, :t_in], cov[b, t_in:]
                inputs = np.where(c_in, phys_x[b], np.nan).astype(np.float32)
                truth = np.where(c_out, phys_y[b], np.nan).astype(np.float32)
                mix = blending.mixer(blend, inputs[:, None])
                alone = np.where(c_in[-1], phys_p[b], np.nan).astype(np.float32)
                leads = [mix(k, lead[None], steps)[0] for k, lead in enumerate(alone, 1)]
                model = np.stack(leads).astype(np.float32)
                ref = int(item["start"]) + t_in - 1
                yield Case(fmt(times[ref]), inputs, truth, model)

    return cases(), n, data_range


def _store_range(group, manifest, transform, params, split: str) -> float:
    """Physical value range of the split's frames (where covered): PSNR/SSIM's `data_range`."""
    from stforecast.data.windows import SPLITS

    ids = np.asarray(group["split"][:])
    idx = np.flatnonzero(ids == SPLITS.index(split))
    lo, hi = math.inf, -math.inf
    for i in range(0, idx.size, 64):
        sel = idx[i : i + 64]
        block = np.asarray(group["frames"].get_orthogonal_selection((sel, 0)), np.float32)
        cov = np.asarray(group["coverage"].get_orthogonal_selection((sel,)), bool)
        phys = np.asarray(transform.inverse(block, params[0]))[cov]
        if phys.size:
            lo, hi = min(lo, float(phys.min())), max(hi, float(phys.max()))
    return hi - lo if hi > lo else 1.0


def hindcast_cases(
    run: Any,
    sources: list[str],
    *,
    start: str | None = None,
    end: str | None = None,
    every: int | None = None,
    steps: int | None = None,
    skipped: list[dict[str, str]] | None = None,
    archive: dict[str, Any] | None = None,
) -> tuple[Iterator[Case], int, float]:
    """Forecasts at every reference time of an archive, through `stforecast forecast`'s path;
    `archive` declares what its files do not say (`data.archives.declare`)."""
    from stforecast.data.archives import declare
    from stforecast.forecasting.inputs import model_grid
    from stforecast.forecasting.plan import lead_steps, materialise, plan
    from stforecast.io import open_frames

    contract = run.contract
    step = run.step
    steps = lead_steps(run, steps=steps)
    t_in = run.input_frames
    declared = _declaration(sources, archive)
    da = open_frames(
        sources,
        variable=declared.variable if declared and declared.variable else contract.selection,
        time_pattern=declared.time_pattern if declared and declared.time_pattern
        else contract.processing.time_pattern,
    ).sortby("time")  # fmt: skip
    if declared is not None:
        da = declare(da, declared, contract)
    processed = model_grid(da, contract, step)  # the model's step and grid (data.spacing)
    times = processed["time"].values
    delta = np.timedelta64(step, "s")
    first = times[0] + (t_in - 1) * delta
    last = times[-1] - steps * delta
    t0 = np.datetime64(_utc(start), "ns") if start else first
    t1 = np.datetime64(_utc(end), "ns") if end else last
    stride = np.timedelta64(int(every or step), "s")
    if every is not None and every % step:
        raise ConfigError(f"every must be a multiple of the model's step ({step} s)")
    # the archive's own times (a 10-min sum of 5-min depths may fall at :05, :15, ...)
    inside = times[(times >= max(t0, first)) & (times <= min(t1, last))]
    refs = [t for t in inside if (t - inside[0]) % stride == np.timedelta64(0)]
    if not refs:
        raise InputError(
            f"no reference time in [{fmt(t0)}, {fmt(t1)}] has {t_in} frames before it and "
            f"{steps} after it in the sources ({fmt(times[0])} to {fmt(times[-1])})"
        )
    data_range = _archive_range(processed, refs, delta, steps)
    log = skipped if skipped is not None else []

    def cases() -> Iterator[Case]:
        for ref in refs:
            valid = ref + np.arange(1, steps + 1) * delta
            try:
                p = plan(da.sel(time=da["time"] <= ref), run, steps=steps, checksums=False)
                ds = materialise(p)
            except InputError as err:
                log.append({"reference_time": fmt(ref), "reason": str(err)})
                continue
            name = next(n for n in ds.data_vars if n != "crs")
            inputs_t = ref - np.arange(t_in - 1, -1, -1) * delta
            inputs = _frames_at(processed, inputs_t)
            truth = _frames_at(processed, valid)
            yield Case(fmt(ref), inputs, truth, ds[name].values.astype(np.float32))

    return cases(), len(refs), data_range


def _declaration(sources: list[str], archive: dict[str, Any] | None):
    """`archive`'s fields validated as a `[[data.archives]]` entry of `sources` (exit 2 names
    the field), or None."""
    if not archive:
        return None
    from pydantic import ValidationError

    from stforecast.config import ArchiveConfig, format_error

    unused = sorted(set(archive) & {"name", "split", "sources"})
    if unused:
        raise ConfigError(f"--archive: {', '.join(unused)} do not apply to a hindcast")
    try:
        return ArchiveConfig.model_validate({**archive, "sources": list(sources)})
    except ValidationError as err:
        raise ConfigError(format_error(err, "--archive")) from None


def _frames_at(processed, wanted: np.ndarray) -> np.ndarray:
    """First-channel frames at `wanted` times; NaN frames where the archive has none."""
    have = processed["time"].values
    present = np.isin(wanted, have)
    sel = processed.sel(time=wanted[present])
    values = np.asarray(sel.values, np.float32)
    if values.ndim == 4:
        values = values[:, 0]
    out = np.full((wanted.size, *values.shape[1:]), np.nan, np.float32)
    out[present] = values
    return out


def _archive_range(processed, refs, delta, steps) -> float:
    times = processed["time"].values
    lo_t, hi_t = refs[0] + delta, refs[-1] + steps * delta
    sel = processed.sel(time=(times >= lo_t) & (times <= hi_t))
    lo = float(sel.min(skipna=True).compute())
    hi = float(sel.max(skipna=True).compute())
    return hi - lo if math.isfinite(hi - lo) and hi > lo else 1.0


def _utc(text: str) -> dt.datetime:
    from stforecast.config import as_utc

    try:
        when = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"not an ISO 8601 time: {text!r} (e.g. 2020-10-31T09:00)") from None
    return as_utc(when).replace(tzinfo=None)


def mnist_cases(run: Any, recipe: Recipe, opts: EvaluateConfig) -> tuple[Iterator[Case], int]:
    """The regenerated Moving MNIST test set (fixed seed, test digit pool)."""
    import torch

    from stforecast.data import synthetic
    from stforecast.forecasting.tiling import batch_guide

    cfg = recipe.data
    digits = synthetic.load_mnist_images(cfg.moving_mnist)
    n = opts.max_sequences or 10000
    t_in, t_out = run.contract.input_frames, run.contract.output_frames
    seqs = synthetic.moving_mnist_test(digits, n, seq_len=t_in + t_out)

    def cases() -> Iterator[Case]:
        for i in range(0, n, opts.batch_size):
            batch = seqs[i : i + opts.batch_size].astype(np.float32) / 255.0
            x = torch.from_numpy(batch[:, :t_in, None]).to(run.device)
            g = batch_guide(run.net, batch[:, :t_in, None], t_out)
            g = None if g is None else torch.from_numpy(g).to(run.device)
            with torch.inference_mode():
                pred = run.net(x, t_out, guide=g)[:, :, 0].float().cpu().numpy()
            for b in range(batch.shape[0]):
                yield Case(f"sequence {i + b}", batch[b, :t_in], batch[b, t_in:], pred[b])

    return cases(), n
