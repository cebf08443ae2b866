"""Which floating-point type the LLM engines compute in, resolved from the hardware.

``expert.dtype: auto`` (the default) picks the fastest type the machine computes natively:

- a CUDA GPU: ``bfloat16`` where the GPU supports it, else ``float16``;
- a CPU with bfloat16 instructions (``avx512_bf16`` or ``amx_bf16`` in ``/proc/cpuinfo``):
  ``bfloat16``;
- any other CPU: ``float32``. Without those instructions vLLM-CPU falls back from oneDNN to plain
  torch linear layers in bfloat16, which ran SmolLM2 5x slower than float32 on a 2-core AMD EPYC
  (3.9 s against 0.73 s per mail; README "Numbers").

An explicit ``bfloat16`` / ``float16`` / ``float32`` is used as written. This ``auto`` is the
project's, not vLLM's (vLLM's ``auto`` takes the model config's type, bfloat16 for SmolLM2, whatever
the CPU). The resolved type is part of the expert's cache fingerprint: scores computed in another
type are recomputed, not reused.

>>> resolve_dtype("float32")
'float32'
>>> resolve_dtype("auto", cuda=None, cpu_flags={"avx2", "avx512_bf16"})
'bfloat16'
>>> resolve_dtype("auto", cuda=None, cpu_flags={"avx2"})
'float32'
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""CPU flags (as ``/proc/cpuinfo`` names them) that give native bfloat16 matrix arithmetic."""

_UNSET = object()


def resolve_dtype(requested: str, *, cuda: object = _UNSET, cpu_flags: object = _UNSET) -> str:
    """The engine dtype for ``requested`` (``auto`` or an explicit type) on this machine.

    ``cuda`` (``None`` for no GPU, ``"bf16"`` or ``"fp16"`` for the GPU's best half type) and
    ``cpu_flags`` override the detection, for tests.
    """
    if requested != "auto":
        return requested
    gpu = _cuda_half_type() if cuda is _UNSET else cuda
    if gpu is not None:
        return "bfloat16" if gpu == "bf16" else "float16"
    flags = _cpu_flags() if cpu_flags is _UNSET else cpu_flags
    return "bfloat16" if BF16_CPU_FLAGS & set(flags) else "float32"  # type: ignore[call-overload]


@lru_cache(maxsize=1)
def _cuda_half_type() -> str | None:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return None
    if not torch.cuda.is_available():
        return None
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


@lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    """The first processor's flags from ``/proc/cpuinfo`` (empty where there is no such file)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()
