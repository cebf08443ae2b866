"""The cnn expert's size knobs: ``channels``, ``hidden_units`` and ``epochs``.

They are validated config fields that only the ``cnn`` kind reads, they change the expert's cache
fingerprint (its scores are keyed by everything that changes them) and leave every other kind's
untouched, and they change the network ``make_expert`` trains (parameters, multiply-accumulates).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from cascade.config import CascadeConfig, ConfigError, ExpertConfig
from cascade.data import Dataset
from cascade.experts import make_expert
from cascade.experts.fingerprint import expert_fingerprint
from cascade.experts.image import CnnExpert

LABELS = ["normal", "anomaly"]
FASHION = {"dataset": {"name": "fashion-mnist"}, "detector": {"kind": "pixel-lr"}}


@pytest.fixture()
def cascade_home(tmp_path: Path) -> Iterator[Path]:
    """An empty cascade home, so every CNN is trained here and cached nowhere else."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CASCADE_HOME", str(tmp_path))
        yield tmp_path


@pytest.fixture(scope="module")
def pool() -> Dataset:
    """64 random 12x12 images, half of them anomalies."""
    rng = np.random.default_rng(0)
    return Dataset(name="toy-images", y=np.arange(64) % 2, label_names=tuple(LABELS),
                   ids=np.array([f"toy/{i}" for i in range(64)]), groups=np.zeros(64, dtype=int),
                   images=rng.integers(0, 256, size=(64, 12, 12), dtype=np.uint8))


def test_the_size_knobs_default_to_the_cnn_the_expert_always_trained() -> None:
    expert = ExpertConfig(kind="cnn", labels=LABELS)
    assert (expert.channels, expert.hidden_units, expert.epochs) == (8, 32, 6)


@pytest.mark.parametrize("field", ["channels", "hidden_units", "epochs"])
def test_a_size_knob_below_one_is_refused_naming_the_field(field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        ExpertConfig(kind="cnn", labels=LABELS, **{field: 0})


def test_a_size_knob_on_an_expert_that_is_not_a_cnn_is_refused_at_load() -> None:
    with pytest.raises(ConfigError) as info:
        CascadeConfig.from_dict({"dataset": {"name": "spamassassin"},
                                 "expert": {"kind": "knn-vote", "shots": 4, "channels": 32}})
    assert "  expert.channels: only cnn experts read it; this expert is 'knn-vote'\n" in f"{info.value}\n"


def test_a_chain_tier_sets_its_cnn_size_and_the_report_names_it() -> None:
    config = CascadeConfig.from_dict({**FASHION, "tiers": [
        {"name": "cnn", "expert": {"kind": "cnn", "labels": LABELS}, "cost_per_call": 0.307},
        {"name": "wide-cnn", "expert": {"kind": "cnn", "labels": LABELS, "channels": 32, "hidden_units": 128,
                                        "epochs": 12}, "cost_per_call": 4.24}],
        "budget": {"kind": "chain", "target": 0.05, "delta": 0.1}})
    assert [tier.expert.display_name for tier in config.tiers] == [
        "cnn (8/16 filters, 32 hidden, 6 epochs; trained on the labelled pool)",
        "cnn (32/64 filters, 128 hidden, 12 epochs; trained on the labelled pool)"]


@pytest.mark.parametrize(("field", "value"), [("channels", 16), ("hidden_units", 64), ("epochs", 12)])
def test_each_size_knob_changes_the_cnn_fingerprint(field: str, value: int) -> None:
    default = ExpertConfig(kind="cnn", labels=LABELS)
    resized = ExpertConfig(kind="cnn", labels=LABELS, **{field: value})
    assert expert_fingerprint(resized, "image") != expert_fingerprint(default, "image")


def test_the_size_knobs_stay_out_of_other_kinds_fingerprints() -> None:
    """A knn-vote or LLM expert's cached scores keep their keys: the cnn fields never change its answers."""
    vote = expert_fingerprint(ExpertConfig(kind="knn-vote", shots=4), "text")
    assert not {"channels", "hidden_units", "epochs"} & set(vote["config"])


def test_a_wider_cnn_expert_has_more_parameters_and_multiply_accumulates(cascade_home: Path, pool: Dataset) -> None:
    import torch

    def network(**size: int) -> torch.nn.Module:
        expert = make_expert(ExpertConfig(kind="cnn", labels=LABELS, epochs=1, **size), pool=pool)
        assert isinstance(expert, CnnExpert)
        return expert.detector.network_

    def parameters(net: torch.nn.Module) -> int:
        return sum(p.numel() for p in net.parameters())

    def conv_multiply_accumulates(net: torch.nn.Module) -> int:
        """Per 12x12 image: each conv output value costs in_channels * 3 * 3 (first block 12x12, second 6x6)."""
        convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
        return sum(side * side * conv.out_channels * conv.in_channels * 9 for conv, side in zip(convs, (12, 6)))

    small, wide = network(channels=4, hidden_units=16), network(channels=16, hidden_units=16)
    assert [m.out_channels for m in wide.modules() if isinstance(m, torch.nn.Conv2d)] == [16, 32]
    assert parameters(wide) > parameters(small)
    assert conv_multiply_accumulates(small) == 12 * 12 * 4 * 9 + 6 * 6 * 8 * 4 * 9 == 15_552
    assert conv_multiply_accumulates(wide) == 12 * 12 * 16 * 9 + 6 * 6 * 32 * 16 * 9 == 186_624
    assert parameters(network(channels=4, hidden_units=64)) > parameters(small)


def test_cnns_of_different_sizes_are_cached_apart(cascade_home: Path, pool: Dataset) -> None:
    for channels in (4, 8):
        make_expert(ExpertConfig(kind="cnn", labels=LABELS, channels=channels, epochs=1), pool=pool)
    make_expert(ExpertConfig(kind="cnn", labels=LABELS, channels=4, epochs=2), pool=pool)
    assert len(list((cascade_home / "cache" / "experts").glob("pixel-cnn-*"))) == 3
