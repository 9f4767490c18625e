"""Media sources: folders, manifests, decoding audio and images, long files, hostile files, datasets.

Every file is made here in ``tmp_path`` with soundfile, Pillow and numpy. Oracles: a signal generated
directly at the target rate, a file whose samples encode their own position, the whole file decoded
at once versus a clip of it, and the rules documented in :mod:`focalmix.media`.
"""

from __future__ import annotations

import os
import pickle
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch._utils import ExceptionWrapper
from torch.utils.data import DataLoader

from focalmix.backbones.spec import InputSpec
from focalmix.datasets import passthrough_collate
from focalmix.media import (
    LONG_FILE_TOLERANCE,
    MediaDataset,
    MediaDecodeError,
    MediaIndex,
    load_audio,
    load_image,
    make_loader,
    media_kind,
    probe,
    read_manifest,
    scan_folder,
    split_long_files,
    windows,
)

RATE = 16000  # the rate clips are loaded at
EDGE = RATE // 100  # 10 ms: resampling a signal that starts abruptly rings at both ends
LSB16 = 2.0**-15  # one step of 16-bit PCM in [-1, 1)
RESAMPLE_TOL = 1e-4  # soxr "HQ" keeps ~20 bits: its error on an in-band tone is far below this


def sine(rate: int, seconds: float = 0.5, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(round(rate * seconds)) / rate)).astype(np.float32)


