"""Tests of focalmix.callbacks: the predictions CSV carries the table's ids, every row once, written whole."""

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch

from focalmix import FocalMixClassifier, FocalMixDataModule
from focalmix.callbacks import PredictionWriter
from focalmix.preprocessing import encode_frame


def _trainer(tmp_path, callbacks=(), **kw):
    return pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, default_root_dir=tmp_path, callbacks=list(callbacks), **kw,
    )  # fmt: skip


@pytest.fixture
def table(tmp_path):
    rng = np.random.default_rng(0)
    n = 60
    df = pd.DataFrame(
        {
            "key": rng.permutation(1000)[:n],
            "num": rng.normal(size=n),
            "kind": rng.choice(["a", "b", "c"], n),
            "label": rng.choice(["neg", "pos"], n),
        }
    )
    df.to_csv(tmp_path / "train.csv", index=False)
    new = df.drop(columns="label").sample(frac=1.0, random_state=1)[["kind", "num", "key"]]
    new.loc[new.index[0], "kind"] = "never seen"
    new.to_csv(tmp_path / "new.csv", index=False)
    return tmp_path, new.reset_index(drop=True)


@pytest.mark.parametrize("limit", [None, 2])
def test_ids_come_first_and_every_row_once(table, limit):
    tmp_path, new = table
    dm = FocalMixDataModule(
        str(tmp_path / "train.csv"), predict_source=str(tmp_path / "new.csv"), target="label",
        id_columns=["key"], batch_size=8, eval_batch_size=8,
    )  # fmt: skip
    model = FocalMixClassifier(
        num_features=dm.num_features, num_classes=2, task="binary", class_names=dm.class_names,
        feature_names=dm.feature_names, preprocessing=dm.preprocessing,
    )  # fmt: skip
    _trainer(tmp_path, max_epochs=1).fit(model, dm)
    out = tmp_path / "out" / "predictions.csv"
    _trainer(tmp_path, [PredictionWriter(out)], limit_predict_batches=limit).predict(
        model, dm, return_predictions=False
    )
    written = pd.read_csv(out)
    assert written.columns.tolist() == ["key", "prob_neg", "prob_pos", "prediction"]
    rows = len(new) if limit is None else 8 * limit
    assert written["key"].tolist() == new["key"][:rows].tolist()  # input order, ids aligned
    with torch.no_grad():
        probs = model.eval().predict_proba(torch.from_numpy(encode_frame(new[:rows], dm.preprocessing)))
    np.testing.assert_allclose(written["prob_pos"], probs.numpy(), rtol=1e-5, atol=1e-6)
    assert sorted(p.name for p in out.parent.iterdir()) == ["predictions.csv"]  # no parts or temp files
