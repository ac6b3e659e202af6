"""Fault injection, bad input: every data-consuming command on a corpus of bad files.

Each case runs the real `rlhf` entry point (rlhf.app.cli.main, in-process: an exception other than a
UserError would escape it, which is the traceback a user would see) and asserts exit 2, one message that
names the file, the row and the field, and an output directory left exactly as it was. The huge-row cases
(a 10 MB row) run as subprocesses and report their peak RSS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf.app.cli import main

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def jsonl(path: Path, rows: list, raw_tail: bytes = b"") -> Path:
    path.write_bytes(b"".join(json.dumps(row).encode() + b"\n" for row in rows) + raw_tail)
    return path


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    if not directory.exists():
        return {}
    return {
        str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


CANDIDATE = {"id": "a", "prompt": "p", "responses": [{"id": "r1", "text": "x"}, {"id": "r2", "text": "y"}]}
RANKING = {**CANDIDATE, "ranking": [["r1"], ["r2"]]}
SFT_ROW = {"prompt": "User: hi\nAssistant:", "completion": " hello"}


def oasst(message_id, parent_id, role, rank=None, text="t"):
    row = {"message_id": message_id, "parent_id": parent_id, "role": role, "text": text, "message_tree_id": "tree"}
    if rank is not None:
        row["rank"] = rank
    return row


def uf(row_id, scores):
    return {
        "id": row_id,
        "instruction": "q",
        "completions": [{"response": f"r{s}", "overall_score": s} for s in scores],
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """name -> bad file. Row numbers in the expected messages below are 1-based lines."""
    root = tmp_path_factory.mktemp("bad")
    non_utf8 = b'{"prompt": "caf\xe9"}\n'
    files = {
        "empty": root / "empty.jsonl",
        "malformed": jsonl(root / "malformed.jsonl", [{"prompt": "ok"}], b'{"prompt": "x"\n'),
        "non_utf8_prompts": jsonl(root / "non_utf8_prompts.jsonl", [{"prompt": "ok"}], non_utf8),
        "non_utf8_sft": jsonl(root / "non_utf8_sft.jsonl", [SFT_ROW], b'{"prompt": "a", "completion": "\xff"}\n'),
        "non_utf8_json": root / "non_utf8.json",
        "prompt_wrong_type": jsonl(root / "prompt_wrong_type.jsonl", [{"prompt": "ok"}, {"prompt": 5}]),
        "prompt_missing": jsonl(root / "prompt_missing.jsonl", [{"prompt": "ok"}, {"text": "x"}]),
        "sft_wrong_type": jsonl(root / "sft_wrong_type.jsonl", [SFT_ROW, {"prompt": "a", "completion": 3}]),
        "sft_missing": jsonl(root / "sft_missing.jsonl", [SFT_ROW, SFT_ROW, {"prompt": "a"}]),
        "candidates_duplicate_ids": jsonl(root / "candidates_dup.jsonl", [CANDIDATE, CANDIDATE]),
        "candidates_missing": jsonl(root / "candidates_missing.jsonl", [CANDIDATE, {"id": "b", "prompt": "p"}]),
        "rankings_duplicate_ids": jsonl(root / "rankings_dup.jsonl", [RANKING, RANKING]),
        "rankings_unknown_id": jsonl(
            root / "rankings_unknown.jsonl", [RANKING, {**RANKING, "id": "b", "ranking": [["r1"], ["zz"]]}]
        ),
        "oasst_cycle": jsonl(
            root / "oasst_cycle.jsonl",
            [
                oasst("u1", "a2", "prompter"),  # u1 -> a2 -> u1: a cycle
                oasst("a1", "u1", "assistant", 0),
                oasst("a2", "u1", "assistant", 1),
            ],
        ),
        "oasst_rank_text": jsonl(
            root / "oasst_rank.jsonl",
            [oasst("u1", None, "prompter"), oasst("a1", "u1", "assistant", 0), oasst("a2", "u1", "assistant", "best")],
        ),
        "oasst_duplicate_ids": jsonl(
            root / "oasst_dup.jsonl",
            [oasst("u1", None, "prompter"), oasst("a1", "u1", "assistant", 0), oasst("a1", "u1", "assistant", 1)],
        ),
        "shp_ratio_text": jsonl(
            root / "shp.jsonl",
            [
                {"history": "h", "human_ref_A": "a", "human_ref_B": "b", "labels": 1, "score_ratio": 3.0},
                {"history": "h", "human_ref_A": "a", "human_ref_B": "b", "labels": 1, "score_ratio": "3.0"},
            ],
        ),
        # input rows 1, 2 (skipped: one completion), 3: the duplicate id is input row 3, converted row 2
        "uf_duplicate_ids": jsonl(root / "uf_dup.jsonl", [uf("x", [1, 2]), uf("y", [1]), uf("x", [3, 4])]),
        "score_integer_response": jsonl(
            root / "score_int.jsonl", [{"prompt": "p", "response": "r"}, {"prompt": "p", "response": 7}]
        ),
    }
    files["empty"].write_text("")
    files["non_utf8_json"].write_bytes(b'[\n  {"prompt": "ok"},\n  {"prompt": "caf\xe9"}\n]\n')
    return files


# (case id, argv builder, file key, expected substrings of the one-line message)
DATA_CASES = [
    ("validate-empty", lambda f, o: ["data", "validate", f, "--format", "prompts"], "empty", ["no rows"]),
    ("validate-malformed", lambda f, o: ["data", "validate", f], "malformed", ["row 2", "not valid JSON"]),
    ("validate-non-utf8", lambda f, o: ["data", "validate", f], "non_utf8_prompts", ["row 2", "not UTF-8", "0xe9"]),
    ("validate-non-utf8-json", lambda f, o: ["data", "validate", f], "non_utf8_json", ["row 3", "not UTF-8"]),
    (
        "validate-wrong-type",
        lambda f, o: ["data", "validate", f, "--format", "prompts"],
        "prompt_wrong_type",
        ["row 2", "'prompt'"],
    ),
    (
        "validate-missing",
        lambda f, o: ["data", "validate", f, "--format", "prompts"],
        "prompt_missing",
        ["row 2", "'prompt'"],
    ),
    (
        "validate-sft-type",
        lambda f, o: ["data", "validate", f, "--format", "sft"],
        "sft_wrong_type",
        ["row 2", "'completion'"],
    ),
    (
        "validate-dup-ids",
        lambda f, o: ["data", "validate", f, "--format", "candidates"],
        "candidates_duplicate_ids",
        ["row 2", "'id'", "duplicate"],
    ),
    (
        "convert-malformed",
        lambda f, o: ["data", "convert", "--from", "hh", f, str(o / "out.jsonl")],
        "malformed",
        ["row 2", "not valid JSON"],
    ),
    (
        "convert-non-utf8",
        lambda f, o: ["data", "convert", "--from", "shp", f, str(o / "out.jsonl")],
        "non_utf8_prompts",
        ["row 2", "not UTF-8"],
    ),
    (
        "oasst-cycle",
        lambda f, o: ["data", "convert", "--from", "oasst", "--strict", f, str(o / "out.jsonl")],
        "oasst_cycle",
        ["row 1", "'parent_id'", "loops"],
    ),
    (
        "oasst-rank-text",
        lambda f, o: ["data", "convert", "--from", "oasst", "--strict", f, str(o / "out.jsonl")],
        "oasst_rank_text",
        ["row 1", "'rank'", "row 3", "'best'"],
    ),
    (
        "oasst-dup-ids",
        lambda f, o: ["data", "convert", "--from", "oasst", "--strict", f, str(o / "out.jsonl")],
        "oasst_duplicate_ids",
        ["row 3", "'message_id'", "row 2"],
    ),
    (
        "shp-ratio-text",
        lambda f, o: [
            "data",
            "convert",
            "--from",
            "shp",
            "--strict",
            "--min-score-ratio",
            "2",
            f,
            str(o / "out.jsonl"),
        ],
        "shp_ratio_text",
        ["row 2", "'score_ratio'", "str"],
    ),
    (
        "uf-dup-ids-input-row",
        lambda f, o: ["data", "convert", "--from", "ultrafeedback", f, str(o / "out.jsonl")],
        "uf_duplicate_ids",
        ["row 3", "'id'", "first seen on row 1"],
    ),
    ("rank-empty", lambda f, o: ["data", "rank", "--candidates", f, "--out", str(o / "r.jsonl")], "empty", ["no rows"]),
    (
        "rank-dup-ids",
        lambda f, o: ["data", "rank", "--candidates", f, "--out", str(o / "r.jsonl")],
        "candidates_duplicate_ids",
        ["row 2", "'id'"],
    ),
    (
        "rank-missing",
        lambda f, o: ["data", "rank", "--candidates", f, "--out", str(o / "r.jsonl")],
        "candidates_missing",
        ["row 2", "'responses'"],
    ),
    (
        "rank-reviewers-0",
        lambda f, o: ["data", "rank", "--candidates", f, "--out", str(o / "r.jsonl"), "--reviewers", "0"],
        "candidates_missing",
        ["--reviewers 0"],
    ),
    (
        "rank-noise-5",
        lambda f, o: ["data", "rank", "--candidates", f, "--out", str(o / "r.jsonl"), "--noise", "5"],
        "candidates_missing",
        ["--noise 5"],
    ),
    (
        "pairs-dup-ids",
        lambda f, o: ["data", "pairs", "--rankings", f, "--out", str(o / "p.jsonl")],
        "rankings_duplicate_ids",
        ["row 2", "'id'"],
    ),
    (
        "pairs-unknown-id",
        lambda f, o: ["data", "pairs", "--rankings", f, "--out", str(o / "p.jsonl")],
        "rankings_unknown_id",
        ["row 2", "ranking"],
    ),
    (
        "pairs-non-utf8",
        lambda f, o: ["data", "pairs", "--rankings", f, "--out", str(o / "p.jsonl")],
        "non_utf8_prompts",
        ["row 2", "not UTF-8"],
    ),
    (
        "pairs-min-agreement-1.5",
        lambda f, o: ["data", "pairs", "--rankings", f, "--out", str(o / "p.jsonl"), "--min-agreement", "1.5"],
        "rankings_unknown_id",
        ["--min-agreement 1.5"],
    ),
]


def run_case(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.err


def assert_one_clear_line(code: int, err: str, expected: list[str], file: str | None) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.replace("\r", "\n").splitlines() if ": error: " in line]  # progress bars aside
    assert len(lines) == 1, err
    for part in ([file] if file else []) + expected:
        assert part in lines[0], (part, lines[0])


@pytest.mark.parametrize("case", DATA_CASES, ids=[case[0] for case in DATA_CASES])
def test_data_commands_reject_bad_files(case, corpus, tmp_path, capsys):
    _, build, key, expected = case
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("an earlier output")
    before = snapshot(out)
    code, err = run_case(build(str(corpus[key]), out), capsys)
    names_file = not any(flag in " ".join(expected) for flag in ("--reviewers", "--noise", "--min-agreement"))
    assert_one_clear_line(code, err, expected, str(corpus[key]) if names_file else None)
    assert snapshot(out) == before


def test_rm_score_rejects_integer_response_and_empty_file(corpus, tiny_reward_model_dir, tmp_path, capsys):
    out = tmp_path / "scored.jsonl"
    code, err = run_case(
        [
            "rm",
            "score",
            "--model",
            str(tiny_reward_model_dir),
            "--data",
            str(corpus["score_integer_response"]),
            "--out",
            str(out),
        ],
        capsys,
    )
    assert_one_clear_line(code, err, ["row 2", "'response'", "int"], str(corpus["score_integer_response"]))
    code, err = run_case(
        ["rm", "score", "--model", str(tiny_reward_model_dir), "--data", str(corpus["empty"]), "--out", str(out)],
        capsys,
    )
    assert_one_clear_line(code, err, ["no rows"], str(corpus["empty"]))
    assert not out.exists()


def stage_argv(stage: str, tiny_model_dir, tiny_reward_model_dir, data: Path, out: Path, *extra: str) -> list[str]:
    common = [f"run.output_dir={out}", "tracking.report_to=[jsonl]", "tracking.plots=false", "train.max_steps=1"]
    if stage == "ppo":
        common = [
            f"run.output_dir={out}",
            "tracking.report_to=[jsonl]",
            "tracking.plots=false",
            "ppo.num_updates=1",
            f"ppo.reward_model_path={tiny_reward_model_dir}",
            "data.eval_file=null",
        ]
    return [
        stage,
        "--config",
        f"configs/tiny/{stage}.yaml",
        f"model.name_or_path={tiny_model_dir}",
        f"data.train_file={data}",
        *common,
        *extra,
    ]


STAGE_CASES = [
    ("sft-missing-field", "sft", "sft_missing", [], ["row 3", "'completion'"]),
    ("sft-non-utf8", "sft", "non_utf8_sft", [], ["row 2", "not UTF-8"]),
    ("rm-dup-ids", "rm", "rankings_duplicate_ids", [], ["row 2", "'id'"]),
    ("ppo-wrong-type", "ppo", "prompt_wrong_type", [], ["row 2", "'prompt'"]),
    ("sft-no-model", "sft", None, ["model.name_or_path=/nonexistent/model"], ["/nonexistent/model", "no such model"]),
    ("rm-no-model", "rm", None, ["model.name_or_path=/nonexistent/model"], ["/nonexistent/model", "no such model"]),
    ("ppo-no-rm", "ppo", None, ["ppo.reward_model_path=/nonexistent/rm"], ["/nonexistent/rm", "no such model"]),
    ("sft-bad-scheduler", "sft", None, ["train.lr_scheduler=cosine_warm"], ["train.lr_scheduler", "cosine_warm"]),
    ("rm-bad-optimizer", "rm", None, ["train.optimizer=adamw_torchh"], ["train.optimizer", "did you mean adamw_torch"]),
]


@pytest.mark.parametrize("case", STAGE_CASES, ids=[case[0] for case in STAGE_CASES])
def test_training_stages_reject_bad_input_and_leave_the_run_directory_alone(
    case, corpus, tiny_model_dir, tiny_reward_model_dir, tmp_path, capsys, monkeypatch
):
    """A fresh directory stays absent; a finished run's directory (config.yaml, summary.json) is untouched."""
    monkeypatch.chdir(REPO)
    _, stage, key, extra, expected = case
    good = {
        "sft": jsonl(tmp_path / "sft.jsonl", [SFT_ROW] * 8),
        "rm": jsonl(tmp_path / "rankings.jsonl", [{**RANKING, "id": str(i)} for i in range(8)]),
        "ppo": jsonl(tmp_path / "prompts.jsonl", [{"prompt": "p"}] * 8),
    }[stage]
    data = corpus[key] if key else good
    fresh = tmp_path / "fresh"
    code, err = run_case(stage_argv(stage, tiny_model_dir, tiny_reward_model_dir, data, fresh, *extra), capsys)
    assert_one_clear_line(code, err, expected, str(data) if key else None)
    assert not fresh.exists()

    finished = tmp_path / "finished"
    finished.mkdir()
    (finished / "config.yaml").write_text("run: {name: earlier}\n")
    (finished / "summary.json").write_text('{"stage": "earlier"}\n')
    (finished / "metrics.jsonl").write_text('{"step": 1}\n')
    before = snapshot(finished)
    code, err = run_case(stage_argv(stage, tiny_model_dir, tiny_reward_model_dir, data, finished, *extra), capsys)
    assert code == 2 and snapshot(finished) == before


