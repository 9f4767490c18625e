"""The feature cache under real DDP: `focalmix fit` with 2 CPU processes on a folder of WAV clips.

The backbone is tests._counting_backbone.CountingBackbone, which logs every input row it is given (rank
and a hash of the row), and each rank saves the features its datamodule serves. So the tests can check
what the cache promises (focalmix.cache.compute_features): every clip passes the backbone once in total,
shared between the ranks; every rank ends with the features one process computes; a second fit on the
same cache passes nothing through the backbone. Simulated ranks without Lightning: tests/test_cache.py.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("soundfile")
import soundfile as sf  # noqa: E402

from focalmix import FocalMixDataModule  # noqa: E402
from focalmix.media import make_loader  # noqa: E402
from tests._counting_backbone import (  # noqa: E402
    CALLS_ENV,
    FEATURES_ENV,
    SAMPLE_RATE,
    CountingBackbone,
    row_hash,
)
from tests._run import check_ok, run_focalmix, shared_folder  # noqa: E402

pytestmark = [pytest.mark.ddp, pytest.mark.slow]

HANG = 300  # a deadlocked 2-process fit is killed with its ranks after this long (see tests/_run.py)
DDP = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
FEATURES = re.compile(
    r"focalmix: features (\w+): ([\d,]+) items, ([\d,]+) from cache, ([\d,]+) computed, ([\d,]+) from other"
)


def _clips(root: Path, per_class: int = 12) -> list[Path]:
    """Tones ("yes") and noise ("no"), 1 s at 16 kHz, every clip different."""
    rng = np.random.default_rng(0)
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    files = []
    for label in ("yes", "no"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            if label == "yes":
                wave = 0.3 * np.sin(2 * np.pi * (300 + 20 * i) * t) + 0.02 * rng.standard_normal(SAMPLE_RATE)
            else:
                wave = (0.05 + 0.02 * i) * rng.standard_normal(SAMPLE_RATE)
            files.append(root / label / f"{label}{i:02d}.wav")
            sf.write(files[-1], wave.astype(np.float32), SAMPLE_RATE)
    return files


def _fit(folder: Path, name: str) -> subprocess.CompletedProcess:
    """`focalmix fit` on 2 processes; calls to the backbone in NAME.calls, features in NAME/rankR.npz."""
    (folder / name).mkdir()
    args = ["fit", "--data.source", str(folder / "clips"), "--data.cache_dir", str(folder / "cache"),
            "--model.backbone", "tests._counting_backbone.CountingBackbone", "--trainer.max_epochs", "1",
            "--trainer.callbacks+=tests._counting_backbone.SaveFeatures", "--data.batch_size", "8",
            "--report", "false", *DDP]  # fmt: skip
    env = {
        "FOCALMIX_TRUSTED_MODULES": "tests",  # the checkpoint names the backbone's class
        CALLS_ENV: str(folder / f"{name}.calls"),
        FEATURES_ENV: str(folder / name),
    }
    (folder / f"{name}.calls").touch()
    return run_focalmix(args, folder / name, HANG, env)


def _fit_twice(folder: Path) -> list[subprocess.CompletedProcess]:
    _clips(folder / "clips")
    first = _fit(folder, "first")
    return [first, _fit(folder, "second") if first.returncode == 0 else first]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, list[str]]:
    """Two DDP fits on one cache folder (once per session, also under xdist): (folder, their outputs)."""
    folder, (first, second) = shared_folder(tmp_path_factory, "media_ddp", _fit_twice)
    return folder, [check_ok(first, "DDP fit, empty cache"), check_ok(second, "DDP fit, full cache")]


def _calls(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _counts(out: str) -> dict[str, tuple[int, ...]]:
    """split -> (items, from cache, computed, from other ranks), from the features lines rank 0 prints."""
    lines = FEATURES.findall(out)
    assert len({split for split, *_ in lines}) == len(lines), f"one line per split, got {lines}"
    return {split: tuple(int(n.replace(",", "")) for n in numbers) for split, *numbers in lines}


def test_every_clip_passes_the_backbone_once_shared_by_the_ranks(runs):
    folder, (out, _) = runs
    calls = _calls(folder / "first.calls")
    rows = Counter(h for call in calls for h in call["rows"])
    per_rank = Counter()
    for call in calls:
        per_rank[call["rank"]] += len(call["rows"])
    # the oracle: each clip decoded as the datamodule decodes it for this backbone
    load = make_loader(CountingBackbone().input_spec)
    clips = sorted((folder / "clips").glob("*/*.wav"))
    expected = {row_hash(load(str(path), 0.0)) for path in clips}
    assert len(expected) == len(clips) == 24
    assert set(rows) == expected and max(rows.values()) == 1, "every clip once, none twice"
    assert set(per_rank) == {0, 1} and abs(per_rank[0] - per_rank[1]) <= 2, per_rank  # one share per split
    # what rank 0 prints agrees with what the backbone saw
    counts = _counts(out)
    assert set(counts) == {"train", "val"}, out
    assert sum(total for total, *_ in counts.values()) == len(clips)
    for split, (total, cached, computed, others) in counts.items():
        assert cached == 0 and computed + others == total and computed - others in (0, 1), (split, counts)
    assert sum(computed for _, _, computed, _ in counts.values()) == per_rank[0]
    assert sum(others for *_, others in counts.values()) == per_rank[1]


def test_every_rank_serves_the_features_one_process_computes(runs):
    folder, _ = runs
    # the oracle: one process, no cache, the backbone on every clip, the split the fit draws by default
    dm = FocalMixDataModule(str(folder / "clips"), cache_dir="none", batch_size=8)
    dm.attach_backbone(CountingBackbone())
    for name in ("first", "second"):  # computed and shared by the ranks; then read from the cache
        saved = [np.load(folder / name / f"rank{r}.npz") for r in (0, 1)]
        for split in ("train", "val"):
            expected = dm._dataset(split).x.numpy()
            assert expected.shape == (len(dm.split_indices[split]), CountingBackbone().out_features)
            where = f"{name} fit, {split}"
            np.testing.assert_array_equal(saved[0][split], saved[1][split], err_msg=where)
            np.testing.assert_allclose(saved[0][split], expected, rtol=1e-6, atol=0, err_msg=where)


def test_a_second_fit_on_the_same_cache_passes_nothing_through_the_backbone(runs):
    folder, (_, out) = runs
    assert _calls(folder / "second.calls") == []
    counts = _counts(out)
    assert set(counts) == {"train", "val"}, out
    assert sum(total for total, *_ in counts.values()) == 24
    for split, (total, cached, computed, others) in counts.items():
        assert (cached, computed, others) == (total, 0, 0), (split, counts)
