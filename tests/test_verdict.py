"""The report leads with its verdict: one sentence per baseline, from metrics.json's lists
aligned with lead_minutes; labels with units and km; plain details; no path of the machine."""

from __future__ import annotations

import json
import re

import pytest

from stforecast.evaluation.document import portable_paths, score_label, verdict_label
from stforecast.evaluation.report import write_report
from stforecast.evaluation.skill import lead_span, verdict, verdict_keys

LEADS = [10, 20, 30, 40, 50, 60]
DASH = "\u2013"  # the en dash of lead ranges: 10\u201330 min


def _metrics() -> dict:
    """Model against extrapolation: better CSI at every lead, better MSE from 40 min, worse
    FSS (8 px = 16 km) at 10-30 min, MAE a draw (within 0.005), FSS at 1 px never named."""
    model = {
        "mse": [12.0, 11.0, 10.5, 9.0, 9.0, 9.0],
        "mae": [5.0, 5.0, 5.0, 5.0, 5.0, 5.0],
        "csi_1.0": [0.50, 0.45, 0.40, 0.35, 0.30, 0.25],
        "fss_1.0_1": [0.1, 0.1, 0.1, 0.1, 0.1, 0.1],
        "fss_1.0_8": [0.60, 0.55, 0.50, 0.50, 0.45, 0.40],
    }
    extrapolation = {
        "mse": [10.0, 10.0, 10.5, 10.0, 10.0, 10.0],  # equal at 30 min: a draw
        "mae": [5.01, 5.0, 5.0, 4.99, 5.0, 5.0],  # skill within ±0.005: draws
        "csi_1.0": [0.40, 0.35, 0.30, 0.25, 0.20, 0.15],
        "fss_1.0_1": [0.9, 0.9, 0.9, 0.9, 0.9, 0.9],
        "fss_1.0_8": [0.70, 0.60, 0.55, 0.50, 0.45, 0.40],
    }
    persistence = {
        "mse": [20.0] * 6,
        "mae": [4.0, 6.0, 6.0, 6.0, 6.0, None],  # worse at 10 min, undefined at 60
        "csi_1.0": [None] * 6,
        "fss_1.0_1": [0.0] * 6,
        "fss_1.0_8": [0.1] * 6,
    }
    return {
        "lead_minutes": LEADS,
        "units": "mm h-1",
        "grid": {"shape": [128, 128], "spacing_metres": 2000.0},
        "methods": {"model": model, "extrapolation": extrapolation, "persistence": persistence},
    }


def test_verdict_sentences_from_hand_made_lists():
    metrics = _metrics()
    assert verdict(metrics, "extrapolation") == (
        "Beats extrapolation on CSI ≥1 mm/h at every lead, on MSE from 40 min; "
        f"loses on FSS ≥1 mm/h at 16 km at 10{DASH}30 min, on MSE at 10{DASH}20 min."
    )
    assert verdict(metrics, "persistence") == (
        "Beats persistence on MSE and FSS ≥1 mm/h at 16 km at every lead, "
        f"on MAE at 20{DASH}50 min; loses on MAE at 10 min."
    )


def test_verdict_names_the_scale_nearest_16_km():
    metrics = _metrics()
    assert verdict_keys(metrics, "extrapolation") == ["mse", "mae", "csi_1.0", "fss_1.0_8"]
    metrics["grid"]["spacing_metres"] = 16000.0  # now 1 px is 16 km
    assert verdict_keys(metrics, "extrapolation")[-1] == "fss_1.0_1"
    assert "loses on FSS ≥1 mm/h at 16 km at every lead" in verdict(metrics, "extrapolation")
    del metrics["grid"]  # no spacing: the largest scale, in pixels
    assert verdict_keys(metrics, "extrapolation")[-1] == "fss_1.0_8"
    assert "FSS ≥1 mm/h at 8 px" in verdict(metrics, "extrapolation")


def test_verdict_when_the_model_never_wins_and_for_frames():
    metrics = {
        "lead_minutes": [1, 2, 3, 4],
        "lead_unit": "frame (Moving MNIST)",
        "methods": {
            "model": {"mse": [5.0, 5.0, 5.0, 5.0], "ssim": [0.5, 0.5, 0.9, 0.9]},
            "persistence": {"mse": [1.0, 1.0, 1.0, 1.0], "ssim": [0.6, 0.6, 0.6, 0.6]},
        },
    }
    assert verdict(metrics, "persistence") == (
        "Beats persistence on SSIM from frame 3; "
        f"loses on MSE at every lead, on SSIM at frames 1{DASH}2."
    )
    metrics["methods"]["model"]["ssim"] = [0.1] * 4
    assert verdict(metrics, "persistence") == (
        "Does not beat persistence: loses on MSE and SSIM at every lead."
    )
    metrics["methods"]["model"] = {"mse": [None] * 4}
    assert verdict(metrics, "persistence") == "No score of the model and persistence to compare."


