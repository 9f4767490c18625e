"""The table encoder: the model's first layer, built from a preprocessing spec alone."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from focalmix.table_spec import check_spec, encoded_names


class InputEncoder(nn.Module):
    """Raw rows (B, F) -> model features (B, out_features), from a spec alone (nothing to load).

    Output columns: the standardized numeric columns (NaN -> training median first), then one 0/1
    missing-indicator per numeric column with ``indicator``, then per categorical column a one-hot
    block of ``K + 1`` slots (slot 0: unknown, unseen, missing or out-of-range codes). The statistics
    are non-persistent buffers (they move with ``.to(device)`` but are not in the ``state_dict``: the
    spec is a hyperparameter). Only tensor ops without data-dependent branches, so it traces to ONNX
    and TorchScript.

    Args:
        spec: a dict from :func:`fit_spec`.

    Attributes:
        out_features: width of the output.
        feature_names: name of each output column (:func:`encoded_names`).
    """

    def __init__(self, spec: dict) -> None:
        super().__init__()
        cols = check_spec(spec)["columns"]
        num = [i for i, c in enumerate(cols) if c["kind"] == "numeric"]
        cat = [i for i, c in enumerate(cols) if c["kind"] == "categorical"]
        sizes = [len(cols[i]["categories"]) for i in cat]

        def buffer(name: str, values: list, dtype: torch.dtype) -> None:
            self.register_buffer(name, torch.tensor(values, dtype=dtype), persistent=False)

        buffer("num_index", num, torch.long)
        for key in ("median", "mean", "std"):
            buffer(key, [cols[i][key] for i in num], torch.float32)
        buffer("indicator_index", [j for j, i in enumerate(num) if cols[i]["indicator"]], torch.long)
        buffer("cat_index", cat, torch.long)
        buffer("max_code", [float(k) for k in sizes], torch.float32)
        # one output slot per (categorical column, code): slot s is 1 where that column's code is slot_code[s]
        buffer("slot_column", [j for j, k in enumerate(sizes) for _ in range(k + 1)], torch.long)
        buffer("slot_code", [float(v) for k in sizes for v in range(k + 1)], torch.float32)
        self._parts = (bool(num), any(cols[i]["indicator"] for i in num), bool(cat))  # fixed by the spec
        self.feature_names = encoded_names(spec)
        self.out_features = len(self.feature_names)

    def forward(self, x: Tensor) -> Tensor:
        x = x.to(self.mean.dtype)  # (B, F)
        parts = []
        has_num, has_indicator, has_cat = self._parts
        if has_num:
            values = x.index_select(1, self.num_index)  # (B, Fn)
            nan = torch.isnan(values)
            values = torch.where(nan, self.median, values)
            parts.append((values - self.mean) / self.std)
            if has_indicator:
                parts.append(nan.index_select(1, self.indicator_index).to(x.dtype))  # (B, Fi)
        if has_cat:
            codes = torch.round(x.index_select(1, self.cat_index))  # (B, Fc)
            # NaN compares False, so missing and out-of-range codes both land in slot 0 (unknown)
            known = (codes >= 1) & (codes <= self.max_code)
            codes = torch.where(known, codes, torch.zeros_like(codes))
            parts.append((codes.index_select(1, self.slot_column) == self.slot_code).to(x.dtype))  # (B, S)
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def extra_repr(self) -> str:
        return f"out_features={self.out_features}"
