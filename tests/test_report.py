"""The evaluation report: self-contained HTML, Markdown with figure files, skill tables."""

from __future__ import annotations

import base64
import copy
import math
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from stforecast.errors import ConfigError
from stforecast.evaluation.figures import sample_figure, score_figure
from stforecast.evaluation.report import UNDEFINED, write_report
from stforecast.evaluation.skill import skill_table

LEADS = [10, 20, 30, 40, 50, 60]
THRESHOLDS = ["0.1", "1.0", "5.0"]
SCALES = ["1", "4", "16"]


def _method(rng: np.random.Generator, quality: float) -> dict:
    """Scores of a method that gets worse with lead time; `quality` < 1 is better."""
    grow = np.linspace(1.0, 2.5, len(LEADS))
    scores: dict = {
        "mse": list(30.0 * quality * grow),
        "mse_pixel": list(30.0 * quality * grow / 4096),
        "mae": list(50.0 * quality * grow),
        "rmse": list(np.sqrt(30.0 * quality * grow / 4096)),
        "ssim": list(np.clip(0.9 / (quality * grow), 0, 1)),
        "psnr": list(30.0 - 5 * quality * grow),
    }
    for t in THRESHOLDS:
        base = np.clip(0.8 / (quality * grow) - float(t) / 20, 0, 1)
        scores[f"csi_{t}"] = list(base)
        scores[f"pod_{t}"] = list(np.clip(base + 0.1, 0, 1))
        scores[f"far_{t}"] = list(1 - base)
        scores[f"ets_{t}"] = list(base - 0.05)
        for s in SCALES:
            scores[f"fss_{t}_{s}"] = list(np.clip(base + 0.05 * np.log2(int(s) + 1), 0, 1))
    scores = {k: [float(x) + 1e-3 * rng.random() for x in v] for k, v in scores.items()}
    scores["summary"] = {
        k: float(np.mean([x for x in v if x is not None])) for k, v in scores.items()
    }
    return scores


def _metrics() -> dict:
    rng = np.random.default_rng(0)
    model = _method(rng, 0.6)
    persistence = _method(rng, 1.0)
    extrapolation = _method(rng, 0.8)
    # Undefined scores: no event at 5 mm/h at the longest leads, one missing MSE.
    for m in (model, persistence, extrapolation):
        m["csi_5.0"][4:] = [None, None]
        m["fss_5.0_16"][5] = None
    persistence["mse"][2] = None
    model["ssim"][0] = None
    return {
        "lead_minutes": LEADS,
        "methods": {"model": model, "persistence": persistence, "extrapolation": extrapolation},
        "protocol": {
            "mse": "per-frame sum of squared errors over pixels, data units",
            "csi": "critical success index from contingency counts over all frames",
            **{
                f"fss_{t}_{s}": f"fractions skill score, threshold {t} in data units, scale {s} px"
                for t in THRESHOLDS
                for s in SCALES
            },
        },
        "units": "mm h-1",
        "dataset": "synthetic rain cells",
        "n_sequences": 12,
    }


def _sample(rng: np.random.Generator, title: str, t_in: int = 5, t_out: int = 8) -> dict:
    h, w = 32, 40
    yy, xx = np.mgrid[:h, :w]

    def rain(t: int) -> np.ndarray:
        cx, cy = 8 + 2.5 * t, 14 + 0.5 * t
        field = 25.0 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 40.0)
        field[field < 0.05] = 0.0
        field[:, :5] = np.nan  # outside radar coverage
        return field

    inputs = np.stack([rain(t) for t in range(t_in)])
    truth = np.stack([rain(t) for t in range(t_in, t_in + t_out)])
    model = truth + rng.normal(0, 0.5, truth.shape).clip(-truth, None)
    persistence = np.repeat(inputs[-1:], t_out, axis=0)
    return {
        "title": title,
        "inputs": inputs,
        "truth": truth,
        "forecasts": {"model": model, "persistence": persistence, "extrapolation": truth * 0.9},
        "lead_minutes": [10 * (k + 1) for k in range(t_out)],
        "units": "mm h-1",
    }


def _samples() -> list[dict]:
    rng = np.random.default_rng(1)
    return [_sample(rng, "2020-10-31T10:00Z"), _sample(rng, "2020-11-02T18:30Z", t_out=4)]


@pytest.fixture
def metrics() -> dict:
    return _metrics()


