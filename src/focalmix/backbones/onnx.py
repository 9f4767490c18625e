"""Any ONNX feature extractor as a frozen backbone, run on CPU with onnxruntime."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from focalmix._checks import ArgumentValueError, Instance, Satisfies, check_one
from focalmix.backbones._frozen import (
    NUM_THREADS,
    NUM_THREADS_TYPE,
    SECONDS,
    SECONDS_TYPE,
    FrozenBackbone,
    OnnxSessions,
    check_args,
    check_batch,
    int_at_least,
    int_type,
    require,
    sha256_files,
)
from focalmix.backbones.spec import KIND, InputSpec

_PACKAGES = {"onnx": "onnx", "onnxruntime": "onnxruntime"}
_RANK = {"audio": 2, "image": 4}  # (B, samples) and (B, 3, H, W)
_PATH = Instance((str, Path), "a path to an .onnx file")
_SIZES = "an int >= 1 or (height, width)"
# types first, told the whole rule ("`sample_rate` must be an int >= 1, got 1.5 (float)."), then values
_TYPES = {
    "sample_rate": [None, int_type(1)],
    "clip_seconds": [None, *SECONDS_TYPE],
    "image_size": [None, Instance((int, list, tuple), _SIZES)],
    "num_threads": NUM_THREADS_TYPE,
}
_ARGS = {
    "sample_rate": [None, int_at_least(1)],
    "clip_seconds": [None, *SECONDS],
    "image_size": [None, Satisfies((int, list, tuple), lambda v: _sizes_ok(v), _SIZES)],
    "mean": [None, Satisfies(object, lambda v: _rgb(v), "3 numbers (R, G, B)")],
    "std": [None, Satisfies(object, lambda v: _rgb(v) and min(v) > 0, "3 numbers > 0")],
    "num_threads": NUM_THREADS,
}


class OnnxBackbone(OnnxSessions, FrozenBackbone):
    """An ONNX model from ``(B, samples)`` audio or ``(B, 3, H, W)`` images to features, frozen.

    The model's outputs are flattened to ``(B, out_features)``. Its input must have a batch axis
    (dynamic, or the batch size you will run). ``out_features`` comes from the graph's output shape when
    it is static, otherwise from one run on zeros at construction.

    Args:
        path: the ``.onnx`` file.
        kind: ``"audio"`` (input float32 (B, samples) in [-1, 1]) or ``"image"`` (float32 (B, 3, H, W) RGB
            in [0, 1]).
        sample_rate: audio samples per second, >= 1 (audio only). Default (None): 16000.
        clip_seconds: clip length in seconds, > 0 (audio only). None: from the graph's static input shape.
        image_size: ``H`` (square) or ``(H, W)``, each >= 1 (image only). None: from the graph's input.
        mean: per-channel mean subtracted inside ``forward`` (image only), 3 numbers. None: no shift.
        std: per-channel std divided by inside ``forward`` (image only), 3 numbers > 0. None: no scaling.
        input_name: the graph input to feed. None: the first.
        output_name: the graph output to return. None: the first.
        num_threads: onnxruntime intra-op threads, >= 1; None: onnxruntime's default.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a setting out of range, or one the graph's input shape contradicts.
        ImportError: onnx or onnxruntime is not installed.

    Example:
        >>> import tempfile, torch
        >>> path = tempfile.mkdtemp() + "/net.onnx"
        >>> torch.onnx.export(torch.nn.Conv2d(3, 4, 8, 8), (torch.rand(1, 3, 16, 16),), path, dynamo=False,
        ...                   input_names=["x"], dynamic_axes={"x": {0: "batch"}})
        >>> backbone = OnnxBackbone(path, "image", image_size=16)
        >>> backbone.out_features, backbone(torch.rand(5, 3, 16, 16)).shape
        (16, torch.Size([5, 16]))
    """

    def __init__(
        self,
        path: str,
        kind: Literal["audio", "image"],
        sample_rate: int | None = None,
        clip_seconds: float | None = None,
        image_size: int | Sequence[int] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        input_name: str | None = None,
        output_name: str | None = None,
        num_threads: int | None = None,
    ) -> None:
        _check_path_and_kind(path, kind)
        given = dict(
            sample_rate=sample_rate, clip_seconds=clip_seconds, image_size=image_size, mean=mean, std=std
        )
        _check_kind_settings(kind, given)
        check_args({**given, "num_threads": num_threads}, _TYPES, _ARGS, OnnxBackbone)
        require(type(self).__name__, "export", _PACKAGES)
        super().__init__()
        self.path, self.kind, self.num_threads = str(path), kind, num_threads
        self.sample_rate, self.clip_seconds = sample_rate, clip_seconds
        self.image_size = list(image_size) if isinstance(image_size, (list, tuple)) else image_size
        self.mean, self.std = _floats(mean), _floats(std)
        session = self._session("model", self.path)
        self.input_name = _pick(input_name, [i.name for i in session.get_inputs()], "input_name", path)
        self.output_name = _pick(output_name, [o.name for o in session.get_outputs()], "output_name", path)
        shape = next(i.shape for i in session.get_inputs() if i.name == self.input_name)
        self.input_spec = self._spec(_static_dims(shape, kind, self.input_name, path))
        self._input_shape = _sample_shape(self.input_spec)
        self.out_features = self._find_out_features(session)
        self._freeze()

    def _spec(self, dims: list[int | None]) -> InputSpec:
        """The InputSpec from the arguments, filled in or checked against the graph's static input dims."""
        where = f"the input {self.input_name!r} of {self.path} has shape [B, {', '.join(map(str, dims))}]"
        if self.kind == "audio":
            rate = self.sample_rate or 16000
            if self.clip_seconds is None and dims[0] is None:
                raise ValueError(f"`clip_seconds` is needed: {where} (no fixed length).")
            seconds = self.clip_seconds if self.clip_seconds is not None else dims[0] / rate
            spec = InputSpec("audio", sample_rate=rate, clip_seconds=seconds)
            given = [spec.num_samples]
        else:
            size = self.image_size
            if size is None and None in dims[1:]:
                raise ValueError(f"`image_size` is needed: {where} (no fixed height and width).")
            hw = (size, size) if isinstance(size, int) else tuple(size or dims[1:])
            spec = InputSpec("image", size=hw, mean=tuple(self.mean or ()), std=tuple(self.std or ()))
            given = [3, *hw]
        if any(d is not None and d != g for d, g in zip(dims, given, strict=True)):
            raise ValueError(f"{where}, but the arguments give [B, {', '.join(map(str, given))}].")
        return spec

    def _find_out_features(self, session: Any) -> int:
        shape = next(o.shape for o in session.get_outputs() if o.name == self.output_name)
        if len(shape) > 1 and all(isinstance(d, int) for d in shape[1:]):
            return math.prod(shape[1:])
        zeros = np.zeros((1, *self._input_shape), dtype=np.float32)
        return int(session.run([self.output_name], {self.input_name: zeros})[0][0].size)

    def config(self) -> dict[str, Any]:
        keys = ("path", "kind", "sample_rate", "clip_seconds", "image_size", "mean", "std")
        return {k: getattr(self, k) for k in keys} | {
            "input_name": self.input_name,
            "output_name": self.output_name,
            "num_threads": self.num_threads,
        }

    def _identity_settings(self) -> dict[str, Any]:
        # the file's bytes stand for it (not where it lies); the spec as resolved, so a default that
        # the graph filled in and the same value given explicitly name the same features
        spec = self.input_spec.to_dict()
        names = {"input_name": self.input_name, "output_name": self.output_name}
        return names | {k: v for k, v in spec.items() if v not in (None, [])}

    def _digest(self) -> str:
        return sha256_files(self.path)

    def onnx_model(self) -> Any:
        """The loaded ``onnx.ModelProto``."""
        import onnx

        return onnx.load(self.path)

    def forward(self, x: Tensor) -> Tensor:
        """Features of a batch: (B, samples) audio or (B, 3, H, W) images -> float32 (B, out_features)."""
        what = "waveforms in [-1, 1]" if self.kind == "audio" else "RGB images in [0, 1]"
        check_batch(x, type(self).__name__, self._input_shape, what)
        with torch.no_grad():
            array = x.detach().to("cpu", torch.float32).numpy()
            if self.mean is not None:
                array = array - np.asarray(self.mean, np.float32).reshape(1, 3, 1, 1)
            if self.std is not None:
                array = array / np.asarray(self.std, np.float32).reshape(1, 3, 1, 1)
            session = self._session("model", self.path)
            out = session.run([self.output_name], {self.input_name: np.ascontiguousarray(array)})[0]
        features = np.asarray(out, dtype=np.float32).reshape(len(array), self.out_features)
        return torch.from_numpy(features).to(x.device)


