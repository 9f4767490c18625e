"""Wake word on the synthesized set: FRR at a threshold chosen for <= 0.5 FA/h, FA/h on held-out background.

Run: ``python benchmarks/wakeword.py --work DIR [--settings NAME ...] [--probe 0 4]`` (issues 18 and 19).
It builds the set of ``examples/wakeword/make_dataset.py`` into ``DIR/set`` (skipped when
``DIR/set/voices.json`` exists) with ``--background-seconds 1200`` (25 minutes of background: held-out
voices talking, the recordings, noise) and ``--train-talk-clips 1000`` (train/other clips cut at random
offsets from continuous talk of the training voices), then cuts every background file in two halves:

* ``DIR/bg_thr/``: the first halves (12.5 min), the ``--data.background_source`` the threshold is chosen
  on (``--model.threshold_metric fa_per_hour --model.max_fa_per_hour 0.5``: with 12.5 minutes, no event);
* ``DIR/bg_held/``: the second halves (12.5 min), never seen by the fit: false accepts are counted there
  with ``focalmix predict --data.predict_source DIR/bg_held --detections true`` at the checkpoint's
  threshold (one row per event; recounted from the per-window predictions with
  ``focalmix.wakeword.false_accepts`` as a check). One event in 12.5 minutes is 4.8 FA/h: no event
  bounds FA/h by 14 (95%), not by 0.5, which would take 6 hours of background without an event.

Training folders: ``DIR/train_notalk/`` (the set as make_dataset writes it by default, without the talk cuts),
``DIR/set/train`` (with them), ``DIR/train_big/`` (``DIR/set_400``: 400 training voices and 2,000 talk cuts
from the same training variants, the set's training recordings; the held-out variants stay unseen),
``DIR/train_talk/`` (``train_big`` with 20,000 talk cuts of the same voices from ``DIR/set_talk`` in place of
its 2,000: far more background negatives, confusables among them); ``DIR/set_1s`` and ``DIR/set_2s``
(``make_dataset.py --clip-seconds 1`` / ``2``, 400 voices, 4,000 talk cuts: the same utterances in 1 s and 2 s
windows, each with its own test/ and test_piper/). Each setting is one ``focalmix fit`` (a fresh process,
timed by the wall clock; the feature cache under ``DIR/cache`` is shared, so only new clips or augmented views
go through the backbone; a setting whose ``DIR/runs/<name>/fit.json`` exists is scored again, not refitted),
then ``focalmix predict`` on ``test/`` (held-out espeak voices), ``test_piper/`` (the neural voice) and
``bg_held/``. Measures: test AUROC and recall at FPR <= 0.05 (scikit-learn's ``roc_curve``), the chosen
threshold, FRR on the test/ wake clips at it, FA/h on the held-out background, FRR and FA/h on the validation
rows and ``bg_thr`` (the checkpoint's table), recall on the test_piper wake clips at the threshold and
test_piper's AUROC. ``--probe VIEWS``: scikit-learn heads (logistic regression, MLPs) on the same cached
features. A table in Markdown and ``DIR/results.json`` (run one invocation at a time: each rewrites it).

A fit takes 1-5 minutes on a 2-core machine once the features are cached; the first computes about
18,000 clips and windows (30-60 per second), ``--data.augment_views 4`` adds 4 views of each training clip,
``train_big`` 6,800 clips. All settings: about an hour.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MAKE_DATASET = ROOT / "examples" / "wakeword" / "make_dataset.py"
BACKBONE = "focalmix.backbones.SpeechEmbedding"
COMMON = ["--model.threshold_metric", "fa_per_hour", "--model.max_fa_per_hour", "0.5",
          "--trainer.max_epochs", "100", "--seed_everything", "42", "--report", "false"]  # fmt: skip
LR3 = ["--model.learning_rate", "1e-3"]
AUG2 = ["--data.augment_views", "2", "--data.noise_source", "noise"]  # noise: colored noise only
AUG4 = ["--data.augment_views", "4", "--data.noise_source", "noise"]
SHARP = ["--model.mixup_alpha", "0", "--model.label_smoothing", "0", "--model.dropout", "0.1"]
HEAD64 = ["--model.head_hidden_sizes", "[64]"]
HEAD128 = ["--model.head_hidden_sizes", "[128]"]
NO_VIEWS = ["--preset", "wakeword", "--data.augment_views", "0"]
CLIP2 = ["--model.backbone.init_args.clip_seconds", "2"]  # the data's clip follows the backbone's
TEMPORAL = ["--model.head_type", "temporal", "--model.head_hidden_sizes", "[64]"]  # a conv over the frames
SETTINGS = {  # name: (training folder, extra flags); the table's rows in order
    "lr 1e-4 (default), no talk": ("train_notalk", []),
    "lr 1e-3, no talk": ("train_notalk", LR3),
    "lr 1e-3, talk": ("set/train", LR3),
    "lr 1e-3, talk, aug 2": ("set/train", [*LR3, *AUG2]),
    "lr 1e-3, talk, aug 4": ("set/train", [*LR3, *AUG4]),
    "lr 1e-3, talk, 400 voices": ("train_big", LR3),
    "lr 1e-3, talk, sharp": ("set/train", [*LR3, *SHARP]),
    "lr 1e-3, talk, sharp, alpha 0.25": ("set/train", [*LR3, *SHARP, "--model.focal_alpha", "0.25"]),
    "lr 1e-3, talk, sharp, aug 2": ("set/train", [*LR3, *SHARP, *AUG2]),
    "lr 1e-3, talk, sharp, aug 4": ("set/train", [*LR3, *SHARP, *AUG4]),
    "lr 1e-3, talk, 400 voices, sharp": ("train_big", [*LR3, *SHARP]),
    "lr 1e-3, talk, 400 voices, sharp, aug 2": ("train_big", [*LR3, *SHARP, *AUG2]),
    "lr 1e-3, talk, 400 voices, sharp, alpha 0.25": (
        "train_big",
        [*LR3, *SHARP, "--model.focal_alpha", "0.25"],
    ),
    # an MLP head on the frozen embedding (--model.head_hidden_sizes), what the scikit-learn probe suggested
    "lr 1e-3, talk, sharp, aug 4, head 64": ("set/train", [*LR3, *SHARP, *AUG4, *HEAD64]),
    "lr 1e-3, talk, sharp, head 128": ("set/train", [*LR3, *SHARP, *HEAD128]),
    "lr 1e-3, talk, 400 voices, sharp, head 128": ("train_big", [*LR3, *SHARP, *HEAD128]),
    "lr 1e-3, talk, 400 voices, sharp, aug 2, head 128": ("train_big", [*LR3, *SHARP, *AUG2, *HEAD128]),
    # the packaged preset (lr 3e-4, head [128], sharp, 2 views), with the colored noise here
    "preset wakeword, talk": ("set/train", ["--preset", "wakeword", "--data.noise_source", "noise"]),
    "preset wakeword, talk, 400 voices": (
        "train_big",
        ["--preset", "wakeword", "--data.noise_source", "noise"],
    ),
    # 20,000 talk cuts of the training voices (train_big has 2,000): far more background negatives
    "preset wakeword, 20k talk, 400 voices, no views": (
        "train_talk",
        ["--preset", "wakeword", "--data.augment_views", "0"],
    ),
    "preset wakeword, 20k talk, 400 voices": (
        "train_talk",
        ["--preset", "wakeword", "--data.noise_source", "noise"],
    ),
    # the window: the same utterances in 1 s and in 2 s clips (3 and 16 embedding frames), own test sets
    "preset wakeword, 1 s windows, no views": ("set_1s/train", [*NO_VIEWS], "set_1s"),
    "preset wakeword, 2 s windows, no views": ("set_2s/train", [*NO_VIEWS, *CLIP2], "set_2s"),
    "preset wakeword, 2 s windows, temporal head, 20k talk, no views": (
        "set_2s_talk/train",
        [*NO_VIEWS, *CLIP2, *TEMPORAL],
        "set_2s_talk",
    ),
    "preset wakeword, 2 s windows, temporal head 128, no views": (
        "set_2s/train",
        [*NO_VIEWS, *CLIP2, "--model.head_type", "temporal", "--model.head_hidden_sizes", "[128]"],
        "set_2s",
    ),
    "preset wakeword, 2 s windows, temporal head": (
        "set_2s/train",
        ["--preset", "wakeword", "--data.noise_source", "noise", *CLIP2, *TEMPORAL],
        "set_2s",
    ),
    "preset wakeword, 1 s windows, temporal head, no views": (
        "set_1s/train",
        [*NO_VIEWS, *TEMPORAL],
        "set_1s",
    ),
    "preset wakeword, 2 s windows, temporal head, no views": (
        "set_2s/train",
        [*NO_VIEWS, *CLIP2, *TEMPORAL],
        "set_2s",
    ),
}
DEFAULT = list(SETTINGS)


def prepare(work: Path, background_seconds: float, talk: int) -> None:
    """The set, the two background halves, the no-talk training folder and the noise folder."""
    import soundfile as sf

    if not (work / "set" / "voices.json").exists():
        cmd = [sys.executable, str(MAKE_DATASET), str(work / "set"), "--background-seconds",
               str(background_seconds), "--train-talk-clips", str(talk)]  # fmt: skip
        subprocess.run(cmd, check=True)
    for name in ("bg_thr", "bg_held", "noise"):
        (work / name).mkdir(exist_ok=True)
    for path in sorted((work / "set" / "background").glob("*.wav")):
        audio, rate = sf.read(path, dtype="float32")
        half = len(audio) // 2
        for name, part in (("bg_thr", audio[:half]), ("bg_held", audio[half:])):
            if not (work / name / path.name).exists():
                sf.write(work / name / path.name, part, rate, subtype="FLOAT")
    if not (work / "noise" / "noise.wav").exists():  # colored noise only: no held-out voice leaks in
        os.link(work / "bg_thr" / "noise.wav", work / "noise" / "noise.wav")
    if not (work / "set_400" / "voices.json").exists():  # more training voices (same held-out variants)
        cmd = [sys.executable, str(MAKE_DATASET), str(work / "set_400"), "--train-voices", "400",
               "--test-voices", "1", "--piper-clips", "0", "--background-seconds", "0",
               "--train-talk-clips", str(2 * talk)]  # fmt: skip
        subprocess.run(cmd, check=True)
    for label in ("wake", "other"):  # its recordings split differently: the set's training recordings
        folder = work / "train_big" / label
        folder.mkdir(parents=True, exist_ok=True)
        for clip in (work / "set_400" / "train" / label).glob("*.wav"):
            if not clip.name.startswith("audioeval-") and not (folder / clip.name).exists():
                os.link(clip, folder / clip.name)
        for clip in (work / "set" / "train" / label).glob("audioeval-*.wav"):
            if not (folder / clip.name).exists():
                os.link(clip, folder / clip.name)
    if not (work / "set_talk" / "voices.json").exists():  # 20x the talk cuts, same training voices
        cmd = [sys.executable, str(MAKE_DATASET), str(work / "set_talk"), "--train-voices", "400",
               "--test-voices", "1", "--clips-per-voice", "1", "--piper-clips", "0",
               "--background-seconds", "0", "--train-talk-clips", str(20 * talk)]  # fmt: skip
        subprocess.run(cmd, check=True)
    for label in ("wake", "other"):  # train_big with set_talk's talk cuts in place of its own
        folder = work / "train_talk" / label
        folder.mkdir(parents=True, exist_ok=True)
        clips = [c for c in (work / "train_big" / label).glob("*.wav") if not c.name.startswith("talk-")]
        if label == "other":
            clips += (work / "set_talk" / "train" / "other").glob("talk-*.wav")
        for clip in clips:
            if not (folder / clip.name).exists():
                os.link(clip, folder / clip.name)
    # the same utterances in 1 s and 2 s clips: train/ (4,000 talk cuts; 20,000 in set_2s_talk), test/, piper
    for name, clip, cuts in (("set_1s", 1, 4 * talk), ("set_2s", 2, 4 * talk), ("set_2s_talk", 2, 20 * talk)):
        if not (work / name / "voices.json").exists():
            cmd = [sys.executable, str(MAKE_DATASET), str(work / name), "--train-voices", "400",
                   "--test-voices", "120", "--clips-per-voice", "4", "--wake-fraction", "0.4",
                   "--train-talk-clips", str(cuts), "--background-seconds", "0",
                   "--clip-seconds", str(clip)]  # fmt: skip
            subprocess.run(cmd, check=True)
    for label in ("wake", "other"):
        folder = work / "train_notalk" / label
        folder.mkdir(parents=True, exist_ok=True)
        for clip in (work / "set" / "train" / label).glob("*.wav"):
            if not clip.name.startswith("talk-") and not (folder / clip.name).exists():
                os.link(clip, folder / clip.name)


def focalmix(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "focalmix", *args]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"failed: {shlex.join(cmd)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - start, done.stdout + done.stderr


def predict(ckpt: Path, source: Path, out: Path, env: dict[str, str], detections: bool = False):
    import pandas as pd

    args = ["predict", "--ckpt_path", str(ckpt), "--data.predict_source", str(source),
            "--prediction_writer.path", str(out)]  # fmt: skip
    focalmix(args + (["--detections", "true"] if detections else []), env)
    return pd.read_csv(out)


def scores(frame, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(labels, prob_wake) of the clips of ``folder/{other,wake}``, one row per clip."""
    prob = frame.groupby(frame["path"].map(lambda p: str(Path(p).resolve())))["prob_wake"].max()
    paths = sorted(p for c in ("other", "wake") for p in (folder / c).glob("*.wav"))
    y = np.array([p.parent.name == "wake" for p in paths], dtype=int)
    return y, prob.loc[[str(p.resolve()) for p in paths]].to_numpy()


