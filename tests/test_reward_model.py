"""Reward-model stage: score at the last real token, data split, training with both losses, reward stats, scoring.

The rankings are built here with a learnable preference: a response is a few sentences, each either
polite ("Hope this helps.") or rude ("Go away."), and responses are ranked by polite minus rude count
(equal counts tie). A reward model that reads the sentences can learn it; chance is 50%.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from rlhf.app.schema import load_config

REPO = Path(__file__).resolve().parents[1]
TOPICS = ["cats", "dogs", "the sea", "volcanoes", "rain", "trees"]
POLITE = ["Hope this helps.", "It is nice.", "Have a nice day."]
RUDE = ["Go away.", "I do not care.", "Ask someone else."]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_rankings(count: int, seed: int = 0, k: int = 4) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    while len(rows) < count:
        responses, seen = [], set()
        while len(responses) < k:
            sentences = [rng.choice(POLITE + RUDE) for _ in range(rng.randint(1, 3))]
            text = " " + " ".join(sentences)
            if text not in seen:
                seen.add(text)
                responses.append(
                    (
                        f"r{len(responses)}",
                        text,
                        sum(s in POLITE for s in sentences) - sum(s in RUDE for s in sentences),
                    )
                )
        levels = sorted({score for *_, score in responses}, reverse=True)
        if len(levels) < 2:
            continue
        rows.append(
            {
                "id": f"p{len(rows)}",
                "prompt": f"User: Tell me about {rng.choice(TOPICS)}.\nAssistant:",
                "responses": [{"id": rid, "text": text} for rid, text, _ in responses],
                "ranking": [[rid for rid, _, score in responses if score == level] for level in levels],
            }
        )
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def rm_base(tmp_path_factory):
    """A tiny Llama (hidden 32, 2 layers) whose tokenizer knows the sentences, plus a rankings file."""
    from rlhf.modeling import init_tiny

    root = tmp_path_factory.mktemp("rm")
    rankings = make_rankings(160)
    texts = [row["prompt"] + response["text"] for row in rankings for response in row["responses"]]
    model_dir = init_tiny(
        root / "base",
        texts,
        vocab_size=300,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    return model_dir, write_jsonl(root / "rankings.jsonl", rankings)


def rm_config(rm_base, out: Path, *overrides: str):
    model_dir, rankings = rm_base
    return load_config(
        REPO / "configs/tiny/rm.yaml",
        [
            f"model.name_or_path={model_dir}",
            f"data.train_file={rankings}",
            f"run.output_dir={out}",
            "data.eval_fraction=0.2",
            "train.learning_rate=3e-3",
            "train.num_train_epochs=3",
            "train.per_device_train_batch_size=8",
            "train.logging_steps=5",
            "tracking.report_to=[jsonl]",
            "tracking.plots=false",
            "rm.normalize_samples=64",
            *overrides,
        ],
    )


# ------------------------------------------------------------------------------------------------
# Score read at the last real token
# ------------------------------------------------------------------------------------------------


def test_padding_does_not_change_the_score(rm_base):
    from reward_model.kwise import KwiseCollator
    from reward_model.scoring import preference_input_ids, score_sequences, sequence_rewards
    from rlhf.modeling import load_scalar_model, load_tokenizer

    model_dir, _ = rm_base
    tokenizer = load_tokenizer(str(model_dir))
    model = load_scalar_model(str(model_dir), tokenizer).eval()
    short = preference_input_ids(tokenizer, "User: Tell me about cats.\nAssistant:", " Hope this helps.")
    long = preference_input_ids(
        tokenizer, "User: Tell me about the sea.\nAssistant:", " Go away. I do not care. Ask someone else."
    )
    assert short[-1] == tokenizer.eos_token_id and len(long) > len(short) + 5
    with torch.no_grad():
        alone = sequence_rewards(model, torch.tensor([short]), torch.ones(1, len(short), dtype=torch.long))
        right = KwiseCollator(tokenizer.pad_token_id)([{"response_ids": [short, long], "better": [0], "worse": [1]}])
        right_padded = sequence_rewards(model, right["input_ids"], right["attention_mask"])
    left_padded = score_sequences(model, [long, short], tokenizer.pad_token_id)  # left-padded batch, via rlhf.scoring
    assert right["input_ids"][0, -1] == tokenizer.pad_token_id  # the short row really is padded
    torch.testing.assert_close(right_padded[0], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(left_padded[1], alone[0], atol=1e-5, rtol=1e-5)
    # ...and it is the head applied to the last real token's hidden state, not to a pad position.
    with torch.no_grad():
        hidden = model.model(torch.tensor([short])).last_hidden_state[0, -1]
    torch.testing.assert_close(model.score(hidden)[0], alone[0], atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------


def test_held_out_split_keeps_each_ranking_on_one_side(rm_base):
    from reward_model.preference_data import load_preference_pairs, split_by_group

    pairs = load_preference_pairs(str(rm_base[1]))
    train, held_out = split_by_group(pairs, 0.2, seed=0)
    assert len(train) + len(held_out) == len(pairs)
    assert not {p["group"] for p in train} & {p["group"] for p in held_out}
    assert len({p["group"] for p in held_out}) == 32  # round(0.2 * 160)
    assert split_by_group(pairs, 0.2, seed=0) == (train, held_out)  # seeded


def test_pairs_files_and_format_errors(tmp_path):
    from reward_model.preference_data import detect_format, load_preference_pairs
    from rlhf.errors import DataError

    pairs = write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            {"prompt": "p", "chosen": " good", "rejected": " bad"},
            {"prompt": "q", "chosen": " a", "rejected": " b", "group": 7},
        ],
    )
    assert detect_format(str(pairs)) == "pairs"
    assert [p["group"] for p in load_preference_pairs(str(pairs))] == ["pair-0", "7"]
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"prompt": "p", "text": " x"}])
    with pytest.raises(DataError, match=r"odd.jsonl: row 1: .*rm.data_format"):
        detect_format(str(odd))


# ------------------------------------------------------------------------------------------------
# Training, held-out accuracy, reward statistics
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["pairwise", "kwise"])
def test_reward_model_learns_the_preference_and_writes_stats(rm_base, tmp_path, loss):
    from reward_model.normalization import normalization_sample
    from reward_model.preference_data import train_eval_pairs
    from reward_model.scoring import score_texts
    from reward_model.trainer import train
    from rlhf.modeling import load_scalar_model, load_tokenizer

    cfg = rm_config(rm_base, tmp_path / "run", f"rm.loss={loss}")
    summary = train(cfg)
    assert summary["eval/accuracy"] >= 0.8, summary  # chance is 0.5
    assert summary["eval/loss"] < 0.6931 and summary["eval/loss_above_chance"] is False  # below ln 2: no warning
    assert (
        summary["eval/num_groups"] == 32 and summary["eval/chosen_reward_mean"] > summary["eval/rejected_reward_mean"]
    )
    run = tmp_path / "run"
    assert json.loads((run / "summary.json").read_text())["eval/accuracy"] == summary["eval/accuracy"]

    model_dir = run / "model"
    stats = json.loads((model_dir / "reward_stats.json").read_text())
    assert set(stats) == {"mean", "std", "num_samples", "source"} and stats["num_samples"] == 64 and stats["std"] > 0
    # Re-score the same sample with the saved model as PPO loads it: normalised scores have mean ~0, std ~1.
    tokenizer = load_tokenizer(str(model_dir))
    model = load_scalar_model(str(model_dir), tokenizer).eval()
    assert model.config.num_labels == 1 and model.config.pad_token_id == tokenizer.pad_token_id
    train_pairs, _ = train_eval_pairs(cfg)
    sample, source = normalization_sample(train_pairs, None, 64, cfg.run.seed)
    normalised = (
        score_texts(model, tokenizer, [p for p, _ in sample], [r for _, r in sample]).double() - stats["mean"]
    ) / stats["std"]
    assert source == stats["source"]
    assert abs(normalised.mean().item()) < 1e-4 and normalised.std(unbiased=False).item() == pytest.approx(
        1.0, abs=1e-4
    )


def test_to_reward_config_for_each_loss(rm_base, tmp_path):
    from reward_model.trainer import to_reward_config

    pairwise = to_reward_config(rm_config(rm_base, tmp_path, "rm.center_rewards_coefficient=0.01"))
    kwise = to_reward_config(rm_config(rm_base, tmp_path, "rm.loss=kwise"))
    assert pairwise.remove_unused_columns is True and kwise.remove_unused_columns is False
    assert pairwise.center_rewards_coefficient == 0.01 and pairwise.bf16 is False and pairwise.max_length == 128
    assert pairwise.output_dir == str(tmp_path / "checkpoints")


def test_unmerged_lora_reward_model_is_refused(rm_base, tmp_path):
    from reward_model.trainer import train
    from rlhf.errors import ConfigError

    with pytest.raises(ConfigError, match="merge_on_save"):
        train(rm_config(rm_base, tmp_path, "model.lora.enabled=true", "model.lora.merge_on_save=false"))


# ------------------------------------------------------------------------------------------------
# rlhf rm score
# ------------------------------------------------------------------------------------------------


def test_rm_score_writes_a_reward_for_every_response(rm_base, tmp_path):
    from reward_model.normalization import write_reward_stats
    from reward_model.scoring import score_texts
    from rlhf.app.cli import main
    from rlhf.modeling import load_scalar_model, load_tokenizer, save_model

    model_dir, rankings = rm_base
    tokenizer = load_tokenizer(str(model_dir))
    scalar_dir = save_model(load_scalar_model(str(model_dir), tokenizer), tokenizer, tmp_path / "rm")
    write_reward_stats(scalar_dir, {"mean": 0.25, "std": 2.0, "num_samples": 1, "source": "test"})
    pairs = write_jsonl(
        tmp_path / "pairs.jsonl",
        [{"prompt": "User: Tell me about cats.\nAssistant:", "chosen": " It is nice.", "rejected": " Go away."}],
    )

    assert (
        main(
            [
                "rm",
                "score",
                "--model",
                str(scalar_dir),
                "--data",
                str(rankings),
                "--out",
                str(tmp_path / "scored.jsonl"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "rm",
                "score",
                "--model",
                str(scalar_dir),
                "--data",
                str(pairs),
                "--out",
                str(tmp_path / "scored_pairs.jsonl"),
            ]
        )
        == 0
    )
    scored = [json.loads(line) for line in (tmp_path / "scored.jsonl").read_text().splitlines()]
    assert len(scored) == 160 and all("reward" in r for row in scored for r in row["responses"])
    first = scored[0]
    model = load_scalar_model(str(scalar_dir), tokenizer).eval()
    expected = score_texts(model, tokenizer, [first["prompt"]] * 4, [r["text"] for r in first["responses"]])
    assert [r["reward"] for r in first["responses"]] == pytest.approx(expected.tolist(), abs=1e-5)
    assert first["responses"][0]["reward_normalized"] == pytest.approx(first["responses"][0]["reward"] - 0.25)
    pair = json.loads((tmp_path / "scored_pairs.jsonl").read_text())
    assert {"reward_chosen", "reward_rejected", "reward_chosen_normalized"} <= set(pair)


def test_rm_score_bad_row_names_row_and_field(rm_base, tmp_path, capsys):
    from rlhf.app.cli import main

    model_dir, _ = rm_base
    bad = write_jsonl(
        tmp_path / "bad.jsonl", [{"prompt": "p", "response": " ok"}, {"prompt": "p", "text": " no response field"}]
    )
    assert (
        main(["rm", "score", "--model", str(model_dir), "--data", str(bad), "--out", str(tmp_path / "out.jsonl")]) == 2
    )
    err = capsys.readouterr().err
    assert "bad.jsonl: row 2" in err and "'response'" in err
    assert not (tmp_path / "out.jsonl").exists()


def test_reward_model_trains_in_bf16_on_cpu(rm_base, tmp_path):
    """Mixed precision on CPU (torch runs bf16 autocast there): the bf16 path runs without a GPU and learns."""
    from reward_model.trainer import to_reward_config, train
    from rlhf.tracking import read_metrics

    cfg = rm_config(rm_base, tmp_path / "run", "train.precision=bf16", "train.num_train_epochs=2")
    assert to_reward_config(cfg).bf16 is True
    summary = train(cfg)  # after fp32 stages in this process: the stage lets go of their precision
    assert summary["eval/accuracy"] >= 0.75, summary  # chance is 0.5
    losses = [row["loss"] for row in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in row]
    assert losses[-1] < losses[0]


def test_chance_warning_above_ln2_only():
    from reward_model.scoring import chance_warning

    assert chance_warning(0.744) == (
        "held-out loss 0.744 is above chance (ln 2 = 0.693): the reward model over-fits its training pairs; try "
        "fewer epochs, a lower learning rate, rm.loss=kwise or more ranked prompts"
    )
    assert chance_warning(0.6931) is None and chance_warning(0.60) is None and chance_warning(None) is None
