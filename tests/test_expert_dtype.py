"""``expert.dtype: auto`` follows the hardware: bfloat16 only where it is computed natively."""

from __future__ import annotations

import pytest

from cascade.config import ExpertConfig
from cascade.experts import dtype as dtypes
from cascade.experts.dtype import resolve_dtype


@pytest.mark.parametrize(("cuda", "flags", "expected"), [
    (None, {"avx2", "avx512f"}, "float32"),          # AVX-512 without its bf16 extension
    (None, {"avx2", "avx512f", "avx512_bf16"}, "bfloat16"),
    (None, {"amx_bf16", "amx_tile"}, "bfloat16"),
    (None, set(), "float32"),                        # no /proc/cpuinfo
    ("bf16", set(), "bfloat16"),
    ("fp16", {"avx512_bf16"}, "float16"),           # a GPU decides, not the host CPU
])
def test_auto_resolves_from_the_hardware(cuda: str | None, flags: set[str], expected: str) -> None:
    assert resolve_dtype("auto", cuda=cuda, cpu_flags=flags) == expected


@pytest.mark.parametrize("explicit", ["bfloat16", "float16", "float32"])
def test_an_explicit_dtype_is_used_as_written(explicit: str) -> None:
    assert resolve_dtype(explicit, cuda=None, cpu_flags=set()) == explicit


def test_this_machine_resolves_from_its_own_cpuinfo() -> None:
    flags = dtypes._cpu_flags()
    expected = "bfloat16" if flags & dtypes.BF16_CPU_FLAGS else "float32"
    if dtypes._cuda_half_type() is None:
        assert resolve_dtype("auto") == expected


def test_the_default_is_auto_and_unknown_types_are_rejected() -> None:
    assert ExpertConfig().dtype == "auto"
    with pytest.raises(ValueError, match="dtype"):
        ExpertConfig(dtype="int8")  # type: ignore[arg-type]