@pytest.fixture
def samples() -> list[dict]:
    return _samples()


DETAILS = {"model run": "runs/cms", "device": "cpu", "test period": "2020-10 to 2020-11"}


@pytest.fixture(scope="module")
def full_report(tmp_path_factory) -> tuple[Path, dict]:
    """One report of the full case (3 methods, 6 leads, 2 samples), shared by read-only tests."""
    root = tmp_path_factory.mktemp("report")
    out = write_report(
        root / "eval", _metrics(), _samples(), title="Radar nowcast <test>", details=DETAILS
    )
    return root / "eval", out


def _images(text: str) -> list[bytes]:
    return [
        base64.b64decode(m) for m in re.findall(r'<img src="data:image/png;base64,([^"]+)"', text)
    ]


def _row(ax) -> int:
    """Row of a sample panel (its axes label is "panel:ROW:COLUMN:NAME"); -1 for others."""
    parts = ax.get_label().split(":")
    return int(parts[1]) if parts[0] == "panel" else -1


def _no_temp_files(root: Path) -> None:
    leftovers = [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]
    assert leftovers == []


# --------------------------------------------------------------------------------------------


def test_write_report_writes_html_markdown_and_figures(full_report):
    root, out = full_report
    assert set(out) == {"html", "markdown", "figures"}
    assert out["html"] == root / "report.html"
    assert out["markdown"] == root / "report.md"
    figures = out["figures"]
    # mse, mae, rmse, ssim, psnr, csi at 3 thresholds, fss at 3 thresholds, 2 samples.
    assert len(figures) == 5 + 3 + 3 + 2
    for path in figures:
        assert path.parent == root / "figures"
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    names = {p.name for p in figures}
    assert {"score_mse.png", "score_csi_1.0.png", "score_fss_5.0.png", "sample_02.png"} <= names
    assert not any("pod" in n or "far" in n or "ets" in n or "pixel" in n for n in names)

    text = out["html"].read_text(encoding="utf-8")
    assert "Radar nowcast &lt;test&gt;" in text  # escaped
    words = ("runs/cms", "test period", "synthetic rain cells", "per-frame sum of squared")
    for word in words:
        assert word in text
    # Sections in order: details, summary, skill, scores, samples, protocol last.
    order = [text.index(f'id="{s}"') for s in ("details", "summary", "skill", "scores")]
    order += [text.index(f'id="{s}"') for s in ("samples", "protocol")]
    assert order == sorted(order)
    assert "Skill against persistence" in text and "Skill against extrapolation" in text
    md = out["markdown"].read_text(encoding="utf-8")
    assert md.startswith("# Radar nowcast <test>\n")
    assert "### Against persistence" in md and "### Against extrapolation" in md
    assert "| MSE per frame [(mm/h)²] ↓ |" in md
    _no_temp_files(root)


def test_html_is_self_contained(full_report):
    _root, out = full_report
    text = out["html"].read_text(encoding="utf-8")
    assert 'src="http' not in text and "src='http" not in text
    assert "<script" not in text and "<link" not in text
    assert "url(" not in text and "@import" not in text
    # Links only to anchors in the page; images only as data URIs.
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', text))
    assert all(s.startswith("data:image/png;base64,") for s in re.findall(r'src="([^"]*)"', text))
    images = _images(text)
    assert len(images) == len(out["figures"])
    # The embedded PNGs are the figure files.
    assert sorted(images) == sorted(p.read_bytes() for p in out["figures"])
    alts = re.findall(r'<img [^>]*alt="([^"]+)"', text)
    assert len(alts) == len(images)
    assert any("MSE" in a for a in alts) and any("CSI" in a for a in alts)
    assert any("FSS" in a for a in alts) and any("2020-10-31T10:00Z" in a for a in alts)
    assert all(a.startswith("Figure ") for a in alts)
    # Captions carry the protocol text; a group figure falls back to its first scale's text.
    assert "critical success index" in text
    assert re.search(
        r"FSS ≥ 1 mm/h, all scales[^<]*threshold 1\.0 in data units, scale 1 px</fig", text
    )
    # Modest size.
    assert out["html"].stat().st_size < 3_000_000


def test_markdown_references_existing_figures(full_report):
    root, out = full_report
    md = out["markdown"].read_text(encoding="utf-8")
    refs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(refs) == len(out["figures"])
    for ref in refs:
        assert not ref.startswith(("/", "http"))
        assert (root / ref).is_file()
    assert {root / r for r in refs} == set(out["figures"])


