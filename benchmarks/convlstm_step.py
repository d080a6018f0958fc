"""One whole ConvLSTM step, convolution included (forward + backward, float32): the module with the
fused gate op against the same module with the PyTorch reference gates (``backend="reference"``).

    python benchmarks/convlstm_step.py [--device cpu|cuda] [--batch 64] [--in-channels 64]
        [--hidden 64] [--size 32] [--peephole] [--channels-last] [--repeat N]
        [--compile default|reduce-overhead|max-autotune]

Both modules hold the same weights; a step is ``cell(x, (h, c))`` then the gradients of
``sum(h * dh) + sum(c * dc)`` with respect to x, h, c and every parameter. The implementations
alternate call by call, so that a machine shared with other work slows them alike. Peak memory
is what the step allocates above its inputs. Target: the fused step >= 1.3x the reference one.

A third row, "conv only", times the step's convolution alone (the concatenation and the 3x3
convolution, forward + backward, with a gradient of the gates' shape): no gate op can make the
step faster than that, so its speed-up over the reference is the bound on any fused one.
``--compile MODE`` adds both cells compiled (torch.compile with ``trainer.compile=MODE``'s
settings; the reference gates then fused by inductor), each compared with the compiled reference.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import peak_memory_bytes, time_alternating  # noqa: E402

from tskd_fast.engine.compile import COMPILE_MODES, torch_compile_kwargs  # noqa: E402
from tskd_fast.nn import ConvLSTMCell  # noqa: E402


def report(results: dict, peaks: dict, title: str) -> None:
    """One row per timed step; a row "<mode> X" (compiled) is compared with "<mode> reference"."""
    print(f"\n{title}\n")
    print("| gates | median ms (p20-p80) | speed-up vs reference (same mode) | peak MiB |")
    print("|---|---|---|---|")
    for name, r in results.items():
        mode = name.rsplit(" ", 1)[0] + " " if name.endswith((" fused", " reference")) else ""
        reference = results.get(mode + "reference", results["reference"])["median"]
        speedup = f"{reference / r['median']:.2f}x"
        print(
            f"| {name} | {r['median']:.2f} ({r['p20']:.2f}-{r['p80']:.2f}) | {speedup} | {peaks[name] / 2**20:.1f} |"
        )
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"]
    )
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--in-channels", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--peephole", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--compile", choices=COMPILE_MODES[1:], help="also time the compiled cells")
    args = parser.parse_args()
    device, b, cin, ch, s = args.device, args.batch, args.in_channels, args.hidden, args.size
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    layout = torch.channels_last if args.channels_last else torch.contiguous_format

    torch.manual_seed(0)
    cells = {}
    for name, backend in (("fused", "auto"), ("reference", "reference")):
        torch.manual_seed(0)  # the same weights in both
        cell = ConvLSTMCell(cin, ch, 3, peephole=args.peephole, spatial_size=s, backend=backend)
        cells[name] = cell.to(device).to(memory_format=layout)
    gen = torch.Generator().manual_seed(1)

    def tensor(c):
        return (
            torch.randn(b, c, s, s, generator=gen)
            .to(device)
            .contiguous(memory_format=layout)
            .requires_grad_()
        )

    x, h, c = tensor(cin), tensor(ch), tensor(ch)
    dh, dc = torch.randn_like(h), torch.randn_like(c)

    def step_of(cell):
        leaves = [x, h, c, *cell.parameters()]

        def step():
            h1, c1 = cell(x, (h, c))
            return torch.autograd.grad((h1, c1), leaves, (dh, dc))

        return step

    steps = {name: step_of(cell) for name, cell in cells.items()}
    conv = cells["reference"].conv
    conv_leaves = [x, h, *conv.parameters()]
    dgates = torch.randn(b, 4 * ch, s, s, generator=gen).to(device).contiguous(memory_format=layout)

    def conv_only():
        gates = conv(torch.cat([x, h], dim=1))
        return torch.autograd.grad(gates, conv_leaves, dgates)

    # Same numbers first: the comparison is of one computation.
    out_f, out_r = (cells[n](x, (h, c)) for n in ("fused", "reference"))
    torch.testing.assert_close(out_f, out_r, rtol=1e-4, atol=1e-5)
    steps["conv only"] = conv_only
    if args.compile:
        for name in ("fused", "reference"):
            compiled = step_of(torch.compile(cells[name], **torch_compile_kwargs(args.compile)))
            compiled()  # compiles
            steps[f"{args.compile} {name}"] = compiled
    results = time_alternating(steps, device, repeat=args.repeat)
    peaks = {name: peak_memory_bytes(step, device) for name, step in steps.items()}
    where = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    peep = ", peepholes" if args.peephole else ""
    title = (
        f"ConvLSTM step (3x3 conv over concat[x, h] + gates), forward + backward, float32, B={b}, "
        f"C_in={cin}, C_h={ch}, {s}x{s}{peep}, {'channels_last' if args.channels_last else 'NCHW'}; {where}"
    )
    report(results, peaks, title)


if __name__ == "__main__":
    main()
