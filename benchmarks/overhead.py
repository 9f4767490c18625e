"""Training overhead: FocalMixClassifier against hand-written loops and a plain LightningModule of the same
recipe, and Lightning + the CLI's callbacks against a hand-written loop.

Run: ``python benchmarks/overhead.py`` (about 6 minutes on 2 CPU cores; ``--table issue``: the first table
alone, about 1.5 minutes; ``--quick``: a few seconds).

**The issue table** ("the recipe at the price of a plain loop"), the MLP 64-256-256-1 at batch 32, every
variant over the same standardized rows:

* hand loop: the plain loop below (p), with torch's default AdamW, and again with ``fused=True``;
* plain LightningModule: the same step (written-out focal loss, ``torch.distributions.Beta``) in a
  ``LightningModule``, default and fused AdamW, ``Trainer`` without logger, checkpoints or progress bar;
* FocalMixClassifier: on the same ``DataLoader`` and the same ``Trainer``; with its own datamodule
  (``FocalMixDataModule.from_arrays``: batches by ``index_select``, standardization inside the model, a
  64-row validation split and its calibration every epoch); and with the recipe off.

Ratios are speed ratios (steps/s over steps/s, > 1 is faster) against the hand loop with default AdamW and
against the plain LightningModule with fused AdamW. Goals: FocalMixClassifier >= 1.0x the first and
>= 0.95x the second; recipe on within 5% of recipe off.

**The CLI table**, for each setup:

* (p)  the plain loop a user would write: a shuffling ``DataLoader`` over a ``TensorDataset`` of
  standardized rows, ``torch.distributions.Beta`` for mixup's lambda, default ``torch.optim.AdamW`` (no
  fused/foreach flags) + ``OneCycleLR``, the focal formula with label smoothing written out (called for
  both mixed targets);
* (a)  an optimized hand-written loop doing the recipe (fused AdamW + OneCycleLR, focal loss + label
  smoothing + mixup with ``focalmix.mixup.mixup`` and ``focalmix.losses.focal_mixup_loss``), the same
  network, batches by ``index_select`` of a shuffled permutation: the practical limit;
* (a0) the same loop with the recipe off (plain BCE): what the recipe costs without Lightning;
* (b)  ``Trainer.fit(FocalMixClassifier(...), FocalMixDataModule.from_arrays(...))`` with the callbacks and
  logger of ``focalmix fit`` (EarlyStopping, ModelCheckpoint best + last, LearningRateMonitor, the
  PredictionWriter, PreemptionCheckpoint, TensorBoard) and its time-budgeted progress bar (4 redraws/s),
  whose output (stdout) goes to a file;
* (b-) (b) without the progress bar;
* (c)  (b) with the recipe off (``focal_gamma=0, focal_alpha=None, label_smoothing=0, mixup_alpha=0``);

How it is measured: a callback stamps the clocks in ``on_train_batch_end`` (the loops stamp after
``optimizer.step()``); steps/s is the number of steps after the first (warm-up) epoch over the time from
the last step of the warm-up epoch to the last step, so Trainer start-up is not counted but epoch-end work
(validation on a tiny split of 64 rows, checkpointing) is. ``in-epoch`` counts only step-to-step gaps
inside epochs. Median of ``--repeats`` runs, the variants interleaved within each repeat. The issue table
ranks by the median step of the best run instead: with the machine's load at 8-10 (other jobs), the CPU
time of whole runs swung by +-25% between repeats, while the median step moves only when the step does.

The clock is the process's CPU time, with one torch thread (``--threads 1``): on a machine shared with
other work the wall clock of a 2-thread run swung by +-50% between repeats (OpenMP threads wait for a
busy core), the CPU clock of a 1-thread run by a few percent. At these sizes a second thread made the
MLP no faster by the wall clock. The wall-clock rate is printed too.

The profile (with the CLI table, unless ``--no-profile`` or ``--quick``) records (a) and (b) on the MLP
at batch 32 with py-spy (``pip install py-spy``) and splits their step time by where it is spent.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from _common import StepClock, cli_callbacks, cli_logger, header, median, quiet_lightning, spread
from lightning.pytorch import LightningModule, Trainer, seed_everything
from torch import Tensor, nn

from focalmix import FocalMixClassifier, FocalMixDataModule
from focalmix.backbones import MLP, SmallCNN
from focalmix.losses import focal_mixup_loss
from focalmix.mixup import mixup

VAL_ROWS = 64  # a tiny validation split: epoch ends stay in the measurement but cost little
RECIPE = dict(focal_gamma=2.0, focal_alpha=0.5, label_smoothing=0.1, mixup_alpha=0.5)  # the defaults
NO_RECIPE = dict(focal_gamma=0.0, focal_alpha=None, label_smoothing=0.0, mixup_alpha=0.0)
HP = dict(learning_rate=1e-4, weight_decay=0.01, dropout=0.5)


@dataclass
class Setup:
    """One network and batch size, with its data: ``steps`` optimizer steps per epoch."""

    name: str
    batch_size: int
    steps: int
    cnn: bool = False
    x: Tensor = field(init=False, repr=False)
    y: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        gen = torch.Generator().manual_seed(0)
        rows = self.batch_size * self.steps + VAL_ROWS
        shape = (1, 32, 32) if self.cnn else (64,)
        self.x = torch.randn(rows, *shape, generator=gen) * 3 + 1
        signal = self.x.flatten(1)[:, :8].sum(1) + torch.randn(rows, generator=gen) * 4
        self.y = (signal > signal.median()).long()

    def datamodule(self) -> FocalMixDataModule:
        return FocalMixDataModule.from_arrays(
            self.x, self.y, batch_size=self.batch_size, val_fraction=VAL_ROWS / len(self.x), seed=0
        )

    def backbone(self) -> nn.Module:
        return SmallCNN(in_channels=1) if self.cnn else MLP(64, (256, 256))


# ---- (a): the recipe by hand ----------------------------------------------------------------------------


def hand_loop(setup: Setup, epochs: int, recipe: bool, clock: StepClock) -> None:
    """Train ``setup``'s network for ``epochs`` with the recipe written out in plain PyTorch."""
    dm = setup.datamodule()
    rows = torch.from_numpy(dm.split_indices["train"])
    x, y = setup.x[rows].contiguous(), setup.y[rows].float()
    mean, std = dm.normalization
    backbone = setup.backbone()
    head = nn.Sequential(nn.Dropout(HP["dropout"]), nn.Linear(backbone.num_features, 1))
    net = nn.Sequential(backbone, head).train()
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in params if p.ndim > 1]}, {"params": [p for p in params if p.ndim <= 1]}],
        lr=HP["learning_rate"],
        weight_decay=HP["weight_decay"],
        fused=True,  # the fastest AdamW torch has on CPU, as the module uses
    )
    optimizer.param_groups[1]["weight_decay"] = 0.0
    steps_per_epoch = math.ceil(len(x) / setup.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=HP["learning_rate"], total_steps=epochs * steps_per_epoch, pct_start=0.1
    )
    hp = RECIPE if recipe else NO_RECIPE
    generator = torch.Generator().manual_seed(0)
    options = dict(alpha=hp["focal_alpha"], gamma=hp["focal_gamma"], label_smoothing=hp["label_smoothing"])

    def _hand_epochs() -> None:  # its own frame, so a profile can tell training from set-up
        for epoch in range(epochs):
            order = torch.randperm(len(x))
            for start in range(0, len(x), setup.batch_size):
                batch_rows = order[start : start + setup.batch_size]
                xb, yb = torch.index_select(x, 0, batch_rows), torch.index_select(y, 0, batch_rows)
                if recipe:
                    xb, lam, perm = mixup(xb, hp["mixup_alpha"], generator)
                    logits = net((xb - mean) / std).squeeze(-1)
                    loss = focal_mixup_loss(
                        logits, yb, lam, perm, task="binary", **options, validate_args=False
                    )
                else:
                    logits = net((xb - mean) / std).squeeze(-1)
                    loss = nn.functional.binary_cross_entropy_with_logits(logits, yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                clock.tick(epoch)

    _hand_epochs()


# ---- (p): the plain loop a user would write ------------------------------------------------------------


def _written_out_focal(logits: Tensor, target: Tensor) -> Tensor:
    """Binary focal loss with label smoothing as a user types it from the paper (arXiv 1708.02002)."""
    hp = RECIPE
    t = target * (1 - hp["label_smoothing"]) + 0.5 * hp["label_smoothing"]
    p = torch.sigmoid(logits)
    ce = nn.functional.binary_cross_entropy_with_logits(logits, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    alpha_t = hp["focal_alpha"] * t + (1 - hp["focal_alpha"]) * (1 - t)
    return (alpha_t * (1 - p_t) ** hp["focal_gamma"] * ce).mean()


def _written_out_step(net: nn.Module, beta: torch.distributions.Beta, xb: Tensor, yb: Tensor) -> Tensor:
    """Mixup and the written-out focal loss of one batch, as a user types them."""
    lam = beta.sample()
    perm = torch.randperm(len(xb))
    logits = net(lam * xb + (1 - lam) * xb[perm]).squeeze(-1)
    return lam * _written_out_focal(logits, yb) + (1 - lam) * _written_out_focal(logits, yb[perm])


def _plain_parts(setup: Setup) -> tuple[torch.utils.data.DataLoader, nn.Module, torch.distributions.Beta]:
    """A shuffling DataLoader over a TensorDataset of the standardized training rows, the network, Beta."""
    dm = setup.datamodule()
    rows = torch.from_numpy(dm.split_indices["train"])
    mean, std = dm.normalization
    x, y = (setup.x[rows] - mean) / std, setup.y[rows].float()  # standardized once, up front
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=setup.batch_size, shuffle=True
    )
    backbone = setup.backbone()
    net = nn.Sequential(backbone, nn.Dropout(HP["dropout"]), nn.Linear(backbone.num_features, 1)).train()
    beta = torch.distributions.Beta(torch.tensor(RECIPE["mixup_alpha"]), torch.tensor(RECIPE["mixup_alpha"]))
    return loader, net, beta


def plain_loop(setup: Setup, epochs: int, clock: StepClock, fused: bool = False) -> None:
    """The recipe as a user writes it: a shuffling DataLoader over a TensorDataset, ``torch.distributions
    .Beta`` for mixup, ``AdamW`` (default, or ``fused=True``) with OneCycleLR, focal loss written out."""
    loader, net, beta = _plain_parts(setup)
    optimizer = torch.optim.AdamW(
        net.parameters(), lr=HP["learning_rate"], weight_decay=HP["weight_decay"], fused=fused or None
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=HP["learning_rate"], total_steps=epochs * len(loader), pct_start=0.1
    )

    def _plain_epochs() -> None:
        for epoch in range(epochs):
            for xb, yb in loader:
                loss = _written_out_step(net, beta, xb, yb)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                clock.tick(epoch)

    _plain_epochs()


# ---- the issue table's Lightning variants: a plain LightningModule and FocalMixClassifier ----------------


class PlainModule(LightningModule):
    """The plain loop's step in a LightningModule, as a user writes it: no focalmix, no logging."""

    def __init__(self, setup: Setup, fused: bool) -> None:
        super().__init__()
        _, self.net, self.beta = _plain_parts(setup)
        self.fused = fused

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return _written_out_step(self.net, self.beta, *batch)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.AdamW(
            self.parameters(),
            lr=HP["learning_rate"],
            weight_decay=HP["weight_decay"],
            fused=self.fused or None,
        )
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=HP["learning_rate"], total_steps=total, pct_start=0.1
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _plain_trainer(epochs: int, clock: StepClock, root: str) -> Trainer:
    """A Trainer as a user starts one for a quick fit: no logger, checkpoints, progress bar or summary."""
    return Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
        default_root_dir=root,
    )


