"""Tests of focalmix.data: sources, splits, labels, statistics, sampling, batch format and bad input."""

import pickle
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from sklearn.linear_model import LogisticRegression

from focalmix.data import FocalMixDataModule
from focalmix.datasets import ArrayDataset, InMemoryBatches, passthrough_collate
from focalmix.preprocessing import encode_frame


def _frame(n=60, seed=0, labels=("no", "yes"), weights=None):
    rng = np.random.default_rng(seed)
    y = rng.choice(np.array(labels, dtype=object), size=n, p=weights)
    return pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(5, 2, size=n), "label": y})


def _csv(tmp_path, df, name="data.csv"):
    path = tmp_path / name
    df.to_csv(path, index=False)
    return str(path)


def _npy_dir(tmp_path, x, y=None, name="arrays"):
    d = tmp_path / name
    d.mkdir()
    np.save(d / "x.npy", x)
    if y is not None:
        np.save(d / "y.npy", y)
    return str(d)


def _batch(loader):
    return next(iter(loader))


# ---------------------------------------------------------------------------------------------------
# Sources


def test_breast_cancer_default():
    dm = FocalMixDataModule()
    assert dm.batch_size == 32
    assert (dm.task, dm.num_classes, dm.class_names) == ("binary", 2, ["benign", "malignant"])
    assert dm.input_shape == (30,) and dm.num_features == 30
    assert len(dm.feature_names) == 30 and dm.feature_names[0] == "mean radius"
    assert sum(dm.class_counts) == len(dm.split_indices["train"])
    assert dm.positive_fraction == pytest.approx(dm.class_counts[1] / sum(dm.class_counts))
    assert 0.3 < dm.positive_fraction < 0.45  # 212 malignant of 569
    batch = _batch(dm.train_dataloader())
    assert batch["x"].shape == (32, 30) and batch["x"].dtype == torch.float32
    assert batch["y"].shape == (32,) and batch["y"].dtype == torch.float32
    assert set(batch["y"].tolist()) <= {0.0, 1.0}
    assert "malignant" in dm.summary()


def test_digits_images_and_one_vs_rest():
    dm = FocalMixDataModule("digits")
    assert (dm.task, dm.num_classes, dm.input_shape, dm.num_features) == ("multiclass", 10, (1, 8, 8), 64)
    assert dm.class_names == [str(i) for i in range(10)]
    mean, std = dm.normalization
    assert mean.shape == std.shape == (1, 1, 1)
    batch = _batch(dm.val_dataloader())
    assert batch["x"].shape == (256, 1, 8, 8) and batch["y"].dtype == torch.int64  # eval_batch_size
    assert dm.positive_fraction is None

    ovr = FocalMixDataModule("digits", positive_class=3)
    assert (ovr.task, ovr.num_classes, ovr.class_names) == ("binary", 2, ["not_3", "3"])
    assert ovr.positive_fraction == pytest.approx(0.1, abs=0.02)


def test_synthetic_is_seeded_configurable_and_learnable():
    kw = dict(synthetic_rows=2000, synthetic_features=5, synthetic_classes=2, synthetic_positive_fraction=0.2)
    dm = FocalMixDataModule("synthetic", val_fraction=0.25, **kw)
    assert dm.input_shape == (5,) and dm.task == "binary"
    assert dm.positive_fraction == pytest.approx(0.2, abs=0.01)
    x, y = dm._prepare().raw.x.numpy(), dm._prepare().y.numpy()
    again = FocalMixDataModule("synthetic", **kw)
    torch.testing.assert_close(again._prepare().raw.x, dm._prepare().raw.x)
    train, val = dm.split_indices["train"], dm.split_indices["val"]
    model = LogisticRegression(max_iter=500).fit(x[train], y[train])
    assert model.score(x[val], y[val]) > 0.8  # Bayes accuracy is about 0.85-0.9 here

    multi = FocalMixDataModule(
        "synthetic", synthetic_rows=300, synthetic_classes=3, synthetic_positive_fraction=0.5
    )
    assert multi.task == "multiclass" and multi.num_classes == 3
    counts = np.bincount(multi._prepare().y.numpy())
    assert counts.tolist() == [75, 75, 150]


def test_synthetic_val_source_is_a_fresh_sample():
    dm = FocalMixDataModule("synthetic", val_source="synthetic", synthetic_rows=100)
    assert len(dm.split_indices["val"]) == 0 and len(dm.split_indices["train"]) == 100
    assert not torch.equal(dm._dataset("val").x, dm._dataset("train").x)


