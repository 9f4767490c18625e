"""Export a trained :class:`~focalmix.FocalMixClassifier` for serving: raw features in, probabilities out.

Two formats: ONNX (run it with onnxruntime, no torch needed) and TorchScript (``torch.jit.load``). Either
file takes a float32 tensor of raw samples (B, *input_shape), B free, and returns what
:meth:`~focalmix.FocalMixClassifier.predict_proba` returns: calibrated (B,) positive-class probabilities
for binary tasks, (B, C) otherwise. Standardization, the calibration and, for tables, the imputation of
missing values (NaN in) and the one-hot encoding of categories are inside the graph.

For a table the input is one float column per feature, in the order of ``feature_names``: numeric
columns as their raw values (NaN allowed where training imputed), categorical columns as the code of
the category, ``1 + its position`` in that column's ``categories`` list, 0 for a category never seen in
training (strings cannot enter an ONNX float tensor, so this lookup is the caller's one step). The task,
class names, feature names and their codes, the decision ``threshold`` and the calibration are stored
with the file (ONNX ``metadata_props`` and the input's ``doc_string``; TorchScript extra file
``focalmix.json``) and in a JSON sidecar ``<file>.json``. Files are written to a temporary name and
renamed into place, so a crash never leaves half a model under the final name.

Command line: ``focalmix export --ckpt_path best.ckpt [--format onnx|torchscript] [--output PATH]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pickle
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, NoReturn

import torch
from lightning.pytorch.core.module import _jit_is_scripting
from torch import Tensor, nn

from focalmix import export_media
from focalmix.faults import atomic_write
from focalmix.module import FocalMixClassifier
from focalmix.trust import UntrustedClassError

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}
OPSET_VERSION = 17  # onnxruntime >= 1.11 runs it; LayerNormalization is a single op from 17 on
INPUT_NAME, OUTPUT_NAME = "x", "probabilities"
METADATA_FILE = "focalmix.json"  # the TorchScript extra file holding :func:`metadata`
_INSTALL_HINT = 'ONNX export needs the `onnx` package: pip install "focalmix[export]"'


class ProbabilityModel(nn.Module):
    """Wrap a classifier so that ``forward`` is its ``predict_proba``: the graph that is exported.

    Args:
        model: the trained classifier; used as is, not copied.

    Example:
        >>> model = FocalMixClassifier(num_features=4, task="multiclass", num_classes=3).eval()
        >>> ProbabilityModel(model)(torch.randn(2, 4)).sum(-1).round(decimals=5).tolist()
        [1.0, 1.0]
    """

    def __init__(self, model: FocalMixClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.predict_proba(x)  # (B,) or (B, C)


def export(
    model: FocalMixClassifier,
    path: str | Path,
    format: Literal["onnx", "torchscript"] = "onnx",
    example_input: Tensor | None = None,
    opset_version: int = OPSET_VERSION,
    check: bool = True,
) -> Path:
    """Write ``model`` as an ONNX or TorchScript file mapping raw samples to probabilities, in eval mode.

    The graph is traced on ``example_input`` with the model in eval mode (dropout off, BatchNorm running
    statistics); the model's own train/eval mode is restored afterwards. The batch dimension is dynamic.
    With ``check``, the written file is run on a batch of another size and compared with
    ``model.predict_proba`` (ONNX: only when onnxruntime is installed), so a backbone whose trace bakes in
    the batch size is caught here rather than in production.

    Args:
        model: a :class:`~focalmix.FocalMixClassifier`.
        path: the file to write; its folder is created. Suffixes are not enforced (``.onnx``/``.pt`` usual).
        format: ``"onnx"`` or ``"torchscript"``. Default: ``"onnx"``.
        example_input: a batch (B, *input_shape) to trace with, on the model's device; default None: two
            standard-normal samples of ``model.hparams.input_shape``, else ``(num_features,)``.
        opset_version: ONNX opset, >= 13. Default: 17.
        check: run the written file on a batch of another size and compare with ``predict_proba`` (atol
            1e-4). Default: True.

    Returns:
        The path written.

    Raises:
        TypeError: ``model`` is not a FocalMixClassifier, or ``example_input`` is not a floating tensor.
        ValueError: an unknown ``format``, an ``opset_version`` below 13, or an ``example_input`` whose
            sample shape differs from the model's input shape.
        ImportError: ONNX export without the ``onnx`` package (``pip install "focalmix[export]"``).
        RuntimeError: with ``check``, the exported file fails or disagrees with the model; it is deleted.

    Example:
        >>> import tempfile
        >>> model = FocalMixClassifier(num_features=4)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = export(model, f"{folder}/model.pt", format="torchscript")
        ...     torch.jit.load(path)(torch.randn(5, 4)).shape
        torch.Size([5])
    """
    _check_arguments(model, format, opset_version)
    if format == "torchscript" and export_media.is_onnx_backbone(model):
        raise ValueError(
            f"{type(model.backbone).__name__} is an ONNX graph, which TorchScript cannot hold: use"
            " format='onnx' (one file from raw input to probabilities)."
        )
    example = _example_input(model, example_input)
    meta = metadata(model, input_shape=example.shape[1:])
    path = Path(path)
    was_training = model.training
    try:
        with atomic_write(path) as tmp:
            _write(ProbabilityModel(model).eval(), example, tmp, format, opset_version, meta, check)
    finally:
        model.train(was_training)
    with atomic_write(sidecar_path(path)) as tmp:
        tmp.write_text(json.dumps({k: _json_value(v) for k, v in meta.items()}, indent=2))
    return path


def sidecar_path(path: str | Path) -> Path:
    """The JSON file written beside an export: ``model.onnx`` -> ``model.onnx.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _json_value(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _check_arguments(model: FocalMixClassifier, format: str, opset_version: int) -> None:
    if not isinstance(model, FocalMixClassifier):
        raise TypeError(f"`model` must be a FocalMixClassifier, got {type(model).__name__}.")
    if format not in FORMATS:
        raise ValueError(f"`format` must be one of {FORMATS}, got {format!r}.")
    if isinstance(opset_version, bool) or not isinstance(opset_version, int) or opset_version < 13:
        raise ValueError(f"`opset_version` must be an int >= 13, got {opset_version!r}.")
    if format == "onnx" and not _installed("onnx"):
        raise ImportError(_INSTALL_HINT)


def _write(
    wrapper: nn.Module,
    example: Tensor,
    path: Path,
    format: str,
    opset: int,
    meta: dict[str, str],
    check: bool,
) -> None:
    # _jit_is_scripting: what LightningModule.to_torchscript/to_onnx use, so that the tracer's attribute
    # scan does not trip over `model.trainer`, which raises while no Trainer is attached.
    with torch.no_grad(), _jit_is_scripting(), warnings.catch_warnings():
        # The tracer warns that `if input_mean.numel()` is frozen: intended, the statistics are fixed.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # torch 2.9+ deprecates TorchScript and the TorchScript-based ONNX exporter; both still work.
        warnings.simplefilter("ignore", DeprecationWarning)
        if format == "onnx" and export_media.is_onnx_backbone(wrapper.model):
            export_media.export_onnx_chain(wrapper.model, path, opset, meta, INPUT_NAME, OUTPUT_NAME)
        elif format == "onnx":
            _export_onnx(wrapper, example, path, opset, meta)
        else:
            _export_torchscript(wrapper, example, path, meta)
        if check:  # a failure leaves nothing behind: atomic_write removes the temporary file
            _check_exported(wrapper, path, format, example)


def metadata(model: FocalMixClassifier, input_shape: Sequence[int] | None = None) -> dict[str, str]:
    """What the exported file carries besides the graph, as strings (JSON values) keyed by name.

    Args:
        model: the classifier.
        input_shape: the shape of one sample; default None: the model's ``input_shape`` or
            ``(num_features,)``.

    Example:
        >>> meta = metadata(FocalMixClassifier(num_features=4, class_names=["no", "yes"]))
        >>> meta["task"], json.loads(meta["class_names"]), json.loads(meta["input_shape"]), meta["threshold"]
        ('binary', ['no', 'yes'], [4], '0.5')
    """
    hp = model.hparams
    names = hp.get("class_names") or [str(c) for c in range(hp.num_classes)]
    spec = hp.get("preprocessing")
    features: dict | None = None
    if spec is not None:
        from focalmix.preprocessing import describe

        features = describe(spec)
    calibration = {
        "method": model._calibration_method(),
        "scale": model.calibration_scale.tolist(),
        "bias": model.calibration_bias.tolist(),
    }
    media = export_media.metadata(model) if export_media.input_spec(model) is not None else {}
    return {
        "producer": "focalmix",
        "task": hp.task,
        "num_classes": str(hp.num_classes),
        "class_names": json.dumps([str(n) for n in names]),
        "feature_names": json.dumps(hp.get("feature_names")),
        "features": json.dumps(features),
        "input_shape": json.dumps([int(s) for s in (input_shape or _input_shape(model))]),
        "input": _input_doc(hp.get("feature_names"), spec is not None),
        "threshold": str(round(float(model.threshold), 6)),
        "calibration": json.dumps(calibration),
        "output": "binary: (B,) calibrated probability of class_names[1]; otherwise (B, C) calibrated"
        " class probabilities",
        **media,
    }


def _input_doc(feature_names: list[str] | None, table: bool) -> str:
    if feature_names is None:
        return "float32 (B, *input_shape) raw samples"
    doc = f"float32 (B, {len(feature_names)}): one column per feature, in this order: {feature_names}."
    if table:
        doc += (
            " Numeric columns raw (NaN allowed); categorical columns as 1 + the category's index in"
            " `features` categories, 0 for unseen."
        )
    return doc


def _input_shape(model: FocalMixClassifier) -> tuple[int, ...]:
    shape = export_media.input_shape(model) or model.hparams.get("input_shape")
    shape = shape or (model.hparams.get("num_features"),)
    if None in shape:
        raise ValueError(
            "The model has neither `input_shape` nor `num_features` in its hyperparameters: pass"
            " `example_input`, a batch (B, *sample_shape) of raw inputs."
        )
    return tuple(int(s) for s in shape)


def _example_input(model: FocalMixClassifier, example_input: Tensor | None) -> Tensor:
    if example_input is None and export_media.input_spec(model) is not None:
        return export_media.example_input(model)
    if example_input is None:
        shape = _input_shape(model)
        generator = torch.Generator().manual_seed(0)
        return torch.randn(2, *shape, generator=generator).to(device=model.device, dtype=model.dtype)
    if not isinstance(example_input, Tensor) or not example_input.is_floating_point():
        raise TypeError(f"`example_input` must be a floating-point tensor, got {example_input!r:.80}.")
    expected = model.hparams.get("input_shape")
    if example_input.ndim < 2 or (expected and tuple(example_input.shape[1:]) != tuple(expected)):
        raise ValueError(
            f"`example_input` must be a batch (B, *input_shape) with input_shape {expected}, got shape"
            f" {tuple(example_input.shape)}."
        )
    return example_input.to(model.device)


def _export_onnx(wrapper: nn.Module, example: Tensor, path: Path, opset: int, meta: dict[str, str]) -> None:
    import onnx

    # dynamo=False: the TorchScript-based exporter, which needs only `onnx` (the torch.export-based one
    # needs `onnxscript` too); it handles this feed-forward graph and its dynamic batch axis exactly.
    torch.onnx.export(
        wrapper,
        (example,),
        str(path),
        dynamo=False,
        opset_version=opset,
        do_constant_folding=True,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
    )
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, meta)
    proto.graph.input[0].doc_string = meta["input"]
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def _export_torchscript(wrapper: nn.Module, example: Tensor, path: Path, meta: dict[str, str]) -> None:
    traced = torch.jit.trace(wrapper, (example,))
    torch.jit.save(traced, str(path), _extra_files={METADATA_FILE: json.dumps(meta)})