def plain_lightning_fit(setup: Setup, epochs: int, clock: StepClock, fused: bool) -> None:
    """``Trainer.fit`` of :class:`PlainModule` on the plain loop's DataLoader."""
    loader, *_ = _plain_parts(setup)
    with tempfile.TemporaryDirectory() as root:
        _plain_trainer(epochs, clock, root).fit(PlainModule(setup, fused), loader)


def focalmix_fit(setup: Setup, epochs: int, clock: StepClock, recipe: bool, datamodule: bool) -> None:
    """``Trainer.fit`` of FocalMixClassifier with the plain Trainer, on the plain loop's DataLoader or on
    ``FocalMixDataModule.from_arrays`` (then with the model's own standardization and a validation split)."""
    data: Any = setup.datamodule() if datamodule else _plain_parts(setup)[0]
    kwargs: dict[str, Any] = dict(HP, **(RECIPE if recipe else NO_RECIPE))
    model = FocalMixClassifier(task="binary", num_features=64, hidden_sizes=(256, 256), **kwargs)
    with tempfile.TemporaryDirectory() as root, contextlib.redirect_stdout(None):
        trainer = _plain_trainer(epochs, clock, root)
        if datamodule:
            trainer.fit(model, datamodule=data)
        else:
            trainer.fit(model, data)