def test_csv_with_string_labels(tmp_path):
    df = _frame(labels=("yes", "no", "maybe"))
    dm = FocalMixDataModule(_csv(tmp_path, df), batch_size=8)
    assert dm.class_names == ["maybe", "no", "yes"] and dm.task == "multiclass"
    assert dm.feature_names == ["a", "b"]
    rows = dm.split_indices["train"]
    codes = dm._prepare().y.numpy()[rows]
    np.testing.assert_array_equal(np.array(dm.class_names)[codes], df["label"].to_numpy()[rows])


def test_parquet_and_feature_columns(tmp_path):
    df = _frame().assign(c=np.arange(60.0), label=lambda d: (d["label"] == "yes").astype(int))
    path = tmp_path / "data.parquet"
    df.to_parquet(path)
    dm = FocalMixDataModule(str(path), feature_columns=["c", "a"])
    assert dm.feature_names == ["c", "a"] and dm.class_names == ["0", "1"]
    ds = dm._dataset("train")
    np.testing.assert_allclose(
        ds.__getitems__([0])["x"][0].numpy(), df[["c", "a"]].to_numpy()[ds.indices[0]], rtol=1e-6
    )


def test_npz_and_integer_classes_sort_numerically(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "data.npz"
    np.savez(path, x=rng.normal(size=(60, 4)), y=np.repeat([2, 10, 1], 20))
    dm = FocalMixDataModule(str(path))
    assert dm.class_names == ["1", "2", "10"] and dm.num_classes == 3


def test_npy_directory_is_memory_mapped(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(300, 6)).astype(np.float32), np.tile([0, 1, 1], 100)
    dm = FocalMixDataModule(_npy_dir(tmp_path, x, y), batch_size=64)
    ds = dm._dataset("train")
    assert isinstance(ds.x, np.memmap) and len(ds) > dm.batch_size
    batches = list(dm.train_dataloader())
    got = torch.cat([b["x"] for b in batches])
    assert got.shape == (len(ds), 6) and batches[0]["x"].dtype == torch.float32
    np.testing.assert_array_equal(np.sort(got.numpy(), axis=0), np.sort(x[ds.indices], axis=0))
    positions = [5, 1, 40, 3]  # an arbitrary batch order is kept
    np.testing.assert_array_equal(ds.__getitems__(positions)["x"].numpy(), x[ds.indices[positions]])
    clone = pickle.loads(pickle.dumps(ds))  # what spawn workers do: reopen, do not copy
    assert isinstance(clone.x, np.memmap) and len(pickle.dumps(ds)) < x.nbytes
    mean, std = dm.normalization
    np.testing.assert_allclose(mean.numpy(), x[ds.indices].mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std.numpy(), x[ds.indices].std(0), rtol=1e-5)


@pytest.mark.parametrize("kind", ["numpy", "torch", "frame"])
def test_from_arrays(kind):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 3)).astype(np.float32), np.repeat([0, 1], 25)
    if kind == "torch":
        x, y = torch.from_numpy(x), torch.from_numpy(y)
    if kind == "frame":
        x = pd.DataFrame(x, columns=["p", "q", "r"])
    dm = FocalMixDataModule.from_arrays(x, y, batch_size=10, val_fraction=0.2)
    assert dm.input_shape == (3,) and dm.task == "binary"
    assert dm.feature_names == (["p", "q", "r"] if kind == "frame" else None)
    assert len(dm.split_indices["val"]) == 10
    if kind == "numpy":
        assert dm._prepare().raw.x.data_ptr() == torch.from_numpy(x).data_ptr()  # no copy


def test_image_shaped_data_has_per_channel_stats():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2, 16, 16)).astype(np.float32) * np.array([1.0, 3.0]).reshape(1, 2, 1, 1) + 2
    dm = FocalMixDataModule.from_arrays(x, np.repeat([0, 1], 20), batch_size=4)
    assert dm.input_shape == (2, 16, 16) and dm.num_features == 512
    mean, std = dm.normalization
    assert mean.shape == std.shape == (2, 1, 1) and mean.dtype == torch.float32
    train = x[dm.split_indices["train"]]
    np.testing.assert_allclose(mean.numpy(), train.mean(axis=(0, 2, 3)).reshape(2, 1, 1), rtol=1e-5)
    np.testing.assert_allclose(std.numpy(), train.std(axis=(0, 2, 3)).reshape(2, 1, 1), rtol=1e-5)
    assert _batch(dm.train_dataloader())["x"].shape == (4, 2, 16, 16)


