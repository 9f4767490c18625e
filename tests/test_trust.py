"""Opening a checkpoint runs nothing it names: crafted class paths through every entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from focalmix import FocalMixClassifier, FocalMixDataModule
from focalmix.trust import UntrustedClassError, is_trusted, resolve_module_class, trusting

EVIL_MODULE = "import pathlib, os\npathlib.Path(os.environ['FOCALMIX_SENTINEL']).touch()\nclass Net: pass\n"


@pytest.fixture(scope="module")
def real_ckpt(tmp_path_factory) -> Path:
    """A real checkpoint of a 1-step fit on breast_cancer."""
    root = tmp_path_factory.mktemp("trust")
    dm = FocalMixDataModule("breast_cancer", batch_size=64)
    model = FocalMixClassifier(num_features=dm.num_features, hidden_sizes=(8,))
    trainer = pl.Trainer(
        max_epochs=1, limit_train_batches=1, limit_val_batches=1, accelerator="cpu", logger=False,
        enable_progress_bar=False, enable_checkpointing=False, default_root_dir=root,
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)
    path = root / "real.ckpt"
    trainer.save_checkpoint(path)
    return path


def _payloads(sentinel: Path) -> dict[str, dict]:
    return {
        "subprocess.run": {"args": ["touch", str(sentinel)]},
        "os.system": {"command": f"touch {sentinel}"},
        "builtins.exec": {"source": f"open({str(sentinel)!r}, 'w')"},
        "evilmod.Net": {},  # a module whose import alone creates the sentinel
    }


def _craft(real: Path, out: Path, class_path: str, init_args: dict) -> Path:
    ckpt = torch.load(real, weights_only=True, map_location="cpu")
    ckpt["hyper_parameters"]["backbone"] = {"class_path": class_path, "init_args": init_args}
    torch.save(ckpt, out)
    return out


@pytest.fixture
def evil_env(tmp_path, monkeypatch):
    (tmp_path / "evilmod.py").write_text(EVIL_MODULE)
    sentinel = tmp_path / "pwned"
    monkeypatch.setenv("FOCALMIX_SENTINEL", str(sentinel))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("evilmod", None)
    return sentinel


@pytest.mark.parametrize("class_path", ["subprocess.run", "os.system", "builtins.exec", "evilmod.Net"])
def test_load_from_checkpoint_refuses_and_runs_nothing(real_ckpt, tmp_path, evil_env, class_path):
    path = _craft(real_ckpt, tmp_path / "bad.ckpt", class_path, _payloads(evil_env)[class_path])
    with pytest.raises(UntrustedClassError, match=rf"{class_path}.*nothing was imported.*TRUSTED_MODULES"):
        FocalMixClassifier.load_from_checkpoint(path, weights_only=True)
    assert not evil_env.exists()
    assert "evilmod" not in sys.modules


@pytest.mark.parametrize("class_path", ["focalmix.trust.UntrustedClassError", "torch.nn.functional.relu"])
def test_a_trusted_module_that_is_not_an_nn_module_class_is_not_called(real_ckpt, tmp_path, class_path):
    path = _craft(real_ckpt, tmp_path / "bad.ckpt", class_path, {})
    with pytest.raises(UntrustedClassError, match="not an nn.Module class; it was not called"):
        FocalMixClassifier.load_from_checkpoint(path)


def test_a_module_trusted_explicitly_is_imported(real_ckpt, tmp_path, evil_env):
    path = _craft(real_ckpt, tmp_path / "bad.ckpt", "evilmod.Net", {})
    # trusted: imported (the side effect happens), then refused because Net is not an nn.Module
    with pytest.raises(UntrustedClassError, match="not an nn.Module class"):
        FocalMixClassifier.load_from_checkpoint(path, trusted_modules=["evilmod"])
    assert evil_env.exists()


def test_trusted_backbones_still_load(real_ckpt, tmp_path):
    spec = {"class_path": "focalmix.backbones.MLP", "init_args": {"num_features": 30, "hidden_sizes": [4]}}
    ckpt = torch.load(real_ckpt, weights_only=True, map_location="cpu")
    ckpt["hyper_parameters"]["backbone"] = spec
    model = FocalMixClassifier(**{**ckpt["hyper_parameters"], "backbone": spec})
    ckpt["state_dict"] = model.state_dict()
    torch.save(ckpt, tmp_path / "ok.ckpt")
    loaded = FocalMixClassifier.load_from_checkpoint(tmp_path / "ok.ckpt")
    assert type(loaded.backbone).__name__ == "MLP"
    assert torch.equal(loaded.head[1].weight, model.head[1].weight)


def test_prefixes_match_whole_module_names(monkeypatch):
    assert is_trusted("focalmix.backbones.MLP") and is_trusted("torch.nn.Linear")
    assert not is_trusted("focalmixer.Net") and not is_trusted("torch.nnx.Net") and not is_trusted("")
    monkeypatch.setenv("FOCALMIX_TRUSTED_MODULES", "mypkg, other.sub")
    assert is_trusted("mypkg.Net") and is_trusted("other.sub.Net") and not is_trusted("other.Net")
    with trusting("third"):
        assert is_trusted("third.Net")
    assert not is_trusted("third.Net")
    assert resolve_module_class("torch.nn.Linear") is torch.nn.Linear


def _cli(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "focalmix", *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "class_path"),
    [
        (["predict"], "subprocess.run"),
        (["test"], "evilmod.Net"),
        (["validate"], "builtins.exec"),
        (["report"], "os.system"),
        (["export"], "evilmod.Net"),
        (["export"], "subprocess.run"),
    ],
)
def test_every_command_refuses_a_crafted_checkpoint_in_one_line(real_ckpt, tmp_path, command, class_path):
    sentinel = tmp_path / "pwned"
    (tmp_path / "evilmod.py").write_text(EVIL_MODULE)
    path = _craft(real_ckpt, tmp_path / "bad.ckpt", class_path, _payloads(sentinel)[class_path])
    env = {**os.environ, "FOCALMIX_SENTINEL": str(sentinel), "PYTHONPATH": str(tmp_path)}
    result = _cli([*command, "--ckpt_path", str(path)], tmp_path, env)
    assert result.returncode == 2, result.stderr
    assert not sentinel.exists()
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("usage:")]
    assert len(lines) <= 2, result.stderr  # the refusal and its hint
    assert class_path in lines[0] and "nothing was imported" in lines[0]
    assert "Traceback" not in result.stderr
