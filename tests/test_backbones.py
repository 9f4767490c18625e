"""Backbones: TabularMLP's embeddings against rtdl_num_embeddings, lazy building, export, the CLI path."""

from __future__ import annotations

import warnings

import onnxruntime
import pytest
import torch
from torch.testing import assert_close

from focalmix import FocalMixClassifier
from focalmix.backbones import MLP, TabularMLP, build_backbone, normal_bins
from focalmix.export import export

rtdl = pytest.importorskip("rtdl_num_embeddings")  # the `tabular` extra

FEATURES = 6
EMBEDDINGS = ["periodic", "piecewise"]


def _x(rows: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, FEATURES, generator=torch.Generator().manual_seed(seed)) * 2


@pytest.mark.parametrize("embedding", EMBEDDINGS)
def test_output_is_the_mlp_over_the_authors_embeddings(embedding):
    torch.manual_seed(0)
    net = TabularMLP(FEATURES, embedding=embedding, d_embedding=4, hidden_sizes=(16, 8))
    assert net.in_features == FEATURES and net.num_features == 8
    # the same layers rebuilt from rtdl_num_embeddings and our MLP, with net's weights
    if embedding == "periodic":
        ref = rtdl.PeriodicEmbeddings(FEATURES, 4, n_frequencies=48, frequency_init_scale=0.01, lite=True)
    else:
        ref = rtdl.PiecewiseLinearEmbeddings(normal_bins(FEATURES, 48), 4, activation=False, version="B")
    ref.load_state_dict(net.embeddings.state_dict())
    mlp = MLP(FEATURES * 4, (16, 8))
    mlp.load_state_dict(net.mlp.state_dict())
    x = _x()
    assert_close(net(x), mlp(ref(x).reshape(len(x), -1)))


def test_normal_bins_are_equal_probability_quantiles():
    (edges,) = normal_bins(1, 8)
    cdf = torch.distributions.Normal(0.0, 1.0).cdf(edges)
    assert_close(cdf, torch.linspace(1 / 16, 15 / 16, 9), atol=1e-5, rtol=0)


@pytest.mark.parametrize("embedding", EMBEDDINGS)
def test_gradients_reach_the_embeddings(embedding):
    net = TabularMLP(FEATURES, embedding=embedding, hidden_sizes=(8,))
    net(_x()).sum().backward()
    for name, p in net.embeddings.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_lazy_backbone_is_built_by_the_classifiers_dry_run_and_reloads():
    model = FocalMixClassifier(backbone=TabularMLP(hidden_sizes=(8,)), input_shape=(FEATURES,))
    assert model.backbone.in_features == FEATURES  # built before any optimizer sees the parameters
    assert model.head[1].in_features == 8
    model.set_normalization(torch.zeros(FEATURES), torch.ones(FEATURES))
    fresh = FocalMixClassifier(backbone=TabularMLP(hidden_sizes=(8,)), input_shape=(FEATURES,))
    fresh.load_state_dict(model.state_dict())
    x = _x()
    assert_close(fresh.eval()(x), model.eval()(x))


def test_unbuilt_backbone_takes_its_width_from_a_state_dict():
    built = TabularMLP(FEATURES, hidden_sizes=(8,))
    bare = TabularMLP(hidden_sizes=(8,))
    assert bare.embeddings is None and bare.num_features is None
    bare.load_state_dict(built.state_dict())
    assert bare.in_features == FEATURES
    assert_close(bare(_x()), built(_x()))


def test_build_backbone_gives_a_class_path_backbone_the_input_width():
    spec = {"class_path": "focalmix.backbones.TabularMLP", "init_args": {"hidden_sizes": [8]}}
    assert build_backbone(spec, FEATURES, (256,)).in_features == FEATURES
    spec["init_args"]["num_features"] = 3  # an explicit width wins
    assert build_backbone(spec, FEATURES, (256,)).in_features == 3
    cnn = {"class_path": "focalmix.backbones.SmallCNN", "init_args": {"width": 2}}
    assert build_backbone(cnn, FEATURES, (256,)).num_features == 8  # no num_features argument to fill


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_features=0), "`num_features` must be >= 1"),
        (dict(embedding="fourier"), "`embedding` must be one of"),
        (dict(d_embedding=0), "`d_embedding` must be >= 1"),
        (dict(n_frequencies=0), "`n_frequencies` must be >= 1"),
        (dict(n_bins=1), "`n_bins` must be >= 2"),
        (dict(frequency_scale=0.0), "`frequency_scale` must be > 0"),
        (dict(hidden_sizes=()), "`hidden_sizes` must be a non-empty list"),
    ],
)
def test_bad_arguments_are_refused_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TabularMLP(**kwargs)


def test_bad_argument_types_are_refused():
    with pytest.raises(TypeError, match="`num_features` must be an int"):
        TabularMLP(num_features=2.5)
    with pytest.raises(TypeError, match="`frequency_scale` must be a number"):
        TabularMLP(frequency_scale="big")


@pytest.mark.parametrize("embedding", EMBEDDINGS)
def test_onnx_and_torchscript_exports_equal_predict_proba(tmp_path, embedding):
    torch.manual_seed(0)
    net = TabularMLP(FEATURES, embedding=embedding, d_embedding=4, hidden_sizes=(8,))
    model = FocalMixClassifier(backbone=net, num_features=FEATURES)
    model.set_normalization(torch.linspace(-1, 1, FEATURES), torch.linspace(0.5, 2, FEATURES))
    x = _x(7, seed=1)
    with torch.no_grad():
        expected = model.eval().predict_proba(x)
    onnx_path = export(model, tmp_path / "model.onnx", format="onnx", opset_version=17)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert_close(torch.from_numpy(session.run(None, {"x": x.numpy()})[0]), expected, atol=1e-5, rtol=1e-4)
    ts_path = export(model, tmp_path / "model.pt", format="torchscript")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.load(str(ts_path))
    assert_close(traced(x), expected, atol=1e-5, rtol=1e-4)


def test_cli_builds_the_backbone_from_class_path_without_a_width(tmp_path):
    from focalmix.cli import FocalMixCLI

    cli = FocalMixCLI(
        run=False,
        args=[
            "--data.source",
            "breast_cancer",
            "--model.backbone.class_path",
            "focalmix.backbones.TabularMLP",
            "--model.backbone.init_args.hidden_sizes",
            "[8]",
            "--trainer.default_root_dir",
            str(tmp_path),
            "--trainer.logger",
            "false",
        ],
    )
    assert isinstance(cli.model.backbone, TabularMLP)
    assert cli.model.backbone.in_features == cli.datamodule.num_features == 30