ISSUE_VARIANTS: dict[str, tuple[str, Callable[[Setup, int, StepClock], None]]] = {
    "h": ("hand loop, default AdamW", lambda s, e, c: plain_loop(s, e, c)),
    "hf": ("hand loop, fused AdamW", lambda s, e, c: plain_loop(s, e, c, fused=True)),
    "l": ("plain LightningModule, default AdamW", lambda s, e, c: plain_lightning_fit(s, e, c, False)),
    "lf": ("plain LightningModule, fused AdamW", lambda s, e, c: plain_lightning_fit(s, e, c, True)),
    "f": ("FocalMixClassifier", lambda s, e, c: focalmix_fit(s, e, c, True, False)),
    "fd": ("FocalMixClassifier + its datamodule", lambda s, e, c: focalmix_fit(s, e, c, True, True)),
    "f0": ("FocalMixClassifier, recipe off", lambda s, e, c: focalmix_fit(s, e, c, False, False)),
}


def print_issue_table(setup: Setup, results: dict) -> None:
    r = {k: results[(setup.name, k)] for k in ISSUE_VARIANTS}
    hand, plain = r["h"]["typical_best"], r["lf"]["typical_best"]
    print(
        f"{setup.name}. ms/step: the median step of the best run (CPU clock), ±: spread of the runs' median "
        "steps; mean ms/step: every step after the warm-up with epoch ends, median run. Ratios: median-step "
        "speed over median-step speed (> 1: faster)."
    )
    print(
        f"| {'variant':<37} | {'ms/step':>7} | {'±':>4} | {'mean ms/step':>12} "
        f"| {'vs hand loop':>12} | {'vs plain LM fused':>17} |"
    )
    print(f"|{'-' * 39}|{'-' * 8}:|{'-' * 5}:|{'-' * 13}:|{'-' * 13}:|{'-' * 18}:|")
    for key, (label, _) in ISSUE_VARIANTS.items():
        v = r[key]
        best = v["typical_best"]
        print(
            f"| {label:<37} | {1e3 / best:>7.2f} | {v['typical_spread']:>4.0%} | {1e3 / v['rate']:>12.2f} "
            f"| {best / hand:>12.2f} | {best / plain:>17.2f} |"
        )
    goals = [
        ("FocalMixClassifier / hand loop (default AdamW)", r["f"]["typical_best"] / hand, 1.0),
        ("FocalMixClassifier / plain LightningModule (fused)", r["f"]["typical_best"] / plain, 0.95),
        (
            "recipe on / recipe off (FocalMixClassifier)",
            r["f"]["typical_best"] / r["f0"]["typical_best"],
            0.95,
        ),
    ]
    for label, ratio, goal in goals:
        print(f"{label}: {ratio:.2f} (goal >= {goal:.2f}: {'met' if ratio >= goal else 'NOT met'})")


