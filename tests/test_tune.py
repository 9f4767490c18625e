"""`focalmix tune`: a tiny study end to end (pruning, best.yaml, resume, two workers) and each bad input."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

from focalmix.cli import FocalMixCLI
from focalmix.tune import (
    TrialSeededSampler,
    check_space,
    load_space,
    main,
    metric_direction,
    open_study,
    suggest,
    valid_parameters,
)

# 200 synthetic rows, a small MLP, 3 epochs: a trial takes about a second on one core. No logger and no
# progress bar: these tests are about the study (pruning, outputs, workers), run in-process many times;
# `focalmix tune` with the defaults a user gets: tests/test_entrypoints.py::test_tune_two_trials_...
FIT = ["--data.source", "synthetic", "--data.synthetic_rows", "200", "--data.synthetic_features", "8",
       "--model.hidden_sizes", "[32]", "--trainer.max_epochs", "3", "--trainer.logger", "false",
       "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
       "--trainer.accelerator", "cpu"]  # fmt: skip
# Designed to fail: half the learning rates cannot move the weights in 3 epochs, so after one complete
# trial with the working rate the median pruner stops those trials at their first validation.
GOOD_LR, DEAD_LR = 0.03, 1e-9
LR_CHOICES = f"{{type: categorical, choices: [{GOOD_LR:.1e}, {DEAD_LR:.1e}]}}"  # 1.0e-9: YAML needs the dot
SPACE = ["--tune.space.model.learning_rate", LR_CHOICES,
         "--tune.metric", "val/loss", "--tune.pruner_startup_trials", "1", "--tune.pruner_warmup_epochs", "0",
         "--tune.study_name", "tiny"]  # fmt: skip


def _study(folder) -> optuna.Study:
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder / 'study.db'}")


@pytest.fixture(scope="module")
def six_trials(tmp_path_factory):
    out = tmp_path_factory.mktemp("tune")
    main([*FIT, *SPACE, "--tune.n_trials", "6", "--tune.seed", "1", "--tune.output", str(out)])
    return out


@pytest.mark.slow
def test_six_trials_finish_prune_and_write_outputs(six_trials):
    trials = _study(six_trials).trials
    assert [t.number for t in trials] == list(range(6))
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert any(t.state == TrialState.PRUNED for t in trials)
    best = _study(six_trials).best_trial
    assert best.params["model.learning_rate"] == GOOD_LR
    # the trial trained with the sampled values: its checkpoint's hyperparameters are the trial's params
    ckpt = torch.load(
        six_trials / f"trial_{best.number:03d}" / "checkpoints" / "best.ckpt", weights_only=True
    )
    assert ckpt["hyper_parameters"]["learning_rate"] == best.params["model.learning_rate"]
    assert ckpt["hyper_parameters"]["dropout"] == best.params["model.dropout"]
    # only the best trial keeps its checkpoints
    kept = sorted(p.parent.name for p in six_trials.glob("trial_*/checkpoints"))
    assert kept == [f"trial_{best.number:03d}"]
    table = (six_trials / "trials.csv").read_text().splitlines()
    assert len(table) == 7 and "pruned" in "".join(table) and "val/loss" in table[0]


@pytest.mark.slow
def test_best_yaml_trains_with_focalmix_fit(six_trials, tmp_path):
    best = _study(six_trials).best_trial
    config = yaml.safe_load((six_trials / "best.yaml").read_text())
    assert config["model"]["learning_rate"] == best.params["model.learning_rate"]
    assert config["seed_everything"] == best.user_attrs["seed"]
    cli = FocalMixCLI(
        args=[
            "fit",
            "--config",
            str(six_trials / "best.yaml"),
            "--trainer.max_epochs",
            "1",
            "--trainer.default_root_dir",
            str(tmp_path),
        ]  # fmt: skip
    )
    assert cli.model.hparams.learning_rate == best.params["model.learning_rate"]
    assert cli.datamodule.batch_size == best.params["data.batch_size"]
    assert cli.trainer.current_epoch == 1


@pytest.mark.slow
def test_second_run_continues_the_study(six_trials, tmp_path):
    shutil.copy(six_trials / "study.db", tmp_path / "study.db")
    main([*FIT, *SPACE, "--tune.n_trials", "8", "--tune.seed", "1", "--tune.output", str(tmp_path)])
    trials = _study(tmp_path).trials
    assert [t.number for t in trials] == list(range(8))
    assert [t.params for t in trials[:6]] == [t.params for t in _study(six_trials).trials]


@pytest.mark.slow
def test_two_workers_share_one_study(tmp_path):
    cmd = [sys.executable, "-m", "focalmix.tune", *FIT, "--tune.n_trials", "3", "--tune.seed", "0",
           "--tune.study_name", "tiny", "--tune.output", str(tmp_path)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)
    ]
    logs = [w.communicate(timeout=300)[0].decode() for w in workers]
    assert [w.returncode for w in workers] == [0, 0], logs
    trials = _study(tmp_path).trials
    assert len(trials) == 3 and {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == 3, logs  # the same --tune.seed in both workers, no trial evaluated twice


def test_workers_with_one_seed_draw_different_params(tmp_path):
    """Two workers' samplers, both seeded 0, interleaved on one storage: each trial its own draw."""
    url, space = f"sqlite:///{tmp_path / 's.db'}", load_space(None)
    workers = [open_study(url, "s", "maximize", TrialSeededSampler(0), None) for _ in range(2)]
    trials = [workers[i % 2].ask() for i in range(4)]  # running at once, as on two machines
    params = [tuple(suggest(t, n, s) for n, s in space.items()) for t in trials]
    assert len(set(params)) == 4
    again = open_study(f"sqlite:///{tmp_path / 'r.db'}", "s", "maximize", TrialSeededSampler(0), None)
    first = again.ask()
    assert tuple(suggest(first, n, s) for n, s in space.items()) == params[0]  # reproducible


