"""The per-iteration lr schedule: linear warmup, then multistep / cosine / constant."""

import math

import pytest
import torch

from tskd_fast.engine.optim import build_optimizer, build_scheduler, lr_factor

SOLVER = {"epochs": 10, "schedule": "multistep", "milestones": [4, 8], "lr_decay": 0.1, "warmup_epochs": 0.0}


def test_multistep_follows_epoch_milestones():
    factors = [lr_factor(e * 5, 5, SOLVER) for e in range(10)]
    assert factors == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01])


def test_warmup_is_linear_per_iteration():
    solver = {**SOLVER, "warmup_epochs": 1.0}
    assert [lr_factor(i, 4, solver) for i in range(5)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])


def test_cosine_decays_to_zero():
    solver = {**SOLVER, "schedule": "cosine"}
    assert lr_factor(0, 10, solver) == pytest.approx(1.0)
    assert lr_factor(50, 10, solver) == pytest.approx(0.5)
    assert lr_factor(99, 10, solver) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.99)))


def test_param_group_lr_scale_and_scheduler_state():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
    solver = {**SOLVER, "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}
    opt = build_optimizer([{"params": [a]}, {"params": [b], "lr_scale": 0.5}], solver)
    sched = build_scheduler(opt, solver, iters_per_epoch=2)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1, 0.05])
    for _ in range(8):
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01, 0.005])
    assert sched.state_dict()["last_epoch"] == 8