# ---- (b), (c): Trainer.fit with the CLI's callbacks -----------------------------------------------------


def lightning_fit(
    setup: Setup,
    epochs: int,
    recipe: bool,
    clock: StepClock,
    progress_bar: bool = True,
    extra_callbacks: list | None = None,
    model_class: type[FocalMixClassifier] = FocalMixClassifier,
    **trainer_kwargs: Any,
) -> None:
    """``Trainer.fit`` of ``setup`` as ``focalmix fit`` runs it; the progress bar writes to a file."""
    dm = setup.datamodule()
    kwargs: dict[str, Any] = dict(HP, **(RECIPE if recipe else NO_RECIPE))
    if setup.cnn:
        kwargs.update(backbone=setup.backbone(), input_shape=dm.input_shape)
    else:
        kwargs.update(num_features=dm.num_features, hidden_sizes=(256, 256))
    model = model_class(task=dm.task, num_classes=dm.num_classes, **kwargs)
    with tempfile.TemporaryDirectory() as root:
        defaults: dict[str, Any] = dict(callbacks=cli_callbacks(root, progress_bar), logger=cli_logger(root))
        defaults.update(trainer_kwargs)
        trainer = Trainer(
            accelerator="cpu",
            devices=1,
            max_epochs=epochs,
            min_epochs=math.ceil(0.1 * epochs),  # as the CLI sets it
            callbacks=[*defaults.pop("callbacks"), clock, *(extra_callbacks or [])],
            enable_progress_bar=progress_bar,
            enable_model_summary=False,  # start-up only, not measured
            default_root_dir=root,
            **defaults,
        )
        with open(Path(root) / "stdout.txt", "w") as out, contextlib.redirect_stdout(out):
            trainer.fit(model, dm)


