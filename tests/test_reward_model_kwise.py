"""The K-wise ranking loss: equal to the mean of its pairwise losses, same gradients, ties give no pair."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from reward_model.kwise import KwiseCollator, kwise_ranking_loss
from reward_model.preference_data import group_rankings
from rlhf.data import ranking_to_pairs


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def two_rankings():
    """Ranking A: strict order a0 > a1 > a2. Ranking B: b0 > (b1 = b2), a tie, so 2 pairs instead of 3."""
    ranking_a = {
        "id": "A",
        "prompt": "p",
        "responses": [{"id": i, "text": f" a{i}"} for i in "012"],
        "ranking": [["0"], ["1"], ["2"]],
    }
    ranking_b = {
        "id": "B",
        "prompt": "q",
        "responses": [{"id": i, "text": f" b{i}"} for i in "012"],
        "ranking": [["0"], ["1", "2"]],
    }
    return group_rankings(ranking_to_pairs(ranking_a) + ranking_to_pairs(ranking_b))


def flatten(groups):
    """The collator's flattening, on indices only: rewards are laid out a0 a1 a2 b0 b1 b2."""
    better, worse, pair_group, offset = [], [], [], 0
    for index, group in enumerate(groups):
        better += [offset + i for i in group["better"]]
        worse += [offset + i for i in group["worse"]]
        pair_group += [index] * len(group["better"])
        offset += len(group["responses"])
    return torch.tensor(better), torch.tensor(worse), torch.tensor(pair_group)


def test_ties_give_no_pair_and_responses_are_listed_once():
    groups = two_rankings()
    assert [len(g["better"]) for g in groups] == [3, 2]  # C(3,2)=3; the tie removes b1-vs-b2
    assert [g["responses"] for g in groups] == [[" a0", " a1", " a2"], [" b0", " b1", " b2"]]
    assert list(zip(groups[0]["better"], groups[0]["worse"])) == [(0, 1), (0, 2), (1, 2)]


def test_kwise_loss_equals_the_mean_of_pairwise_losses_on_a_hand_computed_example():
    groups = two_rankings()
    better, worse, pair_group = flatten(groups)
    rewards = torch.tensor([2.0, 0.5, -1.0, 0.0, 1.0, 1.0])
    # Ranking A gaps: a0-a1 = 1.5, a0-a2 = 3.0, a1-a2 = 1.5 -> losses softplus(-1.5)=0.20141, softplus(-3)=0.04859, 0.20141  # noqa: E501
    #   mean over its 3 pairs = 0.15047
    # Ranking B gaps: b0-b1 = -1, b0-b2 = -1 -> losses softplus(1) = 1.31326 each; mean over its 2 pairs = 1.31326
    # Loss = mean over the 2 rankings = (0.15047 + 1.31326) / 2 = 0.73187
    expected = ((softplus(-1.5) * 2 + softplus(-3.0)) / 3 + softplus(1.0)) / 2
    assert expected == pytest.approx(0.73187, abs=1e-5)
    assert kwise_ranking_loss(rewards, better, worse, pair_group, num_groups=2).item() == pytest.approx(
        expected, abs=1e-6
    )
    # With one ranking it is exactly the mean pairwise (Bradley-Terry) loss of its pairs, as trl.RewardTrainer computes.
    only_a = pair_group == 0
    pairwise_mean = -F.logsigmoid(rewards[better[only_a]] - rewards[worse[only_a]]).mean()
    assert kwise_ranking_loss(
        rewards, better[only_a], worse[only_a], pair_group[only_a], num_groups=1
    ).item() == pytest.approx(pairwise_mean.item(), abs=1e-7)


