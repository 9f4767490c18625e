"""Export: ONNX and TorchScript files against the model's own predict_proba on raw inputs, and the CLI."""

from __future__ import annotations

import importlib
import json
import warnings

import onnx
import onnxruntime
import pytest
import torch
from torch import nn
from torch.testing import assert_close
from torch.utils.data import DataLoader, TensorDataset

from focalmix import FocalMixClassifier
from focalmix.cli import main as cli_main
from focalmix.export import METADATA_FILE, export, main
from tests.conftest import quiet_trainer

# the module itself, even if the package ever re-exports the function `export` under the same name
fm_export = importlib.import_module("focalmix.export")

FEATURES = 5
CNN = {"class_path": "focalmix.backbones.SmallCNN", "init_args": {"in_channels": 2, "width": 4}}


def _model(task="binary", num_classes=2, seed=0, **kwargs):
    """A fresh model with standardization far from identity, so that leaving it out would show."""
    torch.manual_seed(seed)
    model = FocalMixClassifier(num_features=FEATURES, task=task, num_classes=num_classes, **kwargs)
    model.set_normalization(torch.linspace(-50, 50, FEATURES), torch.linspace(0.5, 20, FEATURES))
    return model


def _raw(batch, shape=(FEATURES,), seed=1):
    """Raw inputs on the scale of the model's standardization statistics."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *shape, generator=g) * 10 + torch.linspace(-50, 50, shape[-1])


def _run_onnx(path, x):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"x": x.numpy()})[0])


def _run_torchscript(path, x):
    return _jit_load(path)(x)


def _jit_load(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch >= 2.9 deprecates TorchScript
        return torch.jit.load(str(path), **kwargs)


RUNNERS = {"onnx": _run_onnx, "torchscript": _run_torchscript}


def _expected(model, x):
    with torch.no_grad():
        return model.eval().predict_proba(x)


@pytest.mark.parametrize("format", ["onnx", "torchscript"])
@pytest.mark.parametrize("task, num_classes", [("binary", 2), ("multiclass", 4), ("multilabel", 3)])
def test_exported_file_matches_predict_proba_on_raw_inputs(tmp_path, format, task, num_classes):
    model = _model(task, num_classes).train()  # export must switch to eval mode itself...
    path = export(model, tmp_path / f"model.{format}", format=format)
    assert model.training  # ...and give the model back as it was
    x = _raw(7)  # the trace used a batch of 2
    got = RUNNERS[format](path, x)
    expected = _expected(model, x)
    assert got.shape == expected.shape == ((7,) if task == "binary" else (7, num_classes))
    assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert_close(RUNNERS[format](path, x[:1]), expected[:1], atol=1e-5, rtol=1e-4)  # batch of one too


@pytest.mark.parametrize("format", ["onnx", "torchscript"])
def test_image_model_with_batchnorm_exports_in_eval_mode(tmp_path, format):
    torch.manual_seed(0)
    model = FocalMixClassifier(backbone=CNN, input_shape=(2, 8, 8), task="multiclass", num_classes=3)
    model.set_normalization(torch.tensor([3.0, -2.0]).view(2, 1, 1), torch.tensor([2.0, 0.5]).view(2, 1, 1))
    with torch.no_grad():  # give BatchNorm running statistics that differ from any batch's own
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    example = _raw(3, (2, 8, 8))
    path = export(model.train(), tmp_path / "cnn", format=format, example_input=example)
    x = _raw(5, (2, 8, 8), seed=2)
    assert_close(RUNNERS[format](path, x), _expected(model, x), atol=1e-5, rtol=1e-4)


def test_a_briefly_trained_model_and_its_metadata(tmp_path):
    model = _model(class_names=["ham", "spam"])
    x = _raw(64)
    y = (x[:, 0] > -50).float()
    data = TensorDataset(x, y)
    loaders = DataLoader(data, batch_size=16, shuffle=True), DataLoader(data, batch_size=64)
    quiet_trainer(tmp_path, max_epochs=2).fit(model, *loaders)
    onnx_path = export(model, tmp_path / "m.onnx")
    ts_path = export(model, tmp_path / "m.pt", format="torchscript")
    x_new = _raw(9, seed=3)
    for path, run in ((onnx_path, _run_onnx), (ts_path, _run_torchscript)):
        assert_close(run(path, x_new), _expected(model, x_new), atol=1e-5, rtol=1e-4)
    proto = onnx.load(str(onnx_path))
    onnx_meta = {p.key: p.value for p in proto.metadata_props}
    extra = {METADATA_FILE: ""}
    _jit_load(ts_path, _extra_files=extra)
    assert onnx_meta == json.loads(extra[METADATA_FILE]) == fm_export.metadata(model)
    assert json.loads(onnx_meta["class_names"]) == ["ham", "spam"] and onnx_meta["task"] == "binary"
    assert float(onnx_meta["threshold"]) == pytest.approx(float(model.threshold), abs=1e-6)
    assert json.loads(onnx_meta["input_shape"]) == [FEATURES]
    # the batch axis is symbolic in the graph, the feature axis fixed
    (graph_input,) = proto.graph.input
    dims = graph_input.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == FEATURES


class _BatchBakedIn(nn.Module):
    """A backbone whose trace freezes the batch size: `int(x.shape[0])` becomes a constant."""

    num_features = 4

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(FEATURES, 4)

    def forward(self, x):
        return self.linear(x).reshape(int(x.shape[0]), 4)


def test_a_trace_that_bakes_in_the_batch_size_is_caught(tmp_path):
    model = FocalMixClassifier(backbone=_BatchBakedIn())
    with pytest.raises(RuntimeError, match=r"fails on a batch of 5: .*depends on the batch size"):
        export(model, tmp_path / "bad.pt", format="torchscript", example_input=_raw(2))
    assert not (tmp_path / "bad.pt").exists()  # a file known to be wrong is not left behind
    with pytest.raises(ValueError, match=r"neither `input_shape` nor `num_features`.*pass `example_input`"):
        export(model, tmp_path / "bad.pt", format="torchscript")
    unchecked = tmp_path / "unchecked.pt"
    assert export(model, unchecked, format="torchscript", example_input=_raw(2), check=False) == unchecked
    assert unchecked.is_file()


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"format": "tflite"}, ValueError, r"`format` must be one of \('onnx', 'torchscript'\), got 'tfl"),
        ({"opset_version": 11}, ValueError, r"`opset_version` must be an int >= 13, got 11"),
        ({"example_input": torch.zeros(2, 3)}, ValueError, r"input_shape \(5,\), got shape \(2, 3\)"),
        ({"example_input": torch.zeros(2, 5, dtype=torch.long)}, TypeError, r"floating-point tensor"),
    ],
)
def test_bad_arguments_name_themselves(tmp_path, kwargs, exc, match):
    model = FocalMixClassifier(num_features=FEATURES, input_shape=(FEATURES,))
    with pytest.raises(exc, match=match):
        export(model, tmp_path / "m.onnx", **kwargs)


def test_not_a_focalmix_model_is_a_type_error(tmp_path):
    with pytest.raises(TypeError, match=r"`model` must be a FocalMixClassifier, got Linear"):
        export(nn.Linear(2, 1), tmp_path / "m.onnx")


def test_onnx_without_the_onnx_package_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fm_export, "_installed", lambda package: package != "onnx")
    with pytest.raises(ImportError, match=r'pip install "focalmix\[export\]"'):
        export(_model(), tmp_path / "m.onnx")
    ckpt = tmp_path / "m.ckpt"
    ckpt.write_bytes(b"")  # never read: the check comes first
    with pytest.raises(SystemExit) as exit_info:
        main(["--ckpt_path", str(ckpt)])
    assert exit_info.value.code == 2
    assert 'pip install "focalmix[export]"' in capsys.readouterr().err


# ---- the `focalmix export` command ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A checkpoint of a multiclass model trained for one epoch, as `focalmix fit` leaves it."""
    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    model = _model("multiclass", 3, class_names=["a", "b", "c"])
    x = _raw(48)
    y = torch.bucketize(x[:, 1].contiguous(), torch.tensor([-30.0, -20.0]))
    trainer = quiet_trainer(folder, max_epochs=1)
    data = TensorDataset(x, y)
    trainer.fit(model, DataLoader(data, batch_size=16), DataLoader(data, batch_size=48))
    trainer.save_checkpoint(folder / "best.ckpt")
    return folder / "best.ckpt"