def wav(path: Path, data: np.ndarray, rate: int = RATE, subtype: str | None = None, **kw) -> Path:
    """Write audio; the format follows the suffix (.wav, .flac, .ogg), the subtype its default."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, rate, subtype=subtype, **kw)
    return path


def png(path: Path, color=(255, 0, 0), size=(12, 10), mode: str = "RGB", **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, **kw)
    return path


def one_line_error(excinfo, path) -> None:
    message = str(excinfo.value)
    assert "\n" not in message and message.startswith(f"cannot decode {path}: ")
    assert message.endswith("pass --data.bad_files skip")


# ---------------------------------------------------------------- folders, manifests, kinds


def test_scan_folder_classes_sorted_and_hidden_skipped(tmp_path):
    names = {"yes": ["b.wav", "a.WAV", "10.flac"], "no": ["z.wav", "1.ogg"]}
    for label, files in names.items():
        for name in files:
            wav(tmp_path / label / name, sine(8000), 8000)
    (tmp_path / "yes" / "notes.txt").write_text("ignored")
    (tmp_path / "yes" / ".DS_Store").write_bytes(b"\0\1")
    (tmp_path / "yes" / "._a.wav").write_bytes(b"")  # macOS metadata, hidden
    wav(tmp_path / ".cache" / "x.wav", sine(8000), 8000)
    index = scan_folder(tmp_path)
    expected = sorted((label, name) for label, files in names.items() for name in files)
    assert index.paths == [str((tmp_path / label / name).absolute()) for label, name in expected]
    assert index.labels.tolist() == [label for label, _ in expected]
    assert index.kind == "audio" and index.skipped == [] and index.starts.tolist() == [0.0] * len(expected)
    assert all(os.path.isabs(p) for p in index.paths)


def test_scan_folder_images_and_predict_folder(tmp_path):
    for label in ("cat", "dog"):
        png(tmp_path / "train" / label / "1.JPG", format="JPEG")
        png(tmp_path / "train" / label / "2.png")
    index = scan_folder(tmp_path / "train")
    assert index.kind == "image" and index.labels.tolist() == ["cat", "cat", "dog", "dog"]
    flat = tmp_path / "new"
    for name in ("b.png", "a.webp"):
        png(flat / name)
    predict = scan_folder(flat, need_labels=False)
    assert predict.labels is None and [Path(p).name for p in predict.paths] == ["a.webp", "b.png"]
    with pytest.raises(ValueError, match="no class folders; put each class's files in a subfolder"):
        scan_folder(flat)
    one = scan_folder(flat / "a.webp", need_labels=False)
    assert one.paths == [str((flat / "a.webp").absolute())] and one.labels is None
    with pytest.raises(ValueError, match="single file, with no class"):
        scan_folder(flat / "a.webp")


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, what in files.items():
        target = root / rel
        if what == "dir":
            target.mkdir(parents=True, exist_ok=True)
        elif what == "wav":
            wav(target, sine(8000), 8000)
        elif what == "png":
            png(target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(what)
    return root


SCAN_ERRORS = {  # folder layout -> (need_labels, the ValueError's message)
    "nothing": ({"a/notes.txt": "x", "readme.md": "x"}, True, r"no media files \(found: readme.md, a/\)"),
    "empty": ({}, True, "no media files .it is empty"),
    "empty class": (
        {"a/1.wav": "wav", "b/1.wav": "wav", "empty": "dir"},
        True,
        r"class folder .*empty has no audio files; remove it or add clips",
    ),
    "class without images": (
        {"a/1.png": "png", "b/1.png": "png", "c/x.txt": "x"},
        False,
        r"class folder .*c has no image files; remove it or add images",
    ),
    "one class": ({"a/1.wav": "wav"}, True, "single class folder .'a'.*add a folder per class"),
    "mixed": (
        {"a/1.wav": "wav", "b/1.png": "png"},
        True,
        r"mixes audio and image files .e\.g\. .*1\.wav and .*1\.png",
    ),
    "loose and classes": (
        {"a/1.wav": "wav", "b/1.wav": "wav", "2.wav": "wav"},
        False,
        r"both directly .e\.g\. 2\.wav",
    ),
}


@pytest.mark.parametrize("case", SCAN_ERRORS)
def test_scan_folder_errors(tmp_path, case):
    files, need_labels, match = SCAN_ERRORS[case]
    _tree(tmp_path / "data", files).mkdir(exist_ok=True)
    with pytest.raises(ValueError, match=match):
        scan_folder(tmp_path / "data", need_labels=need_labels)


def test_scan_folder_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        scan_folder(tmp_path / "nope")
    with pytest.raises(ValueError, match="`bad_files` must be 'error' or 'skip', got 'ignore'"):
        scan_folder(tmp_path, bad_files="ignore")


def test_media_kind(tmp_path):
    _tree(tmp_path / "audio", {"a/1.wav": "wav", "b/2.WAV": "wav"})
    _tree(tmp_path / "flat", {"1.png": "png", "notes.txt": "x"})
    _tree(tmp_path / "arrays", {"x.npy": "not really", "a/1.wav": "wav"})
    _tree(tmp_path / "mixed", {"a/1.wav": "wav", "b/1.png": "png"})
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 2)))
    pd.DataFrame({"f0": [1.0, 2.0], "y": [0, 1]}).to_csv(tmp_path / "table.csv", index=False)
    manifest = pd.DataFrame({"file": ["audio/a/1.wav", "audio/b/2.WAV"], "y": ["a", "b"]})
    manifest.to_csv(tmp_path / "m.csv", index=False)
    manifest.to_parquet(tmp_path / "m.parquet")
    assert media_kind("breast_cancer") is None and media_kind(tmp_path / "d.npz") is None
    assert media_kind(tmp_path / "table.csv") is None and media_kind(tmp_path / "table.csv", "file") is None
    assert media_kind(tmp_path / "arrays") is None
    assert media_kind(tmp_path / "audio") == "audio" and media_kind(str(tmp_path / "flat")) == "image"
    assert media_kind(tmp_path / "m.csv") is None  # a table unless told its path column
    assert media_kind(tmp_path / "m.csv", "file") == media_kind(tmp_path / "m.parquet", "file") == "audio"
    assert media_kind(tmp_path / "m.parquet", "path") is None
    (tmp_path / "one.csv").write_text("file\naudio/a/1.wav\n")  # a prediction manifest: one column
    (tmp_path / "semi.csv").write_text("y;file\na;audio/a/1.wav\n")
    assert media_kind(tmp_path / "one.csv", "file") == media_kind(tmp_path / "semi.csv", "file") == "audio"
    assert read_manifest(tmp_path / "one.csv", "file", None, need_labels=False).labels is None
    assert media_kind(tmp_path / "audio" / "a" / "1.wav") == "audio"
    with pytest.raises(ValueError, match="mixes audio and image files"):
        media_kind(tmp_path / "mixed")
    with pytest.raises(ValueError, match="column 'f0' of .*table.csv holds no media paths"):
        media_kind(tmp_path / "table.csv", "f0")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_read_manifest_relative_and_absolute(tmp_path, suffix):
    clips = [wav(tmp_path / "clips" / f"{i}.wav", sine(8000), 8000) for i in range(3)]
    elsewhere = wav(tmp_path.parent / f"{tmp_path.name}_abs" / "far.wav", sine(8000), 8000)
    rows = ["clips/2.wav", "clips/0.wav", str(elsewhere), "clips/1.wav"]
    frame = pd.DataFrame({"path": rows, "label": [1, 0, 1, 0], "other": 0})
    manifest = tmp_path / "meta" / f"m{suffix}"
    manifest.parent.mkdir()
    frame.assign(path=[p if os.path.isabs(p) else "../" + p for p in rows]).pipe(
        lambda f: f.to_csv(manifest, index=False) if suffix == ".csv" else f.to_parquet(manifest)
    )
    index = read_manifest(manifest, "path", "label")
    assert index.paths == [str(clips[2]), str(clips[0]), str(elsewhere), str(clips[1])]  # row order
    assert index.labels.tolist() == ["1", "0", "1", "0"] and index.kind == "audio"
    unlabelled = read_manifest(manifest, "path", None, need_labels=False)
    assert unlabelled.labels is None and unlabelled.paths == index.paths


def _manifest(tmp_path: Path, **columns) -> Path:
    for name in ("a.wav", "b.wav"):
        wav(tmp_path / name, sine(8000), 8000)
    path = tmp_path / "m.csv"
    pd.DataFrame(columns).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    "columns, args, error, match",
    [
        (
            {"file": ["a.wav"], "y": [1]},
            ("path", "y"),
            ValueError,
            r"path column 'path' not found in m.csv; columns are: \['file', 'y'\]",
        ),
        (
            {"path": ["a.wav", "b.wav"], "y": [1, 0]},
            ("path", "label"),
            ValueError,
            r"target column 'label' not found in m.csv; columns are: \['path', 'y'\]",
        ),
        (
            {"path": ["a.wav", "x/c.wav", "d.wav", "e.wav", "f.wav"], "y": [0, 1, 0, 1, 0]},
            ("path", "y"),
            FileNotFoundError,
            r"4 of the 5 files listed in column 'path' .* do not exist: .*c.wav, .*d.wav, .*e.wav, \.\.\.",
        ),
        (
            {"path": ["a.wav", "b.wav", "a.wav"], "y": [1, None, 0]},
            ("path", "y"),
            ValueError,
            r"target column 'y' of m.csv is empty on 1 lines \(3\)",
        ),
        (
            {"path": ["a.wav", None], "y": [1, 0]},
            ("path", "y"),
            ValueError,
            r"path column 'path' of m.csv is empty",
        ),
        ({"path": ["a.wav", "b.wav"], "y": [1, 1]}, ("path", "y"), ValueError, "has a single class"),
        (
            {"path": ["a.wav", "m.csv"], "y": [1, 0]},
            ("path", "y"),
            ValueError,
            r"1 paths .* are not media files .e\.g\. .*m\.csv",
        ),
    ],
)
def test_read_manifest_errors(tmp_path, columns, args, error, match):
    with pytest.raises(error, match=match):
        read_manifest(_manifest(tmp_path, **columns), *args)


def test_read_manifest_mixed_kinds_and_missing_manifest(tmp_path):
    png(tmp_path / "c.png")
    with pytest.raises(ValueError, match="mixes audio and image files"):
        read_manifest(_manifest(tmp_path, path=["a.wav", "c.png"], y=[0, 1]), "path", "y")
    with pytest.raises(FileNotFoundError, match="manifest .*none.csv does not exist"):
        read_manifest(tmp_path / "none.csv", "path", "y")


# ---------------------------------------------------------------- audio decoding


def test_resampled_stereo_equals_sine_made_at_target_rate(tmp_path):
    stereo = np.stack([sine(44100)] * 2, axis=1)  # (frames, 2), both channels equal
    x = load_audio(wav(tmp_path / "s.wav", stereo, 44100, "FLOAT"), RATE)
    reference = sine(RATE)
    assert x.dtype == np.float32 and x.shape == reference.shape
    np.testing.assert_allclose(x[EDGE:-EDGE], reference[EDGE:-EDGE], atol=RESAMPLE_TOL)


def test_resampling_keeps_a_low_tone_at_its_frequency(tmp_path):
    freq, seconds = 50.0, 1.0  # a whole number of cycles in 1 s: the tone sits on one FFT bin
    x = load_audio(wav(tmp_path / "t.wav", sine(48000, seconds, freq), 48000), RATE)
    peak = np.argmax(np.abs(np.fft.rfft(x)))
    assert np.fft.rfftfreq(len(x), 1 / RATE)[peak] == freq


@pytest.mark.parametrize(
    "rate, subtype, channels, fmt, tol",
    [
        (RATE, "PCM_U8", 1, "WAV", 2.0**-7),  # one 8-bit step (libsndfile maps 8-bit without rounding)
        (RATE, "PCM_24", 1, "WAV", 2.0**-23),
        (RATE, "FLOAT", 1, "WAV", 0.0),
        (RATE, "PCM_16", 6, "WAV", LSB16),
        (8000, "PCM_16", 1, "WAV", LSB16 + RESAMPLE_TOL),
        (192000, "PCM_16", 1, "WAV", LSB16 + RESAMPLE_TOL),
        (44100, "PCM_24", 2, "FLAC", RESAMPLE_TOL),
        (48000, "VORBIS", 2, "OGG", 0.05),  # lossy: within -20 dB of the 0.5-amplitude tone
    ],
)
def test_formats_decode_to_the_16_bit_mono_reference(tmp_path, rate, subtype, channels, fmt, tol):
    reference = load_audio(wav(tmp_path / "ref.wav", sine(RATE), RATE, "PCM_16"), RATE)
    data = np.repeat(sine(rate)[:, None], channels, axis=1)  # (frames, channels)
    if (
        channels > 1 and fmt != "OGG"
    ):  # channels that differ, by offsets summing to zero: their mean is the tone
        spread = np.linspace(-0.3, 0.3, channels) * (-1.0) ** np.arange(len(data))[:, None]
        data = (data + spread).astype(np.float32)
    path = wav(tmp_path / f"x.{fmt.lower()}", data, rate, subtype)
    x = load_audio(path, RATE)
    assert x.dtype == np.float32 and x.shape == reference.shape
    # the 16-bit reference is itself within one step of the tone (libsndfile writes x * 32767, reads / 32768)
    np.testing.assert_allclose(x[EDGE:-EDGE], reference[EDGE:-EDGE], atol=tol + LSB16)


def positions(n: int, rate: int, path: Path) -> Path:
    """A 16-bit file whose sample i is (i mod 65536) - 32768: each sample says where it is."""
    return wav(path, (np.arange(n) % 65536 - 32768).astype(np.int16), rate)


def decode_positions(x: np.ndarray) -> np.ndarray:
    return np.round(x.astype(np.float64) * 32768).astype(np.int64) + 32768


@pytest.mark.parametrize("start, num_samples", [(0.0, None), (0.25, 100), (0.0, 4000), (1.9, 1600), (3.0, 5)])
def test_start_cut_and_pad_read_the_right_samples(tmp_path, start, num_samples):
    n = 2 * RATE
    x = load_audio(positions(n, RATE, tmp_path / "p.wav"), RATE, num_samples, start)
    first = round(start * RATE)
    expected = np.arange(first, n if num_samples is None else first + num_samples)
    inside = expected < n
    assert x.shape == (len(expected),)
    np.testing.assert_array_equal(decode_positions(x[inside]), expected[inside])
    assert np.all(x[~inside] == 0.0)  # past the end: zero padding


def test_clip_from_middle_of_long_file_reads_only_that_clip(tmp_path, monkeypatch):
    rate, minutes = 8000, 3
    path = positions(rate * 60 * minutes, rate, tmp_path / "long.wav")
    frames_read = []
    real_read = sf.SoundFile.read

    def spy(self, frames=-1, *args, **kwargs):
        frames_read.append(frames)
        return real_read(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    start = 60.0 * minutes / 2
    x = load_audio(path, rate, rate, start)
    expected = np.arange(round(start * rate), round(start * rate) + rate) % 65536
    np.testing.assert_array_equal(decode_positions(x), expected)
    assert frames_read == [rate]
    frames_read.clear()
    resampled = load_audio(path, RATE, RATE, start)  # 8 kHz -> 16 kHz: 1 s of input, plus context
    assert rate <= sum(frames_read) < 1.1 * rate
    whole = load_audio(path, RATE)
    first = round(start * RATE)
    np.testing.assert_allclose(resampled, whole[first : first + RATE], atol=RESAMPLE_TOL)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000, 96000])
@pytest.mark.parametrize("start", [0.0, 0.3, 1.2345])
def test_resampled_clip_equals_the_same_part_of_the_whole_file(tmp_path, rate, start):
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 2 * rate).astype(np.float32)  # all frequencies
    path = wav(tmp_path / "n.wav", noise, rate, "FLOAT")
    whole = load_audio(path, RATE)
    first, n = round(start * RATE), RATE // 2
    np.testing.assert_allclose(load_audio(path, RATE, n, start), whole[first : first + n], atol=RESAMPLE_TOL)


def test_audio_argument_errors(tmp_path):
    path = wav(tmp_path / "a.wav", sine(RATE), RATE)
    for kwargs, match in [
        ({"sample_rate": 0}, "`sample_rate` must be a positive int"),
        ({"sample_rate": 16000.0}, "`sample_rate` must be a positive int"),
        ({"sample_rate": RATE, "num_samples": -1}, "`num_samples` must be an int >= 0"),
        ({"sample_rate": RATE, "start": -0.5}, "`start` must be a finite number of seconds >= 0"),
    ]:
        with pytest.raises(ValueError, match=match):
            load_audio(path, **kwargs)
    with pytest.raises(FileNotFoundError, match="gone.wav does not exist"):
        load_audio(tmp_path / "gone.wav", RATE)


# ---------------------------------------------------------------- long files and windows


def test_split_long_files_counts_and_starts(tmp_path):
    clip = 1.0
    durations = {  # seconds -> the clip starts the documented rule gives
        0.5: [0.0],  # shorter: one clip, zero-padded when loaded
        1.0 + LONG_FILE_TOLERANCE / 2: [0.0],  # within the tolerance: one clip, its end cut
        2.5: [0.0, 1.0, 2.0],  # the last half clip is kept
        3.4: [0.0, 1.0, 2.0],  # the last 0.4 s (< half a clip) is dropped
        3.0: [0.0, 1.0, 2.0],
    }
    rate = 8000
    paths = [
        str(wav(tmp_path / f"{i}.wav", np.zeros(round(d * rate), np.float32), rate))
        for i, d in enumerate(durations)
    ]
    labels = [f"c{i}" for i in range(len(paths))]
    index = MediaIndex(paths, labels, "audio", "long")
    out = split_long_files(index, clip)
    expected = [
        (p, lab, s) for p, lab, starts in zip(paths, labels, durations.values(), strict=True) for s in starts
    ]
    assert list(zip(out.paths, out.labels.tolist(), out.starts.tolist(), strict=True)) == expected
    overlap = split_long_files(MediaIndex(paths[2:5], labels[2:5], "audio", "long"), clip, hop_seconds=0.5)
    assert overlap.starts.tolist() == (
        [0.0, 0.5, 1.0, 1.5]  # 2.5 s: the whole clips reach the end
        + [0.0, 0.5, 1.0, 1.5, 2.0]  # 3.4 s: a clip at 2.5 would add only 0.4 s no whole clip holds
        + [0.0, 0.5, 1.0, 1.5, 2.0]  # 3.0 s
    )
    gaps = split_long_files(MediaIndex(paths[3:4], labels[3:4], "audio", "long"), clip, hop_seconds=1.5)
    assert gaps.starts.tolist() == [0.0, 1.5]  # a clip at 3.0 would hold 0.4 s
    assert split_long_files(index, clip, "crop") is index
    long = r"2\.wav is 2\.50 s long, longer than `clip_seconds` \(1\.0 s\); pass --data.long_files split"
    with pytest.raises(ValueError, match=long + ".* or crop"):
        split_long_files(index, clip, "error")
    images = MediaIndex([str(png(tmp_path / "a.png"))], ["a"], "image", "imgs")
    assert split_long_files(images, clip) is images
    for kwargs, match in [({"mode": "cut"}, "`mode` must be"), ({"hop_seconds": 0}, "`hop_seconds` must be")]:
        with pytest.raises(ValueError, match=match):
            split_long_files(index, clip, **kwargs)


def test_split_clips_load_consecutive_samples(tmp_path):
    rate = 8000
    path = positions(5 * rate // 2, rate, tmp_path / "p.wav")
    out = split_long_files(MediaIndex([str(path)], ["a"], "audio", "p"), 1.0)
    loader = make_loader(InputSpec("audio", sample_rate=rate, clip_seconds=1.0))
    clips = np.concatenate([loader(p, s) for p, s in zip(out.paths, out.starts, strict=True)])
    n = 5 * rate // 2
    np.testing.assert_array_equal(decode_positions(clips[:n]), np.arange(n))  # the file, in order
    assert np.all(clips[n:] == 0)  # the partial last clip, zero-padded


@pytest.mark.parametrize(
    "duration, clip, hop", [(10.0, 1.0, 1.0), (10.3, 1.0, 0.25), (3.7, 1.5, 1.0), (2.0, 0.3, 0.7)]
)
def test_windows_cover_the_recording(duration, clip, hop):
    starts = windows(duration, clip, hop)
    assert starts[0] == 0.0 and np.all(starts >= 0) and np.all(starts + clip <= duration + 1e-9)
    assert starts[-1] + clip == pytest.approx(duration)  # the last window ends at the end
    assert np.all(np.diff(starts) <= hop + 1e-9) and np.all(np.diff(starts) > 0)
    assert len(starts) == int(np.ceil((duration - clip) / hop - 1e-9)) + 1


def test_windows_short_recording_and_errors():
    assert windows(0.4, 1.0, 0.5).tolist() == windows(1.0, 1.0, 0.5).tolist() == [0.0]
    for args, match in [
        ((1.0, 0.0, 1.0), "`clip_seconds`"),
        ((1.0, 1.0, -1.0), "`hop_seconds`"),
        ((-1, 1, 1), "`duration`"),
    ]:
        with pytest.raises(ValueError, match=match):
            windows(*args)


# ---------------------------------------------------------------- images


def test_image_rgb_shape_range_and_resize(tmp_path):
    x = load_image(png(tmp_path / "r.png", (255, 128, 0), (40, 30)), (8, 16))
    assert x.shape == (3, 8, 16) and x.dtype == np.float32
    np.testing.assert_allclose(
        x, np.broadcast_to(np.array([255, 128, 0])[:, None, None] / 255, x.shape), atol=1e-6
    )
    with pytest.raises(ValueError, match=r"`size` must be \(height, width\)"):
        load_image(tmp_path / "r.png", (0, 4))
    with pytest.raises(FileNotFoundError, match="gone.png does not exist"):
        load_image(tmp_path / "gone.png", (4, 4))


def test_downscaling_is_antialiased(tmp_path):
    board = (np.indices((64, 64)).sum(axis=0) % 2 * 255).astype(np.uint8)  # 1-pixel checkerboard
    Image.fromarray(board).save(tmp_path / "board.png")
    x = load_image(tmp_path / "board.png", (8, 8))
    np.testing.assert_allclose(x, 0.5, atol=2 / 255)  # averaged, not sampled (which gives 0 or 1)


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    levels = np.linspace(0, 65535, 16 * 16).reshape(16, 16).astype(np.uint16)
    levels[0, 0] = 32768  # mid-gray
    Image.fromarray(levels).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    x = load_image(tmp_path / "g16.png", (16, 16))
    np.testing.assert_allclose(x, np.broadcast_to(levels / 65535, x.shape), atol=0.5 / 255 + 1e-6)
    assert x[:, 0, 0] == pytest.approx([0.5] * 3, abs=1 / 255)


def test_cmyk_jpeg_and_grayscale(tmp_path):
    rgb = (200, 50, 120)
    Image.new("RGB", (16, 16), rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    x = load_image(tmp_path / "c.jpg", (16, 16))
    np.testing.assert_allclose(x, np.broadcast_to(np.array(rgb)[:, None, None] / 255, x.shape), atol=3 / 255)
    gray = load_image(png(tmp_path / "l.png", 90, mode="L"), (4, 4))
    np.testing.assert_allclose(gray, 90 / 255, atol=1e-6)


def test_transparency_is_composited_on_black(tmp_path):
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette.paste(1, (0, 0, 8, 4))  # top half green, bottom half red
    palette.save(tmp_path / "p.png", transparency=0)  # red is transparent
    x = load_image(tmp_path / "p.png", (8, 8))
    np.testing.assert_allclose(x[:, :4], np.broadcast_to(np.array([0, 1, 0])[:, None, None], (3, 4, 8)))
    np.testing.assert_allclose(x[:, 4:], 0.0)
    la = load_image(png(tmp_path / "la.png", (200, 128), mode="LA"), (4, 4))
    np.testing.assert_allclose(la, np.round(200 * 128 / 255) / 255, atol=1e-6)
    rgba = load_image(png(tmp_path / "rgba.png", (255, 0, 0, 0), mode="RGBA"), (4, 4))
    np.testing.assert_allclose(rgba, 0.0)


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((6, 10, 3), np.uint8)
    pixels[:2, :3] = 255  # a white block top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(pixels).save(tmp_path / "tagged.png", exif=exif)
    Image.fromarray(np.rot90(pixels, k=-1).copy()).save(tmp_path / "upright.png")
    np.testing.assert_array_equal(
        load_image(tmp_path / "tagged.png", (10, 6)), load_image(tmp_path / "upright.png", (10, 6))
    )


# ---------------------------------------------------------------- hostile files


def _cut(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    out = path.with_name(f"cut_{path.name}")
    out.write_bytes(data[: int(len(data) * fraction)])
    return out


def _hostile(tmp_path: Path, what: str) -> tuple[Path, str]:
    """(file, kind) of one hostile file."""
    noise = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    if what == "empty.wav":
        (tmp_path / what).write_bytes(b"")
    elif what == "text.wav":
        (tmp_path / what).write_text("RIFF? no: a text file named like audio\n")
    elif what in ("cut.wav", "cut.flac"):
        return _cut(wav(tmp_path / f"full{what[3:]}", sine(RATE), RATE), 0.6), "audio"
    elif what == "header.wav":
        return _cut(wav(tmp_path / "full.wav", sine(RATE), RATE), 30 / (RATE + 22)), "audio"
    elif what in ("cut.png", "cut.jpg"):
        Image.fromarray(noise).save(tmp_path / f"full{what[3:]}")
        return _cut(tmp_path / f"full{what[3:]}", 0.9), "image"
    elif what == "empty.png":
        (tmp_path / what).write_bytes(b"")
    elif what == "wav.png":
        wav(tmp_path / "a.wav", sine(RATE), RATE).rename(tmp_path / what)
    return tmp_path / what, "audio" if what.endswith(".wav") else "image"


HOSTILE = [
    "empty.wav",
    "text.wav",
    "cut.wav",
    "header.wav",
    "cut.flac",
    "empty.png",
    "cut.png",
    "cut.jpg",
    "wav.png",
]


@pytest.mark.parametrize("what", HOSTILE)
def test_hostile_file_is_probed_and_refused_in_one_line(tmp_path, what):
    path, kind = _hostile(tmp_path, what)
    reason = probe(path, kind)
    assert isinstance(reason, str) and "\n" not in reason and str(path) not in reason
    with pytest.raises(MediaDecodeError) as excinfo:
        load_audio(path, RATE, RATE) if kind == "audio" else load_image(path, (8, 8))
    one_line_error(excinfo, path)


def test_bad_files_error_or_skip(tmp_path):
    for label in ("a", "b"):
        for i in range(2):
            wav(tmp_path / "data" / label / f"{i}.wav", sine(8000), 8000)
    bad = {"a/bad.wav": b"", "b/noise.wav": b"definitely not audio"}
    for rel, data in bad.items():
        (tmp_path / "data" / rel).write_bytes(data)
    with pytest.raises(MediaDecodeError) as excinfo:
        scan_folder(tmp_path / "data")
    first_bad = (tmp_path / "data" / "a" / "bad.wav").absolute()
    one_line_error(excinfo, first_bad)
    assert "empty file (0 bytes)" in str(excinfo.value)
    index = scan_folder(tmp_path / "data", bad_files="skip")
    assert [Path(p).name for p in index.paths] == ["0.wav", "1.wav"] * 2 and index.labels.tolist() == [
        "a",
        "a",
        "b",
        "b",
    ]
    assert [Path(p).relative_to(tmp_path / "data").as_posix() for p, _ in index.skipped] == list(bad)
    assert all(isinstance(reason, str) for _, reason in index.skipped)
    for i in range(2):
        (tmp_path / "data" / "b" / f"{i}.wav").write_bytes(b"")
    with pytest.raises(ValueError, match="class 'b' of .* has no decodable files left"):
        scan_folder(tmp_path / "data", bad_files="skip")


def test_manifest_bad_files_skip(tmp_path):
    manifest = _manifest(tmp_path, path=["a.wav", "b.wav", "z.wav"], y=[0, 1, 1])
    (tmp_path / "z.wav").write_bytes(b"\0" * 10)
    with pytest.raises(MediaDecodeError, match="z.wav"):
        read_manifest(manifest, "path", "y")
    index = read_manifest(manifest, "path", "y", bad_files="skip")
    assert index.labels.tolist() == ["0", "1"] and Path(index.skipped[0][0]).name == "z.wav"


def test_non_finite_float_samples_are_refused(tmp_path):
    data = sine(RATE)
    data[100] = np.nan
    with pytest.raises(MediaDecodeError, match="NaN or infinite"):
        load_audio(wav(tmp_path / "nan.wav", data, RATE, "FLOAT"), RATE)
    loud = wav(tmp_path / "loud.wav", sine(RATE, amp=4.0), RATE, "FLOAT")
    assert np.abs(load_audio(loud, RATE)).max() == 1.0  # beyond full scale: clipped, as a PCM file would be


def test_decode_error_survives_pickling_and_worker_reraise():
    error = MediaDecodeError("/data/a.wav", "truncated:\n cut short")
    assert str(error).count("\n") == 0 and error.reason == "truncated: cut short"
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), copy.path) == (MediaDecodeError, str(error), error.path)
    try:
        raise error
    except MediaDecodeError:
        wrapper = ExceptionWrapper(sys.exc_info(), where="in DataLoader worker process 0")
    with pytest.raises(MediaDecodeError, match="cannot decode /data/a.wav"):
        wrapper.reraise()


# ---------------------------------------------------------------- Hypothesis: random and damaged media

SUBTYPES = ["PCM_16", "PCM_24", "FLOAT", "PCM_U8"]
IMAGE_MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "I;16", "CMYK"]
IMAGE_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "WEBP": ".webp"}


def _random_wav(folder: str, seed: int, rate: int, channels: int, subtype: str, frames: int) -> str:
    data = np.random.default_rng(seed).uniform(-1, 1, (frames, channels)).astype(np.float32)
    path = os.path.join(folder, "x.wav")
    sf.write(path, data, rate, subtype=subtype)
    return path


def _random_image(folder: str, seed: int, mode: str, size: tuple[int, int], fmt: str) -> str:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65536, size[::-1], dtype=np.uint16))
    else:
        im = Image.fromarray(rng.integers(0, 256, (*size[::-1], 4), dtype=np.uint8), "RGBA").convert(mode)
    path = os.path.join(folder, "x" + IMAGE_FORMATS[fmt])
    try:
        im.save(path, format=fmt)
    except (OSError, ValueError, KeyError):  # a mode this format cannot store
        im.convert("RGB").save(path, format=fmt)
    return path


def _check_audio(x: np.ndarray, length: int) -> None:
    assert x.dtype == np.float32 and x.shape == (length,)
    assert np.isfinite(x).all() and np.abs(x).max(initial=0) <= 1.0


def _check_image(x: np.ndarray, size: tuple[int, int]) -> None:
    assert x.dtype == np.float32 and x.shape == (3, *size)
    assert np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(
    seed=st.integers(0, 2**16),
    rate=st.integers(4000, 96000),
    channels=st.integers(1, 8),
    subtype=st.sampled_from(SUBTYPES),
    frames=st.one_of(st.just(0), st.integers(1, 3000)),
    num_samples=st.one_of(st.none(), st.integers(0, 2000)),
    start=st.floats(0, 0.2),
)
def test_random_valid_wavs_load(seed, rate, channels, subtype, frames, num_samples, start):
    with tempfile.TemporaryDirectory() as folder:
        path = _random_wav(folder, seed, rate, channels, subtype, frames)
        if frames == 0:
            assert probe(path, "audio") == "no audio samples (0 frames)"
            with pytest.raises(MediaDecodeError, match="0 frames"):
                load_audio(path, RATE, num_samples, start)
            return
        assert probe(path, "audio") is None
        x = load_audio(path, RATE, num_samples, start)
    expected = (
        max(round(frames * RATE / rate) - round(start * RATE), 0) if num_samples is None else num_samples
    )
    _check_audio(x, expected)


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(
    seed=st.integers(0, 2**16),
    mode=st.sampled_from(IMAGE_MODES),
    size=st.tuples(st.integers(1, 64), st.integers(1, 64)),
    fmt=st.sampled_from(list(IMAGE_FORMATS)),
    out=st.tuples(st.integers(1, 32), st.integers(1, 32)),
)
def test_random_valid_images_load(seed, mode, size, fmt, out):
    with tempfile.TemporaryDirectory() as folder:
        path = _random_image(folder, seed, mode, size, fmt)
        assert probe(path, "image") is None
        _check_image(load_image(path, out), out)


@st.composite
def damaged_files(draw):
    """(bytes, kind, suffix) of a valid file cut at a random point, with random bytes flipped, or noise."""
    kind = draw(st.sampled_from(["audio", "image"]))
    damage = draw(st.sampled_from(["cut", "flip", "cut+flip", "noise"]))
    seed = draw(st.integers(0, 2**16))
    with tempfile.TemporaryDirectory() as folder:
        if kind == "audio":
            args = (draw(st.integers(4000, 96000)), draw(st.integers(1, 8)), draw(st.sampled_from(SUBTYPES)))
            path = _random_wav(folder, seed, *args, draw(st.integers(1, 2000)))
        else:
            size = (draw(st.integers(1, 64)), draw(st.integers(1, 64)))
            path = _random_image(
                folder,
                seed,
                draw(st.sampled_from(IMAGE_MODES)),
                size,
                draw(st.sampled_from(list(IMAGE_FORMATS))),
            )
        data = bytearray(Path(path).read_bytes())
    rng = np.random.default_rng(seed)
    if damage == "noise":
        data = bytearray(rng.integers(0, 256, draw(st.integers(0, 512)), dtype=np.uint8).tobytes())
    if "cut" in damage:
        data = data[: draw(st.integers(0, len(data) - 1))]
    if "flip" in damage and data:
        for at in rng.integers(0, len(data), draw(st.integers(1, 8))):
            data[at] ^= 1 << int(rng.integers(0, 8))
    return bytes(data), kind, os.path.splitext(path)[1]


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(damaged=damaged_files(), num_samples=st.sampled_from([None, 800]))
def test_damaged_files_decode_or_raise_media_decode_error(damaged, num_samples):
    data, kind, suffix = damaged
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "x" + suffix)
        Path(path).write_bytes(data)
        reason = probe(path, kind)
        assert reason is None or (isinstance(reason, str) and "\n" not in reason)
        try:
            if kind == "audio":
                x = load_audio(path, RATE, num_samples)
                _check_audio(x, len(x) if num_samples is None else num_samples)
            else:
                _check_image(load_image(path, (16, 16)), (16, 16))
        except MediaDecodeError as e:
            assert "\n" not in str(e) and str(e).startswith(f"cannot decode {path}: ")


# ---------------------------------------------------------------- MediaDataset


class CountingLoader:
    """A picklable per-item loader that records what it decodes."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __call__(self, path: str, start: float) -> np.ndarray:
        self.calls.append((path, start))
        return self.inner(path, start)