def run(name: str, work: Path, env: dict[str, str]) -> dict:
    import soundfile as sf
    import torch
    from sklearn.metrics import roc_auc_score, roc_curve

    from focalmix import wakeword

    train, extra, *own_sets = SETTINGS[name]
    sets = work / (own_sets[0] if own_sets else "set")  # test/ and test_piper/ in the setting's clip length
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    root = work / "runs" / slug
    args = ["fit", "--data.source", str(work / train), "--data.test_source", str(sets / "test"),
            "--model.backbone", BACKBONE, "--data.background_source", str(work / "bg_thr"),
            *COMMON, *extra, "--trainer.default_root_dir", str(root)]  # fmt: skip
    if (root / "fit.json").exists():  # fitted before: evaluated again, not refitted
        wall, log = (lambda d: (d["wall_s"], d["log"]))(json.loads((root / "fit.json").read_text()))
    else:
        wall, log = focalmix(args, env)
        (root / "fit.json").write_text(json.dumps({"wall_s": wall, "log": log}))
    ckpt = Path(re.findall(r"best checkpoint: .*?, (\S+best\.ckpt)", log)[-1])
    ckpt = ckpt if ckpt.is_absolute() else work / ckpt
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    threshold = float(state["state_dict"]["threshold"])
    epochs = max(int(m) for m in re.findall(r"epoch (\d+)/", log))
    computed = sum(
        int(c.replace(",", "")) for c in re.findall(r"items, [\d,]+ from cache, ([\d,]+) computed \(", log)
    )
    out = {"setting": name, "command": "focalmix " + shlex.join(args).replace(str(work) + "/", "DIR/"),
           "wall_s": round(wall, 1), "epochs": epochs, "features_computed": computed,
           "threshold": threshold}  # fmt: skip
    y, p = scores(predict(ckpt, sets / "test", root / "test.csv", env), sets / "test")
    y_test, p_test = y, p
    fpr, tpr, _ = roc_curve(y, p)
    out.update(test_auroc=float(roc_auc_score(y, p)), test_recall_fpr05=float(tpr[fpr <= 0.05].max()),
               test_frr=float((p[y == 1] < threshold).mean()),
               test_fpr=float((p[y == 0] >= threshold).mean()))  # fmt: skip
    piper = sets / "test_piper"
    if piper.is_dir():
        y, p = scores(predict(ckpt, piper, root / "piper.csv", env), piper)
        fpr, tpr, _ = roc_curve(y, p)
        out.update(piper_recall=float((p[y == 1] >= threshold).mean()),
                   piper_auroc=float(roc_auc_score(y, p)),
                   piper_recall_fpr05=float(tpr[fpr <= 0.05].max()))  # fmt: skip
    events = predict(ckpt, work / "bg_held", root / "heldout_events.csv", env, detections=True)
    hours = sum(sf.info(f).duration for f in (work / "bg_held").glob("*.wav")) / 3600
    out.update(heldout_false_accepts=len(events), heldout_hours=round(hours, 4),
               heldout_fa_per_hour=len(events) / hours)  # fmt: skip
    # the windows too: FA/h on the held-out half at every threshold (and the events recounted as a check)
    windows = predict(ckpt, work / "bg_held", root / "heldout_windows.csv", env)
    files, ids = np.unique(windows["path"].to_numpy(), return_inverse=True)
    grid = wakeword.threshold_grid()
    probs, starts = windows["prob_wake"].to_numpy(), windows["start_seconds"].to_numpy()
    counts = wakeword.false_accepts(
        probs, starts, np.append(grid, threshold), refractory_seconds=1.0, file_ids=ids
    )
    out["heldout_events_recounted"] = int(counts[-1])
    ok = grid[counts[:-1] / hours <= 0.5]
    out["heldout_threshold_for_0.5fa"] = float(ok.min()) if ok.size else None
    out["test_frr_at_heldout_threshold"] = float((p_test[y_test == 1] < ok.min()).mean()) if ok.size else None
    table = state.get("focalmix_wakeword") or {}  # the FRR/FA-h table of the best epoch (validation)
    if table:
        i = int(np.argmin(np.abs(np.asarray(table["threshold"]) - threshold)))
        out.update(val_frr=table["frr"][i], val_fa_per_hour=table["fa_per_hour"][i],
                   val_hours=table["background_hours"])  # fmt: skip
    return out


