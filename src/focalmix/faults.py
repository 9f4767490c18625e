"""Surviving faults: artifacts written whole or not at all, and the random state a resumed run needs.

* :func:`atomic_write` yields a temporary path in the destination's folder and renames it into place
  only when the block finishes, so a kill or a full disk never leaves a half-written file under the
  final name (``os.replace`` is atomic on POSIX and Windows within one filesystem).
* :func:`capture_rng_state` / :func:`restore_rng_state` save and restore every global random stream a
  training step depends on (torch CPU and CUDA, numpy, Python), so a run resumed from a checkpoint
  draws the same numbers as the run it replaces.
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; rename it to ``path`` when the block succeeds.

    On an exception the temporary file is removed and ``path`` is left as it was. The folder is created.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "a.txt"
        >>> with atomic_write(out) as tmp:
        ...     _ = tmp.write_text("whole")
        >>> out.read_text()
        'whole'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def capture_rng_state() -> dict[str, Any]:
    """The global random states: torch (CPU and every CUDA device), numpy and Python's ``random``."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` returned (CUDA states only where the devices match)."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