def test_multilabel_targets(tmp_path):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "a": rng.normal(size=80),
            "b": rng.normal(size=80),
            "cat": np.tile([0, 1], 40),
            "dog": rng.integers(0, 2, 80),
        }
    )
    dm = FocalMixDataModule(_csv(tmp_path, df), target=["cat", "dog"], batch_size=16)
    assert (dm.task, dm.num_classes, dm.class_names, dm.feature_names) == (
        "multilabel",
        2,
        ["cat", "dog"],
        ["a", "b"],
    )
    train = dm.split_indices["train"]
    assert dm.class_counts == df[["cat", "dog"]].to_numpy()[train].sum(0).tolist()
    assert dm.positive_fraction == pytest.approx([c / len(train) for c in dm.class_counts])
    batch = _batch(dm.train_dataloader())
    assert batch["y"].shape == (16, 2) and batch["y"].dtype == torch.float32


# ---------------------------------------------------------------------------------------------------
# Splits, statistics, sampling


def test_split_is_stratified_seeded_disjoint_and_complete():
    y = np.repeat([0, 1, 2], [300, 60, 40])
    x = np.zeros((400, 2), dtype=np.float32) + np.arange(400)[:, None]
    kw = dict(val_fraction=0.2, test_fraction=0.1, seed=7)
    dm = FocalMixDataModule.from_arrays(x, y, **kw)
    s = dm.split_indices
    assert (len(s["train"]), len(s["val"]), len(s["test"])) == (280, 80, 40)
    assert np.array_equal(np.sort(np.concatenate(list(s.values()))), np.arange(400))
    for part in s.values():
        np.testing.assert_allclose(np.bincount(y[part]) / len(part), [0.75, 0.15, 0.1], atol=0.02)
    same = FocalMixDataModule.from_arrays(x, y, **kw).split_indices
    assert all(np.array_equal(s[k], same[k]) for k in s)
    other = FocalMixDataModule.from_arrays(x, y, val_fraction=0.2, test_fraction=0.1, seed=8).split_indices
    assert not np.array_equal(s["val"], other["val"])
    # Without test data of its own, testing reuses validation, and prediction reuses testing.
    plain = FocalMixDataModule.from_arrays(x, y)
    assert plain._dataset("test") is plain._dataset("val")
    assert np.array_equal(
        _batch(plain.predict_dataloader())["index"].numpy(), plain.split_indices["val"][:256]
    )


def test_a_frozen_feature_constant_on_the_training_rows_is_centred_not_scaled():
    from sklearn.preprocessing import StandardScaler

    from focalmix.sources.statistics import feature_std

    # feature 1 is 0 on every training row, feature 2 constant, feature 3 tiny but real (std 1e-7)
    rows = [[1.0, 0.0, 2.0, 1e-7], [3.0, 0.0, 2.0, 3e-7], [2.0, 0.0, 2.0, 2e-7]]
    x = torch.tensor(rows, dtype=torch.float64)
    std = feature_std(x.std(0, correction=0), x.mean(0))
    np.testing.assert_allclose(std.numpy(), StandardScaler().fit(x.numpy()).scale_, rtol=1e-12)  # the oracle
    assert std[1] == std[2] == 1.0 and std[3] < 1e-6  # centred, not scaled; a small spread is divided out
    new = torch.tensor([2.0, 0.5, 2.0, 2e-7], dtype=torch.float64)  # a new item where feature 1 is not 0
    assert ((new - x.mean(0)) / std).abs().max() < 1  # no value near 1e5


def test_standardization_uses_training_rows_only():
    rng = np.random.default_rng(1)
    x = rng.normal(3, 2, size=(100, 4)).astype(np.float32)
    x[:, 3] = 5.0  # constant feature: centred, not scaled
    y = np.repeat([0, 1], 50)
    dm = FocalMixDataModule.from_arrays(x, y, val_fraction=0.3)
    mean, std = dm.normalization
    train = x[dm.split_indices["train"]]
    np.testing.assert_allclose(mean.numpy(), train.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std.numpy()[:3], train.std(0)[:3], rtol=1e-5)
    assert std[3] == 1.0  # constant in training: centred, not scaled
    assert not np.allclose(mean.numpy(), x.mean(0), rtol=1e-6)
    assert FocalMixDataModule.from_arrays(x, y, standardize=False).normalization is None
    raw = _batch(dm.val_dataloader())["x"]  # the datamodule yields raw features
    np.testing.assert_array_equal(raw.numpy(), x[dm.split_indices["val"][:32]])


