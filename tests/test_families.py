"""Every stage on tiny models of four real tokenizer families, with plain and conversational data.

For one prompt, the ids SFT (TRL's own tokenisation), `rlhf generate`, RM training, the reward statistics,
the PPO rollout and eval see are asserted identical; the reward model's score is read at the same token in
RM training and in PPO; generation stops at the chat turn terminator; KL at update 0 is exactly 0; and a
reward model with another tokenizer stops PPO and eval with exit 2 before anything runs.
The families are built in tests/families.py (no downloads).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from families import FAMILIES

from rlhf.app.schema import load_config

REPO = Path(__file__).resolve().parents[1]
TOPICS = ["cats", "the sea", "volcanoes", "dogs", "rain", "trees", "bread", "the moon"]
ANSWERS = ["Hi! Cats purr. Hope this helps.", "Go away.", "Hello! The sea is salty. Bye!", "Lava is hot."]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def prompt_of(topic: str, chat: bool):
    if chat:
        return [{"role": "user", "content": f"Tell me about {topic}."}]
    return f"User: Tell me about {topic}.\nAssistant:"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def sft_rows(chat: bool) -> list[dict]:
    rows = []
    for i, topic in enumerate(TOPICS):
        answer = ANSWERS[i % len(ANSWERS)]
        if chat:
            rows.append({"messages": prompt_of(topic, True) + [{"role": "assistant", "content": answer}]})
        else:
            rows.append({"prompt": prompt_of(topic, False), "completion": " " + answer})
    return rows


def common(out: Path) -> list[str]:
    return [f"run.output_dir={out}", "tracking.report_to=[jsonl]", "tracking.plots=false", "train.logging_steps=1000"]


class Recorder:
    """Wraps a function, keeping every call's arguments and result."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, *args, **kwargs):
        result = self.fn(*args, **kwargs)
        self.calls.append((args, kwargs, result))
        return result