def test_media_dataset_batches_decode_only_requested_items(tmp_path):
    paths = [str(wav(tmp_path / f"{i}.wav", sine(8000, freq=100.0 * (i + 1)), 8000)) for i in range(5)]
    index = MediaIndex(paths, None, "audio", "clips", starts=[0.0, 0.1, 0.0, 0.2, 0.0])
    spec = InputSpec("audio", sample_rate=RATE, clip_seconds=0.25)
    loader = CountingLoader(make_loader(spec))
    y = torch.tensor([0, 1, 0, 1, 1])
    ds = MediaDataset(index, y, loader, with_index=True)
    batch = ds.__getitems__([3, 0, 3])
    assert batch["x"].shape == (3, spec.num_samples) and batch["x"].dtype == torch.float32
    assert (
        batch["y"].tolist() == [1, 0, 1]
        and batch["index"].dtype == torch.int64
        and batch["index"].tolist() == [3, 0, 3]
    )
    assert loader.calls == [(paths[3], 0.2), (paths[0], 0.0), (paths[3], 0.2)]
    np.testing.assert_array_equal(batch["x"][1].numpy(), load_audio(paths[0], RATE, spec.num_samples))
    single = ds[4]
    assert single["x"].shape == (spec.num_samples,) and single["y"].item() == 1 and len(ds) == 5
    plain = MediaDataset(index, None, loader).__getitems__([1])
    assert set(plain) == {"x"}
    loaded = next(iter(DataLoader(ds, batch_size=2, collate_fn=passthrough_collate)))  # as ArrayDataset
    assert loaded["x"].shape == (2, spec.num_samples) and loaded["index"].tolist() == [0, 1]


