"""``expert.dtype: auto`` follows the hardware: bfloat16 only where it is computed natively.

The machine is set by writing a ``/proc/cpuinfo`` for the detection to read (and saying there is
no GPU); the resolved type is checked where it matters, in the answers a real (tiny) LLM expert gives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from cascade.config import ExpertConfig
from cascade.experts import dtype as dtypes
from cascade.experts import make_expert
from cascade.experts.dtype import resolve_dtype

EPYC_FLAGS = "fpu sse2 avx avx2 fma sha_ni avx512f avx512bw avx512vl"   # AVX-512 without its bf16 extension
SAPPHIRE_RAPIDS_FLAGS = "fpu sse2 avx avx2 fma avx512f avx512_bf16 amx_bf16 amx_tile amx_int8"
MAILS = ["Cheap pills, buy now and save 90 percent", "Minutes of Tuesday's meeting attached",
         "You have won a prize, click here to claim it"]


def cpuinfo(flags: str) -> str:
    """A ``/proc/cpuinfo`` of two processors with these flags, as Linux writes it."""
    return "".join(f"processor\t: {n}\nvendor_id\t: GenuineIntel\nmodel name\t: Some CPU\nflags\t\t: {flags}\n"
                   "bogomips\t: 4800.00\n\n" for n in range(2))


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str | None], None]]:
    """``machine(text)`` makes this a GPU-less machine whose ``/proc/cpuinfo`` reads ``text`` (None: no such file)."""
    def use(text: str | None) -> None:
        dtypes._cpu_flags.cache_clear()
        proc_cpuinfo = tmp_path / "cpuinfo"
        proc_cpuinfo.unlink(missing_ok=True)
        if text is not None:
            proc_cpuinfo.write_text(text)
        monkeypatch.setattr(dtypes, "Path", lambda _: proc_cpuinfo)

    monkeypatch.setattr(dtypes, "_cuda_half_type", lambda: None)
    yield use
    dtypes._cpu_flags.cache_clear()  # the next reader sees the real machine again


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
    assert resolve_dtype(explicit, cuda="fp16", cpu_flags={"amx_bf16"}) == explicit


@pytest.mark.parametrize(("proc_cpuinfo", "expected"), [
    (cpuinfo(EPYC_FLAGS), "float32"),
    (cpuinfo(SAPPHIRE_RAPIDS_FLAGS), "bfloat16"),
    (cpuinfo("fpu sse2 avx2 avx512f avx512_bf16"), "bfloat16"),
    ("processor\t: 0\nFeatures\t: fp asimd bf16\n", "float32"),  # an ARM cpuinfo: no x86 bf16 flags
    (None, "float32"),                                          # no /proc/cpuinfo at all
], ids=["epyc", "sapphire-rapids", "avx512-bf16-only", "arm", "no-cpuinfo"])
def test_auto_on_a_cpu_reads_the_bf16_flags_from_proc_cpuinfo(machine: Callable[[str | None], None],
                                                              proc_cpuinfo: str | None, expected: str) -> None:
    machine(proc_cpuinfo)
    assert resolve_dtype("auto") == expected


def _answers(tiny_llama: Path, dtype: str) -> np.ndarray:
    config = ExpertConfig(kind="transformers", model=str(tiny_llama), dtype=dtype,  # type: ignore[arg-type]
                          labels=["ham", "spam"], max_model_len=512, max_input_tokens=64)
    with make_expert(config) as expert:
        return expert.judge(MAILS).probs


def test_auto_on_a_cpu_without_bf16_gives_the_float32_answers(machine: Callable[[str | None], None],
                                                              tiny_llama: Path) -> None:
    machine(cpuinfo(EPYC_FLAGS))
    assert np.array_equal(_answers(tiny_llama, "auto"), _answers(tiny_llama, "float32"))


def test_auto_on_a_cpu_with_amx_bf16_gives_the_bfloat16_answers(machine: Callable[[str | None], None],
                                                                tiny_llama: Path) -> None:
    machine(cpuinfo(SAPPHIRE_RAPIDS_FLAGS))
    in_bfloat16 = _answers(tiny_llama, "bfloat16")
    assert np.array_equal(_answers(tiny_llama, "auto"), in_bfloat16)
    assert not np.array_equal(in_bfloat16, _answers(tiny_llama, "float32"))  # the type shows in the answers


def test_the_default_dtype_is_auto() -> None:
    assert ExpertConfig().dtype == "auto"


def test_an_unknown_dtype_is_refused_at_load_naming_the_field() -> None:
    with pytest.raises(ValueError, match="dtype"):
        ExpertConfig(dtype="int8")  # type: ignore[arg-type]