@pytest.mark.parametrize(
    ("flags", "error", "match"),
    [
        (["--tune.space.model.dropuot", "{type: float, low: 0.1, high: 0.2}"], ValueError,
         r"unknown parameter 'model.dropuot'.*'model.dropout'"),
        (["--tune.space.model.dropout", "{low: 0.5, high: 0.5}"], ValueError, r"empty range.*0.5 and 0.5"),
        (["--tune.space.model.dropout", "{type: normal}"], ValueError, "float, int or categorical"),
        (["--tune.space.model.focal_alpha", "{choices: []}"], ValueError, "non-empty `choices`"),
        (["--tune.space.model.learning_rate", "{low: 0.0}"], ValueError, "log range needs `low` > 0"),
        (["--tune.search_space", "no/such/space.yaml"], FileNotFoundError, "no/such/space.yaml"),
        (["--tune.metric", "val/auprc"], ValueError, r"'val/auprc' is not logged for a binary task.*val/ap"),
        (["--tune.storage", "nosuchdb://x/y"], ValueError, "'nosuchdb://x/y' cannot be opened"),
        (["--tune.storage", "sqlite:////no/such/folder/s.db"], ValueError, "cannot be opened"),
        (["--tune.n_trials", "0"], ValueError, r"--tune.n_trials must be >= 1, got 0"),
        (["--tune.trials", "3"], ValueError, r"unknown flag --tune.trials.*--tune.n_trials"),
    ],
)  # fmt: skip
def test_bad_input_raises_a_clear_error(tmp_path, flags, error, match):
    with pytest.raises(error, match=match):
        main([*FIT, *flags, "--tune.output", str(tmp_path)])
    assert not list(tmp_path.glob("trial_*"))  # refused before any trial ran


def test_packaged_space_is_the_spec_and_valid():
    space = load_space(None)
    assert set(space) <= set(valid_parameters())
    lr = space["model.learning_rate"]
    assert (lr["low"], lr["high"], lr["log"]) == (1e-5, 1e-3, True)
    assert "auto" in space["model.focal_alpha"]["choices"]
    assert check_space(space) == space


@pytest.mark.parametrize(("metric", "direction"), [("val/loss", "minimize"), ("val/ece", "minimize"),
                                                   ("val/fpr", "minimize"), ("val/auroc", "maximize"),
                                                   ("val/acc", "maximize")])  # fmt: skip
def test_metric_direction(metric, direction):
    assert metric_direction(metric) == direction
