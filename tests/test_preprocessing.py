"""Tests of focalmix.preprocessing against scikit-learn and pandas oracles."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from focalmix.preprocessing import (
    InputEncoder,
    check_spec,
    describe,
    encode_frame,
    encoded_names,
    fit_spec,
)


def _table(n=200, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "x": rng.normal(3, 2, n),
            "gappy": rng.lognormal(1, 1, n),
            "count": rng.integers(0, 50, n),
            "color": rng.choice(["red", "green", "blue", "violet"], n, p=[0.4, 0.3, 0.2, 0.1]),
            "flag": rng.choice([True, False], n),
            "code": rng.choice([3, 7, 11], n).astype(float),
        }
    )
    df.loc[rng.random(n) < 0.25, "gappy"] = np.nan
    df.loc[rng.random(n) < 0.1, "color"] = None
    df.loc[rng.random(n) < 0.1, "code"] = np.nan  # integer codes with gaps: floats in pandas
    return df


FEATURES = ["x", "gappy", "count", "color", "flag", "code"]


def _fit(train, **kw):
    return fit_spec(train, FEATURES, categorical_columns=["code"], **kw)


def test_spec_is_json_and_kinds_follow_dtypes():
    spec = _fit(_table())
    assert json.loads(json.dumps(spec)) == spec
    kinds = {c["name"]: c["kind"] for c in spec["columns"]}
    assert kinds == {
        "x": "numeric",
        "gappy": "numeric",
        "count": "numeric",
        "color": "categorical",
        "flag": "categorical",
        "code": "categorical",
    }
    assert [c["name"] for c in spec["columns"]] == FEATURES
    cols = {c["name"]: c for c in spec["columns"]}
    assert (cols["x"]["indicator"], cols["gappy"]["indicator"]) == (False, True)
    assert cols["flag"]["categories"] == ["False", "True"]
    assert cols["code"]["categories"] == ["11", "3", "7"]  # 3.0 and 3 are the same category "3"


def test_numeric_matches_simple_imputer_and_standard_scaler():
    df = _table()
    train, test = df.iloc[:150], df.iloc[150:]
    spec = _fit(train)
    num = ["x", "gappy", "count"]
    imputer = SimpleImputer(strategy="median", add_indicator=True).fit(train[num].to_numpy(np.float32))
    scaler = StandardScaler().fit(imputer.transform(train[num].to_numpy(np.float32))[:, :3])
    expected_values = scaler.transform(imputer.transform(test[num].to_numpy(np.float32))[:, :3])
    expected_indicator = imputer.transform(test[num].to_numpy(np.float32))[:, 3:]  # gappy only

    encoder = InputEncoder(spec)
    out = encoder(torch.from_numpy(encode_frame(test, spec))).numpy()
    np.testing.assert_allclose(out[:, :3], expected_values, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(out[:, 3:4], expected_indicator)
    assert encoder.feature_names[:4] == ["x", "gappy", "count", "gappy_missing"]
    medians = [c["median"] for c in spec["columns"][:3]]
    np.testing.assert_allclose(medians, imputer.statistics_, rtol=1e-6)


def test_one_hot_matches_one_hot_encoder_with_unknowns():
    df = _table()
    train, test = df.iloc[:150], df.iloc[150:].copy()
    test.loc[test.index[:5], "color"] = "ultraviolet"  # never seen in training
    spec = _fit(train)
    out = InputEncoder(spec)(torch.from_numpy(encode_frame(test, spec))).numpy()
    start = 4  # 3 numeric + 1 indicator
    for col in ("color", "flag", "code"):
        cats = next(c["categories"] for c in spec["columns"] if c["name"] == col)
        as_text = train[col].dropna().map(lambda v: str(int(v)) if isinstance(v, float) else str(v))
        oracle = OneHotEncoder(handle_unknown="ignore").fit(as_text.to_frame())
        assert cats == oracle.categories_[0].tolist()  # the training vocabulary, sorted
        test_text = test[col].map(
            lambda v: "<missing>" if pd.isna(v) else str(int(v)) if isinstance(v, float) else str(v)
        )
        expected = oracle.transform(test_text.to_frame()).toarray()
        block = out[:, start : start + len(cats) + 1]
        np.testing.assert_array_equal(block[:, 1:], expected)
        np.testing.assert_array_equal(block[:, 0], expected.sum(1) == 0)  # unknown/missing slot
        start += len(cats) + 1
    assert start == InputEncoder(spec).out_features


def test_codes_match_pandas_categorical():
    df = _table()
    spec = _fit(df.iloc[:100])
    codes = encode_frame(df, spec)[:, FEATURES.index("color")]
    cats = spec["columns"][3]["categories"]
    np.testing.assert_array_equal(codes, pd.Categorical(df["color"], categories=cats).codes + 1)
    ints = df[["code"]].fillna(3).astype(int)  # a predict file whose codes read as ints: same categories
    full = df.assign(code=ints["code"])
    np.testing.assert_array_equal(
        encode_frame(full, spec)[:, 5], encode_frame(df.assign(code=df["code"].fillna(3.0)), spec)[:, 5]
    )


def test_standardize_false_and_constant_columns():
    df = _table().assign(const=4.0)
    spec = fit_spec(df, ["x", "const"], standardize=False)
    assert [(c["mean"], c["std"]) for c in spec["columns"]] == [(0.0, 1.0), (0.0, 1.0)]
    spec = fit_spec(df, ["x", "const"])
    assert spec["columns"][1]["std"] == StandardScaler().fit(df[["const"]]).scale_[0] == 1.0
    out = InputEncoder(spec)(torch.from_numpy(encode_frame(df, spec)))
    assert torch.isfinite(out).all() and (out[:, 1] == 0).all()
    new = InputEncoder(spec)(torch.from_numpy(encode_frame(df.assign(const=5.0), spec)))
    assert (new[:, 1] == 1.0).all()  # a value unseen in training is centred, not blown up to 1e6


def test_encoder_traces_to_torchscript_and_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    df = _table()
    spec = _fit(df.iloc[:150])
    encoder = InputEncoder(spec).eval()
    x = torch.from_numpy(encode_frame(df.iloc[150:], spec))
    x[0, 3] = 9.0  # a code out of range -> unknown
    x[1, 1] = float("nan")
    expected = encoder(x)
    traced = torch.jit.trace(encoder, x[:4])
    torch.testing.assert_close(traced(x), expected)
    path = tmp_path / "encoder.onnx"
    torch.onnx.export(
        encoder, (x[:4],), str(path), dynamo=False, opset_version=17, input_names=["x"],
        dynamic_axes={"x": {0: "batch"}},
    )  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x": x.numpy()})
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-6, atol=1e-6)


def test_encoder_buffers_move_but_are_not_saved():
    spec = _fit(_table())
    encoder = InputEncoder(spec)
    assert encoder.state_dict() == {}
    assert {n for n, _ in encoder.named_buffers()} >= {"median", "mean", "std", "slot_code"}
    assert encoder.double().mean.dtype == torch.float64
    assert encoder(torch.zeros(2, 6, dtype=torch.float64)).dtype == torch.float64


def test_describe_lists_columns_codes_and_indicators():
    spec = _fit(_table())
    d = describe(spec)
    assert d["feature_names"] == FEATURES
    assert d["missing_indicators"] == ["gappy"]
    color = d["columns"][3]
    assert color["codes"] == {c: i + 1 for i, c in enumerate(color["categories"])}
    assert d["encoded_features"] == encoded_names(spec) == InputEncoder(spec).feature_names
    assert json.loads(json.dumps(d)) == d
    df = _table(seed=3)  # an export's `features` metadata encodes a frame as the spec does
    np.testing.assert_array_equal(encode_frame(df, d), encode_frame(df, spec))


def test_bad_tables_and_specs():
    df = _table()
    with pytest.raises(ValueError, match=r"column 'x' of the training rows has no values \(all missing\)"):
        fit_spec(df.assign(x=np.nan), FEATURES)
    with pytest.raises(ValueError, match=r"column 'color' of the training rows has no values"):
        fit_spec(df.assign(color=None), ["color"])
    levels = pd.DataFrame({"k": [f"id{i}" for i in range(10_000)]})
    with pytest.raises(
        ValueError, match=r"'k' of t has 10000 levels, more than `max_categories`=100.*id_col"
    ):
        fit_spec(levels, ["k"], name="t")
    with pytest.raises(ValueError, match=r"infinite feature values in t in column 'x': 1 rows"):
        fit_spec(df.assign(x=[np.inf, *df["x"][1:]]), ["x"], name="t")
    with pytest.raises(ValueError, match=r"values beyond \+-1e\+38 in column 'x'"):
        fit_spec(df.assign(x=[1e300, *df["x"][1:]]), ["x"])
    with pytest.raises(ValueError, match=r"missing \(NaN\) feature values in t in columns \['gappy'\]"):
        fit_spec(df, ["x", "gappy", "color"], missing="error", name="t")
    with pytest.raises(ValueError, match=r"columns \['nope'\] not found"):
        fit_spec(df, ["x", "nope"])
    with pytest.raises(ValueError, match=r"`categorical_columns` \['color'\] are not feature columns"):
        fit_spec(df, ["x"], categorical_columns=["color"])
    with pytest.raises(ValueError, match="`missing` must be one of"):
        fit_spec(df, ["x"], missing="drop")
    with pytest.raises(ValueError, match="`max_categories` must be >= 1, got 0"):
        fit_spec(df, ["x"], max_categories=0)
    spec = fit_spec(df, ["x", "color"])
    with pytest.raises(ValueError, match=r"new.csv lacks feature columns \['color'\]"):
        encode_frame(df[["x"]], spec, name="new.csv")
    with pytest.raises(ValueError, match=r"column 'x' of p is numeric in training but holds non-numbers"):
        encode_frame(df.assign(x=["oops", *df["x"][1:]]), spec, name="p")
    with pytest.raises(TypeError, match="`preprocessing` must be a dict"):
        check_spec([1, 2])
    with pytest.raises(ValueError, match="version"):
        check_spec({"version": 2, "columns": []})
    bad = {"version": 1, "columns": [{"name": "a", "kind": "numeric", "median": 0.0, "indicator": False,
                                      "mean": 0.0, "std": 0.0}]}  # fmt: skip
    with pytest.raises(ValueError, match="std > 0"):
        InputEncoder(bad)
    dup = {"version": 1, "columns": [{"name": "a", "kind": "categorical", "categories": []}] * 2}
    with pytest.raises(ValueError, match=r"names columns \['a'\] more than once"):
        check_spec(dup)


def test_a_model_without_the_tables_spec_is_refused():
    """Raw category codes and NaN must never reach a model that has no encoder for them."""
    import lightning.pytorch as pl

    from focalmix import FocalMixClassifier, FocalMixDataModule

    df = _table()
    dm = FocalMixDataModule.from_arrays(df, np.where(df["x"] > 3, "yes", "no"), batch_size=64)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    bare = FocalMixClassifier(num_features=dm.num_features, class_names=dm.class_names)
    with pytest.raises(ValueError, match=r"preprocessing=dm.preprocessing"):
        trainer.fit(bare, datamodule=dm)
    other = fit_spec(df.rename(columns={"x": "renamed"}), ["renamed", *FEATURES[1:]])
    wrong = FocalMixClassifier(num_features=dm.num_features, preprocessing=other, class_names=dm.class_names)
    with pytest.raises(ValueError, match=r"other columns or categories"):
        trainer.fit(wrong, datamodule=dm)
    good = FocalMixClassifier(num_features=dm.num_features, preprocessing=dm.preprocessing)
    trainer.fit(good, datamodule=dm)
    assert torch.isfinite(trainer.callback_metrics["val/loss"])
    # new rows whose datamodule fits its own categories (violet never appears) would shift every code
    y = np.where(df["x"] > 3, "yes", "no")
    fewer = df["color"] != "violet"
    refit = FocalMixDataModule.from_arrays(df[fewer], y[fewer], batch_size=64)
    with pytest.raises(ValueError, match=r"preprocessing=model.hparams.preprocessing"):
        trainer.predict(good, datamodule=refit)
    same = FocalMixDataModule.from_arrays(df[fewer], y[fewer], preprocessing=good.hparams.preprocessing)
    probs = torch.cat(trainer.predict(good, datamodule=same))
    assert len(probs) == len(same.split_indices["val"]) and torch.isfinite(probs).all()