def breakdown(name: str, work: Path, env: dict[str, str]) -> dict:
    """What a fitted setting's FRR and false accepts are made of (its run must be done).

    * False accepts by what was said: the windows of the synthesized background overlapping a confusable
      phrase (``make_dataset.py`` writes each utterance's kind and times under ``said`` in voices.json)
      against the rest (talk without confusables, the recordings, noise).
    * The threshold a background without the confusables would choose: the lowest of the fit's thresholds
      (``focalmix.wakeword.threshold_grid``) above every ``bg_thr`` window that overlaps no confusable (no
      event in ``bg_thr`` outside the confusables, as ``max_fa_per_hour 0.5`` on 12.5 minutes), the test
      FRR there, and the held-out events there (all, and those overlapping no confusable). Events are
      counted for each group on its own (a run of firing windows across both counts in each).
    * The FRR of each held-out voice variant at the fit's threshold: is the miss rate spread over the
      voices, or a few voices unlike every training voice?
    """
    import pandas as pd
    import soundfile as sf
    import torch

    from focalmix import wakeword

    train, extra, *own_sets = SETTINGS[name]
    sets = work / (own_sets[0] if own_sets else "set")
    root = work / "runs" / re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    log = json.loads((root / "fit.json").read_text())["log"]
    ckpt = Path(re.findall(r"best checkpoint: .*?, (\S+best\.ckpt)", log)[-1])
    ckpt = ckpt if ckpt.is_absolute() else work / ckpt
    threshold = float(torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]["threshold"])
    info = json.loads((work / "set" / "voices.json").read_text())
    said = info["files"]["background/synthesized_speech.wav"]["said"]
    if not said or not isinstance(said[0], dict):
        raise SystemExit(f"{work / 'set'} predates the utterances' times in voices.json: make it again")
    spans = np.array([(u["start_s"], u["end_s"]) for u in said if u["kind"] == "confusable"], dtype=float)
    spans = spans.reshape(-1, 2)
    clip = float(json.loads((sets / "voices.json").read_text())["clip_seconds"])
    half = sf.info(work / "bg_thr" / "synthesized_speech.wav").duration  # bg_held starts there

    def windows(folder: str):
        out = root / {"bg_thr": "threshold_windows.csv", "bg_held": "heldout_windows.csv"}[folder]
        frame = pd.read_csv(out) if out.exists() else predict(ckpt, work / folder, out, env)
        frame = frame.sort_values(["path", "start_seconds"])
        start = frame["start_seconds"].to_numpy() + (half if folder == "bg_held" else 0.0)
        synth = frame["path"].str.endswith("synthesized_speech.wav").to_numpy()
        hit = synth & ((spans[:, :1] < start + clip) & (spans[:, 1:] > start)).any(axis=0)
        ids = np.unique(frame["path"].to_numpy(), return_inverse=True)[1]
        return frame["prob_wake"].to_numpy(), frame["start_seconds"].to_numpy(), ids, hit

    p, _, _, hit = windows("bg_thr")
    grid = wakeword.threshold_grid()  # the thresholds a fit chooses from
    general = float(grid[grid > p[~hit].max()].min())
    p_held, starts, ids, hit_held = windows("bg_held")

    def events(threshold: float, keep: np.ndarray) -> int:
        probs = np.where(keep, p_held, 0.0)
        return int(wakeword.false_accepts(probs, starts, np.array([threshold]), file_ids=ids)[0])

    test = pd.read_csv(root / "test.csv")
    wake = test[test["path"].str.contains("/wake/")].groupby("path")["prob_wake"].max()
    files = json.loads((sets / "voices.json").read_text())["files"]
    variant = [files["test/wake/" + Path(p).name]["voice"].split("+")[1] for p in wake.index]
    missed = pd.Series((wake.to_numpy() < threshold).astype(float))
    by_variant = missed.groupby(variant).agg(["sum", "size"])  # misses, wake clips
    by_variant = by_variant.loc[(by_variant["sum"] / by_variant["size"]).sort_values(ascending=False).index]
    return {
        "setting": name, "threshold": threshold, "test_frr": float((wake < threshold).mean()),
        "heldout_events_confusable": events(threshold, hit_held),
        "heldout_events_other": events(threshold, ~hit_held),
        "threshold_without_confusables": general,
        "test_frr_without_confusables": float((wake < general).mean()),
        "heldout_events_at_it": events(general, np.ones_like(hit_held)),
        "heldout_events_at_it_without_confusables": events(general, ~hit_held),
        "misses_by_variant": {k: [int(m), int(n)] for k, (m, n) in by_variant.iterrows()},
    }  # fmt: skip