def test_balanced_sampling_draws_classes_evenly_and_shards_under_ddp():
    y = np.repeat([0, 1], [180, 20])
    dm = FocalMixDataModule.from_arrays(np.zeros((200, 2)), y, balanced_sampling=True, val_fraction=0.1)
    sampler = dm.train_dataloader().sampler
    draws = []
    for epoch in range(20):
        sampler.set_epoch(epoch)
        draws += list(sampler)
    labels = y[dm.split_indices["train"][draws]]
    assert abs(labels.mean() - 0.5) < 0.03
    sampler.set_epoch(3)
    full = list(sampler)
    sampler.set_epoch(3)
    assert list(sampler) == full  # the draws depend on (seed, epoch) only: identical on every rank
    assert list(sampler) != full  # a second pass in the same epoch draws anew
    shards = []
    for rank in range(2):
        wrapped = DistributedSamplerWrapper(sampler, num_replicas=2, rank=rank)  # what Lightning adds
        wrapped.set_epoch(3)
        shards.append(list(wrapped))
    assert len(shards[0]) == len(shards[1]) == len(sampler) // 2
    assert Counter(shards[0]) + Counter(shards[1]) == Counter(full)  # disjoint parts of one draw


def test_eval_loaders_shard_without_padding_under_ddp():
    x = np.arange(105.0)[:, None].repeat(2, axis=1)  # a row's features are its index
    dm = FocalMixDataModule.from_arrays(x, np.repeat([0, 1], [55, 50]), batch_size=4)
    assert not isinstance(dm.val_dataloader().sampler, UnrepeatedDistributedSampler)
    seen = []
    for rank in range(2):
        dm.trainer = SimpleNamespace(distributed_sampler_kwargs={"num_replicas": 2, "rank": rank})
        for stage in ("val", "test"):
            loader = getattr(dm, f"{stage}_dataloader")()
            assert isinstance(loader.sampler, UnrepeatedDistributedSampler)  # Lightning keeps it as is
        seen += [int(v) for b in loader for v in b["x"][:, 0]]
    # 21 validation rows (odd, so padding would duplicate one): each seen exactly once over both ranks
    assert sorted(seen) == dm.split_indices["val"].tolist() and len(seen) == 21


def test_batch_formats_and_predict_index(tmp_path):
    df = _frame(n=40)
    predict = df.drop(columns="label")[["b", "a"]]  # no label, columns reordered: aligned by name
    dm = FocalMixDataModule(
        _csv(tmp_path, df), predict_source=_csv(tmp_path, predict, "new.csv"), batch_size=16
    )
    batches = list(dm.predict_dataloader())
    assert set(batches[0]) == {"x", "index"} and batches[0]["index"].dtype == torch.int64
    assert torch.cat([b["index"] for b in batches]).tolist() == list(range(40))
    np.testing.assert_allclose(batches[0]["x"].numpy(), df[["a", "b"]].to_numpy(), rtol=1e-6)  # one batch
    loader = dm.val_dataloader()
    assert loader.collate_fn is passthrough_collate and loader.drop_last is False
    train = dm.train_dataloader()  # one process, in memory: whole batches by index, the last one short
    assert isinstance(train, InMemoryBatches) and len(train) == len(list(train)) == 2
    ds = ArrayDataset(torch.ones(3, 2), torch.zeros(3), with_index=True)
    assert {k: v.shape for k, v in ds[1].items()} == {"x": (2,), "y": (), "index": ()}
    assert passthrough_collate([ds[0], ds[2]])["index"].tolist() == [0, 2]


