"""`rlhf generate`: EOS truncation, left padding, seeding, the candidates format."""

from __future__ import annotations

import json

import pytest

from rlhf.commands.generate import decode_response, generate_candidates, sample, sample_responses

PROMPTS = [
    "User: Tell me about cats.\nAssistant:",
    "User: Quick question. What do you know about the sea? I am curious.\nAssistant:",
    "User: Hi.\nAssistant:",
]


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    from rlhf.modeling import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    return load_causal_lm(str(tiny_model_dir), tokenizer=tokenizer), tokenizer


def test_decode_stops_before_the_first_eos(policy):
    _, tokenizer = policy
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    words = tokenizer(" Hi! Cats purr.", add_special_tokens=False)["input_ids"]
    after = tokenizer(" junk", add_special_tokens=False)["input_ids"]
    finished = decode_response(tokenizer, words + [eos] + after + [pad, pad], {eos}, pad)
    assert (finished.text, finished.finished, finished.num_tokens) == (" Hi! Cats purr.", True, len(words) + 1)
    cut = decode_response(tokenizer, words + [pad], {eos}, pad)
    assert (cut.text, cut.finished, cut.num_tokens) == (" Hi! Cats purr.", False, len(words))


def test_left_padding_gives_the_same_greedy_text_as_unbatched(policy):
    model, tokenizer = policy
    batched = sample_responses(model, tokenizer, PROMPTS, temperature=0.0, max_new_tokens=12, batch_size=3)
    alone = [sample_responses(model, tokenizer, [prompt], temperature=0.0, max_new_tokens=12)[0] for prompt in PROMPTS]
    assert batched == alone
    assert tokenizer.padding_side == "right"  # restored after generation


def test_prompts_are_batched_by_length_and_returned_in_input_order(policy, monkeypatch):
    import rlhf.sampling

    model, tokenizer = policy
    prompts = [PROMPTS[2], PROMPTS[1], PROMPTS[0], PROMPTS[2] + " Ok.", PROMPTS[1] + " Thanks!"]
    widths = []
    real = rlhf.sampling.generate_pinned

    def recording(model, input_ids, attention_mask, config):
        widths.append((input_ids.shape[0], input_ids.shape[1], int(attention_mask.sum())))
        return real(model, input_ids, attention_mask, config)

    monkeypatch.setattr(rlhf.sampling, "generate_pinned", recording)
    kwargs = dict(temperature=0.0, max_new_tokens=6, batch_size=2)
    by_length = sample(model, tokenizer, prompts, **kwargs)
    sorted_widths, widths[:] = list(widths), []
    in_order = sample(model, tokenizer, prompts, sort_by_length=False, **kwargs)
    assert by_length == in_order  # same texts and prompt ids, in the input order
    lengths = [len(item.prompt_ids) for item in in_order]
    assert [item.prompt_ids for item in by_length] == [item.prompt_ids for item in in_order]
    # longest first, each batch as wide as its longest prompt: fewer padded positions than in input order
    descending = sorted(lengths, reverse=True)
    assert [width for _, width, _ in sorted_widths] == descending[::2]
    assert _padding(sorted_widths) < _padding(widths)


def _padding(recorded: list[tuple[int, int, int]]) -> int:
    return sum(rows * width - real_tokens for rows, width, real_tokens in recorded)


def test_seed_makes_sampling_reproducible(policy):
    model, tokenizer = policy
    first = sample(model, tokenizer, PROMPTS, num_samples=2, seed=3, max_new_tokens=10)
    again = sample(model, tokenizer, PROMPTS, num_samples=2, seed=3, max_new_tokens=10)
    other = sample(model, tokenizer, PROMPTS, num_samples=2, seed=4, max_new_tokens=10)
    assert first == again and first != other
    assert len(first) == 6 and all(item.num_tokens <= 10 for item in first)


def test_generate_candidates_format(policy):
    from rlhf.data import check_candidates_row

    model, tokenizer = policy
    rows = [{"prompt": PROMPTS[0], "meta": {"topic": "cats"}}, {"prompt": PROMPTS[1], "id": "sea-1"}]
    candidates = generate_candidates(model, tokenizer, rows, k=3, seed=0, max_new_tokens=8)
    assert [row["id"] for row in candidates] == ["p000000", "sea-1"]
    assert [response["id"] for response in candidates[1]["responses"]] == ["sea-1-r0", "sea-1-r1", "sea-1-r2"]
    assert candidates[0]["meta"]["topic"] == "cats" and len(candidates[0]["meta"]["finished"]) == 3
    assert all(check_candidates_row(row) is None for row in candidates)


def test_chat_template_prompts_are_supported(policy):
    model, tokenizer = policy
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"  # noqa: E501
    try:
        chat = sample_responses(
            model, tokenizer, [[{"role": "user", "content": "Tell me about cats."}]], temperature=0.0, max_new_tokens=6
        )
        plain = sample_responses(
            model, tokenizer, ["user: Tell me about cats.\nassistant:"], temperature=0.0, max_new_tokens=6
        )
    finally:
        tokenizer.chat_template = None
    assert chat == plain


def test_generate_cli_writes_candidates(tiny_model_dir, tmp_path, capsys):
    from rlhf.app.cli import main
    from rlhf.data import load_candidates

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": prompt}) + "\n" for prompt in PROMPTS))
    out = tmp_path / "candidates.jsonl"
    argv = [
        "generate",
        "--policy",
        str(tiny_model_dir),
        "--prompts",
        str(prompts),
        "--k",
        "2",
        "--out",
        str(out),
        "--limit",
        "2",
        "--max-new-tokens",
        "6",
        "--batch-size",
        "1",
        "--no-progress",
    ]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["prompts"] == 2 and summary["responses"] == 4
    assert len(load_candidates(out)) == 2
    assert main(["generate", "--policy", str(tmp_path / "missing"), "--prompts", str(prompts), "--out", str(out)]) == 2
