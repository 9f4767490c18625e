"""What every pretrained adapter shares: frozen weights, an identity for cache keys, lazy ONNX sessions.

A frozen backbone never trains: its parameters have ``requires_grad=False`` and ``train()`` keeps it in
eval mode (no dropout, no batch-norm statistics updates), so its features can be computed once and
cached. :meth:`FrozenBackbone.identity` names the class, its settings and a digest of its weights: the
feature cache keys on it.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from focalmix._checks import Instance, Satisfies, check


class FrozenBackbone(nn.Module):
    """Base class of the pretrained adapters: frozen, eval mode always, identity and config for rebuilds.

    Subclasses set ``input_spec`` and ``out_features`` in ``__init__``, call :meth:`_freeze` once their
    weights are loaded, and implement :meth:`config` and :meth:`_digest`.
    """

    frozen = True

    def _freeze(self) -> None:
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FrozenBackbone:
        """Stay in eval mode whatever ``mode`` is: a frozen backbone's outputs never depend on it."""
        return super().train(False)

    def config(self) -> dict[str, Any]:
        """The ``__init__`` arguments, plain JSON types: ``{"class_path": ..., "init_args": config()}``."""
        raise NotImplementedError

    def _digest(self) -> str:
        """A sha256 (hex) of the weights."""
        raise NotImplementedError

    def _identity_settings(self) -> dict[str, Any]:
        """Settings that change the features (by default the config less ``num_threads``)."""
        return {k: v for k, v in self.config().items() if k != "num_threads"}

    def identity(self) -> str:
        """A stable name for cache keys: class, settings that change the features, weights digest.

        Two instances with the same settings and weights give the same string, in any process.
        """
        if getattr(self, "_identity", None) is None:
            settings = ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(self._identity_settings().items()))
            self._identity = f"{type(self).__name__}({settings})@sha256:{self._digest()[:16]}"
        return self._identity

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config().items())


class OnnxSessions:
    """Mixin: onnxruntime sessions created on first use, one per name, dropped when pickled.

    Sessions hold native handles that cannot be pickled (DataLoader workers, DDP spawn, checkpoints'
    deep copies), so ``__getstate__`` leaves them out and the copy makes its own on first use.
    """

    num_threads: int | None

    def _session(self, name: str, model: str | bytes) -> Any:
        sessions = self.__dict__.setdefault("_sessions", {})
        if name not in sessions:
            import onnxruntime as ort

            sessions[name] = ort.InferenceSession(
                model, sess_options=session_options(self.num_threads), providers=["CPUExecutionProvider"]
            )
        return sessions[name]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_sessions"] = {}
        return state


def session_options(num_threads: int | None) -> Any:
    """onnxruntime session options: ``num_threads`` intra-op threads (None: onnxruntime's default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if num_threads is not None:
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
    # onnxruntime 1.27 on arm64 computes wrong batch-1 convolutions with its KleidiAI kernels (the reason
    # livekit-wakeword turns them off); other versions accept the key and ignore it.
    options.add_session_config_entry("mlas.disable_kleidiai", "1")
    return options


def require(owner: str, extra: str | None, packages: dict[str, str]) -> None:
    """Import each module of ``packages`` (module -> package) or raise a one-line ImportError.

    The message names every package the owner needs and the extra (or packages) that installs them.

    Example:
        >>> require("Thing", "audio", {"json": "json"})
        >>> require("Thing", "audio", {"json": "json", "no_such_module": "no-such-package"})
        Traceback (most recent call last):
        ...
        ImportError: Thing needs json and no-such-package: pip install "focalmix[audio]"
    """
    for module in packages:
        try:
            importlib.import_module(module)
        except ImportError as err:
            *first, last = packages.values()
            names = f"{', '.join(first)} and {last}" if first else last
            install = (
                f'pip install "focalmix[{extra}]"' if extra else f"pip install {' '.join(packages.values())}"
            )
            raise ImportError(f"{owner} needs {names}: {install}") from err


def sha256_files(*paths: str | Path) -> str:
    """The sha256 (hex) of the files' bytes, in order."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def sha256_state(module: nn.Module) -> str:
    """The sha256 (hex) of a module's state dict: names, dtypes, shapes and bytes, in key order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(num_threads)`` (process-wide), then restore it."""
    if num_threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def int_type(low: int) -> Instance:
    """The type half of an int >= ``low``: a non-int is told the whole rule (``an int >= 32``)."""
    return Instance(int, f"an int >= {low}")


def int_at_least(low: int) -> Satisfies:
    """An int >= ``low``, in the words of :func:`int_type` (``must be an int >= 32, got 16.``)."""
    return Satisfies(int, lambda v: v >= low, f"an int >= {low}")


# The adapters check their arguments in two tables, types first (TYPES), then values: so a wrong type is
# told the same rule as a wrong value ("`num_threads` must be an int >= 1, got 1.5 (float).").
NUM_THREADS_TYPE = [None, int_type(1)]
NUM_THREADS = [None, int_at_least(1)]
SECONDS_TYPE = [Instance(float, "a number > 0.0")]
SECONDS = [Satisfies(float, lambda v: 0 < v < math.inf, "a finite number > 0.0")]


def check_args(params: dict[str, Any], types: dict[str, list], values: dict[str, list], owner: type) -> None:
    """:func:`focalmix._checks.check` of ``params``: first against ``types``, then against ``values``."""
    check(params, types, owner)
    check(params, values, owner)


def check_batch(x: Any, owner: str, shape: tuple[int, ...], hint: str) -> None:
    """Raise unless ``x`` is a floating tensor of shape (B, *shape) (not checked while exporting)."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{owner} takes a floating-point tensor, got {type(x).__name__}.")
    if tuple(x.shape[1:]) != shape:
        want = ", ".join(["B", *map(str, shape)])
        raise ValueError(f"{owner} takes ({want}) {hint}, got shape {tuple(x.shape)}.")