VARIANTS: dict[str, tuple[str, Callable[[Setup, int, StepClock], None]]] = {
    "p": ("(p)  plain loop a user would write", plain_loop),
    "a": ("(a)  hand-written loop, recipe", lambda s, e, c: hand_loop(s, e, True, c)),
    "a0": ("(a0) hand-written loop, recipe off", lambda s, e, c: hand_loop(s, e, False, c)),
    "b": ("(b)  Trainer + CLI callbacks, recipe", lambda s, e, c: lightning_fit(s, e, True, c)),
    "b-": ("(b-) (b) without progress bar", lambda s, e, c: lightning_fit(s, e, True, c, False)),
    "c": ("(c)  (b) with the recipe off", lambda s, e, c: lightning_fit(s, e, False, c)),
}


def measure(setups: list[Setup], variants: dict, epochs: int, repeats: int) -> dict[tuple[str, str], dict]:
    """Median steps/s of every (setup, variant), the variants interleaved within each repeat."""
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    for setup in setups:
        for rep in range(repeats):
            for key, (_, run) in variants.items():
                seed_everything(rep, verbose=False)
                clock = StepClock()
                run(setup, epochs, clock)
                rates = {
                    "rate": clock.steps_per_second(),
                    "in_epoch": clock.in_epoch_steps_per_second(),
                    "wall": clock.steps_per_second(clock="wall"),
                    "typical": typical_steps_per_second(clock),
                }
                runs.setdefault((setup.name, key), []).append(rates)
    out = {k: {name: median([r[name] for r in v]) for name in v[0]} for k, v in runs.items()}
    for k, v in runs.items():
        out[k]["spread"] = spread([r["rate"] for r in v])
        out[k]["typical_best"] = max(r["typical"] for r in v)
        out[k]["typical_spread"] = spread([r["typical"] for r in v])
    return out


def typical_steps_per_second(clock: StepClock, warmup_epochs: int = 1) -> float:
    """Steps/s of the median step after the warm-up, by the CPU clock: on a machine shared with bursts of
    other work some steps run long (caches, frequency), the median one is what a quiet core does."""
    gaps = [b[1] - a[1] for s in clock.stamps[warmup_epochs:] for a, b in zip(s, s[1:], strict=False)]
    return 1 / median(gaps)