def _check_exported(wrapper: nn.Module, path: Path, format: str, example: Tensor) -> None:
    batch = example.shape[0] + 3  # another batch size than the trace's, to prove the axis is dynamic
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, *example.shape[1:], generator=generator).to(example)
    x = x * example.std().clamp_min(1e-6) + example.mean()
    expected = wrapper(x).cpu().float()
    hint = (
        " The backbone's forward probably depends on the batch size in Python (e.g. `int(x.shape[0])`);"
        " use `x.flatten(1)` or `x.reshape(x.shape[0], -1)` on tensors instead, or pass `check=False`."
    )
    try:
        got = _run_exported(path, format, x)
    except Exception as err:  # whatever the runtime raises (onnxruntime has its own exception types)
        last_line = (str(err).strip().splitlines() or [type(err).__name__])[-1]  # not TorchScript's traceback
        message = f"The exported {format} file {path} fails on a batch of {batch}: {last_line}."
        raise RuntimeError(message + hint) from err
    if got is None:
        return  # onnxruntime is not installed; the graph was validated by onnx.checker
    if got.shape != expected.shape or not torch.allclose(got.float(), expected, atol=1e-4, rtol=1e-3):
        diff = (got.float() - expected).abs().max().item() if got.shape == expected.shape else "n/a"
        raise RuntimeError(
            f"The exported {format} file {path} disagrees with the model on a batch of {batch}: output shape"
            f" {tuple(got.shape)} vs {tuple(expected.shape)}, max abs difference {diff}.{hint}"
        )