def _check_path_and_kind(path: Any, kind: Any) -> None:
    check_one(path, "path", [_PATH], OnnxBackbone)
    if not Path(path).is_file():
        raise FileNotFoundError(f"`path`: no ONNX file at {path}; export your feature extractor there first.")
    check_one(kind, "kind", [KIND], OnnxBackbone)


def _check_kind_settings(kind: str, given: dict[str, Any]) -> None:
    """Each setting belongs to one kind: ``image_size``, ``mean`` and ``std`` are for images only."""
    other = "image" if kind == "audio" else "audio"
    for name in ("image_size", "mean", "std") if kind == "audio" else ("sample_rate", "clip_seconds"):
        if given[name] is not None:
            raise ArgumentValueError(
                f"`{name}` is for kind={other!r}; got {given[name]!r}.", name, OnnxBackbone
            )


def _sizes_ok(value: Any) -> bool:
    sizes = list(value) if isinstance(value, (list, tuple)) else [value]
    return len(sizes) in (1, 2) and all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes
    )


def _rgb(values: Any) -> bool:
    """Three numbers (R, G, B)."""
    try:
        return len(values) == 3 and all(isinstance(v, (int, float)) for v in values)
    except TypeError:  # no len(): not a sequence
        return False


def _floats(values: Sequence[float] | None) -> list[float] | None:
    return None if values is None else [float(v) for v in values]


def _pick(name: str | None, names: list[str], arg: str, path: str) -> str:
    if name is None:
        return names[0]
    if name not in names:
        raise ValueError(f"`{arg}` {name!r} is not in {path}; it has: {names}.")
    return name


def _static_dims(shape: list[Any], kind: str, name: str, path: str) -> list[int | None]:
    """The input's dims after the batch axis, None where dynamic; checks the rank against ``kind``."""
    if len(shape) != _RANK[kind]:
        other = "image" if kind == "audio" else "audio"
        want = "(batch, samples)" if kind == "audio" else "(batch, 3, height, width)"
        raise ValueError(
            f"`kind`={kind!r} needs a {want} input, but {name!r} of {path} has shape {shape}; "
            f"is it kind={other!r}?"
        )
    return [d if isinstance(d, int) else None for d in shape[1:]]


def _sample_shape(spec: InputSpec) -> tuple[int, ...]:
    return (spec.num_samples,) if spec.kind == "audio" else (3, *spec.size)  # type: ignore[misc]
