"""Recipe `[data]` validation and `--set` overrides: exit-2 errors that name file and field."""

from __future__ import annotations

import pytest

from stforecast.config import apply_overrides, data_config, parse_value, recipe_table
from stforecast.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


def test_recipe_paths_resolve_against_the_recipe(tmp_path):
    raw = recipe_table(write(tmp_path, '[data]\nsources = ["radar/*.nc", "/abs/x.nc"]\n'))
    cfg = data_config(raw)
    assert cfg.sources == [str(tmp_path / "radar/*.nc"), "/abs/x.nc"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("[data]\ncoarsen = 0\n", "r.toml [data]: coarsen: Input should be greater than or equal"),
        ("[data]\ncolour = 1\n", "colour: Extra inputs are not permitted"),
        ("[data]\ninput_frames = 'ten'\n", "input_frames: Input should be a valid integer"),
        ("[data]\ncrop_bbox = [0, 0, -1, 5]\n", "crop_bbox must be"),
        ("[data]\nsplit = {fractions = [0.5, 0.5, 0.5]}\n", "split: Value error, fractions"),
    ],
)
def test_bad_fields_name_file_and_field(tmp_path, text, message):
    raw = recipe_table(write(tmp_path, text))
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        data_config(raw)


def test_unknown_section_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="unknown section"):
        recipe_table(write(tmp_path, "[datta]\nx = 1\n"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        recipe_table(write(tmp_path, "[data\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        recipe_table(tmp_path / "missing.toml")


def test_set_overrides_with_the_same_validation(tmp_path):
    raw = recipe_table(
        write(tmp_path, "[data]\ninput_frames = 4\n"),
        ["data.input_frames=6", "data.split.fractions=[0.8, 0.1, 0.1]", "data.units=mm/h"],
    )
    cfg = data_config(raw)
    assert cfg.input_frames == 6 and cfg.split.fractions == (0.8, 0.1, 0.1) and cfg.units == "mm/h"
    raw = recipe_table(write(tmp_path, "[data]\n"), ["data.stride=-1"])
    with pytest.raises(ConfigError, match="stride"):
        data_config(raw)
    with pytest.raises(ConfigError, match=r"dotted\.key=value"):
        apply_overrides({}, ["novalue"])


def test_parse_value():
    assert parse_value("3") == 3 and parse_value("true") is True
    assert parse_value('["a", "b"]') == ["a", "b"] and parse_value("mm/h") == "mm/h"
    assert parse_value("2020-10-31T09:00:00").isoformat() == "2020-10-31T09:00:00"
