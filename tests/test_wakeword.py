"""Events, false accepts per hour and the FA/h threshold, against a plain reference and known events."""

from __future__ import annotations

import numpy as np
import pytest

from focalmix.wakeword import choose_threshold, detect, fa_frr_table, false_accepts, frr, threshold_grid


def _reference_events(probs, starts, threshold, refractory):
    """The streaming detector of the README, one window at a time: a window at or above the threshold
    fires unless the last event fired less than the refractory time before."""
    events, last = [], -np.inf
    for p, t in zip(probs, starts, strict=True):
        if p >= threshold and t - last >= refractory - 1e-6:
            events.append(t)
            last = t
    return events


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize(("hop", "refractory"), [(0.1, 1.0), (0.1, 0.35), (0.25, 2.0)])
def test_events_match_the_one_window_at_a_time_definition(seed, hop, refractory):
    rng = np.random.default_rng(seed)
    n = 400
    starts = np.arange(n) * hop
    probs = np.clip(rng.normal(0.3, 0.3, n), 0, 1)  # bursty enough to have runs and gaps
    for threshold in (0.2, 0.5, 0.8, 0.95):
        expected = _reference_events(probs, starts, threshold, refractory)
        got = [e["start"] for e in detect(probs, starts, threshold, refractory_seconds=refractory)]
        np.testing.assert_allclose(got, expected)
        counted = false_accepts(probs, starts, np.array([threshold]), refractory_seconds=refractory)
        assert counted[0] == len(expected)


def test_known_events_on_synthetic_background_give_the_right_fa_per_hour():
    hop, clip_hours = 0.1, 0.5  # 30 minutes of windows
    starts = np.arange(int(clip_hours * 3600 / hop)) * hop
    probs = np.full(starts.size, 0.05)
    events = np.array([60.0, 300.0, 301.5, 900.0, 1750.0])  # 301.5: 1.5 s after 300.0, a new event
    for t in events:  # each a run of 4 firing windows with a peak
        i = int(round(t / hop))
        probs[i : i + 4] = [0.7, 0.9, 0.97, 0.8]
    table = fa_frr_table(np.array([0.99, 0.6]), probs, starts, clip_hours, np.array([0.5, 0.95, 0.98]))
    assert table["false_accepts"].tolist() == [5, 5, 0]
    np.testing.assert_allclose(table["fa_per_hour"], [10.0, 10.0, 0.0])
    np.testing.assert_allclose(table["frr"], [0.0, 0.5, 0.5])
    peaks = [e["peak"] for e in detect(probs, starts, 0.5)]
    assert peaks == [0.97] * 5


def test_files_never_merge_and_detections_are_spaced_by_the_refractory_time():
    starts = np.array([0.0, 0.1, 0.2, 0.0, 0.1])
    probs = np.array([0.9, 0.9, 0.9, 0.9, 0.9])
    ids = np.array([0, 0, 0, 1, 1])
    events = detect(probs, starts, 0.5, file_ids=ids)
    assert [(e["file"], e["start"]) for e in events] == [(0, 0.0), (1, 0.0)]
    long_run = np.full(35, 0.9)  # 3.5 s of firing windows: the detector fires again every second
    assert [e["start"] for e in detect(long_run, np.arange(35) / 10, 0.5)] == pytest.approx([0, 1, 2, 3])
    # after a dip, the next firing window fires only once the refractory time has passed
    dip = np.array([0.9] * 5 + [0.1] + [0.9] * 10)
    assert [e["start"] for e in detect(dip, np.arange(16) / 10, 0.5)] == pytest.approx([0.0, 1.0])
    got = [e["start"] for e in detect(dip, np.arange(16) / 10, 0.5, refractory_seconds=0.5)]
    assert got == pytest.approx([0.0, 0.6, 1.1])


def test_a_threshold_under_which_everything_fires_is_never_chosen():
    # One 2-hour background file scoring 0.05 everywhere and one near-miss: at 0.5 FA/h one event is
    # allowed. Counting a run as one event however long it lasts, threshold 0 (every window fires: one
    # run, one event) met the target with FRR 0 and was chosen; the deployed detector fires every second.
    hop = 0.1
    starts = np.arange(int(2 * 3600 / hop)) * hop
    probs = np.full(starts.size, 0.05)
    probs[30000:30003] = 0.97
    positives = np.linspace(0.3, 1.0, 50)
    table = fa_frr_table(positives, probs, starts, 2.0, threshold_grid())
    assert table["false_accepts"][0] == 7200  # threshold 0: a detection every second for two hours
    chosen = table["threshold"][choose_threshold(table, 0.5)]
    assert 0.05 < chosen <= 0.3 and table["fa_per_hour"][choose_threshold(table, 0.5)] == 0.5


def test_frr_and_the_threshold_choice():
    positives = np.array([0.2, 0.6, 0.9, 0.99])
    np.testing.assert_allclose(frr(positives, np.array([0.0, 0.5, 0.95, 1.0])), [0, 0.25, 0.75, 1.0])
    table = {"frr": np.array([0.0, 0.1, 0.3, 0.9]), "fa_per_hour": np.array([50.0, 3.0, 0.4, 0.0])}
    assert choose_threshold(table, 0.5) == 2
    assert choose_threshold(table, 5.0) == 1
    none_ok = {"frr": np.array([0.0, 0.2]), "fa_per_hour": np.array([9.0, 2.0])}
    assert choose_threshold(none_ok, 0.5) == 1  # the fewest false accepts
    grid = threshold_grid()
    assert grid[0] == 0 and grid[-1] > 0.999 and np.all(np.diff(grid) > 0)


def test_bad_background_hours_are_refused():
    with pytest.raises(ValueError, match="`background_hours` must be > 0"):
        fa_frr_table(np.ones(2), np.ones(3), np.arange(3.0), 0.0, np.array([0.5]))
