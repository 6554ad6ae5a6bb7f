"""The data contract (`stforecast.data.contract`): one typed object from the store's manifest to
the model card and the forecast, its JSON round trips, its field checks, and loading the stores
and run directories that stforecast wrote before it existed (fixtures in tests/data)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from stforecast.config import data_config
from stforecast.data.contract import DataContract, Grid, Transform
from stforecast.data.prepare import prepare
from stforecast.data.store import read_manifest
from stforecast.data.synthetic import write_rain_cells
from stforecast.errors import InputError, ModelMismatchError

DATA = Path(__file__).parent / "data"


def fixture(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def test_format1_card_reads_back_to_the_same_json():
    """A card of the previous format: every field by attribute, and `to_card` gives the very
    same `input` section back (old run directories keep their meaning)."""
    entry = fixture("format1_card.json")["card"]["input"]
    contract = DataContract.from_card(entry)
    assert contract.variable == "rainrate" and contract.units == "mm h-1"
    assert contract.time_step_seconds == 600 and contract.time_step_iso == "PT10M"
    assert (contract.input_frames, contract.output_frames) == (6, 6)
    assert contract.grid.shape == (64, 64) and "LAEA Europe" in contract.grid.crs_wkt
    assert contract.transform.name == "log1p" and contract.processing.coarsen == 1
    assert contract.frame_size == (64, 64) and contract.channels == 1
    assert contract.gridded and contract.variables == ["rainrate"]
    assert json.dumps(contract.to_card()) == json.dumps(entry)


def test_format1_manifest_gives_the_contract_its_card_carries():
    manifest = fixture("format1_manifest.json")["manifest"]
    card = DataContract.from_card(fixture("format1_card.json")["card"]["input"])
    contract = DataContract.from_manifest(manifest, store="prepared")
    assert contract == card.replace(frame_size=None, long_name=contract.long_name)
    assert contract.long_name == "rain rate (synthetic radar rainfall)"
    # format 2 keeps the same facts under one key, and reads back equal
    again = DataContract.from_manifest({"contract": contract.to_manifest()}, store="prepared")
    assert again == contract


def test_moving_mnist_contract_round_trip():
    contract = DataContract(
        variable="moving_mnist",
        units="1",
        transform=Transform("none", {}, {}),
        grid=Grid(shape=(64, 64)),
        time_step_seconds=None,
        input_frames=10,
        output_frames=10,
        values="pixel intensity / 255, in [0, 1]",
        frame_size=(64, 64),
    )
    card = contract.to_card()
    assert list(card) == [
        "variable", "channels", "units", "transform", "grid", "time_step_seconds",
        "input_frames", "output_frames", "values", "frame_size",
    ]  # fmt: skip
    assert DataContract.from_card(card) == contract
    assert not contract.gridded


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("input_frames", 0),
        ("input_frames", "6"),
        ("output_frames", -1),
        ("time_step_seconds", 0),
        ("time_step_seconds", "ten minutes"),
        ("time_step_seconds", float("nan")),
        ("variable", None),
        ("variable", 3),
        ("transform", "log1p"),
        ("grid", {"shape": [64]}),
    ],
)
def test_a_malformed_card_field_is_named(field, value):
    entry = fixture("format1_card.json")["card"]["input"]
    entry[field] = value
    with pytest.raises(ModelMismatchError, match=field.split(".")[0]) as err:
        DataContract.from_card(entry, "runs/x/model.json")
    assert "runs/x/model.json" in str(err.value) and "\n" not in str(err.value)


def test_a_card_without_input_is_refused():
    with pytest.raises(ModelMismatchError, match="'input'"):
        DataContract.from_card(None)


def test_a_malformed_manifest_is_an_input_error():
    manifest = fixture("format1_manifest.json")["manifest"]
    manifest["time"]["step_seconds"] = -600
    with pytest.raises(InputError, match="time_step_seconds"):
        DataContract.from_manifest(manifest)


def test_prepare_writes_the_contract_into_the_manifest(tmp_path):
    archive = write_rain_cells(tmp_path / "r.nc", frames=24, size=16)
    cfg = data_config(sources=[str(archive)], input_frames=3, output_frames=2, transform="log1p")
    prepare(cfg, tmp_path / "store")
    manifest = read_manifest(tmp_path / "store")
    entry = manifest["contract"]
    assert entry["time_step_seconds"] == 600 and entry["time_step_iso"] == "PT10M"
    contract = DataContract.from_manifest(manifest, store=str(tmp_path / "store"))
    assert (contract.input_frames, contract.output_frames) == (3, 2)
    assert contract.grid.shape == (16, 16) and contract.units == "mm h-1"
    assert contract.store == str(tmp_path / "store")


def test_a_run_directory_of_the_previous_format_still_forecasts(tmp_path):
    """The format-1 card of tests/data with weights made for its architecture: it loads and
    forecasts on a grid like the one it was trained on."""
    from safetensors.torch import save as save_safetensors

    import stforecast
    from stforecast.rundir.load import build_from_card

    card = fixture("format1_card.json")["card"]
    net = build_from_card(card)
    data = save_safetensors({k: v.contiguous() for k, v in net.state_dict().items()})
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").write_bytes(data)
    card["weights"]["sha256"] = hashlib.sha256(data).hexdigest()
    (run / "model.json").write_text(json.dumps(card))
    archive = write_rain_cells(tmp_path / "r.nc", frames=8)
    frames = stforecast.open_frames([str(archive)])
    ds = stforecast.forecast(frames, run, steps=2, device="cpu")
    assert ds["rainrate"].shape == (2, 64, 64)
    assert np.isfinite(ds["rainrate"].values).any()
    # a card from before weights were selected keeps using its final weights
    model = json.loads(ds.attrs["provenance"])["model"]
    assert (
        model["weights"].startswith("final")
        and model["weights_sha256"] == card["weights"]["sha256"]
    )


def test_a_store_of_the_previous_format_still_trains_and_evaluates(tmp_path):
    """A store whose manifest has format 1's layout (the fixture's keys) opens for training."""
    from stforecast.data.dataset import WindowDataset

    archive = write_rain_cells(tmp_path / "r.nc", frames=24, size=16)
    cfg = data_config(sources=[str(archive)], input_frames=3, output_frames=2)
    new = prepare(cfg, tmp_path / "store")
    old_layout = fixture("format1_manifest.json")["manifest"]
    c = new["contract"]
    old = {
        **{k: new[k] for k in ("created", "software", "sources", "split", "config")},
        "format_version": 1,
        **{k: c[k] for k in ("variable", "channels", "units", "channel_units", "long_name")},
        "transform": c["transform"],
        "missing": {**new["missing"], **c["missing"]},
        "grid": c["grid"],
        "time": {**new["time"], "step_seconds": 600, "step_iso": "PT10M"},
        "windows": {**new["windows"], "input_frames": 3, "output_frames": 2},
        "processing": c["processing"],
    }
    assert set(old) == set(old_layout)  # the keys format 1 had, no more, no fewer
    (tmp_path / "store" / "manifest.json").write_text(json.dumps(old))
    ds = WindowDataset(tmp_path / "store", "train")
    assert (ds.t_in, ds.t_out) == (3, 2) and len(ds) == len(new["windows"]["starts"]["train"])
    assert DataContract.from_manifest(old) == DataContract.from_manifest(new)