def test_cli_exports_onnx_that_matches_the_checkpoint(checkpoint, tmp_path, capsys):
    out = tmp_path / "served" / "model.onnx"
    main(["--ckpt_path", str(checkpoint), "--format", "onnx", "--output", str(out)])
    sidecar = out.with_name("model.onnx.json")
    assert capsys.readouterr().out.strip() == f"focalmix: exported onnx model to {out} (metadata: {sidecar})"
    loaded = FocalMixClassifier.load_from_checkpoint(checkpoint, map_location="cpu")
    x = _raw(6, seed=4)
    assert_close(_run_onnx(out, x), _expected(loaded, x), atol=1e-5, rtol=1e-4)
    # the sidecar holds what the ONNX file's metadata holds, as JSON values
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    side = json.loads(sidecar.read_text())
    assert side["class_names"] == json.loads(props["class_names"]) == ["a", "b", "c"]
    assert side["calibration"] == json.loads(props["calibration"])
    assert side["calibration"]["method"] == "temperature"
    assert not [p for p in out.parent.iterdir() if p.suffix == ".tmp"]  # nothing half-written left


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("task, num_classes", [("binary", 2), ("multiclass", 3), ("multilabel", 3)])
def test_export_outputs_calibrated_probabilities(tmp_path, fmt, task, num_classes):
    model = _model(task, num_classes).eval()
    # a calibration far from identity, so an export that skipped it would differ
    model.calibration_scale.fill_(0.3)
    if task != "multiclass":
        model.calibration_bias.fill_(-1.5)
    path = export(model, tmp_path / f"m.{fmt}", fmt)
    x = _raw(7, seed=3)
    with torch.no_grad():
        calibrated, raw = model.predict_proba(x), model.predict_proba(x, calibrated=False)
    got = RUNNERS[fmt](path, x)
    assert_close(got, calibrated, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(got, raw, atol=1e-3)


def test_focalmix_export_command_defaults_to_the_checkpoint_name(checkpoint, capsys):
    cli_main(["export", "--ckpt_path", str(checkpoint), "--format", "torchscript"])
    written = checkpoint.with_suffix(".pt")
    assert written.is_file() and str(written) in capsys.readouterr().out
    loaded = FocalMixClassifier.load_from_checkpoint(checkpoint, map_location="cpu")
    x = _raw(3, seed=5)
    assert_close(_run_torchscript(written, x), _expected(loaded, x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ckpt_path", "{missing}"], "--ckpt_path: no checkpoint at {missing} (FileNotFoundError)"),
        (["--ckpt_path", "{ckpt}", "--format", "tflite"], "argument --format: invalid choice: 'tflite'"),
        (["--ckpt_path", "{ckpt}", "--output", "{ckpt}"], "--output must differ from --ckpt_path"),
        (["--ckpt_path", "{garbage}"], "--ckpt_path: cannot rebuild a FocalMixClassifier from {garbage}"),
        (["--format", "onnx"], "the following arguments are required: --ckpt_path"),
    ],
)
def test_cli_errors_exit_2_and_name_the_argument(checkpoint, tmp_path, capsys, args, message):
    garbage = tmp_path / "garbage.ckpt"
    torch.save({"state_dict": {}}, garbage)  # a checkpoint of something else
    paths = {"missing": tmp_path / "nope.ckpt", "ckpt": checkpoint, "garbage": garbage}
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(**paths) for a in args])
    assert exit_info.value.code == 2
    assert message.format(**paths) in capsys.readouterr().err


def test_onnx_from_a_dataframe_in_another_column_order(tmp_path):
    """The README's serving recipe: the sidecar's `features` turn any column order into the model's input."""
    import numpy as np
    import pandas as pd

    from focalmix.preprocessing import encode_frame, fit_spec

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"age": rng.normal(50, 10, 64), "color": rng.choice(["red", "blue", None], 64)})
    frame.loc[::5, "age"] = np.nan
    spec = fit_spec(frame, ["age", "color"])
    torch.manual_seed(0)
    model = FocalMixClassifier(num_features=2, preprocessing=spec, class_names=["no", "yes"])
    path = export(model, tmp_path / "model.onnx", format="onnx")
    features = json.loads((tmp_path / "model.onnx.json").read_text())["features"]
    shuffled = frame[["color", "age"]].assign(extra=1.0)  # other order, an extra column
    got = _run_onnx(path, torch.from_numpy(encode_frame(shuffled, features)))
    assert_close(got, _expected(model, torch.from_numpy(encode_frame(frame, spec))))
