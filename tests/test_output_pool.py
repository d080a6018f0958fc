"""The CPU kernels' pool of large outputs (csrc/cpu/output_pool.h): outputs of 4 MiB and more are
served from blocks that earlier outputs released. Reused blocks hold stale values, so every op is
checked against its reference on a second call; the layout, resizing, the profiler's view and
releasing the pool are checked too."""

import multiprocessing

import pytest
import torch

from tskd_fast import functional as F
from tskd_fast import reference
from tskd_fast.bench.memory import peak_memory_bytes
from tskd_fast.ops import output_pool_bytes as pool_bytes
from tskd_fast.ops import release_output_pool as release_pool

POOLED = 4 << 20  # kPooledOutputBytes


@pytest.fixture(autouse=True)
def empty_pool():
    release_pool()
    yield
    release_pool()


def kd_grad(student, teacher, backend):
    student = student.detach().requires_grad_()
    F.kd_loss(student, teacher, temperature=3.0, backend=backend).backward()
    return student.grad


def test_a_released_output_is_reused_and_fully_rewritten():
    gen = torch.Generator().manual_seed(0)
    rows, classes = 257, 4099  # > 4 MiB of float32, odd sizes
    first = torch.randn(rows, classes, generator=gen), torch.randn(rows, classes, generator=gen)
    grad = kd_grad(*first, "cpu")
    assert grad.numel() * 4 >= POOLED
    address = grad.data_ptr()
    del grad
    assert pool_bytes() >= rows * classes * 4  # the block came back

    second = torch.randn(rows, classes, generator=gen) * 3, torch.randn(rows, classes, generator=gen)
    grad = kd_grad(*second, "cpu")
    assert grad.data_ptr() == address  # the same block, holding the first call's gradient before
    assert pool_bytes() == 0
    torch.testing.assert_close(grad, kd_grad(*second, "reference"), rtol=1e-5, atol=1e-8)


def test_small_outputs_do_not_use_the_pool():
    grad = kd_grad(torch.randn(64, 100), torch.randn(64, 100), "cpu")
    del grad
    assert pool_bytes() == 0


@pytest.mark.parametrize("channels_last", [False, True])
def test_pooled_hcl_gradient_keeps_the_layout_and_values(channels_last):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    gen = torch.Generator().manual_seed(1)
    shape = (3, 37, 97, 101)  # > 4 MiB, nothing a power of two
    for scale in (1.0, 2.5):  # the second call reuses the first one's block
        fs = (torch.randn(shape, generator=gen) * scale).contiguous(memory_format=fmt).requires_grad_()
        ft = torch.randn(shape, generator=gen).contiguous(memory_format=fmt)
        F.hcl_loss([fs], [ft], backend="cpu").backward()
        fused = fs.grad
        assert fused.stride() == fs.stride()
        ref = fs.detach().clone().requires_grad_()
        reference.hcl_loss([ref], [ft]).backward()
        torch.testing.assert_close(fused, ref.grad, rtol=1e-4, atol=1e-9)
        del fused
        fs.grad = None


def test_pooled_convlstm_outputs_match_the_reference_on_reuse():
    gen = torch.Generator().manual_seed(2)
    b, ch, s = 9, 67, 45  # h, c and the gate gradient all > 4 MiB
    for _ in range(2):
        gates = torch.randn(b, 4 * ch, s, s, generator=gen).requires_grad_()
        c_prev = torch.randn(b, ch, s, s, generator=gen).requires_grad_()
        h, c = F.convlstm_gates(gates, c_prev, backend="cpu")
        rh, rc = reference.convlstm_gates(gates, c_prev)
        torch.testing.assert_close((h, c), (rh, rc), rtol=1e-5, atol=1e-6)
        dh, dc = torch.randn_like(h), torch.randn_like(c)
        fused = torch.autograd.grad((h, c), (gates, c_prev), (dh, dc))
        expected = torch.autograd.grad((rh, rc), (gates, c_prev), (dh, dc))
        assert fused[0].numel() * 4 >= POOLED
        torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-6)
        del h, c, fused


def test_a_pooled_output_can_be_resized():
    grad = kd_grad(torch.randn(300, 4000), torch.randn(300, 4000), "cpu")
    grad.resize_(10, 10)
    grad.fill_(1.0)
    grad.resize_(2000, 2000)  # larger than the block: new memory from the CPU allocator
    grad.fill_(2.0)
    assert float(grad.sum()) == 2.0 * 2000 * 2000


def test_the_profiler_sees_pooled_outputs():
    student, teacher = torch.randn(512, 4096, requires_grad=True), torch.randn(512, 4096)

    def call():
        student.grad = None
        F.kd_loss(student, teacher, backend="cpu").backward()

    call()
    student.grad = None  # its block is now in the pool: the measured call reuses it
    assert pool_bytes() > 0
    assert peak_memory_bytes(call, torch.device("cpu")) >= 512 * 4096 * 4


def test_release_returns_every_cached_block():
    grad = kd_grad(torch.randn(300, 4000), torch.randn(300, 4000), "cpu")
    del grad
    cached = pool_bytes()
    assert cached >= 300 * 4000 * 4
    assert release_pool() == cached
    assert pool_bytes() == 0


def _child_step(queue, student, teacher, expected) -> None:
    torch.set_num_threads(1)  # GNU OpenMP's thread team does not survive a fork (as in DataLoader workers)
    inherited = pool_bytes()
    # The op itself, not backward(): autograd's worker threads do not survive a fork either.
    rows = student.shape[0]
    temperature = torch.full((rows,), 3.0)
    _, grad = torch.ops.tskd_fast.kd_loss(
        student, teacher, None, temperature, 0, 0.9, True, 0.0, -100, True, 1.0 / rows
    )
    queue.put((inherited, bool(torch.allclose(grad, expected, rtol=1e-5, atol=1e-8))))


def test_a_forked_child_starts_with_its_own_pool():
    grad = kd_grad(torch.randn(300, 4000), torch.randn(300, 4000), "cpu")
    del grad
    assert pool_bytes() > 0  # the parent's cached block
    student, teacher = torch.randn(300, 4000), torch.randn(300, 4000)
    expected = kd_grad(student, teacher, "reference")
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_step, args=(queue, student, teacher, expected))
    child.start()
    inherited, matches = queue.get(timeout=120)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert inherited == 0  # the parent's blocks (and its lock) were not handed to the child
    assert matches