# ---------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"batch_size": 0}, ValueError, "`batch_size` must be >= 1, got 0"),
        ({"batch_size": 3.5}, TypeError, "`batch_size` must be an int"),
        ({"eval_batch_size": 0}, ValueError, "`eval_batch_size` must be >= 1, got 0"),
        ({"val_fraction": 1.0}, ValueError, r"`val_fraction` must be in \[0.0, 1\)"),
        ({"test_fraction": -0.1}, ValueError, "`test_fraction` must be in"),
        ({"val_fraction": 0.6, "test_fraction": 0.4}, ValueError, "must be < 1 to leave training rows"),
        ({"persistent_workers": True}, ValueError, "needs `num_workers` > 0"),
        ({"num_workers": -1}, ValueError, "`num_workers` must be >= 0"),
        ({"task": "regression"}, ValueError, "`task` must be one of"),
        ({"source": "missing.csv"}, FileNotFoundError, "neither an existing path nor a built-in name"),
        ({"source": "breast_cancerr"}, FileNotFoundError, "'breast_cancer', 'digits', 'synthetic'"),
        ({"predict_source": "nowhere.parquet"}, FileNotFoundError, "`predict_source`"),
        ({"source": 3}, TypeError, "`source` must be a string or path"),
        ({"target": ["only"]}, ValueError, "needs >= 2 columns"),
        ({"synthetic_classes": 1}, ValueError, "`synthetic_classes` must be >= 2"),
        ({"synthetic_positive_fraction": 0.0}, ValueError, r"must be in \(0.0, 1\)"),
        ({"target": ["a", "b"], "balanced_sampling": True}, ValueError, "balanced_sampling"),
    ],
)
def test_bad_arguments_fail_in_init(kwargs, error, match):
    with pytest.raises(error, match=match):
        FocalMixDataModule(**kwargs)


def test_unknown_suffix_and_directory_without_arrays(tmp_path):
    (tmp_path / "data.txt").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"unknown file type '.txt'.*\.csv.*\.parquet.*\.npz"):
        FocalMixDataModule(str(tmp_path / "data.txt"))
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(FileNotFoundError, match=r"has no \['x.npy', 'y.npy'\]"):
        FocalMixDataModule(str(tmp_path / "empty_dir"))


def _fails(match, error=ValueError, **kwargs):
    dm = FocalMixDataModule(**kwargs)  # values are fine: data problems show on first access
    with pytest.raises(error, match=match):
        dm.setup()


def test_bad_tables(tmp_path):
    df = _frame()
    _fails(
        r"target column\(s\) \['y'\] not found in data.csv; columns are: \['a', 'b', 'label'\]",
        source=_csv(tmp_path, df),
        target="y",
    )
    bad = df.copy()
    bad.loc[[1, 4], "b"] = np.nan
    bad.loc[7, "a"] = np.nan
    _fails(
        r"missing \(NaN\) feature values in nan.csv in columns \['a', 'b'\]: 3 rows.*missing='impute'",
        source=_csv(tmp_path, bad, "nan.csv"),
        missing="error",
    )
    _fails(
        r"infinite feature values in (the training rows of )?inf.csv in column 'a': 1 rows",
        source=_csv(tmp_path, bad.assign(a=[np.inf, *df["a"][1:]]), "inf.csv"),
    )
    _fails(
        r"column 'b' of the training rows of allnan.csv has no values.*drop_columns",
        source=_csv(tmp_path, df.assign(b=np.nan), "allnan.csv"),
    )
    many = df.assign(s=[f"level{i}" for i in range(len(df))])
    _fails(
        r"categorical column 's'.*has 4\d levels, more than `max_categories`=10.*--data.id_columns",
        source=_csv(tmp_path, many, "many.csv"),
        max_categories=10,
    )
    _fails(
        r"NaN labels in nanlabel.csv: 2 rows",
        source=_csv(tmp_path, df.assign(label=[None, None, *df["label"][2:]]), "nanlabel.csv"),
    )
    _fails("single class 'no'", source=_csv(tmp_path, df.assign(label="no"), "one.csv"))
    (tmp_path / "empty.csv").write_text("")
    _fails("empty.csv is empty", source=str(tmp_path / "empty.csv"))
    (tmp_path / "header.csv").write_text("a,label\n")
    _fails("header.csv is empty", source=str(tmp_path / "header.csv"))


