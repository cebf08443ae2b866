"""The public surface: every configured policy kind can be built."""

import typing

import pytest

from cascade.config import PolicyConfig
from policies import DeferralPolicy, make_policy


def test_make_policy_builds_every_kind_the_config_accepts():
    kinds = typing.get_args(PolicyConfig.model_fields["kind"].annotation)
    for kind in kinds:
        policy = make_policy(kind)
        assert policy.kind == kind and isinstance(policy, DeferralPolicy)


def test_make_policy_passes_hyper_parameters():
    assert make_policy("posthoc", model="gradient-boosting", n_classes=2).get_params()["model"] == "gradient-boosting"


def test_make_policy_rejects_an_unknown_kind_listing_the_choices():
    with pytest.raises(ValueError, match="unknown policy kind 'chow'.*'confidence'"):
        make_policy("chow")
