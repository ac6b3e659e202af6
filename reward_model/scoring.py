"""Reward-model inputs and scores: how a prompt/response becomes token ids, and the scalar it gets.

A prompt/response becomes ids through `rlhf.tokens.Encoder` (the ids PPO and eval score): prompt ids as
generation saw them, then the response up to and including its terminator (the EOS for plain text, the
chat template's turn end for conversations), so the score is read at the terminator, which is where a
finished PPO response ends too. The ids are handed to `trl.RewardTrainer` pre-tokenised. The score is the
head's output at the last real (non-pad) token, which transformers' sequence-classification models find
from `pad_token_id`; we also pass position ids derived from the attention mask, so left padding (as PPO
and `rlhf.scoring` use) gives the same score as right padding or none.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from rlhf.tokens import Encoder, position_ids_from_mask


def preference_input_ids(tokenizer, prompt: Any, response: Any) -> list[int]:
    """Token ids of prompt + response as the reward model sees them (`tokenizer`: or its Encoder)."""
    return Encoder.of(tokenizer).sequence(prompt, response)


def sequence_rewards(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) scalar rewards of a padded batch (either padding side), read at each row's last real token."""
    outputs = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    )
    return outputs.logits.squeeze(-1)


@torch.no_grad()
def score_sequences(model, sequences: Sequence[Sequence[int]], pad_token_id: int, batch_size: int = 32) -> torch.Tensor:
    """Scores of token-id sequences, batched (left-padded by `rlhf.scoring.reward_scores`)."""
    from rlhf.scoring import reward_scores

    if not sequences:
        return torch.zeros(0)
    # Sorting by length keeps padding (and wasted compute) small; scores go back in input order.
    order = sorted(range(len(sequences)), key=lambda index: len(sequences[index]))
    sorted_scores = reward_scores(model, [sequences[i] for i in order], [[] for _ in order], pad_token_id, batch_size)
    scores = torch.empty_like(sorted_scores)
    scores[torch.tensor(order)] = sorted_scores
    return scores


def truncate_left(ids: list[int], max_length: Optional[int]) -> list[int]:
    """The last `max_length` tokens: the score is read at the end (the EOS), so the end is what must stay."""
    return ids[-max_length:] if max_length and len(ids) > max_length else ids


CHARS_PER_TOKEN_BOUND = 32  # no token of a real tokenizer spans more characters than this


def text_tail(value: Any, max_length: Optional[int]) -> Any:
    """Text (or each chat message's content) cut to its last max_length * 32 characters before tokenising:
    the last max_length tokens lie within them, and a 10 MB row never reaches the tokenizer whole."""
    if not max_length:
        return value
    limit = max_length * CHARS_PER_TOKEN_BOUND
    if isinstance(value, str):
        return value[-limit:]
    if isinstance(value, list):
        return [
            {**m, "content": m["content"][-limit:]} if isinstance(m, dict) and isinstance(m.get("content"), str) else m
            for m in value
        ]
    return value


def surely_longer_than(max_length: Optional[int], *values: Any) -> bool:
    """True when some text has more than max_length * 32 characters, so its tokens exceed max_length
    whatever the tokenizer: such a row is dropped without tokenising it (a 10 MB row costs nothing)."""
    if not max_length:
        return False
    limit = max_length * CHARS_PER_TOKEN_BOUND
    for value in values:
        texts = [value] if isinstance(value, str) else [m.get("content") for m in value if isinstance(m, dict)]
        if any(isinstance(text, str) and len(text) > limit for text in texts):
            return True
    return False


def score_texts(
    model,
    tokenizer,
    prompts: Sequence[Any],
    responses: Sequence[Any],
    batch_size: int = 32,
    max_length: Optional[int] = None,
) -> torch.Tensor:
    """Scores of prompt/response pairs (plain text or conversational), each cut to its last `max_length`
    tokens (the trained model's data.max_length: longer inputs cost memory and leave its training lengths)."""
    encoder = Encoder.of(tokenizer)
    sequences = [
        truncate_left(encoder.sequence(text_tail(prompt, max_length), text_tail(response, max_length)), max_length)
        for prompt, response in zip(prompts, responses)
    ]
    return score_sequences(model, sequences, tokenizer.pad_token_id, batch_size)


def preference_metrics(
    pairs: list[dict], chosen_scores: torch.Tensor, rejected_scores: torch.Tensor
) -> dict[str, float]:
    """Held-out metrics of scored pairs: accuracy, reward means/stds, margin, and accuracy per ranking.

    `group_accuracy` averages each ranking's own pair accuracy (rankings weigh equally);
    `group_all_correct` is the share of rankings whose every pair is ordered right.
    """
    chosen = chosen_scores.double()
    rejected = rejected_scores.double()
    correct = (chosen > rejected).double()
    by_group: dict[str, list[float]] = {}
    for pair, is_correct in zip(pairs, correct.tolist()):
        by_group.setdefault(str(pair.get("group")), []).append(is_correct)
    group_accuracy = [sum(values) / len(values) for values in by_group.values()]
    return {
        "accuracy": correct.mean().item(),
        "chosen_reward_mean": chosen.mean().item(),
        "chosen_reward_std": chosen.std(unbiased=False).item(),
        "rejected_reward_mean": rejected.mean().item(),
        "rejected_reward_std": rejected.std(unbiased=False).item(),
        "margin_mean": (chosen - rejected).mean().item(),
        "group_accuracy": sum(group_accuracy) / len(group_accuracy),
        "group_all_correct": sum(1.0 for value in group_accuracy if value == 1.0) / len(group_accuracy),
        "num_pairs": float(len(pairs)),
        "num_groups": float(len(by_group)),
    }


def score_pairs(
    model, tokenizer, pairs: list[dict], batch_size: int = 32, max_length: Optional[int] = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen scores, rejected scores) of pairs, scoring each distinct prompt/response once."""
    import json

    keys: dict[str, int] = {}
    prompts: list[Any] = []
    responses: list[Any] = []

    def index_of(prompt: Any, response: Any) -> int:
        key = json.dumps([prompt, response], ensure_ascii=False)
        if key not in keys:
            keys[key] = len(prompts)
            prompts.append(prompt)
            responses.append(response)
        return keys[key]

    chosen_index = [index_of(pair["prompt"], pair["chosen"]) for pair in pairs]
    rejected_index = [index_of(pair["prompt"], pair["rejected"]) for pair in pairs]
    scores = score_texts(model, tokenizer, prompts, responses, batch_size, max_length)
    return scores[torch.tensor(chosen_index)], scores[torch.tensor(rejected_index)]


CHANCE_LOSS = 0.6931471805599453  # ln 2: the pairwise loss of a model that gives every pair 50/50


def chance_warning(held_out_loss: Optional[float]) -> Optional[str]:
    """A warning when the held-out pairwise loss is above chance (ln 2): the reward model has learned its
    training pairs at the cost of new ones, and PPO will exploit what it got wrong. None otherwise."""
    if held_out_loss is None or not held_out_loss > CHANCE_LOSS:
        return None
    return (
        f"held-out loss {held_out_loss:.3f} is above chance (ln 2 = {CHANCE_LOSS:.3f}): the reward model over-fits "
        "its training pairs; try fewer epochs, a lower learning rate, rm.loss=kwise or more ranked prompts"
    )
