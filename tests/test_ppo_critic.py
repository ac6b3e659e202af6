"""The critic starts in the units of the score it predicts (issue 16): a value model initialised from the
reward model, whose scores PPO shifts by the stored mean (and divides by the std), is mapped the same way."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from ppo.algorithm import normalize_scores
from ppo.rollout import score_responses
from rlhf.app.schema import load_config
from rlhf.tokens import left_pad

pytestmark = pytest.mark.usefixtures("one_torch_thread")
MEAN, STD = 3.0, 4.0


@pytest.fixture(scope="module")
def rm_with_stats(tiny_reward_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("rm_stats") / "rm"
    shutil.copytree(tiny_reward_model_dir, out)
    (out / "reward_stats.json").write_text(json.dumps({"mean": MEAN, "std": STD}))
    return out


def build(tiny_model_dir, rm_dir, tmp_path, *overrides):
    from ppo.models import build_models

    cfg = load_config(
        None,
        [
            f"model.name_or_path={tiny_model_dir}",
            f"ppo.reward_model_path={rm_dir}",
            f"data.train_file={tmp_path / 'unused.jsonl'}",
            *overrides,
        ],
    )
    return build_models(cfg)


def rollout_of(models, responses):
    tokenizer = models.tokenizer
    prompt_ids, prompt_mask = left_pad([[10, 11, 12], [13, 14]], tokenizer.pad_token_id)
    return score_responses(
        prompt_ids,
        prompt_mask,
        torch.tensor(responses),
        policy=models.policy,
        value_model=models.value_model,
        reward_model=models.reward_model,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        temperature=1.0,
        forward_batch_size=2,
        reference=models.reference,
        value_shift=models.value_shift,
        value_scale=models.value_scale,
    )


@pytest.mark.parametrize("divide_by_std", [False, True])
def test_initial_value_at_the_last_token_equals_the_normalised_score(
    tiny_model_dir, rm_with_stats, tmp_path, divide_by_std
):
    models = build(tiny_model_dir, rm_with_stats, tmp_path, f"ppo.normalize_reward_std={str(divide_by_std).lower()}")
    responses = [[20, 21, 22], [23, 24, 25]]  # no EOS: each response's score is read at its last token
    scored = rollout_of(models, responses)
    # one more token: the value predicting it is read at the previous response's last token
    extended = rollout_of(models, [row + [26] for row in responses])
    expected = normalize_scores(scored.raw_scores, MEAN, STD if divide_by_std else None)
    assert float((expected - scored.raw_scores).abs().min()) > 0.5  # the raw units are far from the score's
    torch.testing.assert_close(extended.values[:, 3], expected, rtol=1e-5, atol=1e-5)


def test_a_fresh_value_head_is_not_shifted(tiny_model_dir, rm_with_stats, tmp_path):
    models = build(tiny_model_dir, rm_with_stats, tmp_path, "ppo.value_init=policy")
    assert (models.value_shift, models.value_scale) == (0.0, 1.0)
    plain = build(tiny_model_dir, rm_with_stats, tmp_path, "ppo.normalize_reward=false")
    assert (plain.value_shift, plain.value_scale) == (0.0, 1.0)
