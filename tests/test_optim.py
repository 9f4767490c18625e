"""focalmix.optim: the parameter groups, the schedule against torch's OneCycleLR, the scaling rules."""

import math

import pytest
import torch
from torch import nn

from focalmix.optim import adamw, check_resumed_schedule, fastest_adamw, one_cycle, scaled_lr


def test_no_weight_decay_on_biases_and_norm_weights_and_frozen_params_left_out():
    net = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 1))
    net[2].requires_grad_(False)
    opt = adamw(net.parameters(), lr=1e-3, weight_decay=0.01)
    decay, no_decay = opt.param_groups
    assert [p.shape for p in decay["params"]] == [torch.Size([8, 4])] and decay["weight_decay"] == 0.01
    assert [p.shape for p in no_decay["params"]] == [torch.Size([8])] * 3 and no_decay["weight_decay"] == 0.0
    assert fastest_adamw(list(net.parameters())) == {"fused": True}
    assert fastest_adamw([torch.zeros(2, dtype=torch.int64)]) == {"foreach": True}


def _lrs(optimizer: torch.optim.Optimizer, scheduler, steps: int) -> list[float]:
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def _torch_one_cycle(total: int, warmup: float) -> list[float]:
    """torch's OneCycleLR built with the arguments one_cycle was given, nothing adjusted."""
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(2, 2))], lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=total, pct_start=warmup)
    return _lrs(opt, sched, total)


def _ours(total: int, warmup: float) -> list[float]:
    sched = one_cycle(
        adamw([nn.Parameter(torch.zeros(2, 2))], 1e-3, 0.0), total, max_lr=1e-3, warmup_pct=warmup
    )
    return _lrs(sched.optimizer, sched, total)


# every schedule of up to 40 steps with these warmups, and longer ones
GRID = [(t, w) for t in [*range(2, 41), 100, 1000] for w in (0.05, 0.1, 0.2, 0.25, 0.3, 0.5)]


@pytest.mark.parametrize("warmup", sorted({w for _, w in GRID}))
def test_one_cycle_is_torchs_schedule_wherever_torch_has_one(warmup):
    for total in sorted({t for t, w in GRID if w == warmup}):
        try:
            expected = _torch_one_cycle(total, warmup)
        except ZeroDivisionError:
            assert warmup * total == 1, (total, warmup)  # the only place torch has no schedule: next test
            continue
        assert _ours(total, warmup) == expected, (total, warmup)  # the very same floats


@pytest.mark.parametrize(
    "total, warmup",
    [
        (4, 0.25),
        (5, 0.2),
        (10, 0.1),
        (20, 0.05),
    ],
)
def test_one_cycle_where_torch_divides_by_zero_still_makes_a_one_cycle(total, warmup):
    """The one place one_cycle departs from torch: where warmup * total is exactly one step, torch's
    OneCycleLR computes 0 / 0 at its first step (ZeroDivisionError). one_cycle must still give a
    one-cycle schedule: up from max_lr / div_factor to max_lr, then down to the final rate."""
    with pytest.raises(ZeroDivisionError):
        _torch_one_cycle(total, warmup)
    lrs = _ours(total, warmup)
    initial, peak = 1e-3 / 25, 1e-3  # torch's defaults: div_factor 25, final_div_factor 1e4
    assert lrs[0] == pytest.approx(initial, rel=1e-12) and max(lrs) == pytest.approx(peak, rel=1e-12)
    top = lrs.index(max(lrs))
    assert all(a < b for a, b in zip(lrs[:top], lrs[1 : top + 1], strict=True))  # up to the peak
    assert all(a >= b for a, b in zip(lrs[top:], lrs[top + 1 :], strict=False))  # then only down
    assert lrs[-1] == pytest.approx(initial / 1e4, rel=1e-12)  # the final rate at the last step


def test_a_two_step_schedule_does_not_divide_by_zero():
    """2 steps with warmup 0.5: torch fails (0 / 0); one_cycle starts at max_lr / 25 and ends at the final
    rate (two steps hold no room for the peak in between)."""
    with pytest.raises(ZeroDivisionError):
        _torch_one_cycle(2, 0.5)
    lrs = _ours(2, 0.5)
    assert lrs == pytest.approx([1e-3 / 25, 1e-3 / 25 / 1e4], rel=1e-9)


def test_bad_inputs_say_what_to_change():
    opt = adamw([nn.Parameter(torch.zeros(2, 2))], 1e-3, 0.0)
    with pytest.raises(ValueError, match="finite, positive number of optimizer steps"):
        one_cycle(opt, math.inf, max_lr=1e-3, warmup_pct=0.1)
    with pytest.raises(ValueError, match="lr_scaling"):
        scaled_lr(1e-4, "cubic", 64, 32)
    with pytest.raises(ValueError, match=">= 1"):
        scaled_lr(1e-4, "linear", 64, 0)
    assert scaled_lr(1e-4, "none", 64, 32) == 1e-4 and scaled_lr(1e-4, "linear", 64, 32) == 2e-4
    sched = one_cycle(opt, 50, max_lr=1e-3, warmup_pct=0.1)
    check_resumed_schedule(sched, 50)
    with pytest.raises(RuntimeError, match="cannot be\\s+stretched|cannot be stretched"):
        check_resumed_schedule(sched, 80)
