"""Run ``focalmix`` as users do, in a subprocess that cannot hang the suite; share runs between tests.

* :func:`run_focalmix` starts ``python -m focalmix ARGS`` in its own session (``start_new_session=True``)
  and, past ``timeout``, kills its whole process group and every process it started (a DDP rank, a
  torchrun worker in a session of its own), so a deadlock fails in ``timeout`` seconds instead of
  waiting for gloo's 30-minute collective timeout (gloo reads no environment variable for it).
* :func:`run_torchrun_nodes` does the same for torchrun "nodes" on the loopback interface, retrying on
  another port when the rendezvous port is taken.
* :func:`shared_run` runs a command once per pytest session even under pytest-xdist, where a session-
  or module-scoped fixture runs once in every worker that draws one of the tests using it.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KILLED = "[tests/_run.py: killed the process tree: {why}]"


def focalmix_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a `focalmix` subprocess: the caller's, plus the repository root on PYTHONPATH.

    The root makes ``tests._faults_helpers`` importable (``--trainer.callbacks+=tests...``) from a tmp
    folder. An inherited PYTHONPATH stays in front, so ``PYTHONPATH=/other/src pytest ...`` tests that
    source tree. One intra-op thread: the models are tiny and the machine's cores are shared.
    """
    inherited = {k: v for k, v in os.environ.items() if k != "PL_GLOBAL_SEED"}  # an earlier fit's seed
    merged = {**inherited, "OMP_NUM_THREADS": "1", **(env or {})}
    paths = [p for p in merged.get("PYTHONPATH", "").split(os.pathsep) if p]
    merged["PYTHONPATH"] = os.pathsep.join([*paths, str(ROOT)])
    return merged


def run_focalmix(
    args: Sequence[str], cwd: Path, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``python -m focalmix ARGS`` in ``cwd``; on timeout the process tree is killed and the result says so.

    Returns a CompletedProcess (``returncode`` -9 and :data:`KILLED` at the end of ``stderr`` after a
    kill): a shared run records a hang once instead of raising it into every test that uses it.
    """
    return run_command([sys.executable, "-m", "focalmix", *args], cwd, timeout, env)


def run_command(
    cmd: Sequence[str], cwd: Path, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    (proc,) = _start([list(cmd)], cwd, env)
    return _finish([proc], timeout)[0]


def run_torchrun_nodes(
    focalmix_args: Sequence[str], cwd: Path, timeout: float, nodes: int = 2, attempts: int = 3
) -> list[subprocess.CompletedProcess]:
    """``torchrun --nnodes N --nproc-per-node 1 ... -m focalmix ARGS`` as N nodes on 127.0.0.1.

    The port: asking the kernel for a free one (bind to port 0, close, hand the number to torchrun)
    leaves a gap in which another process (another xdist worker, gloo's own sockets) can take it, and
    numbers from the kernel's ephemeral range are the likeliest to be taken. So the port is drawn from
    below that range (20000-32767), node 0 is told to host the rendezvous store (``is_host``: it binds
    the port or fails at once, where the default would fall back to connecting to whatever holds it),
    and a bind failure ("address already in use") is retried on another port.
    """
    rng = random.Random()  # not the tests' seeded streams: parallel workers must draw different ports
    for attempt in range(attempts):
        port = rng.randrange(20000, 32768)
        cmds = [
            [
                sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes),
                "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                "--rdzv-conf", f"is_host={int(node == 0)}", "-m", "focalmix", *focalmix_args,
            ]
            for node in range(nodes)
        ]  # fmt: skip
        results = _finish(_start(cmds, cwd, None), timeout)
        taken = any(re.search(r"address already in use", r.stdout + r.stderr, re.I) for r in results)
        if not (taken and attempt < attempts - 1):
            return results
    raise AssertionError("unreachable")


def output_of(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def check_ok(proc: subprocess.CompletedProcess, what: str = "focalmix") -> str:
    """Fail with the command's last lines unless it exited 0; returns stdout + stderr."""
    out = output_of(proc)
    if proc.returncode != 0:
        hung = "HUNG (killed): " if KILLED.split("{")[0] in proc.stderr else ""
        raise AssertionError(f"{hung}{what} exited {proc.returncode}:\n{out[-4000:]}")
    return out


def shared_folder(tmp_path_factory, name: str, fill: Callable[[Path], object]) -> tuple[Path, object]:
    """``fill(folder)`` once per test session, shared by every xdist worker; returns (folder, its result).

    The first worker to ask runs it under a file lock and records the result as JSON (a failure or a
    hang too, so that it is not run again); the others wait for the lock and read the record.
    """
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the session's folder above gw0, gw1, ...
    shared = base / "shared"
    shared.mkdir(exist_ok=True)
    folder, record = shared / name, shared / f"{name}.json"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not record.is_file():
            folder.mkdir()
            record.write_text(json.dumps(_encode(fill(folder))))
        return folder, _decode(json.loads(record.read_text()))


def shared_run(
    tmp_path_factory, name: str, make: Callable[[Path], subprocess.CompletedProcess | list]
) -> tuple[Path, subprocess.CompletedProcess | list]:
    """:func:`shared_folder` for a run (or a list of runs) of `focalmix`: (its folder, its result)."""
    return shared_folder(tmp_path_factory, name, make)  # type: ignore[return-value]


def _encode(value: object) -> object:
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, subprocess.CompletedProcess):
        return {"__proc__": [value.args, value.returncode, value.stdout, value.stderr]}
    return value


def _decode(value: object) -> object:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict) and "__proc__" in value:
        return subprocess.CompletedProcess(*value["__proc__"])
    return value


