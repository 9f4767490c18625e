"""The wake-word example set: its layout, 1 s clips at 16 kHz, same seed same files, held-out voices."""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

sf = pytest.importorskip("soundfile")
pytest.importorskip("soxr")

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "wakeword" / "make_dataset.py"
TINY = ["--clips-per-voice", "3", "--train-voices", "4", "--test-voices", "2", "--piper-clips", "2",
        "--background-seconds", "3", "--train-talk-clips", "3"]  # fmt: skip


def _espeak_problem() -> str | None:
    """Why espeak-ng cannot be loaded here, or None."""
    try:
        import espeakng_loader

        ctypes.CDLL(espeakng_loader.get_library_path())
        espeakng_loader.get_data_path()
    except (ImportError, OSError, RuntimeError) as exc:
        return f"espeakng-loader cannot load espeak-ng: {type(exc).__name__}: {exc}"
    return None


def _make(runs: dict[Path, list[str]]) -> None:
    """make_dataset.py into each folder with its flags, side by side (most of the time is start-up)."""
    procs = {
        out: subprocess.Popen(
            [sys.executable, str(SCRIPT), str(out), *TINY, *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for out, flags in runs.items()
    }
    for out, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
        assert f"wrote {out}" in stdout and "voices.json" in stdout


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.*"))
    }


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    problem = _espeak_problem()
    if problem:
        pytest.skip(problem)
    root = tmp_path_factory.mktemp("wakeword")
    folders = {name: root / name for name in ("a", "b", "c", "long")}
    seeds = {"a": ["--seed", "0"], "b": ["--seed", "0"], "c": ["--seed", "1"]}
    _make({folders[k]: flags for k, flags in {**seeds, "long": ["--clip-seconds", "2"]}.items()})
    return folders


@pytest.mark.slow
def test_layout_and_every_clip_is_one_second_of_16khz_mono(made):
    root = made["a"]
    splits = ["train", "test"] + (["test_piper"] if (root / "test_piper").is_dir() else [])
    for split in splits:
        assert sorted(p.name for p in (root / split).iterdir()) == ["other", "wake"], split
        for label in ("other", "wake"):
            clips = sorted((root / split / label).glob("*.wav"))
            assert clips, f"{split}/{label} is empty"
            for clip in clips:
                info = sf.info(clip)
                assert (info.samplerate, info.channels, info.frames, info.subtype) == (
                    16000,
                    1,
                    16000,
                    "FLOAT",
                )
    background = sorted((root / "background").glob("*.wav"))
    assert background and all(sf.info(p).duration > 2 for p in background)
    assert all(sf.info(p).samplerate == 16000 for p in background)
    info = json.loads((root / "voices.json").read_text())
    written = {str(p.relative_to(root)) for p in root.rglob("*.wav")}
    assert set(info["files"]) == written  # every file described, nothing else
    assert info["sample_rate"] == 16000 and info["phrase"] == "hey focal"
    talk = sorted(k for k, m in info["files"].items() if m.get("kind") == "talk")  # --train-talk-clips 3
    assert talk == [f"train/other/talk-{i:04d}.wav" for i in range(3)]


@pytest.mark.slow
def test_the_same_seed_writes_the_same_files(made):
    first, again, other = (_digests(made[k]) for k in ("a", "b", "c"))
    assert first == again
    assert first != other


@pytest.mark.slow
def test_held_out_voices_are_never_heard_in_training(made):
    info = json.loads((made["a"] / "voices.json").read_text())
    train, test = set(info["espeak"]["train_variants"]), set(info["espeak"]["test_variants"])
    assert train and test and not train & test

    def variants(split: str) -> set[str]:
        voices = {m["voice"] for k, m in info["files"].items() if k.startswith(f"{split}/")}
        return {v.split("+", 1)[1] for v in voices if "+" in v}  # espeak voices: accent+variant

    assert variants("train") <= train and variants("test") <= test
    assert variants("train") and variants("test")
    spoken = {info["files"][k]["text"] for k in info["files"] if "/wake/" in k}
    assert all("hey" in t.lower() and "focal" in t.lower() for t in spoken)
    recordings = info["recordings"]
    assert not set(recordings["train"]) & set(recordings["test"])


@pytest.mark.slow
def test_longer_clips_hold_the_same_utterances(made):
    short, long = (json.loads((made[k] / "voices.json").read_text())["files"] for k in ("a", "long"))
    said = {k: m["text"] for k, m in short.items() if m.get("kind") not in ("recording", None)}
    assert any(m.get("kind") == "talk" for m in short.values())
    assert said and said == {k: long[k]["text"] for k in said}  # same seed: same voices, same words
    clips = [p for p in made["long"].rglob("*.wav") if "background" not in p.parts]
    assert clips and all(sf.info(p).frames == 32000 for p in clips)
    assert json.loads((made["long"] / "voices.json").read_text())["clip_seconds"] == 2.0


@pytest.mark.slow
def test_the_background_says_when_each_utterance_is_spoken(made):
    """voices.json times every utterance of the synthesized background (what a false accept overlaps)."""
    import numpy as np

    root = made["a"]
    files = json.loads((root / "voices.json").read_text())["files"]
    said = files["background/synthesized_speech.wav"]["said"]
    audio, rate = sf.read(root / "background" / "synthesized_speech.wav", dtype="float32")
    assert said and {u["kind"] for u in said} <= {"confusable", "words", "sentence"}
    spans = np.array([(u["start_s"], u["end_s"]) for u in said])
    assert spans[0, 0] == 0 and (spans[:, 0] < spans[:, 1]).all()
    pauses = np.append(spans[1:, 0], len(audio) / rate) - spans[:, 1]  # after each utterance, 0.2-1.5 s
    assert (pauses > 0.2 - 1e-3).all() and (pauses < 1.5 + 1e-3).all(), pauses
    spec = importlib.util.spec_from_file_location("make_dataset", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert all(u["text"] in module.confusables("hey focal") for u in said if u["kind"] == "confusable")
    inside = np.zeros(len(audio), dtype=bool)
    for start, end in (spans * rate).round().astype(int):
        inside[start:end] = True
    assert inside.any() and (~inside).any()
    level = np.abs(audio)
    assert level[inside].mean() > 3 * level[~inside].mean()  # speech within the spans, the pauses between