def run_family(family: str, base: Path, root: Path, chat: bool, monkeypatch) -> dict:
    """SFT -> generate -> rank -> RM -> PPO -> eval on one family; the ids each stage saw for one prompt."""
    import reward_model.preference_data as preference_data
    import reward_model.scoring as rm_scoring
    import rlhf.scoring as core_scoring
    from ppo import trainer as ppo_trainer
    from reward_model.trainer import train as train_rm
    from rlhf.commands.evaluate import evaluate
    from rlhf.commands.generate import sample
    from rlhf.modeling import load_causal_lm, load_tokenizer
    from rlhf.tokens import Encoder
    from sft.trainer import build_trainer, to_sft_config
    from sft.trainer import train as train_sft

    mode = "chat" if chat else "plain"
    out = root / f"{family}-{mode}"
    out.mkdir()
    seen: dict[str, list[int]] = {}
    first_prompt = prompt_of(TOPICS[0], chat)

    # SFT: TRL tokenises the rows itself; its prompt part is what the policy was trained to continue.
    sft_file = write_jsonl(out / "sft.jsonl", sft_rows(chat))
    sft_cfg = load_config(
        REPO / "configs/tiny/sft.yaml",
        [
            f"model.name_or_path={base}",
            f"data.train_file={sft_file}",
            "data.eval_file=null",
            "data.eval_fraction=0",
            "train.max_steps=1",
            "train.per_device_train_batch_size=4",
            "train.eval_steps=null",
            "train.save_steps=null",
            *common(out / "sft"),
        ],
    )
    sft_trainer = build_trainer(sft_cfg, to_sft_config(sft_cfg))
    example = sft_trainer.train_dataset[0]
    seen["sft"] = [t for t, label in zip(example["input_ids"], example["labels"]) if label == -100]
    sft_response = [t for t, label in zip(example["input_ids"], example["labels"]) if label != -100]
    del sft_trainer
    train_sft(sft_cfg)
    policy_dir = out / "sft" / "model"

    tokenizer = load_tokenizer(str(policy_dir))
    encoder = Encoder(tokenizer)
    policy = load_causal_lm(str(policy_dir), tokenizer)

    # generate: K=2 samples per prompt, ranked by a toy reviewer (shorter first).
    prompts = [prompt_of(topic, chat) for topic in TOPICS]
    prompts_file = write_jsonl(out / "prompts.jsonl", [{"prompt": p} for p in prompts])
    samples = sample(policy, tokenizer, prompts, num_samples=2, max_new_tokens=6, temperature=1.0, seed=0)
    seen["generate"] = samples[0].prompt_ids
    rankings = []
    for index, prompt in enumerate(prompts):
        texts = [s.text for s in samples[2 * index : 2 * index + 2]] + [ANSWERS[index % len(ANSWERS)]]
        texts = list(dict.fromkeys(texts))
        if len(texts) < 2:
            continue
        responses = [{"id": f"r{j}", "text": text} for j, text in enumerate(texts)]
        order = sorted(responses, key=lambda r: (len(r["text"]), r["id"]))
        rankings.append(
            {"id": f"p{index}", "prompt": prompt, "responses": responses, "ranking": [[r["id"]] for r in order]}
        )
    rankings_file = write_jsonl(out / "rankings.jsonl", rankings)

    # RM training (TRL's RewardTrainer on our ids) and the reward statistics.
    pairwise = Recorder(preference_data.pairwise_dataset)
    monkeypatch.setattr(preference_data, "pairwise_dataset", pairwise)
    statistics = Recorder(rm_scoring.score_sequences)
    monkeypatch.setattr(rm_scoring, "score_sequences", statistics)
    rm_cfg = load_config(
        REPO / "configs/tiny/rm.yaml",
        [
            f"model.name_or_path={policy_dir}",
            f"data.train_file={rankings_file}",
            "data.eval_fraction=0",
            "train.max_steps=1",
            "train.per_device_train_batch_size=4",
            "rm.normalize_samples=8",
            *common(out / "rm"),
        ],
    )
    train_rm(rm_cfg)
    train_pairs, train_rows = pairwise.calls[0][0][0], pairwise.calls[0][2]
    first_pair = next(i for i, pair in enumerate(train_pairs) if pair["prompt"] == first_prompt)
    rm_row = train_rows[first_pair]["chosen_ids"]
    seen["rm training"] = rm_row[: len(seen["generate"])]
    stats_sequences = [list(seq) for call in statistics.calls for seq in call[0][1]]
    seen["reward statistics"] = next(
        seq[: len(seen["generate"])] for seq in stats_sequences if seq[: len(seen["generate"])] == seen["generate"]
    )
    # Every statistics sequence starts with some prompt's generation ids.
    generation_prompts = {tuple(s.prompt_ids) for s in samples}
    assert all(any(tuple(seq[: len(p)]) == p for p in generation_prompts) for seq in stats_sequences)

    # PPO: one update; the rollout's prompt ids and where the score is read.
    rollouts = Recorder(ppo_trainer.score_responses)
    monkeypatch.setattr(ppo_trainer, "score_responses", rollouts)
    ppo_cfg = load_config(
        None,
        [
            f"model.name_or_path={policy_dir}",
            f"ppo.reward_model_path={out / 'rm' / 'model'}",
            f"data.train_file={prompts_file}",
            "data.max_prompt_length=64",
            "ppo.num_updates=1",
            "ppo.rollout_batch_size=8",
            "ppo.rollout_forward_batch_size=8",
            "ppo.max_new_tokens=6",
            "ppo.sample_every=0",
            "ppo.eval_every=0",
            *common(out / "ppo"),
        ],
    )
    result = ppo_trainer.train(ppo_cfg)
    args, kwargs, rollout = rollouts.calls[0]
    assert list(kwargs["eos_token_id"]) == encoder.stop_ids  # PPO truncates at every stop id
    prompt_ids, prompt_mask = args[0], args[1]
    rows = [ids[mask.bool()].tolist() for ids, mask in zip(prompt_ids, prompt_mask)]
    seen["ppo rollout"] = next(row for row in rows if row == seen["generate"])
    assert all(tuple(row) in generation_prompts for row in rows)
    assert result["history"][0]["objective/kl"] == pytest.approx(0.0, abs=1e-5)  # the policy is the reference
    stop_ids = set(encoder.stop_ids)
    ends = rollout.response_ids[torch.arange(len(rows)), rollout.response_mask.long().sum(1) - 1]
    assert all(int(end) in stop_ids for end, done in zip(ends, rollout.has_eos) if done)

    # The RM reads a sequence's score at the same token in training (HF pooling at the last non-pad
    # token) and in PPO (an explicit index at the response's last real token).
    from ppo.rollout import sequence_scores
    from reward_model.scoring import sequence_rewards
    from rlhf.modeling import load_scalar_model
    from rlhf.tokens import left_pad

    rm = load_scalar_model(str(out / "rm" / "model"), tokenizer).eval()
    prompt_part, response_part = rm_row[: len(seen["generate"])], rm_row[len(seen["generate"]) :]
    with torch.no_grad():
        trained_score = sequence_rewards(rm, *left_pad([rm_row], tokenizer.pad_token_id))
        p_ids, p_mask = left_pad([prompt_part], tokenizer.pad_token_id)
        r_ids = torch.tensor([response_part])
        r_mask = torch.ones_like(r_ids, dtype=torch.bool)
        ppo_score = sequence_scores(rm, torch.cat([p_ids, r_ids], 1), torch.cat([p_mask, r_mask.long()], 1), r_mask)
    assert ppo_score[0].item() == pytest.approx(trained_score[0].item(), abs=1e-5)
    assert response_part[-1] == encoder.terminator(first_prompt)

    # eval: the RM scores what the policies sampled, prompts encoded once more by the same door.
    scored = Recorder(core_scoring.reward_scores)
    monkeypatch.setattr(core_scoring, "reward_scores", scored)
    evaluate({"sft": str(policy_dir), "ppo": str(out / "ppo" / "policy")}, prompts, str(out / "rm" / "model"),
             max_new_tokens=6, batch_size=8)  # fmt: skip
    seen["eval"] = [list(p) for p in scored.calls[0][0][1]][0]
    return {"seen": seen, "sft_response": sft_response, "encoder": encoder, "first_prompt": first_prompt}


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_every_stage_sees_the_same_ids(family, family_dirs, tmp_path, monkeypatch):
    report = {}
    for chat in (False, True):
        run = run_family(family, family_dirs[family], tmp_path, chat, monkeypatch)
        seen, encoder = run["seen"], run["encoder"]
        expected = encoder.prompt_ids(run["first_prompt"])
        assert {stage: ids for stage, ids in seen.items()} == {stage: expected for stage in seen}, family
        # SFT's completion (TRL's own tokenisation) starts with our response, terminator included (a template
        # may write more after it, ChatML a newline).
        ours = encoder.response_ids(run["first_prompt"], ANSWERS[0] if chat else " " + ANSWERS[0])
        assert run["sft_response"][: len(ours)] == ours, family
        report["chat" if chat else "plain"] = expected
    print(json.dumps({family: report}))


