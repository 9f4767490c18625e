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


@pytest.mark.parametrize("total, warmup", [(100, 0.1), (10, 0.1), (7, 0.3)])
def test_one_cycle_is_torchs_schedule(total, warmup):
    mine = one_cycle(
        adamw([nn.Parameter(torch.zeros(2, 2))], 1e-3, 0.0), total, max_lr=1e-3, warmup_pct=warmup
    )
    ref_opt = torch.optim.AdamW([nn.Parameter(torch.zeros(2, 2))], lr=1e-3)
    # where warmup * total is exactly one step, torch divides 0 by 0: the schedule warms up over 2 steps
    pct = 2 / total if warmup * total == 1 else warmup
    ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=1e-3, total_steps=total, pct_start=pct)
    for _ in range(total - 1):
        lr = mine.optimizer.param_groups[0]["lr"]
        assert math.isfinite(lr) and lr == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-12)
        mine.optimizer.step(), mine.step(), ref_opt.step(), ref.step()


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