@pytest.mark.parametrize(
    ("indices", "text"),
    [
        ([0, 1, 2, 3, 4, 5], "at every lead"),
        ([3, 4, 5], "from 40 min"),
        ([0, 1, 2], f"at 10{DASH}30 min"),
        ([2], "at 30 min"),
        ([0, 4, 5], f"at 10 and 50{DASH}60 min"),
        ([0, 2, 4], "at 3 of 6 leads"),
    ],
)
def test_lead_span(indices, text):
    assert lead_span(indices, LEADS) == text


def test_labels_carry_units_and_km():
    assert score_label("csi_1.0", "mm h-1") == "CSI ≥ 1 mm/h"
    assert score_label("fss_5.0_8", "mm h-1", spacing_km=2.0) == "FSS ≥ 5 mm/h, 8 px (16 km)"
    assert score_label("fss_5.0_8", "mm h-1") == "FSS ≥ 5 mm/h, 8 px"
    assert score_label("mae_pixel", "mm h-1", axis=True) == "MAE per pixel [mm/h]"
    assert score_label("rmse", "mm/h", axis=True) == "RMSE [mm/h]"
    assert score_label("mse_pixel", "mm h-1", axis=True) == "MSE per pixel [(mm/h)²]"
    assert score_label("mae_pixel", "K", axis=True) == "MAE per pixel [K]"
    assert score_label("csi_273.15", "K") == "CSI ≥ 273.15 K"
    assert verdict_label("csi_0.1", "mm h-1", None) == "CSI ≥0.1 mm/h"


def test_portable_paths_leave_no_absolute_path(tmp_path):
    base = tmp_path / "run" / "evaluation"
    doc = {
        "model": {"run": str(tmp_path / "run")},
        "data": {"store": "/root/.cache/stforecast/prepared/abc", "sources": ["../shared/x"]},
        "skipped": [{"reference_time": "t", "reason": f"{tmp_path}/a/b.nc: no such file"}],
        "protocol": {"csi": "H/(H+M+F) in mm/h, http://example.org/a/b"},
    }
    out = portable_paths(doc, base)
    assert out["model"]["run"] == ".."
    assert out["data"]["sources"] == ["../shared/x"]  # relative paths stay as given
    assert out["skipped"][0]["reason"] == "../../a/b.nc: no such file"
    assert out["protocol"] == doc["protocol"]
    assert not re.search(r"(^|[\s\"'])/(root|tmp)/", json.dumps(out))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("verdict")
    out = root / "evaluation"
    metrics = _metrics()
    metrics["model"] = {"run": str(root / "run"), "architecture": "cms_lstm"}
    metrics["data"] = {"mode": "hindcast", "sources": [str(root / "archive")], "every": 600}
    details = {"model run": str(root / "run"), "data": json.dumps(metrics["data"])}
    write_report(out, metrics, details=details)
    return root, out


def test_report_leads_with_the_verdict(report):
    _root, out = report
    html = (out / "report.html").read_text(encoding="utf-8")
    body = html[html.index("<body>") :]
    first = body.index('id="verdict"')
    assert first < body.index('id="details"') < body.index('id="summary"')
    assert "Beats extrapolation on CSI ≥1 mm/h at every lead, on MSE from 40 min" in html
    md = (out / "report.md").read_text(encoding="utf-8")
    assert md.index("## Verdict") < md.index("## Details")
    assert "- **Against persistence:** Beats persistence on MSE" in md


def test_report_has_no_path_of_the_machine_and_plain_details(report):
    root, out = report
    html = (out / "report.html").read_text(encoding="utf-8")
    md = (out / "report.md").read_text(encoding="utf-8")
    for text in (html, md):
        assert str(root) not in text
        assert '{"mode"' not in text and "{&quot;" not in text  # no JSON blob in the details
    assert "| data mode | hindcast |" in md and "| data sources | ../archive |" in md
    assert "| model run | ../run |" in md
    assert "| grid spacing_metres | 2000 |" in md
    assert "FSS ≥ 1 mm/h, 8 px (16 km)" in html