def test_bad_labels_and_splits(tmp_path):
    three = _frame(labels=("a", "b", "c"))
    _fails(
        r"task='binary' but data.csv has 3 classes \['a', 'b', 'c'\]",
        source=_csv(tmp_path, three),
        task="binary",
    )
    rare = _frame(n=40).assign(label=["yes"] + ["no"] * 39)
    _fails(
        r"stratified val split.*class counts are \{'no': 39, 'yes': 1\}.*Lower `val_fraction`",
        source=_csv(tmp_path, rare, "rare.csv"),
    )
    tiny = _frame(n=10, labels=("a", "b", "c", "d"), weights=None).assign(label=list("aabbccddab"))
    _fails(r"each split >= 4 rows", source=_csv(tmp_path, tiny, "tiny.csv"), val_fraction=0.1)
    _fails("positive_class`=7 is not a label", source=_csv(tmp_path, three, "p.csv"), positive_class=7)
    with pytest.warns(UserWarning, match="`batch_size`=64 is larger than the training split"):
        FocalMixDataModule(_csv(tmp_path, _frame(n=40), "small.csv"), batch_size=64).setup("fit")


def test_bad_secondary_sources(tmp_path):
    df = _frame()
    train = _csv(tmp_path, df)
    unseen = _csv(tmp_path, df.assign(label=["maybe"] + list(df["label"][1:])), "val.csv")
    _fails(r"val.csv has labels never seen in training: \['maybe'\]", source=train, val_source=unseen)
    other = _csv(tmp_path, df.drop(columns="a").assign(c=1.0), "other.csv")
    dm = FocalMixDataModule(train, predict_source=other)
    with pytest.raises(ValueError, match=r"other.csv lacks feature columns \['a'\] that the model was"):
        dm.predict_dataloader()
    shapes = tmp_path / "shape.npz"
    np.savez(shapes, x=np.zeros((10, 3)), y=np.zeros(10))
    _fails(r"have shape \(3,\), training samples \(2,\)", source=train, test_source=str(shapes))


def test_bad_arrays(tmp_path):
    with pytest.raises(ValueError, match="x and y lengths differ.*5 rows of x, 4 labels"):
        FocalMixDataModule.from_arrays(np.zeros((5, 2)), np.zeros(4))
    with pytest.raises(TypeError, match="`x` must be a numpy array, torch tensor or DataFrame"):
        FocalMixDataModule.from_arrays([[1.0, 2.0]], [0])
    x = np.ones((20, 2))
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"columns \[1\]: 1 rows"):
        _ = FocalMixDataModule.from_arrays(x, np.repeat([0, 1], 10)).num_features
    y = np.repeat([0.0, 1.0], 10)
    y[0] = np.nan
    with pytest.raises(ValueError, match="NaN labels"):
        _ = FocalMixDataModule.from_arrays(np.ones((20, 2)), y).task
    with pytest.raises(FileNotFoundError, match=r"has no \['y.npy'\]"):
        FocalMixDataModule(_npy_dir(tmp_path, np.ones((20, 2)), None))
    np.savez(tmp_path / "nolabels.npz", x=np.ones((20, 2)))
    _fails("nolabels.npz has no labels", source=str(tmp_path / "nolabels.npz"))


# ---------------------------------------------------------------------------------------------------
# Tables with categories, gaps and keys


def _raw_table(n=80, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "id": [f"row{i}" for i in range(n)],
            "num": rng.normal(size=n),
            "color": rng.choice(["red", "blue", "green"], n),
            "member": rng.choice([True, False], n),
            "gap": rng.normal(5, 2, n),
            "label": rng.choice(["no", "yes"], n, p=[0.7, 0.3]),
        }
    )
    df.loc[rng.random(n) < 0.2, "gap"] = np.nan
    df.loc[rng.random(n) < 0.1, "color"] = None
    return df


def test_table_with_categories_booleans_and_gaps(tmp_path):
    df = _raw_table()
    dm = FocalMixDataModule(_csv(tmp_path, df), id_columns=["id"], batch_size=16)
    assert dm.feature_names == ["num", "color", "member", "gap"] and dm.input_shape == (4,)
    assert dm.normalization is None  # the spec standardizes, inside the model
    spec = dm.preprocessing
    assert [c["kind"] for c in spec["columns"]] == ["numeric", "categorical", "categorical", "numeric"]
    assert dm.hparams["preprocessing"] == spec  # so a checkpoint carries it
    train = df.iloc[dm.split_indices["train"]]
    assert spec["columns"][3]["median"] == pytest.approx(train["gap"].median(), rel=1e-6)
    assert spec["columns"][1]["categories"] == sorted(train["color"].dropna().unique())
    batch = _batch(dm.train_dataloader())
    assert batch["x"].shape == (16, 4) and batch["x"].dtype == torch.float32
    x = dm._dataset("train").x.numpy()
    np.testing.assert_array_equal(np.isnan(x[:, 3]), df["gap"].isna().to_numpy())
    codes = pd.Categorical(df["color"], categories=spec["columns"][1]["categories"]).codes + 1
    np.testing.assert_array_equal(x[:, 1], codes)
    # given back (from a checkpoint), the spec is used as is, not refitted
    again = FocalMixDataModule(_csv(tmp_path, df, "other.csv"), id_columns=["id"], preprocessing=spec)
    assert again.preprocessing == spec