def test_eval_rejects_a_missing_reward_model_and_generate_a_reward_model_policy(
    tiny_model_dir, tiny_reward_model_dir, tmp_path, capsys
):
    prompts = jsonl(tmp_path / "prompts.jsonl", [{"prompt": "p"}] * 2)
    out = tmp_path / "report"
    code, err = run_case(
        [
            "eval",
            "--policies",
            f"sft={tiny_model_dir}",
            "--prompts",
            str(prompts),
            "--reward-model",
            "/nonexistent/rm",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert_one_clear_line(code, err, ["/nonexistent/rm"], None)
    assert not out.exists()
    code, err = run_case(
        [
            "generate",
            "--policy",
            str(tiny_reward_model_dir),
            "--prompts",
            str(prompts),
            "--out",
            str(tmp_path / "c.jsonl"),
        ],
        capsys,
    )
    assert_one_clear_line(code, err, [str(tiny_reward_model_dir), "scalar (reward or value) model"], None)
    assert not (tmp_path / "c.jsonl").exists()


def test_annotate_overlap_0_is_rejected_before_any_task_is_imported(tmp_path, capsys, monkeypatch):
    tasks = jsonl(tmp_path / "candidates.jsonl", [CANDIDATE])
    read = []
    monkeypatch.setattr("annotation.tasks.read_tasks", lambda *a, **k: read.append(a) or [])
    code, err = run_case(
        ["annotate", "serve", "--tasks", str(tasks), "--db", str(tmp_path / "a.db"), "--overlap", "0"], capsys
    )
    assert_one_clear_line(code, err, ["--overlap must be at least 1"], None)
    assert read == [] and not (tmp_path / "a.db").exists()


# --------------------------------------------------------------------------------------------------
# Huge rows: bounded memory, truncated or counted, and the peak RSS reported
# --------------------------------------------------------------------------------------------------

HUGE = 10 * 1024 * 1024  # a 10 MB row
PEAK_RSS_LIMIT_MB = 1500  # a tiny-model process peaks at ~0.4-0.6 GB here; the unbounded code took 12.7 GB or died


def run_measured(argv: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    """Run `python -m rlhf ...` in a fresh child; returns (result, the child's peak RSS in MB)."""
    wrapper = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "sys.stdout.write(r.stdout); sys.stderr.write(r.stderr); "
        "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
    )
    result = subprocess.run(
        [sys.executable, "-c", wrapper, sys.executable, "-m", "rlhf", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))},
    )
    peak_kb = int(result.stdout.rsplit("PEAK_RSS_KB", 1)[1].split()[0])
    return result, peak_kb / 1024