def breakdown_markdown(rows: list[dict]) -> str:
    head = ("| setting | threshold | FRR test/ | held-out events: confusable, other | threshold without "
            "confusables | FRR test/ there | held-out events there (without confusables) | variants "
            "with FRR >= 25% at the fit's threshold | their share of the misses | FRR of the other "
            "variants |")  # fmt: skip
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        counts = r["misses_by_variant"]
        bad = {k: (m, n) for k, (m, n) in counts.items() if m >= 0.25 * n}
        worst = ", ".join(f"{k} {m}/{n}" for k, (m, n) in bad.items())
        share = sum(m for m, _ in bad.values()) / max(1, sum(m for m, _ in counts.values()))
        rest = [(m, n) for k, (m, n) in counts.items() if k not in bad]
        rest_frr = sum(m for m, _ in rest) / max(1, sum(n for _, n in rest))
        lines.append(
            f"| {r['setting']} | {r['threshold']:.4f} | {r['test_frr']:.1%} "
            f"| {r['heldout_events_confusable']}, {r['heldout_events_other']} "
            f"| {r['threshold_without_confusables']:.4f} "
            f"| {r['test_frr_without_confusables']:.1%} | {r['heldout_events_at_it']} "
            f"({r['heldout_events_at_it_without_confusables']}) "
            f"| {worst or '-'} ({len(bad)} of {len(counts)}) | {share:.0%} | {rest_frr:.1%} |"
        )
    return "\n".join(lines)


