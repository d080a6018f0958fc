"""Compiling Triton kernels for a real GPU (sm_90) without one, and reading their resource use:
the interpreter does not catch everything the compiler rejects (non-constexpr globals,
loop-carried type changes), nor register spills. Used by the <family>_triton tests."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# What every compile script starts with: build(fn, signature, constexprs, num_warps, what) compiles
# one kernel variant for sm_90 and records cuobjdump's resource usage of its cubin.
_PRELUDE = textwrap.dedent(
    """
    import json, subprocess, sys, tempfile
    import triton, triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    target = GPUTarget("cuda", 90, 32)
    cuobjdump = sys.argv[1]
    results = []

    def build(fn, signature, constexprs, num_warps, what):
        kernel = triton.compile(
            ASTSource(fn=fn, signature=signature, constexprs=constexprs),
            target=target,
            options={"num_warps": num_warps},
        )
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(kernel.asm["cubin"])
            f.flush()
            usage = subprocess.run(
                [cuobjdump, "--dump-resource-usage", f.name], capture_output=True, text=True
            ).stdout
        results.append({"what": what, "usage": usage})
    """
)


def _nvidia_tool(name: str) -> Path:
    import triton

    return Path(triton.__path__[0]) / "backends" / "nvidia" / "bin" / name


def compile_for_sm90_without_spills(body: str, variants: int) -> None:
    """Run `body` (calls of build(), after _PRELUDE) in a fresh interpreter without
    TRITON_INTERPRET, then check that it built `variants` kernels and that none spills registers
    to local memory. Skipped when triton's NVIDIA tools (ptxas, cuobjdump) are not installed."""
    for tool in ("ptxas", "cuobjdump"):
        if not _nvidia_tool(tool).exists():
            pytest.skip(f"triton's NVIDIA backend has no {tool}: the register use cannot be read")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    script = _PRELUDE + textwrap.dedent(body) + "\nprint(json.dumps(results))\n"
    done = subprocess.run(
        [sys.executable, "-c", script, str(_nvidia_tool("cuobjdump"))],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(results) == variants
    for result in results:
        usage = result["usage"]
        assert "REG:" in usage, f"{result['what']}: cuobjdump printed no resource usage: {usage!r}"
        assert "STACK:0 " in usage and "LOCAL:0 " in usage, f"{result['what']} spills: {usage.strip()}"
