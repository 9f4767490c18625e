"""Feature cache: hits and misses on real files, namespaces, damaged and interrupted writes, no pickle,
concurrent writers, and DDP sharing over a real 2-process gloo group.

Subprocess cases run this file as a script (``python tests/test_cache.py CASE ARGS``); each has a timeout
and its process group is killed on expiry, so a hang fails instead of blocking the suite.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from focalmix import cache as cache_mod
from focalmix import cache_store
from focalmix.cache import FeatureCache, compute_features, default_cache_dir, file_key, namespace

DIM = 8  # feature width of the toy encoder
HOUR = 3600
TIMEOUT_S = 180
SRC = Path(__file__).resolve().parents[1] / "src"


def features_of(path: str) -> np.ndarray:
    """The toy backbone: a byte histogram and the length, a deterministic function of the file content."""
    data = np.frombuffer(Path(path).read_bytes(), dtype=np.uint8)
    hist = np.bincount(data % (DIM - 1), minlength=DIM - 1) / max(len(data), 1)
    return np.append(hist, len(data)).astype(np.float32)


class Encoder:
    """encode(positions) for compute_features that records which positions it was asked for."""

    def __init__(self, paths: list[str], calls_file: str | None = None, delay: float = 0.0) -> None:
        self.paths, self.calls_file, self.delay = paths, calls_file, delay
        self.calls: list[int] = []

    def __call__(self, positions: list[int]) -> np.ndarray:
        self.calls.extend(positions)
        if self.calls_file:
            with open(self.calls_file, "a") as f:
                f.write("".join(f"{p}\n" for p in positions))
        time.sleep(self.delay)
        return np.stack([features_of(self.paths[i]) for i in positions])


def make_files(folder: Path, count: int, seed: int = 0) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"item{i:03d}.bin"
        path.write_bytes(rng.integers(0, 256, size=int(rng.integers(50, 400)), dtype=np.uint8).tobytes())
        paths.append(str(path))
    return paths


def reference(paths: list[str]) -> np.ndarray:
    return np.stack([features_of(p) for p in paths])


def run(paths, cache, **kwargs):
    enc = Encoder(paths)
    feats, stats = compute_features([file_key(p) for p in paths], enc, cache, **kwargs)
    return feats, stats, enc.calls


@pytest.fixture
def files(tmp_path):
    return make_files(tmp_path / "data", 24)


@pytest.fixture
def cache(tmp_path):
    return FeatureCache(tmp_path / "cache", namespace("toy@sha256:0", {"clip_s": 1.0}))


# ---------------------------------------------------------------- keys, namespaces, folders


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "focalmix"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert default_cache_dir() == Path.home() / ".cache" / "focalmix"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "focalmix"


def test_file_key_names_one_version_of_one_item(files, tmp_path):
    path = files[0]
    key = file_key(path)
    assert key == file_key(path) and key.startswith(os.path.realpath(path) + "|")
    link = tmp_path / "link.bin"
    link.symlink_to(path)
    assert file_key(link) == key
    assert len({key, file_key(path, start=0.5), file_key(path, view=1), file_key(files[1])}) == 4
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert file_key(path) != key


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"start": -1.0}, ValueError, "`start`"),
        ({"start": float("nan")}, ValueError, "`start`"),
        ({"view": -1}, ValueError, "`view`"),
        ({"view": 1.0}, TypeError, "`view`"),
    ],
)
def test_file_key_rejects_bad_input(files, kwargs, error, match):
    with pytest.raises(error, match=match):
        file_key(files[0], **kwargs)


def test_file_key_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        file_key(tmp_path / "nope.wav")


def test_namespace_is_canonical_and_separates():
    base = namespace("cnn@sha256:1", {"size": 224, "aug": {"seed": 0, "p": 0.5}})
    assert base == namespace("cnn@sha256:1", {"aug": {"p": 0.5, "seed": 0}, "size": 224})
    assert base != namespace("cnn@sha256:2", {"size": 224, "aug": {"seed": 0, "p": 0.5}})
    assert base != namespace("cnn@sha256:1", {"size": 256, "aug": {"seed": 0, "p": 0.5}})
    FeatureCache("unused", base)  # usable as a folder name


@pytest.mark.parametrize(
    "identity, settings, error, match",
    [
        ("", {}, ValueError, "`backbone_identity`"),
        ("cnn", [], TypeError, "`settings` must be a dict"),
        ("cnn", {"root": Path("/x")}, TypeError, "JSON values"),
        ("cnn", {"gain": float("nan")}, ValueError, "NaN"),
    ],
)
def test_namespace_rejects_bad_input(identity, settings, error, match):
    with pytest.raises(error, match=match):
        namespace(identity, settings)


@pytest.mark.parametrize(
    "root, ns, error, match",
    [
        (None, "ns", TypeError, "cache=None"),
        (3, "ns", TypeError, "`root`"),
        ("x", "../escape", ValueError, "`namespace`"),
        ("x", "", ValueError, "`namespace`"),
    ],
)
def test_feature_cache_rejects_bad_input(root, ns, error, match):
    with pytest.raises(error, match=match):
        FeatureCache(root, ns)


def test_feature_cache_root_must_not_be_a_file(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        FeatureCache(tmp_path / "f", "ns")


# ---------------------------------------------------------------- hits and misses


def test_second_run_reads_everything_from_cache(files, cache):
    first, stats, calls = run(files, cache, batch_size=5)
    assert sorted(calls) == list(range(len(files)))
    np.testing.assert_array_equal(first, reference(files))
    assert stats["computed"] == len(files) and stats["from_cache"] == 0 and first.dtype == np.float32
    again, stats, calls = run(files, FeatureCache(cache.root, cache.namespace))  # a fresh process's view
    assert calls == [] and stats["from_cache"] == len(files) and stats["items_per_s"] == 0.0
    assert np.array_equal(again, first)


def test_touched_rewritten_added_removed(files, cache, tmp_path):
    run(files, cache)
    st = os.stat(files[3])
    os.utime(files[3], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    feats, _, calls = run(files, cache)
    assert calls == [3]
    np.testing.assert_array_equal(feats, reference(files))

    Path(files[5]).write_bytes(b"rewritten with other content")
    feats, _, calls = run(files, cache)
    assert calls == [5]
    np.testing.assert_array_equal(feats, reference(files))

    grown = [*files, *make_files(tmp_path / "more", 1, seed=1)]
    feats, _, calls = run(grown, cache)
    assert calls == [len(files)]
    np.testing.assert_array_equal(feats, reference(grown))

    os.remove(files[0])
    feats, _, calls = run(grown[1:], cache)
    assert calls == []
    np.testing.assert_array_equal(feats, reference(grown[1:]))


def test_namespaces_never_mix(files, cache):
    run(files, cache)
    for ns in (namespace("toy@sha256:1", {"clip_s": 1.0}), namespace("toy@sha256:0", {"clip_s": 2.0})):
        other = FeatureCache(cache.root, ns)
        _, _, calls = run(files, other)
        assert sorted(calls) == list(range(len(files)))
        assert other.folder.parent == cache.folder.parent and other.folder != cache.folder
    other.clear()
    assert not other.folder.exists() and cache.lookup([file_key(p) for p in files])[1].all()


def test_lookup_store_roundtrip_and_tensors(cache):
    torch = pytest.importorskip("torch")
    rows = np.arange(3 * DIM, dtype=np.float32).reshape(3, DIM)
    cache.store(["a", "b"], torch.from_numpy(rows[:2]).to(torch.bfloat16).float())
    cache.store(["b", "c"], rows[1:])  # a key held by two shards: either row is the same
    cache.store([], np.zeros((0, DIM)))
    feats, hit = cache.lookup(["c", "missing", "a", "b"])
    assert hit.tolist() == [True, False, True, True]
    np.testing.assert_array_equal(feats[[0, 2, 3]], rows[[2, 0, 1]])
    assert not feats[1].any()
    assert cache.lookup(["missing"]) == (None, cache.lookup(["missing"])[1])
    assert len(list(cache.folder.glob("shard-*.json"))) == 2


def test_a_key_in_two_shards_reads_the_same_row_in_every_process(cache, monkeypatch):
    names = iter(["f" * 32, "0" * 32])  # the second shard sorts first
    monkeypatch.setattr(cache_store.uuid, "uuid4", lambda: type("U", (), {"hex": next(names)}))
    cache.store(["k"], np.zeros((1, DIM)))
    early = FeatureCache(cache.root, cache.namespace)
    assert early.lookup(["k"])[1].all()  # indexed the first shard before the second existed
    cache.store(["k"], np.ones((1, DIM)))  # breaks the "equal features" rule on purpose, to see the choice
    late = FeatureCache(cache.root, cache.namespace)
    assert np.array_equal(early.lookup(["k"])[0], late.lookup(["k"])[0])


@pytest.mark.parametrize(
    "keys, features, error, match",
    [
        (["a", "b"], np.zeros((1, DIM)), ValueError, "2 rows"),
        (["a"], np.zeros(DIM), ValueError, "2-D"),
        ([1], np.zeros((1, DIM)), TypeError, "`keys`"),
    ],
)
def test_store_rejects_bad_input(cache, keys, features, error, match):
    with pytest.raises(error, match=match):
        cache.store(keys, features)


def test_size_bytes_and_clear(files, cache):
    assert cache.size_bytes() == 0
    run(files, cache, shard_rows=10)
    on_disk = sum(p.stat().st_size for p in cache.folder.iterdir())
    assert cache.size_bytes() == on_disk > len(files) * DIM * np.dtype(np.float32).itemsize
    cache.clear()
    assert cache.size_bytes() == 0 and not cache.folder.exists()
    _, _, calls = run(files, cache)
    assert len(calls) == len(files)


def test_shards_hold_at_most_shard_rows_plus_a_batch(files, cache):
    shard_rows, batch = 7, 3
    run(files, cache, batch_size=batch, shard_rows=shard_rows)
    sizes = [json.loads(p.read_text())["n"] for p in cache.folder.glob("shard-*.json")]
    assert sum(sizes) == len(files) and max(sizes) < shard_rows + batch


def test_progress_lines(files, cache, monkeypatch):
    lines: list[str] = []
    batch = 5
    monkeypatch.setattr(cache_mod, "PROGRESS_EVERY_S", 0.0)
    _, stats, _ = run(files, cache, batch_size=batch, progress=lines.append, label="features train")
    assert len(lines) == -(-len(files) // batch) + 1
    assert lines[-1].startswith(
        f"focalmix: features train: {len(files):,} items, 0 from cache, {len(files):,} computed ("
    )
    monkeypatch.setattr(cache_mod, "PROGRESS_EVERY_S", float(HOUR))
    lines.clear()
    _, stats, _ = run(files, cache, progress=lines.append)
    assert lines == [f"focalmix: features: {len(files):,} items, {len(files):,} from cache, 0 computed"]
    assert set(stats) == {"total", "from_cache", "computed", "from_ranks", "seconds", "items_per_s"}


def _no_encode(positions):
    raise AssertionError("not called")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"encode": "encoder"}, TypeError, "`encode`"),
        ({"cache": "folder"}, TypeError, "`cache`"),
        ({"batch_size": 0}, ValueError, "`batch_size`"),
        ({"shard_rows": 0}, ValueError, "`shard_rows`"),
        ({"world_size": 2, "rank": 2}, ValueError, "`rank`"),
        ({"world_size": 2, "rank": 1}, ValueError, "`all_gather`"),
        ({"keys": "abc"}, TypeError, "`keys`"),
    ],
)
def test_compute_features_rejects_bad_input(kwargs, error, match):
    args = {"keys": ["a"], "encode": _no_encode, "cache": None, **kwargs}
    with pytest.raises(error, match=match):
        compute_features(**args)


def test_compute_features_needs_barrier_with_cache_under_ddp(cache):
    with pytest.raises(ValueError, match="`barrier`"):
        compute_features(["a"], _no_encode, cache, world_size=2)


def test_encode_of_wrong_shape_is_refused(cache):
    with pytest.raises(ValueError, match="2 rows"):
        compute_features(["a", "b"], lambda pos: np.zeros((1, DIM)), cache, batch_size=2)
    cache.store(["a"], np.zeros((1, DIM)))
    with pytest.raises(ValueError, match="new namespace"):
        compute_features(["a", "b"], lambda pos: np.zeros((len(pos), DIM + 1)), cache)


def test_full_disk_warns_and_continues(files, cache, monkeypatch):
    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache_mod.np.lib.format, "write_array", no_space)
    with pytest.warns(RuntimeWarning, match="continuing without storing"):
        feats, _, _ = run(files, cache, shard_rows=5)
    np.testing.assert_array_equal(feats, reference(files))
    assert list(cache.folder.iterdir()) == []  # the temp file went with the failed write


def test_interrupted_encode_keeps_what_was_computed(files, cache):
    keys, batch = [file_key(p) for p in files], 4
    done = Encoder(files)

    def fails_late(positions):
        if len(done.calls) >= len(files) // 2:
            raise KeyboardInterrupt
        return done(positions)

    with pytest.raises(KeyboardInterrupt):
        compute_features(keys, fails_late, cache, batch_size=batch)
    assert cache.lookup(keys)[1].sum() == len(done.calls)


# ---------------------------------------------------------------- damaged, stale and hostile files


def _damage_truncate_npy(shard: Path) -> None:
    data = shard.with_suffix(".npy")
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])


def _damage_garbage_json(shard: Path) -> None:
    shard.write_text('{"format": 1, "keys": [')


def _damage_wrong_count(shard: Path) -> None:
    meta = json.loads(shard.read_text())
    shard.write_text(json.dumps({**meta, "n": meta["n"] + 1, "keys": [*meta["keys"], "extra"]}))


def _damage_missing_npy(shard: Path) -> None:
    shard.with_suffix(".npy").unlink()


def _damage_float64_npy(shard: Path) -> None:
    data = shard.with_suffix(".npy")
    np.save(data, np.load(data).astype(np.float64))


@pytest.mark.parametrize(
    "damage",
    [
        _damage_truncate_npy,
        _damage_garbage_json,
        _damage_wrong_count,
        _damage_missing_npy,
        _damage_float64_npy,
    ],
)
def test_damaged_shard_is_ignored_with_one_warning(files, cache, damage):
    shard_rows = len(files) // 3
    run(files, cache, batch_size=shard_rows, shard_rows=shard_rows)
    shard = sorted(cache.folder.glob("shard-*.json"))[0]
    lost = set(json.loads(shard.read_text())["keys"])
    damage(shard)
    fresh = FeatureCache(cache.root, cache.namespace)
    with pytest.warns(RuntimeWarning, match="damaged cache shard") as record:
        feats, _, calls = run(files, fresh)
    assert len([w for w in record if "damaged" in str(w.message)]) == 1
    assert {file_key(files[i]) for i in calls} == lost
    np.testing.assert_array_equal(feats, reference(files))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # removed, so not warned about again
        assert FeatureCache(cache.root, cache.namespace).lookup([file_key(p) for p in files])[1].all()


class _Trap:
    """Unpickling this makes a folder: proof that a pickle was run."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return os.mkdir, (str(self.sentinel),)