def probe(work: Path, views: int, talk: bool = True) -> list[dict]:
    """Heads focalmix has no option for, on its cached features: scikit-learn's logistic regression and
    MLPs on ``set/train`` (all rows; ``views`` augmented views of the fit's training rows), the threshold
    just above the highest background window of ``bg_thr`` (no event), scored like the fits.

    Reads the feature cache as ``focalmix.cache`` documents it (``shard-*.json`` keys
    ``path|size|mtime|start|view...`` and ``shard-*.npy`` rows): run after the fits that filled it.
    """
    import soundfile as sf
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score, roc_curve
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    from focalmix import wakeword

    rows = {}
    for meta in (work / "cache").glob("focalmix/*/shard-*.json"):
        info, x = json.loads(meta.read_text()), np.load(meta.with_suffix(".npy"), allow_pickle=False)
        if x.shape[1] != 288:  # 1 s clips only
            continue
        for key, row in zip(info["keys"], x, strict=True):
            path, _, _, start, view = key.split("|")[:5]
            rows[path, float(start), int(view)] = row

    def split(folder: Path, keep_views: int = 0):
        prefix = str(folder) + "/"
        keys = sorted(k for k in rows if k[0].startswith(prefix) and k[2] <= keep_views)
        if not talk:
            keys = [k for k in keys if "/talk-" not in k[0]]
        return keys, np.stack([rows[k] for k in keys])

    ktr, xtr = split(work / "set" / "train", views)
    ytr = np.array(["/wake/" in k[0] for k in ktr], dtype=int)
    scaler = StandardScaler().fit(xtr)
    clips = {}
    for name in ("test", "test_piper"):
        keys, x = split(work / "set" / name)
        clips[name] = (np.array(["/wake/" in k[0] for k in keys], dtype=int), scaler.transform(x))
    background = {}
    for name in ("bg_thr", "bg_held"):
        keys, x = split(work / name)
        files, ids = np.unique([k[0] for k in keys], return_inverse=True)
        hours = sum(sf.info(f).duration for f in files) / 3600
        background[name] = (scaler.transform(x), np.array([k[1] for k in keys]), ids, hours)
    heads = {
        "logistic regression": LogisticRegression(C=1.0, max_iter=2000),
        "MLP 64": MLPClassifier((64,), alpha=1e-3, max_iter=300, early_stopping=True, random_state=0),
        "MLP 128-128": MLPClassifier(
            (128, 128), alpha=1e-3, max_iter=300, early_stopping=True, random_state=0
        ),
    }
    out = []
    for name, head in heads.items():
        head.fit(scaler.transform(xtr), ytr)
        prob = {k: head.predict_proba(v[1])[:, 1] for k, v in clips.items()}
        x, starts, ids, hours = background["bg_thr"]
        threshold = float(np.nextafter(head.predict_proba(x)[:, 1].max(), 1.0))
        x, starts, ids, hours = background["bg_held"]
        held = wakeword.false_accepts(
            head.predict_proba(x)[:, 1], starts, np.array([threshold]), refractory_seconds=1.0, file_ids=ids
        )
        y, p = clips["test"][0], prob["test"]
        fpr, tpr, _ = roc_curve(y, p)
        yp, pp = clips["test_piper"][0], prob["test_piper"]
        out.append({
            "setting": f"probe: {name}, {'talk' if talk else 'no talk'}, aug {views}",
            "test_auroc": float(roc_auc_score(y, p)), "test_recall_fpr05": float(tpr[fpr <= 0.05].max()),
            "threshold": threshold, "test_frr": float((p[y == 1] < threshold).mean()),
            "heldout_false_accepts": int(held[0]), "heldout_fa_per_hour": float(held[0] / hours),
            "val_frr": float("nan"), "val_fa_per_hour": 0.0,
            "piper_recall": float((pp[yp == 1] >= threshold).mean()),
            "piper_auroc": float(roc_auc_score(yp, pp)),
            "epochs": int(np.max(head.n_iter_)), "wall_s": float("nan"), "features_computed": 0,
        })  # fmt: skip
    return out


