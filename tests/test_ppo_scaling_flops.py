"""benchmarks/ppo_scaling.py's FLOP count: a hand-computed layer, and no value model under rloo / grpo."""

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scaling():
    spec = importlib.util.spec_from_file_location("ppo_scaling", REPO / "benchmarks" / "ppo_scaling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_forward_flops_of_one_token_by_hand(scaling):
    # hidden 2, 1 layer, ffn 4: weights 4*2*2 (q, k, v, o) + 3*2*4 (gate, up, down) = 40; context 3 adds 4*1*2*3
    assert scaling.forward_flops_per_token(hidden=2, layers=1, ffn=4, context=3) == 2 * 40 + 24


def test_without_a_critic_one_backbone_pass_less_in_scoring_and_training(scaling):
    shape = dict(hidden=64, layers=2, ffn=256, vocab=500, prompt_len=10.0, response_len=20.0)
    with_critic = scaling.update_flops(**shape)
    without = scaling.update_flops(**shape, critic=False)
    body = scaling.forward_flops_per_token(64, 2, 256, 30.0)  # one backbone pass of one token, whole context
    assert without["generation"] == with_critic["generation"]
    assert with_critic["scoring"] - without["scoring"] == pytest.approx(scaling.PROMPTS * 30 * body)
    assert with_critic["training"] - without["training"] == pytest.approx(
        scaling.EPOCHS * 3 * scaling.PROMPTS * 30 * body
    )


def test_each_sampled_response_is_counted(scaling):
    """ppo.samples_per_prompt=2 (rloo, grpo) doubles every phase of the same prompts."""
    shape = dict(hidden=64, layers=2, ffn=256, vocab=500, prompt_len=10.0, response_len=20.0, critic=False)
    one, two = scaling.update_flops(**shape), scaling.update_flops(**shape, sequences=2 * scaling.PROMPTS)
    assert {phase: 2 * flops for phase, flops in one.items()} == pytest.approx(two)