@pytest.mark.parametrize("kind", ["object_npy", "raw_pickle"])
def test_pickled_shard_is_never_unpickled(cache, tmp_path, monkeypatch, kind):
    sentinel = tmp_path / "pwned"
    cache.folder.mkdir(parents=True)
    payload = np.array([[_Trap(sentinel)]], dtype=object)
    data = cache.folder / "shard-evil.npy"
    if kind == "object_npy":
        np.save(data, payload, allow_pickle=True)
    else:
        import pickle

        data.write_bytes(pickle.dumps(payload))
    meta = {"format": 1, "dtype": "float32", "n": 1, "dim": 1, "keys": ["k"]}
    (cache.folder / "shard-evil.json").write_text(json.dumps(meta))
    loads: list[object] = []
    real_load = np.load
    monkeypatch.setattr(
        cache_mod.np, "load", lambda *a, **kw: loads.append(kw.get("allow_pickle")) or real_load(*a, **kw)
    )
    with pytest.warns(RuntimeWarning, match="damaged"):
        feats, hit = cache.lookup(["k"])
    assert feats is None and not hit.any() and not sentinel.exists()
    assert loads and all(flag is False for flag in loads)


def test_uncommitted_leftovers_are_ignored_then_cleaned(files, cache):
    keys = [file_key(p) for p in files]
    cache.store(keys[:2], reference(files[:2]))
    orphan = cache.folder / "shard-orphan.npy"  # a writer killed between the .npy and its JSON
    np.save(orphan, reference(files[2:4]))
    temp = cache.folder / ".shard-dead.json.tmp"  # a writer killed mid-write
    temp.write_text('{"keys": ["' + keys[4] + '"')
    stranger = cache.folder / "notes.txt"
    stranger.write_text("not ours")
    assert cache.lookup(keys[:5])[1].tolist() == [True, True, False, False, False]
    assert orphan.exists() and temp.exists()  # young: may belong to a live writer
    old = time.time() - 2 * HOUR
    for path in (orphan, temp, stranger):
        os.utime(path, (old, old))
    assert cache.lookup(keys[:5])[1].sum() == 2
    assert not orphan.exists() and not temp.exists() and stranger.exists()