def with_terminator_bias(model, token_id: int):
    """The model with an output bias that makes `token_id` (nearly) certain at every step."""
    from torch import nn

    head = model.get_output_embeddings()
    biased = nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.zero_()
        biased.bias[token_id] = 100.0
    model.set_output_embeddings(biased)
    return model


@pytest.mark.parametrize("family", ["llama3", "qwen"])
def test_generation_stops_at_the_turn_terminator(family, family_dirs):
    """A chat policy that ends its turn at once: PPO's rollout and `rlhf generate` stop there. Old code
    stopped PPO only at the tokenizer's EOS, which for Llama 3 is <|end_of_text|>, not <|eot_id|>: the
    response ran to the length budget and took the missing-EOS penalty."""
    from ppo.algorithm import contains_eos, truncate_after_eos
    from ppo.rollout import build_generation_config, generate_responses
    from rlhf.commands.generate import sample
    from rlhf.modeling import load_causal_lm, load_tokenizer
    from rlhf.tokens import Encoder, left_pad

    tokenizer = load_tokenizer(str(family_dirs[family]))
    encoder = Encoder(tokenizer)
    messages = prompt_of("cats", chat=True)
    terminator = encoder.terminator(messages)
    policy = with_terminator_bias(load_causal_lm(str(family_dirs[family]), tokenizer).eval(), terminator)
    prompt_ids, prompt_mask = left_pad([encoder.prompt_ids(messages)] * 2, tokenizer.pad_token_id)

    def rollout(stop_ids):
        config = build_generation_config(6, 1.0, 0, 1.0, True, stop_ids, tokenizer.pad_token_id)
        raw = generate_responses(policy, prompt_ids, prompt_mask, config)
        responses, mask = truncate_after_eos(raw, stop_ids, tokenizer.pad_token_id)
        return raw, mask, contains_eos(responses, stop_ids)

    raw, mask, has_eos = rollout(encoder.stop_ids)  # what the PPO trainer passes (test_every_stage_... checks)
    assert raw.shape[1] == 1 and mask.sum(1).tolist() == [1, 1] and has_eos.tolist() == [True, True]
    assert raw[:, 0].tolist() == [terminator, terminator]
    samples = sample(policy, tokenizer, [messages], num_samples=2, max_new_tokens=6, seed=0)
    assert [(s.finished, s.num_tokens, s.text) for s in samples] == [(True, 1, "")] * 2
    if family == "llama3":  # the old stop rule: the tokenizer's EOS only
        raw, mask, has_eos = rollout(tokenizer.eos_token_id)
        assert raw.shape[1] == 6 and has_eos.tolist() == [False, False]