def print_table(setups: list[Setup], variants: dict, results: dict) -> None:
    print(
        f"| {'setup':<27} | {'variant':<37} | {'steps/s':>7} | {'±':>4} | {'in-epoch':>8} "
        f"| {'wall':>5} | {'samples/s':>9} | {'vs (a)':>6} |"
    )
    print(f"|{'-' * 29}|{'-' * 39}|{'-' * 8}:|{'-' * 5}:|{'-' * 9}:|{'-' * 6}:|{'-' * 10}:|{'-' * 7}:|")
    for setup in setups:
        base = results[(setup.name, "a")]["rate"]
        for key, (label, _) in variants.items():
            r = results[(setup.name, key)]
            print(
                f"| {setup.name:<27} | {label:<37} | {r['rate']:>7.0f} | {r['spread']:>4.0%} "
                f"| {r['in_epoch']:>8.0f} | {r['wall']:>5.0f} | {r['rate'] * setup.batch_size:>9,.0f} "
                f"| {r['rate'] / base:>6.2f} |"
            )
    print()
    goals = "goals: (b)/(p) >= 1.0 (MLP 32); (b)/(a) >= 0.85 (MLP), 0.9 (CNN)"
    print(f"| {'setup':<27} | (b)/(p) | (b-)/(p) | (b)/(a) | (b-)/(a) | (b)/(c) | (c)/(a0) | {goals:<62} |")
    print(f"|{'-' * 29}|{'-' * 8}:|{'-' * 9}:|{'-' * 8}:|{'-' * 9}:|{'-' * 8}:|{'-' * 9}:|{'-' * 64}|")
    for setup in setups:
        r = {k: results[(setup.name, k)]["rate"] for k in variants}
        b_p, b_a = r["b"] / r["p"], r["b"] / r["a"]
        verdict = [f"(b)/(a) {'met' if b_a >= (0.9 if setup.cnn else 0.85) else 'NOT met'}"]
        if setup.batch_size == 32 and not setup.cnn:
            verdict.insert(0, f"(b)/(p) {'met' if b_p >= 1.0 else 'NOT met'}")
        print(
            f"| {setup.name:<27} | {b_p:>7.2f} | {r['b-'] / r['p']:>8.2f} | {b_a:>7.2f} "
            f"| {r['b-'] / r['a']:>8.2f} | {r['b'] / r['c']:>7.2f} | {r['c'] / r['a0']:>8.2f} "
            f"| {', '.join(verdict):<62} |"
        )
    print("(b-): (b) without the progress bar, as `--trainer.enable_progress_bar false` runs it.")


# ---- profile: where (b)'s extra time goes -------------------------------------------------------------

# (label, frame function name, path fragment, check lines only): a sample counts for a probe when a frame
# of its stack matches; shares times the measured step time give microseconds per step.
PROBES = [
    ("network forward", "Sequential.forward", "torch/nn", False),
    ("mixup: Beta sample + permutation + mix", "mixup", "focalmix/mixup.py", False),
    ("focal_loss (one call on the stacked batch)", "focal_loss", "focalmix/losses.py", False),
    ("  of which value checks (target, alpha)", "", "focalmix/losses.py", True),
    ("backward", "Tensor.backward", "torch/_tensor.py", False),
    ("AdamW update", "adam", "torch/optim/adam.py", False),
    ("zero_grad", "Optimizer.zero_grad", "torch/optim/optimizer.py", False),
    ("OneCycleLR.step", "LRScheduler.step", "torch/optim/lr_scheduler.py", False),
    ("self.log (train/loss once per epoch)", "LightningModule.log", "core/module.py", False),
    ("fetch batch (DataLoader, fetcher)", "__next__", "loops/fetchers.py", False),
    ("batch_to_device", "Strategy.batch_to_device", "strategies/strategy.py", False),
    ("callback hooks, all (per step + per epoch)", "_call_callback_hooks", "trainer/call.py", False),
    ("  TQDMProgressBar", "TQDMProgressBar.", "progress/tqdm_progress.py", False),
    ("  LearningRateMonitor", "LearningRateMonitor.", "callbacks/lr_monitor.py", False),
    ("  ModelCheckpoint (incl. saving)", "ModelCheckpoint.", "callbacks/model_checkpoint.py", False),
    ("  EarlyStopping", "EarlyStopping.", "callbacks/early_stopping.py", False),
    ("  StepClock (this benchmark)", "StepClock.", "_common.py", False),
    ("logger connector (metrics bookkeeping)", "_LoggerConnector.", "logger_connector.py", False),
    ("validation loop (64 rows, per epoch)", "_EvaluationLoop.run", "loops/evaluation_loop.py", False),
]
_ROOTS = {"a": "_hand_epochs", "b": "_FitLoop.run"}  # frames that hold the training, not the set-up


