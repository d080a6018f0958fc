"""Builds tskd_fast._C: the CPU kernels always, the CUDA kernels when asked for or possible.

Knobs (environment variables), as users of PyTorch extensions expect them:
  FORCE_CUDA=1            build the CUDA kernels even without a visible GPU (GPU wheels on CPU hosts)
  TSKD_FAST_SKIP_CUDA=1   never build the CUDA kernels
  TORCH_CUDA_ARCH_LIST    CUDA architectures (default: those of the visible GPUs, the newest with PTX;
                          "8.0;9.0+PTX" when no GPU is visible). Recorded in tskd_fast/_build_info.py,
                          so that at run time a GPU no built kernel runs on falls back to Triton.
  CUDA_HOME               the CUDA toolkit (default /usr/local/cuda when it exists)
  MAX_JOBS                parallel compile jobs (read by torch's ninja build)
  DEBUG=1                 -O0 -g instead of -O3
  TSKD_FAST_WERROR=1      treat compiler warnings as errors (CI)
"""

import glob
import os
import platform
import sys

from setuptools import find_packages, setup

# torch guesses CUDA_HOME from `which nvcc` and fails on some layouts: prefer the standard root.
if "CUDA_HOME" not in os.environ and os.path.isdir("/usr/local/cuda"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

import torch  # noqa: E402
from torch.utils.cpp_extension import (  # noqa: E402
    CUDA_HOME,
    BuildExtension,
    CppExtension,
    CUDAExtension,
    include_paths,
)

ROOT = os.path.dirname(os.path.abspath(__file__))
DEBUG = os.environ.get("DEBUG", "0") == "1"
WERROR = os.environ.get("TSKD_FAST_WERROR", "0") == "1"
X86 = platform.machine().lower() in ("x86_64", "amd64")

# The vector ISAs ATen itself dispatches between on x86; each kernel body is compiled once per ISA
# (csrc/cpu/isa/*_<isa>.cpp) and the best one the CPU supports is chosen at run time.
ISA_FLAGS = {
    "avx2": [
        "-mavx2",
        "-mfma",
        "-mf16c",
        "-mbmi",
        "-mbmi2",
        "-DCPU_CAPABILITY=AVX2",
        "-DCPU_CAPABILITY_AVX2",
    ],
    "avx512": [
        "-mavx512f",
        "-mavx512bw",
        "-mavx512vl",
        "-mavx512dq",
        "-mfma",
        "-mf16c",
        "-DCPU_CAPABILITY=AVX512",
        "-DCPU_CAPABILITY_AVX512",
        # GCC 12 flags its own _mm512_undefined_* intrinsics as uninitialised once inlined.
        "-Wno-uninitialized",
        "-Wno-maybe-uninitialized",
    ],
    "default": ["-DCPU_CAPABILITY=DEFAULT"],
}


def _isa_of(source):
    stem = os.path.splitext(os.path.basename(source))[0]
    for isa in ISA_FLAGS:
        if stem.endswith("_" + isa):
            return isa
    return None


def _want_cuda():
    if os.environ.get("TSKD_FAST_SKIP_CUDA", "0") == "1":
        return False, "TSKD_FAST_SKIP_CUDA=1"
    if os.environ.get("FORCE_CUDA", "0") == "1":
        if CUDA_HOME is None:
            sys.exit("FORCE_CUDA=1 but no CUDA toolkit was found: set CUDA_HOME.")
        return True, "FORCE_CUDA=1"
    if torch.version.cuda is None:
        return False, "the installed torch has no CUDA"
    if CUDA_HOME is None:
        return False, "no CUDA toolkit found (set CUDA_HOME)"
    return True, f"torch has CUDA {torch.version.cuda} and a toolkit is at {CUDA_HOME}"


def _nvidia_include_dirs():
    """Headers of the nvidia-* wheels torch depends on (cusparse.h etc. for ATen/cuda headers)."""
    dirs = []
    try:
        import nvidia  # the namespace package of the nvidia-* wheels

        for base in nvidia.__path__:
            dirs += sorted(glob.glob(os.path.join(base, "*", "include")))
    except ImportError:
        pass
    return dirs


# SASS for Ampere and Hopper, and PTX of the newest so that any later GPU can JIT-compile it
# (tskd_fast.ops.backend.DEFAULT_CUDA_ARCH_LIST; not imported: the package may not import yet).
DEFAULT_CUDA_ARCH_LIST = "8.0;9.0+PTX"


def _visible_gpu_arch_list():
    """The architectures torch's build picks for the visible GPUs (each one's capability, capped
    at the newest torch supports, the newest with PTX), or None without a GPU."""
    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        return None
    supported = [a.split("_")[1] for a in torch.cuda.get_arch_list() if a.startswith("sm_")]
    newest = max((int(sm[:-1]), int(sm[-1])) for sm in supported if sm.isdigit()) if supported else None
    arches = set()
    for index in range(torch.cuda.device_count()):
        capability = torch.cuda.get_device_capability(index)
        if newest is not None:
            capability = min(capability, newest)
        arches.add(capability)
    listed = [f"{major}.{minor}" for major, minor in sorted(arches)]
    listed[-1] += "+PTX"
    return ";".join(listed)


def get_extension():
    use_cuda, why = _want_cuda()
    if use_cuda and os.environ.get("TORCH_CUDA_ARCH_LIST", "") in ("", "native"):
        # Chosen here rather than by torch so that _build_info.py records it; without a visible
        # GPU torch could not guess at all.
        os.environ["TORCH_CUDA_ARCH_LIST"] = _visible_gpu_arch_list() or DEFAULT_CUDA_ARCH_LIST
    print(f"tskd_fast: CUDA kernels {'ON' if use_cuda else 'OFF'} ({why})", flush=True)
    if use_cuda:
        print(f"tskd_fast: TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']}")

    opt = ["-O0", "-g"] if DEBUG else ["-O3"]
    # torch's headers as system headers: their warnings are not ours to fix (or to fail on).
    system = [f"-isystem{path}" for path in include_paths(device_type="cuda" if use_cuda else "cpu")]
    warn = (
        system + ["-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-psabi"] + (["-Werror"] if WERROR else [])
    )
    cxx = (
        opt + warn + ["-fopenmp", f"-DTSKD_FAST_WITH_CUDA={int(use_cuda)}", f"-DTSKD_FAST_X86_ISA={int(X86)}"]
    )
    # ops.cpp (the schemas), checks/ and autograd/ (shared by the CPU and CUDA ops), python/ (the
    # eager entry points), cpu/.
    sources = [
        s
        for folder in ("", "checks/", "autograd/", "python/", "cpu/")
        for s in sorted(glob.glob(f"csrc/{folder}*.cpp"))
    ]
    sources += [s for s in sorted(glob.glob("csrc/cpu/isa/*.cpp")) if X86 or _isa_of(s) == "default"]
    include_dirs = [os.path.join(ROOT, "csrc", "include"), os.path.join(ROOT, "csrc")]
    kwargs = dict(extra_link_args=["-fopenmp"] + (["-g"] if DEBUG else []))

    if use_cuda:
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        # nvcc takes -isystem and its directory as two arguments (it rejects "-isystem/dir").
        nvcc_system = [arg for flag in system for arg in ("-isystem", flag[len("-isystem") :])]
        nvcc = opt + nvcc_system + ["-lineinfo", "--expt-relaxed-constexpr", "-DTSKD_FAST_WITH_CUDA=1"]
        if WERROR:
            nvcc += ["-Werror", "all-warnings", "-Xcompiler", "-Wall,-Werror"]
        include_dirs += _nvidia_include_dirs()
        return CUDAExtension(
            "tskd_fast._C",
            sources,
            include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx, "nvcc": nvcc},
            **kwargs,
        )
    return CppExtension(
        "tskd_fast._C", sources, include_dirs=include_dirs, extra_compile_args={"cxx": cxx}, **kwargs
    )