@pytest.mark.parametrize("policy_family, reward_family", [("llama3", "qwen"), ("gpt2", "llama3")])
def test_a_reward_model_with_another_tokenizer_stops_ppo_and_eval(
    policy_family, reward_family, family_dirs, tmp_path, capsys
):
    """Old code resized the value model's embeddings to the policy's tokenizer with random rows and compared
    only lengths, so PPO and eval ran to the end on ids of the wrong tokenizer."""
    from rlhf.app.cli import main

    policy, reward = family_dirs[policy_family], family_dirs[reward_family]
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": prompt_of(t, False)} for t in TOPICS])
    out = tmp_path / "ppo"
    code = main(
        ["ppo", f"model.name_or_path={policy}", f"ppo.reward_model_path={reward}", f"data.train_file={prompts}"]
        + common(out)
    )
    error = capsys.readouterr().err
    assert code == 2 and str(policy) in error and str(reward) in error and "tokenizer mismatch" in error, error
    assert not (out / "metrics.jsonl").exists() and not (out / "policy").exists()
    code = main(["eval", "--policies", f"sft={policy}", "--prompts", str(prompts), "--reward-model", str(reward),
                 "--out", str(tmp_path / "eval")])  # fmt: skip
    error = capsys.readouterr().err
    assert code == 2 and str(reward) in error and "tokenizer mismatch" in error, error
    assert not (tmp_path / "eval" / "report.json").exists()


def test_conversational_rankings_train_a_reward_model(family_dirs, tmp_path):
    """Rankings whose prompt is a message list and whose responses are text (the rankings format allows it):
    old code handed them to TRL as text, which concatenated a list with a string (a TypeError)."""
    from reward_model.trainer import train as train_rm
    from rlhf.modeling import load_tokenizer
    from rlhf.tokens import Encoder

    rankings = [
        {
            "id": f"p{i}",
            "prompt": prompt_of(topic, chat=True),
            "responses": [{"id": "a", "text": ANSWERS[0]}, {"id": "b", "text": ANSWERS[1]}, {"id": "c", "text": "Hm."}],
            "ranking": [["a"], ["c"], ["b"]],
        }
        for i, topic in enumerate(TOPICS)
    ]
    path = write_jsonl(tmp_path / "rankings.jsonl", rankings)
    cfg = load_config(
        REPO / "configs/tiny/rm.yaml",
        [f"model.name_or_path={family_dirs['qwen']}", f"data.train_file={path}", "data.eval_fraction=0.25",
         "train.max_steps=2", "train.per_device_train_batch_size=8", "rm.normalize_samples=8",
         *common(tmp_path / "rm")],
    )  # fmt: skip
    summary = train_rm(cfg)
    assert summary["train/num_pairs"] == 6 * 3 and summary["train/num_groups"] == 6
    assert summary["reward_stats/num_samples"] == 8 and 0.0 <= summary["eval/accuracy"] <= 1.0
    # The trained model scores a chat row at its <|im_end|>, the token PPO reads.
    encoder = Encoder(load_tokenizer(str(tmp_path / "rm" / "model")))
    assert encoder.sequence(rankings[0]["prompt"], ANSWERS[0])[-1] == encoder.conventions.turn_end_id