def _check_lines() -> set[int]:
    """Lines of focalmix/losses.py that check tensor values (``bool(...)`` or ``_check(...)``)."""
    import inspect
    import re

    import focalmix.losses

    lines = inspect.getsource(focalmix.losses).splitlines()
    return {i for i, text in enumerate(lines, 1) if re.search(r"bool\(\(|\b_check\(|_sigmoid_alpha\(", text)}


def _attribute(raw: str, root: str) -> tuple[int, dict[str, int]]:
    """Samples under ``root`` in a py-spy ``--format raw`` file, and per probe (inclusive, once a stack)."""
    import re

    frame_re = re.compile(r"^(.*) \((.*):(\d+)\)$")
    check_lines, total, hits = _check_lines(), 0, {label: 0 for label, *_ in PROBES}
    hits["not in a probe: loop code, hook dispatch, ..."] = 0
    for line in Path(raw).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [m.groups() for f in stack.split(";") if (m := frame_re.match(f))]
        roots = [i for i, (func, _, _) in enumerate(frames) if func.endswith(root)]
        if not roots:
            continue
        total += int(count)
        matched = False
        for label, func, path, checks in PROBES:
            if any(
                path in file and _matches(name, lineno, func, checks, check_lines)
                for name, file, lineno in frames[roots[-1] + 1 :]
            ):
                hits[label] += int(count)
                matched = matched or not label.startswith(" ")
        if not matched:
            hits["not in a probe: loop code, hook dispatch, ..."] += int(count)
    return total, hits


def _matches(name: str, lineno: str, func: str, checks: bool, check_lines: set[int]) -> bool:
    if checks:
        return int(lineno) in check_lines
    if func.endswith("."):  # any method of a class
        return name.startswith(func)
    return name == func or name.endswith("." + func)


def profile(epochs: int, steps: int, threads: int, step_us: dict[str, float]) -> None:
    """py-spy (a) and (b) on the MLP at batch 32, each in a child process; print µs per step by cause.

    ``step_us`` holds the unprofiled step times of (a) and (b) from :func:`measure`: py-spy pauses the
    process at each sample, which slows it evenly, so its shares are kept and its clock is not.
    """
    import shutil
    import subprocess
    import sys

    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("the profile needs py-spy: pip install py-spy")
        return
    shares = {}
    for key in ("a", "b"):
        with tempfile.TemporaryDirectory() as tmp:
            raw = str(Path(tmp) / "profile.txt")
            child = [
                "--profile-child",
                key,
                "--epochs",
                str(epochs),
                "--steps",
                str(steps),
                "--threads",
                str(threads),
            ]
            cmd = [
                spy,
                "record",
                "-r",
                "200",
                "--format",
                "raw",
                "-o",
                raw,
                "--",
                sys.executable,
                __file__,
                *child,
            ]
            subprocess.run(cmd, capture_output=True, text=True, check=True)
            total, hits = _attribute(raw, _ROOTS[key])
        shares[key] = {label: n / total for label, n in hits.items()}
    print(
        f"py-spy record (200 Hz), MLP at batch 32, {epochs} epochs of {steps} steps, training loop only "
        "(Trainer and datamodule set-up excluded). µs per step = share of the samples x the step time "
        "measured above (CPU clock). A sample counts for every probe on its stack; indented rows are parts "
        "of the row above."
    )
    print(f"| {'where':<47} | {'(a) µs/step':>11} | {'(b) µs/step':>11} | {'(b) - (a)':>9} |")
    print(f"|{'-' * 49}|{'-' * 12}:|{'-' * 12}:|{'-' * 10}:|")
    print(
        f"| {'step total':<47} | {step_us['a']:>11.0f} | {step_us['b']:>11.0f} "
        f"| {step_us['b'] - step_us['a']:>9.0f} |"
    )
    for label in shares["b"]:
        a, b = shares["a"][label] * step_us["a"], shares["b"][label] * step_us["b"]
        print(f"| {label:<47} | {a:>11.0f} | {b:>11.0f} | {b - a:>9.0f} |")