def _run_exported(path: Path, format: str, x: Tensor) -> Tensor | None:
    if format == "torchscript":
        return torch.jit.load(str(path), map_location=x.device)(x).cpu()
    if not _installed("onnxruntime"):
        return None
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {INPUT_NAME: x.cpu().numpy()})[0])


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but an error is one line (as every focalmix command's), not the usage block too."""

    def error(self, message: str) -> NoReturn:
        print(f"focalmix: error: {message}", file=sys.stderr)
        print("  see: focalmix export --help", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="focalmix export",
        description="Export a trained checkpoint as a file that maps raw features to probabilities.",
    )
    parser.add_argument("--ckpt_path", required=True, help="the checkpoint, e.g. checkpoints/best.ckpt")
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="output format (default: onnx)")
    parser.add_argument(
        "--output",
        default=None,
        help="file to write (default: the checkpoint's path with .onnx or .pt as its suffix)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """The ``focalmix export`` command: load a checkpoint, export it, print the path written.

    Args:
        argv: the arguments after ``export``; default None: ``sys.argv[1:]``.

    Raises:
        SystemExit: code 2 with a message naming the argument for a missing checkpoint, an unknown
            format, ONNX without the ``onnx`` package, or a checkpoint that does not rebuild a model.

    Example:
        ``focalmix export --ckpt_path lightning_logs/version_0/checkpoints/best.ckpt`` writes ``best.onnx``
        beside the checkpoint and prints ``focalmix: exported onnx model to .../best.onnx``.
    """
    parser = _parser()
    args = parser.parse_args(None if argv is None else list(argv))
    ckpt = Path(args.ckpt_path)
    if not ckpt.is_file():
        parser.error(
            f"--ckpt_path: no checkpoint at {ckpt} (FileNotFoundError); give the `.ckpt` file of a fit run,"
            " e.g. lightning_logs/version_0/checkpoints/best.ckpt."
        )
    if args.format == "onnx" and not _installed("onnx"):
        parser.error(f"--format onnx: {_INSTALL_HINT}, or use --format torchscript.")
    output = Path(args.output) if args.output else ckpt.with_suffix(SUFFIXES[args.format])
    if output.resolve() == ckpt.resolve():
        parser.error(f"--output must differ from --ckpt_path, got {output} for both.")
    try:
        model = FocalMixClassifier.load_from_checkpoint(ckpt, map_location="cpu")
    except UntrustedClassError as err:
        parser.error(f"--ckpt_path: {err}")
    except (KeyError, TypeError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        parser.error(
            f"--ckpt_path: cannot rebuild a FocalMixClassifier from {ckpt}: {err} A model with a custom"
            " backbone module is not rebuilt from its checkpoint alone: load it in Python with"
            " `FocalMixClassifier.load_from_checkpoint(path, backbone=net)`, then call"
            " `focalmix.export.export`."
        )
    path = export(model, output, args.format)
    print(f"focalmix: exported {args.format} model to {path} (metadata: {sidecar_path(path)})")