def test_summary_marks_best_value_per_row(full_report, metrics):
    _root, out = full_report
    text = out["html"].read_text(encoding="utf-8")
    summary = text[text.index('id="summary"') : text.index('id="skill"')]

    def row(key: str) -> list[tuple[str, str]]:
        m = re.search(rf"<tr><th>{re.escape(key)}</th>(.*?)</tr>", summary)
        assert m, key
        return re.findall(r'<td(?: class="([^"]*)")?>([^<]*)</td>', m.group(1))

    # Columns model, persistence, extrapolation; the model is best for every score here.
    mse = "MSE per frame [(mm/h)²] ↓"
    for key in (mse, "FAR ≥ 1 mm/h ↓", "CSI ≥ 1 mm/h ↑", "PSNR [dB] ↑", "FSS ≥ 0.1 mm/h, 4 px ↑"):
        cells = row(key)
        assert len(cells) == 3
        assert [c for c, _v in cells] == ["best", "", ""], key
    model_mse = metrics["methods"]["model"]["summary"]["mse"]
    assert row(mse)[0][1] == f"{model_mse:.4g}"
    md = out["markdown"].read_text(encoding="utf-8")
    assert f"| {mse} | **{model_mse:.4g}** |" in md


def test_skill_table_by_hand():
    metrics = {
        "lead_minutes": [5, 10, 15, 20],
        "methods": {
            "model": {"mse": [1.0, 2.0, None, 3.0], "csi_1.0": [0.5, 0.4, 0.3, None]},
            "persistence": {"mse": [2.0, 2.0, 4.0, 0.0], "csi_1.0": [0.25, 0.5, None, 0.1]},
            "extrapolation": {"mse": [4.0, 1.0, 2.0, 6.0]},
        },
    }
    mse = skill_table(metrics)  # mse against persistence by default
    assert [lead for lead, _ in mse] == [5, 10, 15, 20]
    assert mse[0] == (5, pytest.approx(0.5))
    assert mse[1] == (10, pytest.approx(0.0))
    assert math.isnan(mse[2][1])  # model undefined
    assert math.isnan(mse[3][1])  # zero reference: ratio undefined
    ext = skill_table(metrics, "mse", "extrapolation")
    assert [s for _, s in ext[:2]] == pytest.approx([0.75, -1.0])
    assert ext[3][1] == pytest.approx(0.5)
    csi = skill_table(metrics, "csi_1.0")  # higher is better: difference
    assert [s for _, s in csi[:2]] == pytest.approx([0.25, -0.1])
    assert math.isnan(csi[2][1]) and math.isnan(csi[3][1])
    assert all(isinstance(lead, int) for lead, _ in csi)

    with pytest.raises(ConfigError, match="extrapolation"):
        skill_table(metrics, "csi_1.0", "extrapolation")  # key missing for the reference
    with pytest.raises(ConfigError, match="climatology"):
        skill_table(metrics, "mse", "climatology")
    with pytest.raises(ConfigError, match="convention"):
        skill_table(metrics, "bias_1.0")


def test_skill_in_report_matches_skill_table(full_report, metrics):
    """Scores are rows and lead times columns, so that many scores fit the page."""
    _root, out = full_report
    md = out["markdown"].read_text(encoding="utf-8")
    section = md[md.index("### Against persistence") : md.index("### Against extrapolation")]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["score", *(f"+{lead}" for lead in LEADS)]
    rows = {line.split("|")[1].strip(): line for line in lines[2:]}
    assert "MSE per frame [(mm/h)²] (SS)" in rows and "CSI ≥ 1 mm/h (Δ)" in rows
    assert "FSS ≥ 1 mm/h, 16 px (Δ)" in rows
    assert not any(r.startswith(("POD", "FAR", "ETS", "MSE per pixel")) for r in rows)
    cells = [c.strip() for c in rows["MSE per frame [(mm/h)²] (SS)"].strip("|").split("|")][1:]
    expected = skill_table(metrics, "mse", "persistence")
    assert len(cells) == len(expected) == len(LEADS)
    for cell, (_lead, value) in zip(cells, expected, strict=True):
        if math.isnan(value):
            assert cell == UNDEFINED  # persistence MSE undefined at 30 min
        else:
            assert float(cell) == pytest.approx(value, abs=5e-4)


