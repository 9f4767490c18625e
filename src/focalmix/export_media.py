"""Export for models with a pretrained media backbone: raw waveform or image in, probabilities out.

A torch backbone (EfficientNet-Lite0, timm) is traced with the head, as any model. A backbone that is an
ONNX graph itself (:class:`~focalmix.backbones.SpeechEmbedding`, :class:`~focalmix.backbones.OnnxBackbone`:
they have ``onnx_model()``) cannot be traced: the head (feature standardization, dropout off, linear
layer, calibration) is exported from torch on its own and the two graphs are merged with
``onnx.compose``, so one file maps a (B, samples) waveform to calibrated probabilities.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

FEATURES = "features"


class HeadProbabilityModel(nn.Module):
    """The classifier after its backbone: features (B, F) -> calibrated probabilities."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: Tensor) -> Tensor:
        m = self.model
        return m._to_probs(m.calibrate_logits(m._head_logits(features)))


def input_spec(model: Any) -> Any:
    """The backbone's declared input (:class:`~focalmix.backbones.InputSpec`), or None."""
    return getattr(getattr(model, "backbone", None), "input_spec", None)


def input_shape(model: Any) -> tuple[int, ...] | None:
    """One sample's shape for a media backbone: audio (samples,), images (3, H, W); else None."""
    spec = input_spec(model)
    if spec is None:
        return None
    return (spec.num_samples,) if spec.kind == "audio" else (spec.channels, *spec.size)


def example_input(model: Any) -> Tensor:
    """Two inputs in the backbone's range: waveforms in [-0.5, 0.5], images in [0, 1]."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(2, *input_shape(model), generator=generator)
    return (x - 0.5 if input_spec(model).kind == "audio" else x).to(model.device)


def input_doc(model: Any) -> str:
    spec = input_spec(model)
    if spec.kind == "audio":
        return (
            f"float32 (B, {spec.num_samples}): mono waveform at {spec.sample_rate} Hz in [-1, 1],"
            f" {spec.clip_seconds} s windows"
        )
    return f"float32 (B, 3, {spec.size[0]}, {spec.size[1]}): RGB in [0, 1] (the graph normalizes)"


def metadata(model: Any) -> dict[str, str]:
    """What a media export adds to the file's metadata: the input the graph takes."""
    spec = input_spec(model)
    meta = {"input_spec": json.dumps(spec.to_dict()), "input": input_doc(model)}
    table = getattr(model, "wakeword_table", None)
    if table:  # a wake-word model: how to slide it over a stream and what it measured
        meta["wakeword"] = json.dumps({"clip_seconds": spec.clip_seconds, **table})
    return meta


def is_onnx_backbone(model: Any) -> bool:
    return callable(getattr(getattr(model, "backbone", None), "onnx_model", None))


def export_onnx_chain(
    model: Any, path: Path, opset: int, meta: dict[str, str], input_name: str, output_name: str
) -> None:
    """Merge the backbone's ONNX graph with the exported head into one file at ``path``."""
    import onnx
    from onnx import compose

    backbone = model.backbone.onnx_model()
    head_path = path.with_name(path.name + ".head.tmp")
    example = torch.zeros(2, model.backbone.out_features, device=model.device)
    try:
        torch.onnx.export(
            HeadProbabilityModel(model).eval(), (example,), str(head_path), dynamo=False,
            opset_version=opset, input_names=[FEATURES], output_names=[output_name],
            dynamic_axes={FEATURES: {0: "batch"}, output_name: {0: "batch"}},
        )  # fmt: skip
        head = onnx.load(str(head_path))
    finally:
        head_path.unlink(missing_ok=True)
    backbone = compose.add_prefix(backbone, "backbone_")
    head = compose.add_prefix(head, "head_", rename_outputs=False)
    _align_opsets(backbone, head)
    merged = compose.merge_models(
        backbone, head, io_map=[(backbone.graph.output[0].name, head.graph.input[0].name)]
    )
    _rename(merged.graph, merged.graph.input[0].name, input_name)
    onnx.helper.set_model_props(merged, meta)
    merged.graph.input[0].doc_string = meta["input"]
    onnx.checker.check_model(merged)
    onnx.save(merged, str(path))


def _align_opsets(a: Any, b: Any) -> None:
    """merge_models needs one version per opset domain: raise the lower to the higher."""
    versions = {o.domain: o.version for o in a.opset_import}
    for o in b.opset_import:
        versions[o.domain] = max(versions.get(o.domain, 0), o.version)
    for model in (a, b):
        for o in model.opset_import:
            o.version = versions[o.domain]
    a.ir_version = b.ir_version = max(a.ir_version, b.ir_version)


def _rename(graph: Any, old: str, new: str) -> None:
    for value in graph.input:
        if value.name == old:
            value.name = new
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
