"""Plain ``nn.Module`` backbones: they map a batch of samples to a batch of feature vectors."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from focalmix._checks import ArgumentValueError, Instance, Interval, Options, Satisfies, check

_EMBEDDINGS = ("periodic", "piecewise")
_WIDTHS_TYPE = Instance(Sequence, "a list of ints")
_WIDTHS = Satisfies(
    Sequence,
    lambda v: len(v) > 0 and all(isinstance(h, int) and h >= 1 for h in v),
    "a non-empty list of ints >= 1",
)
# Types first, in their own words (a non-number scale "must be a number > 0", a bad one "must be > 0"),
# then values.
_MLP_TYPES = {"hidden_sizes": [_WIDTHS_TYPE]}
_MLP_ARGS = {"num_features": [Interval(int, 1)], "hidden_sizes": [_WIDTHS]}
_CNN_ARGS = {"in_channels": [Interval(int, 1)], "width": [Interval(int, 1)]}
_TABULAR_TYPES = {"frequency_scale": [Instance(float, "a number > 0")], "hidden_sizes": [_WIDTHS_TYPE]}
_TABULAR_ARGS = {
    "num_features": [None, Interval(int, 1)],
    "embedding": [Options(*_EMBEDDINGS)],
    "d_embedding": [None, Interval(int, 1)],
    "n_frequencies": [Interval(int, 1)],
    "n_bins": [Interval(int, 2)],
    "frequency_scale": [Interval(float, 0, closed="neither")],
    "hidden_sizes": [_WIDTHS],
}


class MLP(nn.Module):
    """A multilayer perceptron over flattened samples: ``(B, *shape) -> (B, hidden_sizes[-1])``.

    Args:
        num_features: number of input features (the product of the sample shape), >= 1.
        hidden_sizes: width of each hidden layer; each is Linear -> LayerNorm -> GELU. Default: (256, 256).

    Attributes:
        num_features: the size of the output feature vector (timm's convention), read by the classifier head.

    Example:
        >>> import torch
        >>> MLP(30)(torch.randn(4, 30)).shape
        torch.Size([4, 256])
    """

    def __init__(self, num_features: int, hidden_sizes: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        given = {"num_features": num_features, "hidden_sizes": hidden_sizes}
        check(given, _MLP_TYPES, MLP)
        check(given, _MLP_ARGS, MLP)
        layers: list[nn.Module] = [nn.Flatten()]
        width = num_features
        for h in hidden_sizes:
            layers += [nn.Linear(width, h), nn.LayerNorm(h), nn.GELU()]
            width = h
        self.net = nn.Sequential(*layers)
        self.num_features = width

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """A small convolutional network for image-like samples: ``(B, C, H, W) -> (B, width * 4)``.

    Three conv blocks (Conv3x3 -> BatchNorm -> ReLU, then 2x2 max-pool after the first two), then
    global average pooling, so any spatial size works.

    Args:
        in_channels: channels of the input, >= 1. Default: 1.
        width: channels of the first block, doubled in each of the next two, >= 1. Default: 16.

    Example:
        >>> import torch
        >>> SmallCNN(in_channels=1)(torch.randn(2, 1, 32, 32)).shape
        torch.Size([2, 64])
    """

    def __init__(self, in_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        check({"in_channels": in_channels, "width": width}, _CNN_ARGS, SmallCNN)
        chans = [in_channels, width, width * 2, width * 4]
        layers: list[nn.Module] = []
        for i in range(3):
            layers += [
                nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False),
                nn.BatchNorm2d(chans[i + 1]),
            ]
            layers += [nn.ReLU(inplace=True)] + ([nn.MaxPool2d(2)] if i < 2 else [])
        self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = chans[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TabularMLP(nn.Module):
    """Numeric feature embeddings, then an :class:`MLP`: ``(B, F) -> (B, hidden_sizes[-1])``.

    Each input feature gets its own learned embedding before the MLP sees it (Gorishniy et al. 2022,
    "On Embeddings for Numerical Features in Tabular Deep Learning", arXiv 2203.05556), from the
    authors' package ``rtdl_num_embeddings`` (``pip install rtdl-num-embeddings``):

    * ``"periodic"``: PLR-lite, ``PeriodicEmbeddings(lite=True)``: ``cos``/``sin`` of learned
      frequencies, one linear layer shared by all features, ReLU; ``d_embedding`` default 24.
    * ``"piecewise"``: ``PiecewiseLinearEmbeddings(version="B")`` over fixed bins; ``d_embedding``
      default 8. The paper takes the bins from quantiles of the training data; here they are the
      quantiles of a standard normal, because the classifier standardizes its inputs before the
      backbone, and so the backbone needs no data to be built (from the CLI too).

    Args:
        num_features: input features (the classifier's input width after its encoder), >= 1; None
            builds the layers at the first forward pass, which the classifier does at construction with
            a dry run on ``input_shape``, so the CLI needs no width.
        embedding: ``"periodic"`` or ``"piecewise"``. Default: ``"periodic"``.
        d_embedding: width of each feature's embedding, >= 1. Default: 24 (periodic), 8 (piecewise).
        n_frequencies: periodic: frequencies per feature, >= 1. Default: 48.
        frequency_scale: periodic: std of the initial frequencies, > 0 (the paper's sigma). Default: 0.01.
        n_bins: piecewise: bins per feature, >= 2. Default: 48.
        hidden_sizes: widths of the MLP after the embeddings. Default: (256, 256).

    Attributes:
        num_features: the size of the output feature vector (as :class:`MLP`), None until built.

    Example:
        >>> import torch
        >>> TabularMLP(30)(torch.randn(4, 30)).shape
        torch.Size([4, 256])
        >>> TabularMLP(30, embedding="piecewise", hidden_sizes=(64,))(torch.randn(4, 30)).shape
        torch.Size([4, 64])
    """

    EMBEDDINGS = _EMBEDDINGS

    def __init__(
        self,
        num_features: int | None = None,
        embedding: Literal["periodic", "piecewise"] = "periodic",
        d_embedding: int | None = None,
        n_frequencies: int = 48,
        frequency_scale: float = 0.01,
        n_bins: int = 48,
        hidden_sizes: Sequence[int] = (256, 256),
    ) -> None:
        super().__init__()
        given = dict(
            num_features=num_features,
            embedding=embedding,
            d_embedding=d_embedding,
            n_frequencies=n_frequencies,
            n_bins=n_bins,
            frequency_scale=frequency_scale,
            hidden_sizes=hidden_sizes,
        )
        check(given, _TABULAR_TYPES, TabularMLP)
        check(given, _TABULAR_ARGS, TabularMLP)
        if importlib.util.find_spec("rtdl_num_embeddings") is None:  # fail at construction, not in fit
            raise ImportError(
                "TabularMLP needs the package of the embeddings' authors: pip install rtdl-num-embeddings"
                " (or focalmix[tabular])."
            )

        self.embedding = embedding
        self.d_embedding = d_embedding or (24 if embedding == "periodic" else 8)
        self.n_frequencies, self.frequency_scale, self.n_bins = n_frequencies, frequency_scale, n_bins
        self.hidden_sizes = tuple(hidden_sizes)
        self.in_features: int | None = None
        self.num_features: int | None = None
        self.embeddings: nn.Module | None = None
        self.mlp: MLP | None = None
        if num_features is not None:
            self._build(num_features)

    def _build(self, num_features: int, device: torch.device | None = None) -> None:
        import rtdl_num_embeddings as rtdl

        if self.embedding == "periodic":
            self.embeddings = rtdl.PeriodicEmbeddings(
                num_features,
                self.d_embedding,
                n_frequencies=self.n_frequencies,
                frequency_init_scale=self.frequency_scale,
                lite=True,
            )
        else:
            self.embeddings = rtdl.PiecewiseLinearEmbeddings(
                normal_bins(num_features, self.n_bins), self.d_embedding, activation=False, version="B"
            )
        self.mlp = MLP(num_features * self.d_embedding, self.hidden_sizes)
        self.to(device)
        self.in_features, self.num_features = num_features, self.mlp.num_features

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)  # (B, F)
        if self.embeddings is None:
            self._build(x.shape[1], x.device)
        return self.mlp(self.embeddings(x).flatten(1))  # (B, F, D) -> (B, F * D) -> (B, H)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        # A checkpoint of a lazily built backbone loads into a fresh, unbuilt one: build at its width.
        key = prefix + "mlp.net.1.weight"  # the first Linear of the MLP: (H, F * D)
        if self.embeddings is None and key in state_dict:
            self._build(state_dict[key].shape[1] // self.d_embedding)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def normal_bins(num_features: int, n_bins: int) -> list[Tensor]:
    """``n_bins`` equal-probability bins of a standard normal per feature, as ``rtdl_num_embeddings`` bins.

    The outer edges are the 1/(2 n_bins) and 1 - 1/(2 n_bins) quantiles: values beyond them fall in the
    first or last bin, where the piecewise-linear encoding keeps growing linearly.

    Example:
        >>> [round(v, 3) for v in normal_bins(1, 2)[0].tolist()]
        [-0.674, 0.0, 0.674]
    """
    levels = torch.linspace(1 / (2 * n_bins), 1 - 1 / (2 * n_bins), n_bins + 1)
    edges = torch.distributions.Normal(0.0, 1.0).icdf(levels)
    return [edges.clone() for _ in range(num_features)]


def build_backbone(backbone: Any, num_features: int | None, hidden_sizes: Sequence[int]) -> nn.Module:
    """The backbone: as given, built from a ``{"class_path", "init_args"}`` dict, or an :class:`MLP`."""
    if isinstance(backbone, nn.Module):
        return backbone
    if isinstance(backbone, dict):  # {"class_path": "pkg.mod.Class", "init_args": {...}}
        from focalmix.trust import resolve_module_class

        # checked before anything is imported: a shared checkpoint must not be able to run code
        cls = resolve_module_class(backbone.get("class_path"), "the backbone's class_path")
        init_args = dict(backbone.get("init_args") or {})
        # a tabular backbone sized by its input gets the model's input width, as the default MLP does
        if num_features is not None and "num_features" in inspect.signature(cls).parameters:
            init_args.setdefault("num_features", num_features)
        return cls(**init_args)
    if num_features is None:
        raise ValueError(
            "The default MLP backbone needs `num_features` (or `input_shape`); the CLI links it from the"
            " data."
        )
    return MLP(num_features, hidden_sizes)


def build_head(
    width: int,
    outputs: int,
    dropout: float,
    hidden_sizes: Sequence[int] = (),
    frames_of: nn.Module | None = None,
) -> nn.Module:
    """The classifier's head: dropout, then per hidden width Linear -> ReLU -> Dropout, then the output
    Linear. With no hidden widths it is ``Dropout, Linear`` (the recipe's head; its state-dict keys
    ``1.weight``/``1.bias`` are those of earlier checkpoints). ``frames_of``: a backbone whose features
    are a sequence of frames (its ``frame_size`` attribute): a :class:`TemporalHead` over them instead,
    its channels ``hidden_sizes[0]`` (default 64).

        >>> build_head(288, 1, 0.5, [64])
        Sequential(
          (0): Dropout(p=0.5, inplace=False)
          (1): Linear(in_features=288, out_features=64, bias=True)
          (2): ReLU()
          (3): Dropout(p=0.5, inplace=False)
          (4): Linear(in_features=64, out_features=1, bias=True)
        )
    """
    if frames_of is not None:
        frame = getattr(frames_of, "frame_size", None)
        if not isinstance(frame, int) or width % frame or len(hidden_sizes) > 1:
            raise ArgumentValueError(
                f"`head_type='temporal'` needs a backbone whose features are frames (a `frame_size` "
                f"attribute dividing its {width} features, as SpeechEmbedding's 96) and at most one "
                f"head width (its channels), got {type(frames_of).__name__} and {list(hidden_sizes)}.",
                "head_type",
            )
        return TemporalHead(width // frame, frame, outputs, dropout, *hidden_sizes[:1])
    layers: list[nn.Module] = [nn.Dropout(dropout)]
    for h in hidden_sizes:
        layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, outputs))


def head_for(
    backbone: nn.Module,
    width: int,
    task: str,
    num_classes: int,
    dropout: float,
    hidden: Sequence[int],
    kind: str,
) -> nn.Module:
    """The classifier's head on ``width`` features of ``backbone``: one output (binary) or one per class
    or label; ``kind`` ``"mlp"`` (:func:`build_head`) or ``"temporal"`` (over the backbone's frames)."""
    outputs = 1 if task == "binary" else num_classes
    return build_head(width, outputs, dropout, hidden, backbone if kind == "temporal" else None)


class TemporalHead(nn.Module):
    """A head over a sequence of frames: a convolution over ``kernel`` frames, ReLU, the maximum over
    time, dropout, the output layer. A pattern scores the same wherever it sits in the window (a wake
    word anywhere in a 2 s clip), which a linear or MLP head over the concatenated frames does not learn.

    Input ``(B, frames * frame_size)``, frame-major (frame ``t`` is features ``[t * frame_size, (t + 1) *
    frame_size)``), as :class:`~focalmix.backbones.SpeechEmbedding` gives it.

        >>> head = TemporalHead(frames=16, frame_size=96, outputs=1, dropout=0.1)
        >>> head(torch.randn(2, 16 * 96)).shape
        torch.Size([2, 1])
    """

    def __init__(
        self, frames: int, frame_size: int, outputs: int, dropout: float, channels: int = 64, kernel: int = 3
    ) -> None:
        super().__init__()
        self.frames, self.frame_size = frames, frame_size
        self.conv = nn.Conv1d(frame_size, channels, min(kernel, frames))
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(channels, outputs)

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], self.frames, self.frame_size).transpose(1, 2)  # (B, C, T)
        return self.out(self.dropout(torch.relu(self.conv(x)).amax(dim=2)))


def feature_size(backbone: nn.Module, input_shape: tuple[int, ...] | None, table: bool = False) -> int:
    """Output width of ``backbone``: its ``num_features``/``out_features`` attribute, else a dry run.

    ``table``: the input is a table's encoded columns (one-hot categories, missing-value indicators),
    wider than its raw columns; said in the error when the backbone was built for another width.

    Raises:
        ValueError: the width cannot be told, or the backbone fails on the dry run (a width mismatch names
            the width it expects, the one it is given and ``dm.input_width`` to build it from).
    """
    for attr in ("num_features", "out_features"):
        if isinstance(getattr(backbone, attr, None), int):
            return getattr(backbone, attr)
    if input_shape is None:
        raise ValueError(
            f"Cannot tell the output size of {type(backbone).__name__}: give `backbone_features`, or"
            " `input_shape` for a dry run, or give the backbone a `num_features` attribute."
        )
    was_training = backbone.training
    try:
        with torch.no_grad():
            out = backbone.eval()(torch.zeros(2, *input_shape))
    except RuntimeError as err:  # the user's backbone, built for another input: one line, not torch's trace
        import math
        import re

        width, text = math.prod(input_shape), str(err).strip()
        encoded = " (the encoded table: categories one-hot, missing-value indicators)" if table else ""
        given = f"{width}{encoded}"
        linear = re.search(r"shapes cannot be multiplied \((\d+)x(\d+) and (\d+)x(\d+)\)", text)
        if linear and int(linear.group(2)) == width:  # the first layer: built for another input width
            message = (
                f"the backbone expects {linear.group(3)} input features but the model feeds it {given}; "
                "build it from dm.input_width"
            )
        elif linear:
            message = (
                f"a layer inside the backbone expects {linear.group(3)} features but gets {linear.group(2)}"
                f" (the model feeds it {given}); check the backbone's layer sizes"
            )
        else:
            shape = given if len(input_shape) == 1 else str(tuple(input_shape))
            message = (
                f"the backbone fails on inputs of {shape} ({(text.splitlines() or ['?'])[0][:200]}); build it"
                " for them (from dm.input_width for rows, dm.input_shape otherwise)"
            )
        raise ValueError(message) from err
    finally:
        backbone.train(was_training)
    return int(out.reshape(2, -1).shape[1])