def _cached_rows(work: Path, width: int) -> dict[tuple[str, float, int], np.ndarray]:
    """Cached features of ``width`` columns of the files as they are now: {(realpath, start, view): row}."""
    rows, current = {}, {}
    for meta in (work / "cache").glob("focalmix/*/shard-*.json"):
        info, x = json.loads(meta.read_text()), np.load(meta.with_suffix(".npy"), allow_pickle=False)
        if x.shape[1] != width:
            continue
        for key, row in zip(info["keys"], x, strict=True):
            path, size, mtime, start, view = key.rsplit("|", 4)
            if path not in current:
                st = os.stat(path) if os.path.exists(path) else None
                current[path] = None if st is None else (str(st.st_size), str(st.st_mtime_ns))
            if current[path] == (size, mtime):  # a file rewritten since has other keys
                rows[path, float(start), int(view)] = row
    return rows


def sequence_probe(work: Path, clip: int, seed: int = 0) -> list[dict]:
    """Heads over the embedding frames, on the cached features of ``set_{clip}s`` (its fit filled them):
    a flat MLP (128) over the concatenated frames, as ``--model.head_hidden_sizes [128]``, and a temporal
    head: a 3-frame convolution (64 filters) slid over the frames, max-pooled over time, so the phrase
    scores the same wherever it sits in the window. Trained with AdamW on 85% of ``train/`` (the best
    epoch on the other 15%), threshold just above the highest ``bg_thr`` window, scored like the fits."""
    import soundfile as sf
    import torch
    from sklearn.metrics import roc_auc_score, roc_curve
    from torch import nn

    from focalmix import wakeword

    frames = {1: 3, 2: 16}[clip]
    rows = _cached_rows(work, frames * 96)
    sets = work / f"set_{clip}s"

    def split(folder: Path):
        prefix = os.path.realpath(folder) + "/"
        keys = sorted(k for k in rows if k[0].startswith(prefix) and k[2] == 0)
        return keys, np.stack([rows[k] for k in keys]).reshape(len(keys), frames, 96)

    ktr, xtr = split(sets / "train")
    ytr = np.array(["/wake/" in k[0] for k in ktr], dtype=np.float32)
    rng = np.random.default_rng(seed)
    val = rng.random(len(ktr)) < 0.15
    data = {name: split(sets / name) for name in ("test", "test_piper")}
    background = {}
    for name in ("bg_thr", "bg_held"):
        keys, x = split(work / name)
        files, ids = np.unique([k[0] for k in keys], return_inverse=True)
        background[name] = (
            x,
            np.array([k[1] for k in keys]),
            ids,
            sum(sf.info(f).duration for f in files) / 3600,
        )

    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(frames * 96, 128), nn.ReLU(), nn.Dropout(0.1),
                                     nn.Linear(128, 1))  # fmt: skip

        def forward(self, x):
            return self.net(x).squeeze(1)

    class Temporal(nn.Module):  # convolutions over the frames (kernel, dilation each), max over time
        def __init__(self, layers=((3, 1),)):
            super().__init__()
            convs, width = [], 96
            for kernel, dilation in layers:
                convs += [nn.Conv1d(width, 64, kernel, dilation=dilation), nn.ReLU()]
                width = 64
            self.conv, self.drop, self.out = nn.Sequential(*convs), nn.Dropout(0.1), nn.Linear(64, 1)

        def forward(self, x):  # (B, T, 96)
            return self.out(self.drop(self.conv(x.transpose(1, 2)).amax(dim=2))).squeeze(1)

    mean, std = xtr[~val].reshape(-1, 96).mean(0), xtr[~val].reshape(-1, 96).std(0) + 1e-6  # per dimension

    def tensor(x):
        return torch.as_tensor((x - mean) / std, dtype=torch.float32)

    out = []
    heads = {"flat MLP 128": Flat, "temporal conv 3 x 64, max over time": Temporal}
    if clip > 1:  # receptive fields of 5-15 frames (0.4-1.2 s): the whole phrase, not a syllable
        heads |= {
            "temporal conv 5 x 64, max over time": partial(Temporal, ((5, 1),)),
            "temporal conv 9 x 64, max over time": partial(Temporal, ((9, 1),)),
            "temporal 2 convs 3 x 64 (dilation 1, 2), max over time": partial(Temporal, ((3, 1), (3, 2))),
            "temporal 3 convs 3 x 64 (dilation 1, 2, 4), max over time": partial(
                Temporal, ((3, 1), (3, 2), (3, 4))
            ),
        }
    for name, make in heads.items():
        torch.manual_seed(seed)
        head = make()
        opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-2)
        x_fit, y_fit = tensor(xtr[~val]), torch.as_tensor(ytr[~val])
        x_val, y_val = tensor(xtr[val]), torch.as_tensor(ytr[val])
        best, state, epochs = np.inf, None, 0
        for epoch in range(60):
            head.train()
            for idx in torch.randperm(len(x_fit)).split(64):
                opt.zero_grad()
                nn.functional.binary_cross_entropy_with_logits(head(x_fit[idx]), y_fit[idx]).backward()
                opt.step()
            head.eval()
            with torch.no_grad():
                loss = float(nn.functional.binary_cross_entropy_with_logits(head(x_val), y_val))
            if loss < best:
                best, state, epochs = loss, {k: v.clone() for k, v in head.state_dict().items()}, epoch + 1
            elif epoch + 1 - epochs >= 8:  # patience 8, as the recipe
                break
        head.load_state_dict(state)

        def prob(x, head=head):
            with torch.no_grad():
                return torch.sigmoid(head(tensor(x))).numpy().astype(np.float64)

        threshold = float(np.nextafter(prob(background["bg_thr"][0]).max(), 1.0))
        x, starts, ids, hours = background["bg_held"]
        held = wakeword.false_accepts(
            prob(x), starts, np.array([threshold]), refractory_seconds=1.0, file_ids=ids
        )
        (kt, xt), (kp, xp) = data["test"], data["test_piper"]
        y, p = np.array(["/wake/" in k[0] for k in kt]), prob(xt)
        yp, pp = np.array(["/wake/" in k[0] for k in kp]), prob(xp)
        fpr, tpr, _ = roc_curve(y, p)
        out.append({
            "setting": f"sequence probe: {clip} s windows, {name}" + (f", seed {seed}" if seed else ""),
            "test_auroc": float(roc_auc_score(y, p)), "test_recall_fpr05": float(tpr[fpr <= 0.05].max()),
            "threshold": threshold, "test_frr": float((p[y] < threshold).mean()),
            "heldout_false_accepts": int(held[0]), "heldout_fa_per_hour": float(held[0] / hours),
            "val_frr": float("nan"), "val_fa_per_hour": 0.0,
            "piper_recall": float((pp[yp] >= threshold).mean()), "piper_auroc": float(roc_auc_score(yp, pp)),
            "epochs": epochs, "wall_s": float("nan"), "features_computed": 0,
        })  # fmt: skip
    return out