# ------------------------------------------------------------------------------------------------------


def _start(cmds: list[list[str]], cwd: Path, env: dict[str, str] | None) -> list[tuple]:
    started = []
    for cmd in cmds:
        # files, not pipes: a pipe that fills while another process is waited on blocks its writer, and
        # a pipe held open by an orphaned rank would block the read after a kill
        out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=focalmix_env(env),
            stdout=out,
            stderr=err,
            text=True,
            start_new_session=True,  # its own process group: one killpg reaches every rank it launches
        )
        started.append((proc, out, err))
    return started


def _finish(started: list[tuple], timeout: float, grace: float = 20.0) -> list[subprocess.CompletedProcess]:
    """Wait for every process; past ``timeout``, or ``grace`` seconds after one of them failed (its peers
    would wait for it until a rendezvous or collective timeout), kill what is left."""
    deadline, why = time.monotonic() + timeout, f"no exit after {timeout} s"
    while True:
        codes = [proc.poll() for proc, _, _ in started]
        if all(code is not None for code in codes):
            break
        if any(code not in (None, 0) for code in codes):
            if grace != math.inf and time.monotonic() + grace < deadline:
                deadline, why = time.monotonic() + grace, f"still running {grace} s after a peer failed"
            grace = math.inf  # counted from the first failure
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    results = []
    for proc, out, err in started:
        hung = proc.poll() is None
        _kill(proc)  # after a normal exit too: a rank left behind in the group by a launcher that exited
        proc.wait()
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
        out.close(), err.close()
        if hung:
            stderr += "\n" + KILLED.format(why=why)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return results


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the process group of ``proc`` and of every descendant (torchrun starts its workers in
    sessions of their own, which a killpg of the launcher's group would miss)."""
    # found first: a process's children go to init the moment it dies, out of reach of the search
    descendants = _descendants(proc.pid) if proc.poll() is None else []
    # the group's id is the leader's pid (start_new_session), valid while any member lives
    _ignore_gone(os.killpg, proc.pid, signal.SIGKILL)
    ours = os.getpgrp()
    for pid in descendants:
        try:
            group = os.getpgid(pid)
        except ProcessLookupError:
            continue
        if group != ours:
            _ignore_gone(os.killpg, group, signal.SIGKILL)
        _ignore_gone(os.kill, pid, signal.SIGKILL)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _ignore_gone(fn: Callable, *args: int) -> None:
    try:
        fn(*args)
    except (ProcessLookupError, PermissionError):
        pass
