"""Time regularity, splits and windows: hand-made timelines with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from stforecast.config import SplitConfig
from stforecast.data.windows import (
    assign_splits,
    iso_duration,
    split_bounds,
    timeline,
    window_starts,
)
from stforecast.errors import InputError


def times(minutes):
    return np.datetime64("2020-10-31T00:00", "ns") + np.asarray(minutes) * np.timedelta64(1, "m")


@pytest.mark.parametrize(
    "seconds, iso", [(600, "PT10M"), (3600, "PT1H"), (86400, "P1D"), (300, "PT5M"), (90, "PT1M30S")]
)
def test_iso_duration(seconds, iso):
    assert iso_duration(seconds) == iso


def test_gaps_split_the_archive_into_segments():
    line = timeline(times([0, 10, 20, 50, 60, 70, 80, 110]), 600)
    assert line.segments == [(0, 3), (3, 7), (7, 8)]
    assert [g["missing_frames"] for g in line.gaps] == [2, 2]
    assert line.gaps[0]["after"] == "2020-10-31T00:20:00Z"


def test_off_step_frames_and_bad_order_are_input_errors():
    with pytest.raises(InputError, match="00:25:00Z is off the 600 s time step"):
        timeline(times([0, 10, 25, 30]), 600)
    with pytest.raises(InputError, match="not strictly increasing"):
        timeline(times([0, 10, 10, 20]), 600)
    with pytest.raises(InputError, match="not strictly increasing"):
        timeline(times([0, 20, 10]), 600)


def test_fraction_split_is_chronological_and_complete():
    ids = assign_splits(times(np.arange(10) * 10), SplitConfig(fractions=(0.6, 0.2, 0.2)))
    assert ids.tolist() == [0] * 6 + [1] * 2 + [2] * 2


def test_time_range_split_leaves_unassigned_frames_out():
    split = SplitConfig(
        train=("2020-10-31T00:00", "2020-10-31T01:00"),
        test=("2020-10-31T01:20", "2020-10-31T02:00"),
    )
    ids = assign_splits(times(np.arange(12) * 10), split)
    assert ids.tolist() == [0] * 6 + [-1] * 2 + [2] * 4
    bounds = split_bounds(times(np.arange(12) * 10), ids, 600)
    assert bounds == {
        "train": ["2020-10-31T00:00:00Z", "2020-10-31T01:00:00Z"],
        "test": ["2020-10-31T01:20:00Z", "2020-10-31T02:00:00Z"],
    }


def test_aware_time_ranges_are_converted_to_utc():
    split = SplitConfig(train=("2020-10-31T10:00+10:00", "2020-10-31T11:00+10:00"))
    ids = assign_splits(times(np.arange(12) * 10), split)
    assert ids.tolist() == [0] * 6 + [-1] * 6


def test_windows_never_span_gaps_or_mix_splits():
    ids = np.array([0] * 10 + [1] * 5 + [2] * 5, dtype=np.int8)
    segment = np.array([0] * 4 + [1] * 16, dtype=np.int32)  # a gap after frame 3
    starts = window_starts(ids, segment, length=3, stride=1)
    assert starts["train"].tolist() == [0, 1, 4, 5, 6, 7]
    assert starts["validation"].tolist() == [10, 11, 12]
    assert starts["test"].tolist() == [15, 16, 17]
    for name, k in (("train", 0), ("validation", 1), ("test", 2)):
        for s in starts[name]:
            assert (ids[s : s + 3] == k).all() and len(set(segment[s : s + 3])) == 1
    strided = window_starts(ids, segment, length=3, stride=2)
    assert strided["train"].tolist() == [0, 4, 6]


def test_validation_block_is_cut_out_of_the_training_range():
    """A validation block mid-event (not only its end, where rain decays) with training on both
    sides: the later split wins inside train's range, and no window straddles the cut."""
    times = np.arange(np.datetime64("2020-01-01T00:00"), np.datetime64("2020-01-01T04:00"),
                      np.timedelta64(10, "m"))  # fmt: skip
    split = SplitConfig(
        train=("2020-01-01T00:00", "2020-01-01T04:00"),
        validation=("2020-01-01T01:30", "2020-01-01T02:30"),
    )
    ids = assign_splits(times, split)
    assert ids.tolist() == [0] * 9 + [1] * 6 + [0] * 9
    starts = window_starts(ids, np.zeros(len(times), np.int64), length=4, stride=1)
    assert starts["train"].tolist() == [0, 1, 2, 3, 4, 5, 15, 16, 17, 18, 19, 20]
    assert starts["validation"].tolist() == [9, 10, 11]


def test_split_config_validation():
    with pytest.raises(ValueError, match="validation and test overlap"):
        SplitConfig(
            train=("2020-01-01", "2020-01-09"),
            validation=("2020-01-02", "2020-01-04"),
            test=("2020-01-03", "2020-01-05"),
        )
    with pytest.raises(ValueError, match="add up to 1"):
        SplitConfig(fractions=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="need at least `train`"):
        SplitConfig(test=("2020-01-02", "2020-01-04"))