def test_skill_tables_wrap_after_twelve_leads(tmp_path):
    leads = list(range(10, 250, 10))  # 24 leads: 4 hours of 10 minutes
    metrics = {
        "lead_minutes": leads,
        "units": "mm h-1",
        "methods": {
            "model": {"mse": [1.0] * 24, "csi_1.0": [0.5] * 24},
            "persistence": {"mse": [2.0] * 24, "csi_1.0": [0.25] * 24},
        },
    }
    md = write_report(tmp_path, metrics)["markdown"].read_text(encoding="utf-8")
    assert "### Against persistence (1 of 2)" in md and "### Against persistence (2 of 2)" in md
    headers = [line for line in md.splitlines() if line.startswith("| score | +")]
    assert [h.count("| +") for h in headers] == [12, 12]
    assert headers[1].startswith("| score | +130 | +140 |") and headers[1].endswith("| +240 |")


def test_only_model_method(tmp_path, metrics, samples):
    only = copy.deepcopy(metrics)
    only["methods"] = {"model": only["methods"]["model"]}
    for s in samples:
        s["forecasts"] = {"model": s["forecasts"]["model"]}
    out = write_report(tmp_path, only, samples)
    text = out["html"].read_text(encoding="utf-8")
    assert "No baseline scores" in text
    assert len(_images(text)) == len(out["figures"]) == 13
    fig = score_figure(only, "mse")
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["model"]


def test_none_values_are_gaps_and_do_not_crash(metrics):
    fig = score_figure(metrics, "csi_5.0")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "lead time [min]"
    assert "mm/h" in ax.get_ylabel() or "mm/h" in ax.get_title()
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines) == ["model", "persistence", "extrapolation"]
    y = np.asarray(lines["model"].get_ydata(), dtype=float)
    assert np.isnan(y[4:]).all() and np.isfinite(y[:4]).all()
    assert ax.get_legend() is not None
    # Units on the axis label of a continuous score.
    assert score_figure(metrics, "mae").axes[0].get_ylabel() == "MAE per frame [mm/h]"
    assert "dB" in score_figure(metrics, "psnr").axes[0].get_ylabel()
    # All-None series.
    metrics["methods"]["persistence"]["ssim"] = [None] * len(LEADS)
    score_figure(metrics, "ssim")
    with pytest.raises(ConfigError):
        score_figure(metrics, "lpips")


def test_fss_figure_line_style_per_scale(metrics):
    fig = score_figure(metrics, "fss_1.0")
    ax = fig.axes[0]
    lines = [line for line in ax.get_lines() if len(line.get_xdata())]
    assert len(lines) == 3 * len(SCALES)
    assert len({line.get_linestyle() for line in lines}) == len(SCALES)
    assert len({line.get_color() for line in lines}) == 3
    # One exact FSS key gives one line per method.
    assert len(score_figure(metrics, "fss_1.0_4").axes[0].get_lines()) == 3


def test_sample_figure_layout(samples):
    sample = samples[0]
    fig = sample_figure(sample)
    assert isinstance(fig, Figure)
    images = [ax for ax in fig.axes if ax.images]
    # rows: inputs (4 of 5 shown), truth, 3 forecasts, model error; 6 of 8 lead columns.
    assert len(images) == 4 + 6 * 5
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert "+10 min" in titles and "+80 min" in titles and "t0" in titles
    row_labels = {ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()}
    assert {"inputs", "truth", "model", "persistence", "extrapolation"} <= row_labels
    assert any(label.startswith("model") and "truth" in label for label in row_labels)
    # Data rows share one norm; the error row is centred at 0 with a diverging colormap.
    error_axes = [ax for ax in images if _row(ax) == 5]
    data_axes = [ax for ax in images if _row(ax) < 5]
    assert len(error_axes) == 6 and len(data_axes) == 4 + 6 * 4
    assert len({(ax.images[0].norm.vmin, ax.images[0].norm.vmax) for ax in error_axes}) == 1
    assert len({(ax.images[0].norm.vmin, ax.images[0].norm.vmax) for ax in data_axes}) == 1
    norm = error_axes[0].images[0].norm
    assert norm.vmin == pytest.approx(-norm.vmax) and norm.vmax > 0
    assert error_axes[0].images[0].cmap.name.startswith("RdBu")
    # Precipitation units: discrete rain-rate levels, white below the first.
    assert data_axes[0].images[0].norm.boundaries[0] == pytest.approx(0.1)
    # Colorbars: one for the data rows, one for the error.
    assert sorted(ax.get_label() for ax in fig.axes if not ax.get_label().startswith("panel")) == [
        "colorbar:data",
        "colorbar:error",
    ]
    # NaN (no coverage) stays NaN in the image (drawn with the colormap's "bad" colour).
    truth_ax = next(ax for ax in fig.axes if ax.get_ylabel() == "truth")
    assert np.ma.getmaskarray(truth_ax.images[0].get_array())[:, :5].all()


