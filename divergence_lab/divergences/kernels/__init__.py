"""Compiled CPU row kernels for the closed-form members ``kl``, ``rkl``, ``js``, ``tv``, ``hellinger``,
``chi2`` and ``neyman_chi2``.

The fused path (:mod:`divergence_lab.divergences.fused`) computes each row's value and its gradient with
respect to the student's logits inside the forward pass. In eager PyTorch that is about a dozen passes
over every block (max, exp, sum, log, subtract, multiply, row dot, ...), each a separate kernel writing a
fresh temporary. ``fused_rows.cpp`` does it row by row instead: a row is read once from memory, its two
log-normalisers (max, then Σ exp) and its value and gradient are computed while it sits in cache, and the
gradient is written once, straight into the output (no (N, C) temporary). Float32 and float64; rows in
parallel over torch's intra-op threads.

Each kernel is an optimisation of its member's ``_pointwise`` (the definition), following the member's
``_fused`` closed form. ``tests/divergences/test_row_kernels.py`` pins every kernel to ``_pointwise``
(``test_kernel_values_and_gradients_equal_plain_autograd``, against ``execution="plain"``) and to
``_fused`` (``test_kernel_equals_the_closed_form_in_float64``, 1e-12). Where a call takes a kernel is
written out in :mod:`divergence_lab.divergences.named`.

The extension is compiled once per machine with the system's C++ compiler (``torch.utils.cpp_extension``,
ninja) into ``<cache>/divergence_lab/kernels/`` (``DLAB_KERNEL_CACHE`` overrides the folder); ``make
install`` builds it (``python -m divergence_lab.divergences.kernels``), otherwise the first fused call of
a process does. Where it cannot be built or loaded (no compiler, another platform), or with
``DLAB_ROW_KERNELS=off``, the fused path keeps its eager blocks, which compute the same numbers; the
reason is logged once. CUDA tensors always take the eager blocks.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("fused_rows.cpp")
#: The member each kernel computes, by registry name (the ``kind`` argument of the C++ function).
KINDS = {"kl": 0, "rkl": 1, "js": 2, "tv": 3, "hellinger": 4, "chi2": 5, "neyman_chi2": 6}
#: The member attribute a kernel takes as its parameter (the others take none).
PARAMETERS = {"chi2": "min_prob", "neyman_chi2": "min_prob"}
DTYPES = (torch.float32, torch.float64)
SWITCH = "DLAB_ROW_KERNELS"  # "off": never use the compiled kernels
CACHE_ENV = "DLAB_KERNEL_CACHE"
#: x86-64 builds use the AVX2 + FMA vector code of ATen's Vectorized<T> (the machines of the benchmarks).
X86_FLAGS = ["-mavx2", "-mfma", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
BUILD_LOCK_TIMEOUT_S = 900


def _compile_flags() -> list[str]:
    # -ffp-contract=off: an expression rounds the same way wherever the compiler inlines it, so equal rows
    # give exactly equal probabilities (tv's sign, as in eager PyTorch); fused multiply-adds would differ.
    flags = ["-O3", "-fopenmp", "-ffp-contract=off"]
    x86 = platform.machine() in ("x86_64", "AMD64")
    if x86 and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        flags += X86_FLAGS
    return flags


def _build_folder() -> Path:
    """One folder per source, torch version and flags, so that a change never loads a stale build."""
    root = os.environ.get(CACHE_ENV)
    if root is None:
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(cache) / "divergence_lab" / "kernels")
    identity = f"{SOURCE.read_bytes().hex()}|{torch.__version__}|{' '.join(_compile_flags())}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    return Path(root) / f"fused_rows_{digest}"


def build() -> Any:
    """Compile (or load the cached build of) the extension; raises if it cannot be built."""
    from filelock import FileLock
    from torch.utils.cpp_extension import load

    folder = _build_folder()
    folder.mkdir(parents=True, exist_ok=True)
    # One process builds at a time. cpp_extension's own lock file is left behind by a process killed
    # mid-build and would then block every later load; under this lock (released by the OS when its holder
    # dies) nobody else is building, so a leftover one is stale.
    with FileLock(str(folder / "dlab.lock"), timeout=BUILD_LOCK_TIMEOUT_S):
        (folder / "lock").unlink(missing_ok=True)
        return load(
            name=folder.name,
            sources=[str(SOURCE)],
            build_directory=str(folder),
            extra_cflags=_compile_flags(),
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )


@functools.cache
def _extension() -> Any | None:
    """The loaded extension, or None (with one log line saying why) where it cannot be had."""
    if os.environ.get(SWITCH, "auto").lower() in ("off", "0", "false", "no"):
        log.info("Compiled row kernels off (%s); the fused path runs its eager blocks", SWITCH)
        return None
    started = time.perf_counter()
    try:
        extension = build()
    except Exception as error:  # any failure to compile or load: the eager blocks compute the same numbers
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        log.warning("Compiled row kernels unavailable (%s); the fused path runs its eager blocks", reason)
        return None
    log.debug("Compiled row kernels loaded in %.1f s", time.perf_counter() - started)
    return extension


def row_kernel(
    name: str, student: Tensor, teacher: Tensor, member: Any = None
) -> Callable[..., Tensor] | None:
    """The compiled kernel of member ``name`` for these logits, or None where the eager blocks must run.

    The kernel is ``kernel(student, teacher, temperature, grad)``: per-row values (N,) of the member on
    ``(student / T, teacher / T)``, and ``∂value/∂student`` written into ``grad`` (an (N, C) tensor, or
    None for values only); inputs are contiguous (the caller ensures it). A member with a parameter
    (:data:`PARAMETERS`) reads it from ``member``, the divergence instance. The kernel comes from the
    provider of the logits' device type (:data:`PROVIDERS`).
    """
    if teacher.dtype != student.dtype or teacher.device != student.device:
        return None
    provider = PROVIDERS.get(student.device.type)
    return provider(name, student, member) if provider is not None else None


def _cpu_kernel(name: str, student: Tensor, member: Any) -> Callable[..., Tensor] | None:
    """The C++ row kernel (float32, float64), where it could be built."""
    if name not in KINDS or student.dtype not in DTYPES:
        return None
    extension = _extension()
    if extension is None:
        return None
    kind = KINDS[name]
    parameter = float(getattr(member, PARAMETERS[name])) if name in PARAMETERS else 0.0
    return lambda s, t, temperature, grad: extension.fused_rows(
        s, t, float(temperature), kind, parameter, grad
    )


#: Row-kernel providers by device type: ``provider(name, student, member)`` returns a kernel with the
#: contract of :func:`row_kernel`, or None. CUDA has none yet (the fused path runs its eager blocks there);
#: a Triton kernel with the same contract — one program per row, the two normaliser passes and the
#: value-and-gradient pass of ``fused_rows.cpp`` — plugs in as ``PROVIDERS["cuda"]``.
PROVIDERS: dict[str, Callable[[str, Tensor, Any], Callable[..., Tensor] | None]] = {"cpu": _cpu_kernel}
