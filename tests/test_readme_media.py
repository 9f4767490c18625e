"""The README's media commands run as a user copies them.

Every ``focalmix`` line of the bash blocks of "Audio clips and images" and "Wake words" runs in a folder
holding small stand-ins for the folders they name (``clips/``, ``photos/``, ``clips.csv``, ``new_clips/``,
``words/``, ``noise/``, ``background/``, ``recordings/``), with the README's own flags; only
``--trainer.max_epochs 1 --report false`` is appended to each fit (time), and ``.../best.ckpt`` is the
checkpoint of the fit before it.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("soundfile")
pytest.importorskip("livekit.wakeword")
pytest.importorskip("efficientnet_lite_pytorch")
import soundfile as sf  # noqa: E402
from PIL import Image  # noqa: E402

from tests._run import check_ok, run_focalmix  # noqa: E402

pytestmark = pytest.mark.slow

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
RATE = 16000
FAST = ["--trainer.max_epochs", "1", "--report", "false"]


def commands(heading: str) -> list[list[str]]:
    """The ``focalmix`` commands of the first bash block after ``heading``, continuation lines joined."""
    body = README.split(heading, 1)[1]
    block = re.search(r"```bash\n(.*?)```", body, re.S).group(1).replace("\\\n", " ")
    lines = (line.split(" #", 1)[0].strip() for line in block.splitlines())
    return [shlex.split(line)[1:] for line in lines if line.startswith("focalmix ")]


def _wav(path: Path, wave: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave.astype(np.float32), RATE)


def make_folders(root: Path) -> None:
    """Tones against noise (1 s clips), tinted images of mixed sizes, long noise and talk-like audio."""
    rng = np.random.default_rng(0)
    t = np.arange(RATE) / RATE
    for i in range(8):
        tone = 0.3 * np.sin(2 * np.pi * (300 + 25 * i) * t) + 0.02 * rng.standard_normal(RATE)
        noise = 0.2 * rng.standard_normal(RATE)
        for folder, (pos, neg) in (("clips", ("yes", "no")), ("words", ("wake", "other"))):
            _wav(root / folder / pos / f"{pos}{i}.wav", tone)
            _wav(root / folder / neg / f"{neg}{i}.wav", noise)
        _wav(root / "new_clips" / f"new{i}.wav", tone if i % 2 else noise)
    manifest = [(str(Path(p).relative_to(root)), p.parent.name) for p in sorted((root / "clips").glob("*/*"))]
    pd.DataFrame(manifest, columns=["file", "label"]).to_csv(root / "clips.csv", index=False)
    for label, base in (("cat", (200, 80, 40)), ("sky", (40, 90, 220))):
        (root / "photos" / label).mkdir(parents=True)
        for i in range(6):
            pixels = np.clip(np.array(base) + rng.normal(0, 25, (20 + 4 * i, 28, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / "photos" / label / f"{i}.png")
    _wav(root / "noise" / "hum.wav", 0.1 * rng.standard_normal(3 * RATE))
    _wav(root / "background" / "talk.wav", 0.2 * rng.standard_normal(20 * RATE))
    long = 0.2 * rng.standard_normal(4 * RATE)
    long[RATE : 2 * RATE] = 0.3 * np.sin(2 * np.pi * 400 * t)
    _wav(root / "recordings" / "rec.wav", long)


def run_all(heading: str, root: Path) -> list[str]:
    """Run the section's commands in order in ``root``; the printed output of each."""
    env = {"XDG_CACHE_HOME": str(root / "cache")}
    outputs, best = [], None
    for args in commands(heading):
        if args[0] == "fit":
            args = [*args, *FAST]
        args = [best if a == ".../best.ckpt" else a for a in args]
        out = check_ok(run_focalmix(args, root, 300, env), f"README: focalmix {shlex.join(args)}")
        if args[0] == "fit":
            best = re.search(r"best checkpoint: .*?, (\S+best\.ckpt)", out).group(1)
        outputs.append(out)
    return outputs


def test_the_audio_and_image_commands_run(tmp_path):
    make_folders(tmp_path)
    heading = "## Audio clips and images"
    names = [args[0] for args in commands(heading)]
    assert names.count("fit") >= 3 and "predict" in names, names  # the block still shows what we run
    outputs = run_all(heading, tmp_path)
    assert (tmp_path / "predictions.csv").is_file(), outputs[-1]  # the writer's default path
    frame = pd.read_csv(tmp_path / "predictions.csv")
    assert frame.columns[0] == "path" and len(frame) == 8  # new_clips/: path first, one row per file


def test_the_wake_word_commands_run(tmp_path):
    make_folders(tmp_path)
    heading = "### Wake words: false accepts per hour"
    assert [args[0] for args in commands(heading)] == ["fit", "predict"]
    fit, predict = run_all(heading, tmp_path)
    # the preset's 2 augmented views of each training clip went through the backbone (and the cache)
    rows, views = re.search(r"rows: train (\d+)", fit), re.search(r"features train: ([\d,]+) items", fit)
    assert rows and views and int(views.group(1).replace(",", "")) == 3 * int(rows.group(1)), fit
    assert re.search(r"^fa_per_hour\s+[\d.]+", fit, re.M), fit  # the summary's FA/h row, from background/
    events = pd.read_csv(tmp_path / "predictions.csv")
    assert list(events.columns) == ["path", "start_seconds", "peak_probability"], predict