def test_kwise_gradients_match_autograd_on_the_pairwise_form():
    groups = two_rankings()
    better, worse, pair_group = flatten(groups)
    torch.manual_seed(0)
    start = torch.randn(6, dtype=torch.float64)

    rewards = start.clone().requires_grad_(True)
    kwise_ranking_loss(rewards, better, worse, pair_group, num_groups=2).backward()

    # The pairwise form written out pair by pair: each ranking's pair losses over its own pair count.
    reference = start.clone().requires_grad_(True)
    per_ranking = []
    for group_index in range(2):
        pairs = [(b, w) for b, w, g in zip(better.tolist(), worse.tolist(), pair_group.tolist()) if g == group_index]
        per_ranking.append(sum(-F.logsigmoid(reference[b] - reference[w]) for b, w in pairs) / len(pairs))
    (sum(per_ranking) / 2).backward()
    torch.testing.assert_close(rewards.grad, reference.grad)

    # And in closed form: d/d r_i = sum over pairs with i as winner (resp. loser) of -(+/-) sigmoid(-gap) / (pairs * rankings)  # noqa: E501
    analytic = torch.zeros(6, dtype=torch.float64)
    counts = torch.bincount(pair_group).double()
    for b, w, g in zip(better.tolist(), worse.tolist(), pair_group.tolist()):
        weight = torch.sigmoid(-(start[b] - start[w])) / (counts[g] * 2)
        analytic[b] -= weight
        analytic[w] += weight
    torch.testing.assert_close(rewards.grad, analytic)


def test_margin_and_centring_terms():
    better, worse, pair_group = torch.tensor([0]), torch.tensor([1]), torch.tensor([0])
    rewards = torch.tensor([1.0, 0.5])
    # gap 0.5, margin 2 -> softplus(-(0.5 - 2)) = softplus(1.5) = 1.70141
    assert kwise_ranking_loss(
        rewards, better, worse, pair_group, 1, margin=torch.tensor([2.0])
    ).item() == pytest.approx(softplus(1.5), abs=1e-5)
    # centring adds 0.01 * (1.0 + 0.5)^2 = 0.0225 to softplus(-0.5) = 0.47408
    centred = kwise_ranking_loss(rewards, better, worse, pair_group, 1, center_rewards_coefficient=0.01).item()
    assert centred == pytest.approx(softplus(-0.5) + 0.0225, abs=1e-5)


def test_collator_flattens_rankings_and_offsets_their_pairs():
    collator = KwiseCollator(pad_token_id=0)
    batch = collator(
        [
            {"response_ids": [[5, 6, 7], [8]], "better": [0], "worse": [1], "margin": [0.0]},
            {"response_ids": [[9, 9], [4, 4, 4, 4], [3]], "better": [1, 1], "worse": [0, 2], "margin": [0.5, 1.0]},
        ]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [8, 0, 0, 0], [9, 9, 0, 0], [4, 4, 4, 4], [3, 0, 0, 0]]
    assert batch["attention_mask"].sum(1).tolist() == [3, 1, 2, 4, 1]
    assert batch["better"].tolist() == [0, 3, 3] and batch["worse"].tolist() == [1, 2, 4]
    assert batch["pair_group"].tolist() == [0, 1, 1]
    assert batch["margin"].tolist() == [0.0, 0.5, 1.0]


def test_a_response_over_max_length_leaves_the_batch_with_its_pairs(tiny_model_dir):
    from reward_model.preference_data import kwise_dataset
    from reward_model.scoring import preference_input_ids
    from rlhf.modeling import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    long = " Cats purr and nap and purr again." * 8
    ranking = {
        "id": "A",
        "prompt": "User: cats?\nAssistant:",
        "responses": [{"id": "0", "text": " Cats purr."}, {"id": "1", "text": " Cats nap."}, {"id": "2", "text": long}],
        "ranking": [["0"], ["1"], ["2"]],
    }
    max_length = 24
    lengths = [len(preference_input_ids(tokenizer, ranking["prompt"], r["text"])) for r in ranking["responses"]]
    assert lengths[0] <= max_length and lengths[1] <= max_length < lengths[2]
    rows = kwise_dataset(ranking_to_pairs(ranking), tokenizer, max_length).to_list()
    batch = KwiseCollator(tokenizer.pad_token_id)(rows)
    assert batch["input_ids"].shape == (2, max(lengths[:2]))  # old code: 3 rows padded to the long response
    assert batch["better"].tolist() == [0] and batch["worse"].tolist() == [1]  # the one pair within max_length
    assert batch["input_ids"][batch["worse"][0], : lengths[1]].tolist() == preference_input_ids(
        tokenizer, ranking["prompt"], " Cats nap."
    )