@pytest.mark.slow
def test_huge_rows_are_truncated_with_bounded_memory(tiny_model_dir, tiny_reward_model_dir, tmp_path, record_property):
    huge_text = "word " * (HUGE // 5)
    prompts = jsonl(tmp_path / "prompts.jsonl", [{"prompt": "short"}, {"prompt": huge_text}])
    scored = jsonl(tmp_path / "score.jsonl", [{"prompt": "p", "response": "r"}, {"prompt": "p", "response": huge_text}])
    cases = {
        "rm score": [
            "rm",
            "score",
            "--model",
            str(tiny_reward_model_dir),
            "--data",
            str(scored),
            "--out",
            str(tmp_path / "scored.jsonl"),
            "--device",
            "cpu",
        ],
        "generate": [
            "generate",
            "--policy",
            str(tiny_model_dir),
            "--prompts",
            str(prompts),
            "--out",
            str(tmp_path / "cand.jsonl"),
            "--k",
            "2",
            "--max-new-tokens",
            "4",
            "--no-progress",
            "--device",
            "cpu",
        ],
        "eval": [
            "eval",
            "--policies",
            f"sft={tiny_model_dir}",
            "--prompts",
            str(prompts),
            "--reward-model",
            str(tiny_reward_model_dir),
            "--max-new-tokens",
            "4",
            "--out",
            str(tmp_path / "report"),
        ],
    }
    peaks, outputs = {}, {}
    for name, argv in cases.items():
        result, peaks[name] = run_measured(argv, REPO)
        assert result.returncode == 0, (name, result.stderr[-2000:])
        assert peaks[name] < PEAK_RSS_LIMIT_MB, (name, peaks[name])
        outputs[name] = result.stdout + result.stderr
    for name in ("generate", "eval"):  # the long prompt is cut, and the cut is reported
        assert "1 prompt(s) longer than" in outputs[name], outputs[name][-2000:]
    rows = [json.loads(line) for line in (tmp_path / "scored.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(isinstance(row["reward"], float) for row in rows)
    record_property("peak_rss_mb", peaks)
    print("HUGE_ROW_PEAK_RSS_MB", json.dumps({k: round(v) for k, v in peaks.items()}))


@pytest.mark.slow
def test_rm_with_a_huge_pair_trains_and_writes_reward_stats(tiny_model_dir, tmp_path):
    """The reward statistics are scored within data.max_length: the run finishes with reward_stats.json."""
    huge = "word " * (HUGE // 5)
    rankings = [{**RANKING, "id": str(i)} for i in range(7)] + [
        {**RANKING, "id": "huge", "responses": [{"id": "r1", "text": huge}, {"id": "r2", "text": "y"}]}
    ]
    data = jsonl(tmp_path / "rankings.jsonl", rankings)
    out = tmp_path / "rm"
    result, peak = run_measured(
        [
            "rm",
            "--config",
            "configs/tiny/rm.yaml",
            f"model.name_or_path={tiny_model_dir}",
            f"data.train_file={data}",
            f"run.output_dir={out}",
            "train.max_steps=2",
            "tracking.report_to=[jsonl]",
            "tracking.plots=false",
            "data.eval_fraction=0",
        ],
        REPO,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "longer than data.max_length" in result.stdout + result.stderr
    assert (out / "model" / "reward_stats.json").is_file() and (out / "summary.json").is_file()
    assert peak < PEAK_RSS_LIMIT_MB, peak
    print("HUGE_ROW_PEAK_RSS_MB", json.dumps({"rm train": round(peak)}))