def test_sample_figure_shared_scale_and_generic_units():
    rng = np.random.default_rng(3)
    frames = rng.random((10, 16, 16))
    sample = {
        "title": "moving mnist",
        "inputs": frames[:4],
        "truth": frames[4:],
        "forecasts": {"model": frames[4:] * 0.5},
        "units": "",
    }
    fig = sample_figure(sample)
    # rows: inputs, truth, model, error
    data = [ax.images[0] for ax in fig.axes if ax.images and _row(ax) < 3]
    assert len(data) == 4 + 2 * 6
    norms = {(im.norm.vmin, im.norm.vmax) for im in data}
    assert len(norms) == 1  # one shared colour scale for inputs, truth and forecasts
    with pytest.raises(ConfigError, match="shape"):
        sample_figure({**sample, "forecasts": {"model": frames[:3]}})


def test_sample_figure_without_model_and_one_lead():
    rng = np.random.default_rng(4)
    frames = rng.random((3, 8, 12)) * 3
    sample = {
        "inputs": frames[:2],
        "truth": frames[2:],
        "forecasts": {"persistence": frames[1:2]},
        "lead_minutes": [5],
        "units": "mm/h",
    }
    fig = sample_figure(sample)
    panels = [ax for ax in fig.axes if _row(ax) >= 0]
    assert len(panels) == 3  # one input (one column), truth, persistence; no error row
    assert [ax.get_label() for ax in fig.axes if _row(ax) < 0] == ["colorbar:data"]
    assert "+5 min" in [ax.get_title() for ax in panels]


def test_existing_report_is_replaced(tmp_path, metrics, samples):
    first = write_report(tmp_path, metrics, samples, title="old report")
    assert (tmp_path / "figures" / "sample_02.png").exists()
    stranger = tmp_path / "figures" / "notes.png"
    stranger.write_bytes(b"not ours")
    smaller = copy.deepcopy(metrics)
    for m in smaller["methods"].values():
        for key in [k for k in m if k.startswith(("csi_5.0", "fss_5.0"))]:
            del m[key]
    second = write_report(tmp_path, smaller, samples[:1], title="new report")
    assert second["html"] == first["html"]
    text = second["html"].read_text(encoding="utf-8")
    assert "new report" in text and "old report" not in text
    assert "new report" in second["markdown"].read_text(encoding="utf-8")
    figure_names = {p.name for p in (tmp_path / "figures").iterdir()}
    assert figure_names == {p.name for p in second["figures"]} | {"notes.png"}
    assert "sample_02.png" not in figure_names and "score_fss_5.0.png" not in figure_names
    assert len(_images(text)) == len(second["figures"])
    _no_temp_files(tmp_path)


def test_no_temp_files_on_failure(tmp_path, metrics, samples, monkeypatch):
    import os

    write_report(tmp_path, metrics, samples[:1])
    metrics["methods"] = {"model": metrics["methods"]["model"]}
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)  # every atomic write goes through it
    with pytest.raises(OSError, match="disk full"):
        write_report(tmp_path, metrics, title="never written")
    _no_temp_files(tmp_path)
    # The older report is untouched.
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_invalid_metrics(tmp_path):
    with pytest.raises(ConfigError, match="lead_minutes"):
        write_report(tmp_path, {"methods": {}})
    with pytest.raises(ConfigError, match="aligned"):
        write_report(tmp_path, {"lead_minutes": [10, 20], "methods": {"model": {"mse": [1.0]}}})
    assert not any(tmp_path.iterdir())


def test_no_pyplot_state(full_report):
    import sys

    if "matplotlib.pyplot" in sys.modules:
        import matplotlib.pyplot as plt

        assert plt.get_fignums() == []