def test_newer_format_is_left_alone(cache):
    cache.store(["a"], np.ones((1, DIM)))
    shard = next(cache.folder.glob("shard-*.json"))
    shard.write_text(json.dumps({**json.loads(shard.read_text()), "format": cache_mod.FORMAT_VERSION + 1}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert FeatureCache(cache.root, cache.namespace).lookup(["a"])[1].tolist() == [False]
    assert shard.exists()


# ---------------------------------------------------------------- subprocesses: kills, concurrency, DDP


def _start(*args: str, env: dict | None = None) -> subprocess.Popen:
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, __file__, *args],
        env={**full_env, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, killed as a whole on timeout
    )


def _finish(procs: list[subprocess.Popen], ok: tuple[int, ...] = (0,)) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=max(deadline - time.monotonic(), 1))
            assert proc.returncode in ok, f"exit {proc.returncode}:\n{out[-2000:]}\n{err[-4000:]}"
    except subprocess.TimeoutExpired:
        pytest.fail(f"subprocess hung for {TIMEOUT_S} s")
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()


def _write_paths(tmp_path: Path, paths: list[str]) -> str:
    listing = tmp_path / "paths.json"
    listing.write_text(json.dumps(paths))
    return str(listing)


def _wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            _finish([proc])
            pytest.fail(f"{path.name} never appeared")
        time.sleep(0.01)