class BuildExtensionPerISA(BuildExtension):
    """BuildExtension that adds the ISA flags to the csrc/cpu/isa/*_<isa>.cpp sources only."""

    def build_extension(self, ext):
        compile_all = self.compiler.compile

        def compile_by_isa(sources, *args, **kwargs):
            groups = {}
            for source in sources:
                groups.setdefault(_isa_of(source), []).append(source)
            objects = []
            for isa, group in groups.items():
                kw = dict(kwargs)
                if isa is not None:
                    post = kw.get("extra_postargs")
                    if isinstance(post, dict):
                        post = dict(post, cxx=list(post.get("cxx", [])) + ISA_FLAGS[isa])
                    else:
                        post = list(post or []) + ISA_FLAGS[isa]
                    kw["extra_postargs"] = post
                objects += compile_all(group, *args, **kw)
            return objects

        self.compiler.compile = compile_by_isa
        try:
            super().build_extension(ext)
        finally:
            self.compiler.compile = compile_all
        self._write_build_info(ext)

    def _write_build_info(self, ext):
        with_cuda = any(s.endswith(".cu") for s in ext.sources)
        arch = os.environ.get("TORCH_CUDA_ARCH_LIST", "") if with_cuda else ""
        text = (
            "# Written by setup.py when tskd_fast._C was built; read at import to catch a torch mismatch.\n"
            f"TORCH_VERSION = {torch.__version__!r}\n"
            f"WITH_CUDA = {with_cuda!r}\n"
            f"CUDA_VERSION = {(torch.version.cuda if with_cuda else None)!r}\n"
            f"CUDA_ARCH_LIST = {arch!r}\n"
        )
        for folder in {os.path.join(ROOT, "tskd_fast"), os.path.join(self.build_lib, "tskd_fast")}:
            if os.path.isdir(folder):
                with open(os.path.join(folder, "_build_info.py"), "w") as f:
                    f.write(text)


setup(
    packages=find_packages(include=["tskd_fast", "tskd_fast.*"]),
    package_data={"tskd_fast": ["configs/**/*.yaml", "data/*.npz"]},
    ext_modules=[get_extension()],
    cmdclass={"build_ext": BuildExtensionPerISA},
    zip_safe=False,
)
