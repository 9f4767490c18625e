"""Folders of clips and images through the datamodule, the model and the `focalmix` command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("soundfile")
pytest.importorskip("livekit.wakeword")
import soundfile as sf  # noqa: E402

from focalmix import FocalMixClassifier, FocalMixDataModule  # noqa: E402
from focalmix.backbones import SpeechEmbedding  # noqa: E402
from focalmix.media import load_audio  # noqa: E402

RATE = 16000


def _clips(root: Path, per_class: int = 16) -> Path:
    """Tones ("yes") against noise ("no"), 1 s at 16 kHz; one "yes" clip is 44.1 kHz stereo."""
    rng = np.random.default_rng(0)
    t = np.arange(RATE) / RATE
    for label in ("yes", "no"):
        (root / label).mkdir(parents=True, exist_ok=True)
    for i in range(per_class):
        tone = 0.3 * np.sin(2 * np.pi * (300 + 20 * i) * t) + 0.02 * rng.standard_normal(RATE)
        sf.write(root / "yes" / f"y{i:02d}.wav", tone.astype(np.float32), RATE)
        sf.write(root / "no" / f"n{i:02d}.wav", (0.2 * rng.standard_normal(RATE)).astype(np.float32), RATE)
    t44 = np.arange(44100) / 44100
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 500 * t44)] * 2, axis=1).astype(np.float32)
    sf.write(root / "yes" / "stereo44k.wav", stereo, 44100)
    return root


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    return _clips(tmp_path_factory.mktemp("media") / "clips")


def _trainer(root: Path, epochs: int = 2) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_checkpointing=False, default_root_dir=root, enable_model_summary=False,
    )  # fmt: skip


def test_cached_features_give_the_same_probabilities_as_raw_waveforms(clips, tmp_path):
    dm = FocalMixDataModule(str(clips), cache_dir="none", batch_size=8)
    model = FocalMixClassifier(backbone=SpeechEmbedding(), task=dm.task, class_names=dm.class_names)
    assert dm.input_shape is None and sorted(dm.class_names) == ["no", "yes"]
    trainer = _trainer(tmp_path)
    trainer.fit(model, datamodule=dm)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    batch = next(iter(dm.val_dataloader()))
    assert set(batch) == {"features", "y"} and batch["features"].shape[1] == model.backbone.out_features
    # the oracle: the whole chain on raw waveforms equals the head on the cached features
    index = dm._media_index[0].take(dm.split_indices["val"])
    waves = torch.from_numpy(np.stack([load_audio(p, RATE, RATE) for p in index.paths]))
    model.eval()
    with torch.no_grad():
        from_raw = model.predict_proba(waves)
        from_cache = torch.cat([model.predict_step(b, 0) for b in dm.val_dataloader()])
    torch.testing.assert_close(from_raw, from_cache, atol=1e-5, rtol=1e-5)


def test_a_checkpoint_rebuilds_the_pretrained_backbone(clips, tmp_path):
    dm = FocalMixDataModule(str(clips), cache_dir="none", batch_size=8)
    model = FocalMixClassifier(backbone=SpeechEmbedding(), task=dm.task, class_names=dm.class_names)
    trainer = _trainer(tmp_path, epochs=1)
    trainer.fit(model, datamodule=dm)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    loaded = FocalMixClassifier.load_from_checkpoint(tmp_path / "m.ckpt", weights_only=True)
    assert isinstance(loaded.backbone, SpeechEmbedding)
    wave = torch.from_numpy(load_audio(clips / "yes" / "y00.wav", RATE, RATE))[None]
    torch.testing.assert_close(loaded.eval().predict_proba(wave), model.eval().predict_proba(wave))


def test_media_without_a_pretrained_backbone_says_which_to_use(clips, tmp_path):
    dm = FocalMixDataModule(str(clips), cache_dir="none")
    with pytest.raises(ValueError, match="needs a pretrained backbone.*SpeechEmbedding"):
        dm.train_dataloader()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"clip_seconds": 0}, ValueError, r"`clip_seconds` must be in \(0, 3600\)"),
        ({"clip_seconds": "1"}, TypeError, "`clip_seconds` must be a number"),
        ({"bad_files": "ignore"}, ValueError, "`bad_files` must be one of"),
        ({"long_files": "cut"}, ValueError, "`long_files` must be one of"),
        ({"cache_dir": None}, TypeError, "`cache_dir` must be"),
    ],
)
def test_media_arguments_are_checked_when_built(clips, kwargs, error, match):
    with pytest.raises(error, match=match):
        FocalMixDataModule(str(clips), **kwargs)


def _focalmix(args: list[str], cwd: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "focalmix", *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


def _computed(out: str) -> dict[str, tuple[int, int]]:
    """split -> (from cache, computed), from the progress lines."""
    found = re.findall(r"features (\w+): [\d,]+ items, ([\d,]+) from cache, ([\d,]+) computed", out)
    return {s: (int(a.replace(",", "")), int(b.replace(",", ""))) for s, a, b in found}


@pytest.mark.slow
def test_focalmix_fit_on_a_folder_of_wavs_caches_and_predicts_paths(tmp_path):
    clips = _clips(tmp_path / "clips", per_class=12)
    fit = ["fit", "--data.source", str(clips), "--model.backbone", "focalmix.backbones.SpeechEmbedding",
           "--trainer.max_epochs", "2", "--report", "false"]  # fmt: skip
    first = _focalmix(fit, tmp_path, tmp_path / "cache")
    assert first.returncode == 0, first.stderr[-3000:]
    assert _computed(first.stdout) == {"train": (0, 20), "val": (0, 5)}, first.stdout
    os.utime(clips / "no" / "n03.wav", ns=(1, 1))  # a changed file: recomputed, only it
    second = _focalmix(fit[:-2], tmp_path, tmp_path / "cache")  # with the report: it scores cached features
    assert second.returncode == 0, second.stderr[-3000:]
    assert (tmp_path / "lightning_logs" / "version_1" / "report" / "report.html").is_file(), second.stdout
    counts = _computed(second.stdout)
    assert sum(c for _, c in counts.values()) == 1 and sum(h for h, _ in counts.values()) == 24, counts
    best = tmp_path / "lightning_logs" / "version_1" / "checkpoints" / "best.ckpt"
    out = tmp_path / "pred.csv"
    pred = _focalmix(
        ["predict", "--ckpt_path", str(best), "--data.predict_source", str(clips / "yes"),
         "--prediction_writer.path", str(out)], tmp_path, tmp_path / "cache",
    )  # fmt: skip
    assert pred.returncode == 0, pred.stderr[-3000:]
    frame = pd.read_csv(out)
    assert frame.columns[0] == "path" and set(frame.columns[1:]) == {"prob_no", "prob_yes", "prediction"}
    assert sorted(frame["path"]) == sorted(str(p) for p in (clips / "yes").glob("*.wav"))
    np.testing.assert_allclose(frame["prob_no"] + frame["prob_yes"], 1.0, rtol=1e-5)


@pytest.mark.slow
def test_focalmix_fit_on_a_folder_of_mixed_images(tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, base in (("cat", (200, 80, 40)), ("sky", (40, 90, 220))):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(8):
            size = (24 + 4 * i, 30 + 3 * i)
            pixels = np.clip(np.array(base) + rng.normal(0, 25, (*size, 3)), 0, 255).astype(np.uint8)
            image = Image.fromarray(pixels)
            if i % 3 == 1:
                image = image.convert("L")  # grayscale
            suffix = ".jpg" if i % 2 else ".png"
            image.save(tmp_path / "imgs" / label / f"{i}{suffix}")
    fit = ["fit", "--data.source", str(tmp_path / "imgs"), "--model.backbone",
           "focalmix.backbones.EfficientNetLite0", "--model.backbone.init_args.image_size", "64",
           "--trainer.max_epochs", "2", "--report", "false", "--data.batch_size", "4"]  # fmt: skip
    result = _focalmix(fit, tmp_path, tmp_path / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    assert _computed(result.stdout) == {"train": (0, 12), "val": (0, 4)}, result.stdout
    assert "focalmix: best checkpoint" in result.stdout


@pytest.fixture(scope="module")
def fitted_speech(clips, tmp_path_factory) -> FocalMixClassifier:
    dm = FocalMixDataModule(str(clips), cache_dir="none", batch_size=8)
    model = FocalMixClassifier(backbone=SpeechEmbedding(), task=dm.task, class_names=dm.class_names)
    _trainer(tmp_path_factory.mktemp("fit"), epochs=1).fit(model, datamodule=dm)
    return model.eval()


def test_onnx_export_from_raw_waveforms_equals_predict(fitted_speech, clips, tmp_path):
    pytest.importorskip("onnxruntime")
    import json

    import onnxruntime

    from focalmix.export import export, sidecar_path

    path = export(fitted_speech, tmp_path / "wake.onnx")
    files = sorted((clips / "yes").glob("*.wav"))[:4] + sorted((clips / "no").glob("*.wav"))[:4]
    waves = np.stack([load_audio(p, RATE, RATE) for p in files])  # the 44.1 kHz stereo file included
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": waves})[0]
    expected = fitted_speech.predict_proba(torch.from_numpy(waves)).detach().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
    meta = json.loads(sidecar_path(path).read_text())
    assert meta["input_spec"]["sample_rate"] == RATE and meta["input_spec"]["clip_seconds"] == 1.0
    assert meta["input_shape"] == [RATE]


def test_a_temporal_head_on_2_s_windows_fits_and_exports_as_it_predicts(clips, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnxruntime

    from focalmix.export import export

    dm = FocalMixDataModule(str(clips), cache_dir="none", batch_size=8)
    backbone = SpeechEmbedding(clip_seconds=2.0)  # 16 frames; the data's clips follow the backbone
    model = FocalMixClassifier(
        backbone=backbone, task=dm.task, class_names=dm.class_names, head_type="temporal"
    )
    _trainer(tmp_path / "fit", epochs=1).fit(model, datamodule=dm)
    assert (model.head.frames, model.head.frame_size) == (16, 96)
    path = export(model.eval(), tmp_path / "wake2.onnx")
    files = sorted((clips / "yes").glob("*.wav"))[:3] + sorted((clips / "no").glob("*.wav"))[:3]
    waves = np.stack([load_audio(p, RATE, 2 * RATE) for p in files])
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = model.predict_proba(torch.from_numpy(waves)).detach().numpy()
    np.testing.assert_allclose(session.run(None, {"x": waves})[0], expected, atol=1e-5, rtol=1e-5)


def test_torchscript_cannot_hold_an_onnx_backbone(fitted_speech, tmp_path):
    from focalmix.export import export

    with pytest.raises(ValueError, match="SpeechEmbedding is an ONNX graph.*format='onnx'"):
        export(fitted_speech, tmp_path / "wake.pt", format="torchscript")


@pytest.mark.parametrize("format", ["onnx", "torchscript"])
def test_an_image_model_exports_from_pixels(tmp_path, format):
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("onnxruntime")
    from focalmix.backbones import EfficientNetLite0
    from focalmix.export import export

    model = FocalMixClassifier(backbone=EfficientNetLite0(image_size=64)).eval()
    path = export(model, tmp_path / f"img.{format}", format=format)  # checked against predict_proba
    pixels = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    if format == "torchscript":
        got = torch.jit.load(str(path))(pixels)
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"x": pixels.numpy()})[0])
    torch.testing.assert_close(got, model.predict_proba(pixels).detach(), atol=1e-4, rtol=1e-4)


def test_augmented_views_are_seeded_cached_and_only_in_training(clips, tmp_path):
    from focalmix import augment

    def fit_features(seed: int) -> tuple[FocalMixDataModule, torch.Tensor]:
        dm = FocalMixDataModule(str(clips), cache_dir=str(tmp_path / "cache"), augment_views=2, seed=seed)
        dm.attach_backbone(SpeechEmbedding())
        return dm, dm._dataset("train").x

    dm, train = fit_features(seed=3)
    n_train, n_val = len(dm.split_indices["train"]), len(dm.split_indices["val"])
    assert train.shape[0] == 3 * n_train  # originals, then two views of each
    assert len(dm._dataset("val")) == n_val  # validation rows are never augmented
    assert dm._media.stats["train"]["computed"] == 3 * n_train
    assert not torch.equal(train[:n_train], train[n_train : 2 * n_train])
    again, train_again = fit_features(seed=3)  # the same seed: the same views, read from the cache
    assert again._media.stats["train"]["computed"] == 0 and torch.equal(train, train_again)
    # another seed (it also draws another split): every view is new, every original comes from the cache
    other, _ = fit_features(seed=4)
    assert other._media.stats["train"]["computed"] == 2 * len(other.split_indices["train"])
    wave = load_audio(dm._media_index[0].paths[0], RATE, RATE)
    a = augment.augment_audio(wave, augment.view_generator(0, "k"))
    np.testing.assert_array_equal(a, augment.augment_audio(wave, augment.view_generator(0, "k")))


@pytest.mark.slow
def test_predict_slides_windows_over_long_recordings_and_merges_detections(tmp_path):
    clips = _clips(tmp_path / "clips", per_class=8)
    rng = np.random.default_rng(5)
    long = (0.2 * rng.standard_normal(int(RATE * 3.2))).astype(np.float32)  # 3.2 s
    long[RATE : 2 * RATE] = 0.3 * np.sin(2 * np.pi * 400 * np.arange(RATE) / RATE)  # a tone at 1-2 s
    (tmp_path / "long").mkdir()
    sf.write(tmp_path / "long" / "rec.wav", long, RATE)
    fit = ["fit", "--data.source", str(clips), "--model.backbone", "focalmix.backbones.SpeechEmbedding",
           "--trainer.max_epochs", "3", "--report", "false"]  # fmt: skip
    assert _focalmix(fit, tmp_path, tmp_path / "cache").returncode == 0
    best = str(tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "best.ckpt")
    predict = ["predict", "--ckpt_path", best, "--data.predict_source", str(tmp_path / "long"),
               "--data.hop_seconds", "0.5"]  # fmt: skip
    windows = _focalmix([*predict, "--prediction_writer.path", "w.csv"], tmp_path, tmp_path / "cache")
    assert windows.returncode == 0, windows.stderr[-3000:]
    frame = pd.read_csv(tmp_path / "w.csv")
    # 1 s windows every 0.5 s inside 3.2 s, plus one ending at the end
    assert frame["start_seconds"].round(3).tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 2.2]
    detected = _focalmix(
        [*predict, "--prediction_writer.path", "d.csv", "--detections", "true"], tmp_path, tmp_path / "cache"
    )
    assert detected.returncode == 0, detected.stderr[-3000:]
    events = pd.read_csv(tmp_path / "d.csv")
    assert list(events.columns) == ["path", "start_seconds", "peak_probability"]
    ckpt = torch.load(best, weights_only=True)
    threshold, positive = ckpt["state_dict"]["threshold"].item(), ckpt["hyper_parameters"]["class_names"][1]
    firing = frame[frame[f"prob_{positive}"] >= threshold]
    assert len(events) <= len(firing) and set(events["start_seconds"]) <= set(
        firing["start_seconds"].round(3)
    )
    assert (len(events) == 0) == firing.empty


def test_the_readme_streaming_snippet_runs_on_a_wav(fitted_speech, clips, tmp_path):
    pytest.importorskip("onnxruntime")
    from focalmix.export import export

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    snippet = readme.split("Running the exported model on a stream", 1)[1].split("```python", 1)[1]
    snippet = snippet.split("```", 1)[0]
    export(fitted_speech, tmp_path / "wake.onnx")
    stream = np.concatenate([load_audio(p, RATE) for p in sorted((clips / "yes").glob("y0*.wav"))[:3]])
    sf.write(tmp_path / "stream.wav", stream, RATE)
    (tmp_path / "snippet.py").write_text(snippet)
    result = subprocess.run(
        [sys.executable, "snippet.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for line in result.stdout.splitlines():  # whatever fires is reported in the documented form
        assert re.fullmatch(r"wake word at \d+\.\d s \(p=\d\.\d\d\)", line), line


def test_val_and_test_sources_may_be_folders_of_their_own(clips):
    dm = FocalMixDataModule(str(clips), val_source=str(clips), test_source=str(clips), cache_dir="none")
    dm.attach_backbone(SpeechEmbedding())
    files = len(list(clips.glob("*/*.wav")))
    assert len(dm._dataset("train")) == files  # no rows held out of the source
    assert len(dm._dataset("val")) == len(dm._dataset("test")) == files
    assert int(dm._dataset("test").y.sum()) == len(list((clips / dm.class_names[1]).glob("*.wav")))


def test_a_frozen_feature_that_is_0_on_every_training_clip_is_centred_not_scaled(clips):
    from tests._counting_backbone import CountingBackbone

    backbone = CountingBackbone(out_features=3)
    backbone.projection[:, 2] = 0.0  # a dead feature: 0 on every clip, as 136 of EfficientNet's on MNIST
    dm = FocalMixDataModule(str(clips), cache_dir="none", batch_size=8)
    dm.attach_backbone(backbone)
    train = dm._dataset("train").x.double()  # the features (setup makes them before the model reads these)
    mean, std = dm.feature_normalization
    assert (mean[2], std[2]) == (0.0, 1.0)  # a 1e-6 floor would turn a non-zero new value into ~1e6
    np.testing.assert_allclose(std[:2].numpy(), train[:, :2].std(0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(mean[:2].numpy(), train[:, :2].mean(0).numpy(), rtol=1e-6)