def test_predict_with_ids_reordered_columns_and_unseen_category(tmp_path):
    df = _raw_table()
    new = df.drop(columns="label").iloc[::-1].reset_index(drop=True)
    new.loc[0, "color"] = "ultraviolet"  # never seen in training
    new = new[["gap", "id", "member", "color", "num"]].assign(note="free text")
    dm = FocalMixDataModule(
        _csv(tmp_path, df), predict_source=_csv(tmp_path, new, "new.csv"), id_columns=["id"], batch_size=16
    )
    with pytest.warns(UserWarning, match=r"new.csv: ignoring columns \['note'\]"):
        batches = list(dm.predict_dataloader())
    index = torch.cat([b["index"] for b in batches]).numpy()
    assert sorted(index.tolist()) == list(range(len(new)))  # every row once
    x = torch.cat([b["x"] for b in batches]).numpy()
    assert x[0, 1] == 0.0  # unseen -> unknown
    expected = encode_frame(new, dm.preprocessing)
    np.testing.assert_array_equal(x, expected[index])
    ids = dm.predict_ids
    assert ids.columns.tolist() == ["id"] and ids.loc[index, "id"].tolist() == new["id"][index].tolist()
    # default prediction data (the val split here) carries the source's ids for those rows
    plain = FocalMixDataModule(_csv(tmp_path, df), id_columns=["id"])
    rows = plain.split_indices["val"]
    assert plain.predict_ids["id"].tolist() == df["id"][rows].tolist()
    assert plain.predict_ids.index.tolist() == rows.tolist()


def test_table_arguments_and_from_dataframe(tmp_path):
    df = _raw_table()
    path = _csv(tmp_path, df)
    dm = FocalMixDataModule(
        path, drop_columns=["id", "member"], categorical_columns=["num"], max_categories=100
    )
    assert dm.feature_names == ["num", "color", "gap"] and dm.predict_ids is None
    assert dm.preprocessing["columns"][0]["kind"] == "categorical"
    frame = FocalMixDataModule.from_arrays(df.drop(columns="label"), df["label"], id_columns=["id"])
    assert frame.feature_names == ["num", "color", "member", "gap"] and frame.preprocessing is not None
    bad = [
        (dict(id_columns=["label"]), ValueError, "'label' is named in both `target` and `id_columns`"),
        (dict(id_columns=["id"], drop_columns=["id"]), ValueError, "both `id_columns` and `drop_columns`"),
        (dict(id_columns="id"), TypeError, "`id_columns` must be a list"),
        (dict(max_categories=0), ValueError, "`max_categories` must be >= 1, got 0"),
        (dict(missing="drop"), ValueError, r"`missing` must be one of \('impute', 'error'\)"),
        (dict(preprocessing={"columns": 1}), TypeError, "`preprocessing` must be a dict with a 'columns'"),
    ]
    for kwargs, error, match in bad:
        with pytest.raises(error, match=match):
            FocalMixDataModule(path, **kwargs)
    with pytest.raises(ValueError, match=r"\['id_columns'\] apply to tables.*the source is not one"):
        FocalMixDataModule("digits", id_columns=["id"])
    _fails(
        r"columns \['key'\] \(of .*`id_columns`.*\) not found in data.csv", source=path, id_columns=["key"]
    )