def _profile_child(key: str, epochs: int, steps: int) -> None:
    quiet_lightning()
    seed_everything(0, verbose=False)
    clock = StepClock()
    setup = Setup("MLP 64-256-256-1, batch 32", 32, steps)
    (hand_loop if key == "a" else lightning_fit)(setup, epochs, True, clock)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds, no profile")
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant; the median is kept")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is warm-up")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, see the docstring)")
    parser.add_argument("--table", choices=["issue", "cli", "all"], default="all", help="which tables to run")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile of (a) and (b)")
    parser.add_argument("--profile-child", choices=["a", "b"], help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=150, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.profile_child:
        _profile_child(args.profile_child, args.epochs, args.steps)
        return
    quiet_lightning()
    warnings.filterwarnings("ignore", ".*no `val_dataloader`.*")  # FocalMixClassifier on a bare loader
    print(header("focalmix training overhead: FocalMixClassifier vs hand-written loops and Lightning (CPU)"))
    steps = {"mlp32": 150, "mlp256": 60, "cnn32": 40}
    if args.quick:
        args.repeats, args.epochs, args.no_profile, steps = 1, 2, True, {k: 10 for k in steps}
    print(
        f"{args.repeats} repeats x {args.epochs} epochs (first = warm-up) per variant, interleaved.\n"
        "steps/s: optimizer steps after the warm-up epoch / CPU time of the process from the warm-up's "
        "last step to the last step, stamped after each optimizer step (Trainer start-up excluded, epoch "
        "ends included); ms/step: its inverse; in-epoch: step-to-step gaps within epochs only; ±: half "
        "the min-max range of the repeats.\n"
    )
    if args.table in ("issue", "all"):
        issue_setup = Setup("MLP 64-256-256-1, batch 32", 32, steps["mlp32"])
        print_issue_table(issue_setup, measure([issue_setup], ISSUE_VARIANTS, args.epochs, args.repeats))
        print()
    if args.table in ("cli", "all"):
        cli_tables(args, steps)


def cli_tables(args: argparse.Namespace, steps: dict[str, int]) -> None:
    """The CLI table over every setup, and the profile of (a) and (b) unless ``--no-profile``."""
    setups = [
        Setup("MLP 64-256-256-1, batch 32", 32, steps["mlp32"]),
        Setup("MLP 64-256-256-1, batch 256", 256, steps["mlp256"]),
        Setup("SmallCNN 1x32x32, batch 32", 32, steps["cnn32"], cnn=True),
    ]
    if args.quick:  # one MLP and the CNN: every code path, few fits
        setups = [setups[0], setups[2]]
    print(
        "Steps per epoch: "
        + ", ".join(f"{s.name}: {s.steps}" for s in setups)
        + f"; validation (b, c): {VAL_ROWS} rows per epoch. wall: steps/s by the wall clock; vs (a): "
        "steps/s over (a)'s.\n"
    )
    results = measure(setups, VARIANTS, args.epochs, args.repeats)
    print_table(setups, VARIANTS, results)
    if not args.no_profile:
        print()
        mlp32 = setups[0].name
        step_us = {k: 1e6 / results[(mlp32, k)]["rate"] for k in ("a", "b")}
        profile(6, steps["mlp32"], args.threads, step_us)


if __name__ == "__main__":
    main()