def markdown(results: list[dict]) -> str:
    head = ("| setting | test AUROC | recall @FPR<=0.05 | threshold | FRR test/ | FA/h held-out (events) "
            "| val FRR, FA/h | piper recall @thr | piper AUROC | epochs | wall s (computed) |")  # fmt: skip
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        val = f"{r['val_frr']:.1%}, {r['val_fa_per_hour']:.1f}" if r["val_frr"] == r["val_frr"] else "-"
        wall = f"{r['wall_s']:.0f} ({r['features_computed']:,})" if r["wall_s"] == r["wall_s"] else "-"
        lines.append(
            f"| {r['setting']} | {r['test_auroc']:.4f} | {r['test_recall_fpr05']:.3f} | {r['threshold']:.4f} "
            f"| {r['test_frr']:.1%} | {r['heldout_fa_per_hour']:.1f} ({r['heldout_false_accepts']}) | {val} "
            f"| {r['piper_recall']:.1%} | {r['piper_auroc']:.3f} | {r['epochs']} | {wall} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("wakeword-bench"), help="working folder")
    parser.add_argument(
        "--settings",
        nargs="*",
        default=DEFAULT,
        choices=list(SETTINGS),
        metavar="NAME",
        help=f"settings to run, in order; default: {DEFAULT}; all: {list(SETTINGS)}",
    )
    parser.add_argument("--background-seconds", type=float, default=1200.0)
    parser.add_argument("--train-talk-clips", type=int, default=1000)
    parser.add_argument("--rescore", action="store_true", help="score settings in results.json again")
    parser.add_argument("--sequence-probe", type=int, nargs="*", default=None, metavar="SECONDS",
                        help="heads over the frames on set_1s / set_2s (after their fits)")  # fmt: skip
    parser.add_argument("--breakdown", action="store_true",
                        help="the settings' false accepts by what was said, their FRR by voice")  # fmt: skip
    parser.add_argument("--probe-seeds", type=int, nargs="+", default=[0], metavar="SEED",
                        help="the sequence probes' seeds (their split and initialization)")  # fmt: skip
    parser.add_argument("--probe", type=int, nargs="*", default=None, metavar="VIEWS",
                        help="sklearn heads on the cached features, with these augmented views")  # fmt: skip
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    prepare(work, args.background_seconds, args.train_talk_clips)
    env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache")}
    results_path = work / "results.json"
    done = {r["setting"]: r for r in json.loads(results_path.read_text())} if results_path.exists() else {}
    for name in args.settings:
        if name in done and not args.rescore:  # measured before: its row as it was
            continue
        done[name] = run(name, work, env)
        results_path.write_text(json.dumps(list(done.values()), indent=1))
        print(markdown([done[name]]).splitlines()[-1], flush=True)
    if args.breakdown:
        print(breakdown_markdown([breakdown(name, work, env) for name in args.settings]))
    probes = [
        r for views in (args.probe or [0] if args.probe is not None else []) for r in probe(work, views)
    ]
    clips = args.sequence_probe or [1, 2] if args.sequence_probe is not None else []
    probes += [r for clip in clips for seed in args.probe_seeds for r in sequence_probe(work, clip, seed)]
    print(markdown([done[n] for n in args.settings] + probes))


if __name__ == "__main__":
    main()