@pytest.mark.parametrize(
    "variant",
    [
        "bom",
        "semicolon",  # with decimal commas: the European spreadsheet export
        "tab",
        "pipe",
        "unicode",
    ],
)
def test_csv_dialects(tmp_path, variant):
    df = _raw_table(n=40).drop(columns="id")
    sep = {"semicolon": ";", "tab": "\t", "pipe": "|"}.get(variant, ",")
    if variant == "unicode":
        df = df.rename(columns={"num": "größe (cm)", "color": " Farbe ", "gap": "日本"})
    # ';' goes with decimal commas: how spreadsheets write CSV where the comma is the decimal mark
    text = df.to_csv(index=False, sep=sep, decimal="," if sep == ";" else ".")
    path = tmp_path / "d.csv"
    path.write_bytes(text.encode("utf-8-sig" if variant == "bom" else "utf-8"))
    dm = FocalMixDataModule(str(path))
    features = [c for c in df.columns if c != "label"]
    assert dm.feature_names == features
    kinds = {c["name"]: c["kind"] for c in dm.preprocessing["columns"]}
    num, gap = features[0], features[3]
    assert kinds[num] == kinds[gap] == "numeric"  # numbers, whatever the decimal mark
    # the numbers themselves: the training rows' encoded values are the file's values
    dm.setup("fit")
    x = torch.cat([b["x"] for b in dm.train_dataloader()]).double().numpy()  # (rows, encoded columns)
    train = df.iloc[np.sort(dm.split_indices["train"])]
    column = [c["name"] for c in dm.preprocessing["columns"]].index(num)
    np.testing.assert_allclose(np.sort(x[:, column]), np.sort(train[num].to_numpy()), rtol=1e-6)


def test_hostile_files_raise_one_clear_error(tmp_path):
    def write(name, data):
        (tmp_path / name).write_bytes(data)
        return str(tmp_path / name)

    full = _raw_table(n=40).to_csv(index=False).encode()
    cases = [
        (write("cut.csv", full[: full.rfind(b",")]), r"cut.csv looks truncated: its last line has \d of 6"),
        (write("quote.csv", b'a,label\n1,"no\n2,yes\n'), r"could not read quote.csv as a comma-separated"),
        (
            write("dup.csv", b"a,b,a,label\n1,2,3,no\n4,5,6,yes\n"),
            r"column names \['a'\] appear more than once",
        ),
        (
            write("noname.csv", b"a,,label\n1,2,no\n3,4,yes\n"),
            r"columns \[2\] \(1-based\) of noname.csv have no name",
        ),
        (
            write("wide.csv", b"a,label\n1,no,3\n2,yes,4\n"),
            r"could not read wide.csv.*more fields than the header",
        ),
        (write("latin.csv", "a,label\n1,caf\xe9\n2,no\n".encode("latin-1")), r"latin.csv is not UTF-8 text"),
        (write("cut.parquet", b"PAR1\x00\x01garbage"), r"could not read cut.parquet as Parquet"),
    ]
    for path, match in cases:
        with pytest.raises(ValueError, match=match):
            FocalMixDataModule(path).setup()


def test_decimal_commas_are_read_only_where_every_value_is_such_a_number(tmp_path):
    from focalmix.table_io import read_table

    rows = ["a;b;c;d;label", "1.5;1,5;Smith, J;1.234,5;x", "-2.25;-2;Lee, K;2.000,0;y", "3;,5;Ng;7;x"]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    df = read_table(tmp_path / "t.csv")
    assert df["a"].tolist() == [1.5, -2.25, 3.0]  # point decimals: pandas' own parsing, untouched
    assert df["b"].tolist() == [1.5, -2.0, 0.5]  # decimal commas: numbers
    assert df["c"].tolist() == ["Smith, J", "Lee, K", "Ng"]  # text with commas stays text
    assert df["d"].tolist() == ["1.234,5", "2.000,0", "7"]  # thousands separators: not guessed


@pytest.mark.parametrize(
    ("batch_size", "eval_batch_size", "expected"), [(32, None, 256), (512, None, 512), (8, 5, 5)]
)
def test_eval_batches_have_their_own_size(batch_size, eval_batch_size, expected):
    x, y = np.random.default_rng(0).normal(size=(1000, 3)), np.arange(1000) % 2
    dm = FocalMixDataModule.from_arrays(
        x, y, batch_size=batch_size, eval_batch_size=eval_batch_size, val_fraction=0.3, test_fraction=0.2
    )
    assert next(iter(dm.train_dataloader()))["x"].shape[0] == min(batch_size, 500)
    for loader in (dm.val_dataloader(), dm.test_dataloader(), dm.predict_dataloader()):
        sizes = [len(batch["x"]) for batch in loader]
        assert max(sizes) == min(expected, sum(sizes)) and sum(sizes) in (300, 200)