def test_missing_extras_name_the_pip_command(tmp_path, monkeypatch):
    path, image = wav(tmp_path / "a.wav", sine(RATE)), png(tmp_path / "a.png")
    monkeypatch.setitem(sys.modules, "soundfile", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r'pip install "focalmix\[audio\]"'):
        load_audio(path, RATE)
    with pytest.raises(ImportError, match=r'pip install "focalmix\[vision\]"'):
        load_image(image, (4, 4))


def test_media_dataset_pickles_and_image_loader(tmp_path):
    paths = [str(png(tmp_path / f"{i}.png", (60 * i, 0, 0), (20, 10))) for i in range(3)]
    spec = InputSpec("image", size=(8, 6))
    ds = MediaDataset(MediaIndex(paths, ["a", "b", "a"], "image", "imgs"), torch.arange(3), make_loader(spec))
    copy = pickle.loads(pickle.dumps(ds))
    batch, again = ds.__getitems__([2, 1]), copy.__getitems__([2, 1])
    assert batch["x"].shape == (2, 3, 8, 6)
    assert torch.equal(batch["x"], again["x"])
    assert batch["x"][0, 0, 0, 0].item() == pytest.approx(120 / 255)
    audio = make_loader(InputSpec("audio", sample_rate=8000, clip_seconds=1.0), clip_seconds=0.5)
    assert pickle.loads(pickle.dumps(audio)).args == (8000, 4000)
    with pytest.raises(ValueError, match="`y` has 2 rows but the index of imgs has 3 items"):
        MediaDataset(ds.index, torch.arange(2), make_loader(spec))
    with pytest.raises(TypeError, match="`loader` must be a function"):
        MediaDataset(ds.index, None, "load_image")
    with pytest.raises(ValueError, match="`clip_seconds` must be a number of seconds > 0"):
        make_loader(InputSpec("audio", sample_rate=8000, clip_seconds=1.0), clip_seconds=0)