def test_kill_9_while_encoding_loses_only_the_unstored(files, cache, tmp_path):
    batch, stop_at = 4, 3  # shard_rows == batch: each finished batch is committed
    ready = tmp_path / "ready"
    args = [
        _write_paths(tmp_path, files),
        str(cache.root),
        cache.namespace,
        str(ready),
        str(batch),
        str(stop_at),
    ]
    proc = _start("hang", *args)
    _wait_for(ready, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    _finish([proc], ok=(-signal.SIGKILL,))
    keys = [file_key(p) for p in files]
    feats, hit = cache.lookup(keys)
    assert hit.sum() == (stop_at - 1) * batch
    np.testing.assert_array_equal(feats[hit], reference(files)[hit])
    again, _, calls = run(files, cache)
    assert sorted(calls) == np.flatnonzero(~hit).tolist()
    np.testing.assert_array_equal(again, reference(files))


def test_kill_9_between_npy_and_json_is_never_read(files, cache, tmp_path):
    rows, kill_at = 5, 2  # killed just before the second shard's commit marker lands
    proc = _start(
        "die_in_store",
        _write_paths(tmp_path, files),
        str(cache.root),
        cache.namespace,
        str(rows),
        str(kill_at),
    )
    _finish([proc], ok=(-signal.SIGKILL,))
    committed = {p.stem for p in cache.folder.glob("shard-*.json")}
    orphans = [p for p in cache.folder.glob("shard-*.npy") if p.stem not in committed]
    assert len(committed) == kill_at - 1 and len(orphans) == 1
    assert len(list(cache.folder.glob(".shard-*.json.tmp"))) == 1
    hit = cache.lookup([file_key(p) for p in files])[1]
    assert hit.sum() == (kill_at - 1) * rows
    again, _, calls = run(files, cache)
    assert sorted(calls) == np.flatnonzero(~hit).tolist()
    np.testing.assert_array_equal(again, reference(files))


def test_two_processes_fill_one_cache_at_once(files, cache, tmp_path):
    go = tmp_path / "go"
    listing = _write_paths(tmp_path, files)
    outs = [tmp_path / f"feats{i}.npy" for i in range(2)]
    procs = [_start("fill", listing, str(cache.root), cache.namespace, str(go), str(out)) for out in outs]
    go.touch()
    _finish(procs)
    first, second = (np.load(out) for out in outs)
    assert np.array_equal(first, second)
    np.testing.assert_array_equal(first, reference(files))
    again, _, calls = run(files, FeatureCache(cache.root, cache.namespace))
    assert calls == [] and np.array_equal(again, first)
    assert not list(cache.folder.glob(".*.tmp"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_ranks_encode_each_item_once(files, cache, tmp_path):
    keys = [file_key(p) for p in files]
    cached = list(range(0, len(files), 3))  # some items are in the cache before the run
    cache.store([keys[i] for i in cached], reference([files[i] for i in cached]))
    listing, out = _write_paths(tmp_path, files), tmp_path / "ddp"
    out.mkdir()
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2"}
    if sys.platform.startswith("linux"):
        env["GLOO_SOCKET_IFNAME"] = "lo"
    procs = [
        _start("ddp", listing, str(cache.root), cache.namespace, str(out), env={**env, "RANK": str(r)})
        for r in (0, 1)
    ]
    _finish(procs)
    single, _, _ = run(files, None)
    for case, expected in (
        ("cache", set(range(len(files))) - set(cached)),
        ("gather", set(range(len(files)))),
    ):
        calls = [[int(x) for x in (out / f"{case}-calls{r}.txt").read_text().split()] for r in (0, 1)]
        assert sorted(calls[0] + calls[1]) == sorted(expected)  # each item once in total
        assert all(calls), "both ranks share the work"
        feats = [np.load(out / f"{case}-feats{r}.npy") for r in (0, 1)]
        assert np.array_equal(feats[0], feats[1]) and np.array_equal(feats[0], single)
        stats = [json.loads((out / f"{case}-stats{r}.json").read_text()) for r in (0, 1)]
        for s, c in zip(stats, calls, strict=True):
            assert s["from_cache"] + s["computed"] + s["from_ranks"] == len(files) and s["computed"] == len(c)


def test_ddp_a_late_rank_splits_the_same_missing_items(files, cache):
    # Rank 1 starts late, as a loaded machine schedules it: rank 0 must not store its share before rank 1
    # has looked the keys up, else rank 1 sees fewer missing items, splits them otherwise, and items are
    # computed twice (and "computed by other ranks" but absent ones again, with a warning).
    import threading

    cached = list(range(0, len(files), 3))
    cache.store([file_key(files[i]) for i in cached], reference([files[i] for i in cached]))
    gate, results = threading.Barrier(2, timeout=30), {}

    def rank(r):
        if r == 1:
            time.sleep(0.5)
        own = FeatureCache(cache.root, cache.namespace)  # a process of its own, with its own index
        results[r] = run(files, own, rank=r, world_size=2, barrier=gate.wait, batch_size=2, shard_rows=2)

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "not in the cache folder" warning
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    calls = results[0][2] + results[1][2]
    assert sorted(calls) == sorted(set(range(len(files))) - set(cached)) and results[0][2] and results[1][2]
    for feats, _, _ in results.values():
        np.testing.assert_array_equal(feats, reference(files))


def test_ddp_items_missing_after_barrier_are_computed_here(files, cache):
    # rank 1 never runs, as when the cache folder is not shared between machines
    with pytest.warns(RuntimeWarning, match="shared by all ranks"):
        feats, stats, calls = run(files, cache, rank=0, world_size=2, barrier=lambda: None)
    assert sorted(calls) == list(range(len(files))) and stats["computed"] == len(files)
    np.testing.assert_array_equal(feats, reference(files))


# ---------------------------------------------------------------- script mode for the subprocess cases


def _script(case: str, listing: str, root: str, ns: str, *rest: str) -> None:
    paths = json.loads(Path(listing).read_text())
    keys = [file_key(p) for p in paths]
    cache = FeatureCache(root, ns)
    if case == "hang":
        ready, batch, stop_at = Path(rest[0]), int(rest[1]), int(rest[2])
        enc = Encoder(paths)

        def encode(positions):
            if len(enc.calls) == (stop_at - 1) * batch:
                ready.touch()
                time.sleep(10 * TIMEOUT_S)
            return enc(positions)

        compute_features(keys, encode, cache, batch_size=batch, shard_rows=batch)
    elif case == "die_in_store":
        rows, kill_at, real_replace, commits = int(rest[0]), int(rest[1]), os.replace, []

        def replace(src, dst):
            if str(dst).endswith(".json"):
                commits.append(dst)
                if len(commits) == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
            real_replace(src, dst)

        os.replace = replace
        compute_features(keys, Encoder(paths), cache, batch_size=rows, shard_rows=rows)
    elif case == "fill":
        go, out = Path(rest[0]), rest[1]
        while not go.exists():
            time.sleep(0.005)
        feats, _ = compute_features(keys, Encoder(paths, delay=0.005), cache, batch_size=2, shard_rows=2)
        np.save(out, feats)
    elif case == "ddp":
        _script_ddp(paths, keys, cache, Path(rest[0]))


def _script_ddp(paths: list[str], keys: list[str], cache: FeatureCache, out: Path) -> None:
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", timeout=timedelta(seconds=TIMEOUT_S // 2))
    rank, world = dist.get_rank(), dist.get_world_size()

    def gather(t):  # Lightning's strategy.all_gather contract: (world_size, *t.shape)
        parts = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(parts, t)
        return torch.stack(parts)

    for case, store in (("cache", cache), ("gather", None)):
        enc = Encoder(paths, calls_file=str(out / f"{case}-calls{rank}.txt"))
        (out / f"{case}-calls{rank}.txt").touch()
        feats, stats = compute_features(
            keys,
            enc,
            store,
            batch_size=3,
            rank=rank,
            world_size=world,
            barrier=dist.barrier,
            all_gather=gather,
        )
        np.save(out / f"{case}-feats{rank}.npy", feats)
        (out / f"{case}-stats{rank}.json").write_text(json.dumps(stats))
    dist.destroy_process_group()


if __name__ == "__main__":
    _script(*sys.argv[1:])
