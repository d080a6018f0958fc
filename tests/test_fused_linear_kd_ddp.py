"""DDP with the fused linear + KD loss: two CPU processes (gloo), each distilling its own shard.
The student's lm_head, used by the loss outside the wrapped forward, gets its gradient reduced
(averaged over the ranks) like every other parameter."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from tests.test_fused_linear_kd_rows import BACKENDS
from tskd_fast.nn import FusedLinearKDLoss
from tskd_fast.reference.fused_linear_kd import fused_linear_kd as reference_flkd

WORLD = 2
ROWS, VOCAB, H_S, H_T = 10, 23, 6, 8


class TinyStudent(nn.Module):
    """A body that makes hidden states, and the lm_head the loss uses."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, H_S)
        self.lm_head = nn.Linear(H_S, VOCAB)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.body(x))


def data(rank: int):
    gen = torch.Generator().manual_seed(100 + rank)
    x = torch.randn(ROWS, 4, generator=gen)
    teacher_hidden = torch.randn(ROWS, H_T, generator=gen)
    labels = torch.randint(0, VOCAB, (ROWS,), generator=gen)
    labels[rank::3] = -100
    return x, teacher_hidden, labels


def models():
    torch.manual_seed(0)
    return TinyStudent(), nn.Linear(H_T, VOCAB, bias=False)


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        student, teacher_head = models()
        ddp = nn.parallel.DistributedDataParallel(student)
        x, teacher_hidden, labels = data(rank)
        loss_fn = FusedLinearKDLoss(
            divergence="jsd", temperature=2.0, ce_weight=0.5, chunk_size=4, backend="cpu"
        )
        loss = loss_fn(ddp(x), student.lm_head, teacher_hidden, teacher_head, labels)
        loss.backward()
        torch.save({name: p.grad for name, p in student.named_parameters()}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(
    not dist.is_available() or "cpu" not in BACKENDS, reason="needs torch.distributed and the CPU row op"
)
def test_ddp_reduces_the_lm_head_gradient(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    # Each rank's gradient on its own shard (the reference on full logits), averaged.
    expected = {}
    for rank in range(WORLD):
        student, teacher_head = models()
        x, teacher_hidden, labels = data(rank)
        loss = reference_flkd(
            student(x),
            student.lm_head.weight,
            teacher_hidden,
            teacher_head.weight,
            labels,
            student_bias=student.lm_head.bias,
            divergence="jsd",
            temperature=2.0,
            ce_weight=0.5,
        )
        loss.backward()
        for name, p in student.named_parameters():
            expected[name] = expected.get(name, 0) + p.grad / WORLD
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert set(got) == set(expected)
        for name, grad in expected.items():
            torch.testing.assert_close(
                got[name], grad, rtol=1e-5, atol=1e-7, msg=lambda m, n=name, r=rank: f"rank {r} {n}: {m}"
            )
    # The shards differ, so an unreduced gradient could not have matched the average.
    single, teacher_head = models()
    x, teacher_hidden, labels = data(0)
    reference_flkd(
        single(x),
        single.lm_head.weight,
        teacher_hidden,
        teacher_head.weight,
        labels,
        divergence="jsd",
        temperature=2.0,
    ).backward()
    assert not torch.allclose(single.lm_head.weight.grad, expected["lm_head.weight"])
