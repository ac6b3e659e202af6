"""Data formats -> `datasets.Dataset`: reading, validation with row numbers, rankings -> pairs.

    rlhf data validate data/tiny/sft_train.jsonl --format sft

Every format of shared/DESIGN.md §4 (SFT prompt/completion or messages, candidates, rankings, pairs,
prompts) is read from JSONL, JSON, Parquet, a `save_to_disk` directory or a hub dataset name
(`owner/name` or `owner/name:split`), and every row is checked *before* any training starts. A bad
row stops the run with one `DataError` that names the file, the 1-based row and the field; with
`skip_bad_rows=True` bad rows are dropped instead and a `SkipReport` says how many and why. Rows are
checked in Python rather than by an Arrow schema because Arrow's errors name neither row nor field.

Rankings become pairs the InstructGPT way: every response in a higher tier beats every response in a
lower tier, tied responses give no pair, and each pair keeps `group` (its ranking) so a reward model
can put all C(K,2) pairs of one ranking into one batch element. With several reviewers of one
prompt/response set, `majority_vote_pairs` keeps a pair only when a clear majority agrees on its
direction (see its docstring for the exact rule); the rest go to a separate "disputed" list.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from rlhf.errors import DataError
from rlhf.files import read_jsonl_numbered

# --------------------------------------------------------------------------------------------------
# Reading rows from any supported source
# --------------------------------------------------------------------------------------------------

LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")


def read_rows(path: str | os.PathLike) -> list[tuple[int, dict]]:
    """(1-based row number, row) for every row of a JSONL/JSON/Parquet file, a save_to_disk dir or a hub name.

    For JSONL the row number is the line number (blank lines are skipped but counted), so an editor's
    "go to line" lands on the bad row.
    """
    source = str(path)
    local = Path(source)
    if local.is_dir():
        return _numbered(_read_saved_dataset(local), source)
    if local.is_file():
        suffix = local.suffix.lower()
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            try:
                return _numbered(pq.read_table(local).to_pylist(), source)
            except Exception as exc:  # noqa: BLE001 - a corrupt parquet file is the user's file
                raise DataError(f"{source}: cannot read Parquet file ({exc})") from None
        if suffix == ".json":
            return _read_json_file(local)
        return read_jsonl_numbered(local)
    if local.suffix.lower() in LOCAL_SUFFIXES or source.startswith((".", "/", "~")):
        raise DataError(f"{source}: file not found")
    return _numbered(_read_hub_dataset(source), source)


def _numbered(rows: Iterable[Any], source: str) -> list[tuple[int, dict]]:
    numbered = []
    for index, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise DataError(f"{source}: row {index}: expected a JSON object, got {type(row).__name__}")
        numbered.append((index, row))
    return numbered


def _read_json_file(path: Path) -> list[tuple[int, dict]]:
    """A JSON array of objects, an object holding one such array, or JSON lines under a .json name."""
    from rlhf.files import read_text_checked

    text = read_text_checked(path)
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError:
        return read_jsonl_numbered(path)  # `datasets` also accepts JSON lines in a .json file
    if isinstance(loaded, dict):
        lists = [value for value in loaded.values() if isinstance(value, list)]
        if len(lists) != 1:
            raise DataError(f"{path}: expected a JSON array of rows (or an object with exactly one array of rows)")
        loaded = lists[0]
    if not isinstance(loaded, list):
        raise DataError(f"{path}: expected a JSON array of rows, got {type(loaded).__name__}")
    return _numbered(loaded, str(path))


def _read_saved_dataset(path: Path) -> list[dict]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - not a saved dataset: say so in one line
        raise DataError(f"{path}: not a dataset directory written by save_to_disk ({exc})") from None
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise DataError(
                f"{path}: a DatasetDict without a 'train' split (splits: {', '.join(loaded)}); save one split"
            )
        loaded = loaded["train"]
    return loaded.to_list()


def _read_hub_dataset(name: str) -> list[dict]:
    """`owner/name` (split train) or `owner/name:split`; needs the network or the local HF cache."""
    import datasets

    repo, _, split = name.partition(":")
    try:
        return datasets.load_dataset(repo, split=split or "train").to_list()
    except Exception as exc:  # noqa: BLE001 - unknown name, no network, ...: one clear line
        raise DataError(
            f"{name}: not a local file or directory, and loading it as a hub dataset failed ({exc})"
        ) from None


# --------------------------------------------------------------------------------------------------
# Row validation. A checker returns the first problem of a row as (field, message), or None.
# --------------------------------------------------------------------------------------------------

Problem = Optional[tuple[str, str]]
ROLES = ("system", "user", "assistant", "tool")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_text(row: dict, name: str, allow_empty: bool = False) -> Problem:
    if name not in row or row[name] is None:
        return name, "missing field"
    if not isinstance(row[name], str):
        return name, f"expected a string, got {type(row[name]).__name__}"
    if not allow_empty and not row[name].strip():
        return name, "empty text"
    return None


def _check_messages(messages: Any, name: str, last_role: Optional[str] = None, allow_empty: bool = False) -> Problem:
    if not isinstance(messages, list) or not messages:
        return name, "expected a non-empty list of {role, content} messages"
    for index, message in enumerate(messages):
        where = f"{name}[{index}]"
        if not isinstance(message, dict):
            return where, f"expected a {{role, content}} object, got {type(message).__name__}"
        if message.get("role") not in ROLES:
            return f"{where}.role", f"expected one of {', '.join(ROLES)}, got {message.get('role')!r}"
        if not isinstance(message.get("content"), str):
            return f"{where}.content", f"expected a string, got {type(message.get('content')).__name__}"
        if not allow_empty and not message["content"].strip():
            return f"{where}.content", "empty text"
    if last_role is not None and messages[-1]["role"] != last_role:
        return (
            f"{name}[{len(messages) - 1}].role",
            f"the last message must be from the {last_role}, got {messages[-1]['role']!r}",
        )
    return None


def _check_prompt(row: dict, name: str = "prompt") -> Problem:
    """A prompt is a non-empty string or a conversation (list of messages) ending with a user turn."""
    if name not in row or row[name] is None:
        return name, "missing field"
    if isinstance(row[name], list):
        return _check_messages(row[name], name)
    return _check_text(row, name)


def _check_optional(row: dict, name: str, predicate: Callable[[Any], bool], expected: str) -> Problem:
    if row.get(name) is not None and not predicate(row[name]):
        return name, f"expected {expected}, got {row[name]!r}"
    return None


def _style(value: Any) -> str:
    return "conversational" if isinstance(value, list) else "text"


def check_sft_row(row: dict) -> Problem:
    """{"prompt", "completion"} (strings, or message lists) or {"messages": [...]} ending with the assistant."""
    if "messages" in row:
        return _check_messages(row["messages"], "messages", last_role="assistant")
    problem = _check_prompt(row)
    if problem:
        return problem
    if isinstance(row.get("completion"), list):
        return _check_messages(row["completion"], "completion", last_role="assistant")
    if "completion" not in row and "prompt" in row:
        return "completion", "missing field (an SFT row needs prompt + completion, or messages)"
    return _check_text(row, "completion")


def check_prompt_row(row: dict) -> Problem:
    """{"prompt"} with an optional "meta" object."""
    return _check_prompt(row) or _check_optional(row, "meta", lambda v: isinstance(v, dict), "an object")


def _check_response_text(value: Any, name: str, conversational: bool) -> Problem:
    # Empty responses are allowed: a policy can stop at once, and that is a (bad) response reviewers rank.
    if conversational and isinstance(value, list):
        return _check_messages(value, name, last_role="assistant", allow_empty=True)
    if not isinstance(value, str):
        return name, f"expected a string, got {type(value).__name__}" if value is not None else "missing field"
    return None


def check_pair_row(row: dict) -> Problem:
    """{"prompt", "chosen", "rejected"} (+ "margin" number, "group"); text or conversational."""
    problem = _check_prompt(row)
    if problem:
        return problem
    conversational = isinstance(row["prompt"], list)
    for name in ("chosen", "rejected"):
        if name not in row:
            return name, "missing field"
        problem = _check_response_text(row[name], name, conversational)
        if problem:
            return problem
    if row["chosen"] == row["rejected"]:
        return "rejected", "identical to chosen (a pair must compare two different responses)"
    return _check_optional(row, "margin", _is_number, "a finite number") or _check_optional(
        row, "group", lambda v: isinstance(v, (str, int)), "a string or integer"
    )


def _check_responses(row: dict) -> Problem:
    if "responses" not in row:
        return "responses", "missing field"
    responses = row["responses"]
    if not isinstance(responses, list):
        return "responses", f"expected a list of {{id, text}} objects, got {type(responses).__name__}"
    if len(responses) < 2:
        return "responses", f"needs at least two responses to compare, got {len(responses)}"
    seen: set[str] = set()
    conversational = isinstance(row.get("prompt"), list)
    for index, response in enumerate(responses):
        where = f"responses[{index}]"
        if not isinstance(response, dict):
            return where, f"expected an {{id, text}} object, got {type(response).__name__}"
        if (
            not isinstance(response.get("id"), (str, int))
            or isinstance(response.get("id"), bool)
            or response.get("id") == ""
        ):
            return f"{where}.id", "missing or not a string/integer"
        if str(response["id"]) in seen:
            return f"{where}.id", f"duplicate response id {response['id']!r}"
        seen.add(str(response["id"]))
        problem = _check_response_text(response.get("text"), f"{where}.text", conversational)
        if problem:
            return problem
    return None


def _check_row_id(row: dict) -> Problem:
    if "id" not in row or row["id"] is None:
        return "id", "missing field"
    if not isinstance(row["id"], (str, int)) or isinstance(row["id"], bool) or row["id"] == "":
        return "id", f"expected a non-empty string or integer, got {row['id']!r}"
    return None


def check_candidates_row(row: dict) -> Problem:
    """{"id", "prompt", "responses": [{"id", "text"}, ...>=2], "meta"?}."""
    return (
        _check_row_id(row)
        or _check_prompt(row)
        or _check_responses(row)
        or _check_optional(row, "meta", lambda v: isinstance(v, dict), "an object")
    )


def check_rankings_row(row: dict) -> Problem:
    """Candidates fields plus "ranking": tiers of response ids, best first; every response exactly once.

    A ranking that is one single tier says nothing and is an error, except when the reviewer flagged it:
    `all_bad` (all equally unusable) or `tie` (all equally good, e.g. the "tie" button for K=2). Both are
    legitimate judgements: they yield no pairs, and with several reviewers they count as votes for neither.
    """
    problem = check_candidates_row(row)
    if problem:
        return problem
    ranking = row.get("ranking")
    if ranking is None:
        return "ranking", "missing field"
    if not isinstance(ranking, list) or not ranking or not all(isinstance(tier, list) and tier for tier in ranking):
        return "ranking", "expected a list of non-empty tiers (lists of response ids), best first"
    known = {str(response["id"]) for response in row["responses"]}
    placed: set[str] = set()
    for tier_index, tier in enumerate(ranking):
        for response_id in tier:
            key = str(response_id)
            if key not in known:
                return (
                    f"ranking[{tier_index}]",
                    f"unknown response id {response_id!r} (responses are {', '.join(sorted(known))})",
                )
            if key in placed:
                return f"ranking[{tier_index}]", f"response id {response_id!r} is ranked twice"
            placed.add(key)
    unranked = known - placed
    if unranked:
        return "ranking", f"response id(s) {', '.join(sorted(unranked))} not ranked"
    all_bad = row.get("all_bad")
    if all_bad is not None and not isinstance(all_bad, bool):
        return "all_bad", f"expected true or false, got {all_bad!r}"
    tie = row.get("tie")
    if tie is not None and not isinstance(tie, bool):
        return "tie", f"expected true or false, got {tie!r}"
    if len(ranking) == 1 and not (all_bad or tie):
        return "ranking", "a single tie of all responses gives no preference (rank them, or set all_bad or tie)"
    return (
        _check_optional(row, "margin", _is_number, "a finite number")
        or _check_optional(row, "annotator", lambda v: isinstance(v, (str, int)), "a string or integer")
        # written by `rlhf annotate export`, read by `rlhf rm` (rm.min_gold_accuracy, rm.weight_by_quality)
        or _check_optional(row, "gold_accuracy", lambda v: _is_number(v) and 0 <= v <= 1, "a number from 0 to 1")
        or _check_optional(row, "quality_weight", lambda v: _is_number(v) and v >= 0, "a number >= 0")
    )


CHECKERS: dict[str, Callable[[dict], Problem]] = {
    "sft": check_sft_row,
    "prompts": check_prompt_row,
    "pairs": check_pair_row,
    "candidates": check_candidates_row,
    "rankings": check_rankings_row,
}


def _row_key(kind: str, row: dict) -> Optional[tuple]:
    """Rows that must be unique in a file: candidates by id; rankings by (id, annotator)."""
    if kind == "candidates":
        return (str(row["id"]),)
    if kind == "rankings":
        return (str(row["id"]), str(row.get("annotator")))
    return None


def _style_key(kind: str, row: dict) -> Optional[tuple[str, str]]:
    """(field, style) that must be the same on every row: Arrow cannot hold text and messages in one column."""
    if kind == "sft":
        return ("messages", "conversational") if "messages" in row else ("prompt", _style(row.get("prompt")))
    return "prompt", _style(row.get("prompt"))


def detect_format(row: dict) -> str:
    """Guess a row's format from its fields (for `rlhf data validate --format auto`)."""
    if "ranking" in row:
        return "rankings"
    if "responses" in row:
        return "candidates"
    if "chosen" in row or "rejected" in row:
        return "pairs"
    if "completion" in row or "messages" in row:
        return "sft"
    if "prompt" in row:
        return "prompts"
    raise DataError(f"cannot tell the data format from the fields {sorted(row)}; pass --format")


# --------------------------------------------------------------------------------------------------
# Loading with validation
# --------------------------------------------------------------------------------------------------


@dataclass
class SkipReport:
    """What `skip_bad_rows=True` dropped: counts per reason and the first few examples."""

    source: str
    total: int = 0
    kept: int = 0
    reasons: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    input_rows: list[int] = field(default_factory=list)  # converters: the input row each output row came from

    @property
    def skipped(self) -> int:
        return self.total - self.kept

    def add(self, message: str, reason: str) -> None:
        self.reasons[reason] += 1
        if len(self.examples) < 5:
            self.examples.append(message)

    def summary(self) -> str:
        if not self.skipped:
            return f"{self.source}: {self.kept} rows, none skipped"
        reasons = "; ".join(f"{count} x {reason}" for reason, count in self.reasons.most_common())
        return f"{self.source}: kept {self.kept} of {self.total} rows, skipped {self.skipped} ({reasons})"


def _reason_category(field_name: str, reason: str) -> str:
    """'responses[3].text: duplicate response id 'r1' (...)' -> 'responses[].text: duplicate response id …'."""
    field_name = re.sub(r"\[\d+\]", "[]", field_name)
    reason = re.sub(r"'[^']*'|\b\d+\b", "…", reason.split(" (")[0])
    return f"{field_name}: {reason}"


def validate_rows(
    kind: str, rows: list[tuple[int, dict]], source: str, skip_bad_rows: bool = False
) -> tuple[list[dict], SkipReport]:
    """Check every row; raise on the first bad one, or (skip_bad_rows) drop bad rows and report them."""
    if kind not in CHECKERS:
        raise DataError(f"unknown data format {kind!r}; expected one of {', '.join(CHECKERS)}")
    checker = CHECKERS[kind]
    report = SkipReport(source=source, total=len(rows))
    kept: list[dict] = []
    seen_keys: dict[tuple, int] = {}
    first_style: Optional[tuple[tuple[str, str], int]] = None
    for row_number, row in rows:
        problem = checker(row)
        if problem is None:
            key = _row_key(kind, row)
            if key is not None and key in seen_keys:
                what = "id" if kind == "candidates" else "id + annotator"
                problem = ("id", f"duplicate {what} {key[0]!r} (first seen on row {seen_keys[key]})")
        if problem is None:
            style = _style_key(kind, row)
            if first_style is None:
                first_style = (style, row_number)
            elif style != first_style[0]:
                problem = (
                    style[0],
                    f"{style[1]} row in a file whose row {first_style[1]} is {first_style[0][1]}; use one style per "
                    "file",
                )
        if problem is not None:
            field_name, reason = problem
            message = f"{source}: row {row_number}: field '{field_name}': {reason}"
            if not skip_bad_rows:
                raise DataError(message)
            report.add(message, _reason_category(field_name, reason))
            continue
        key = _row_key(kind, row)
        if key is not None:
            seen_keys[key] = row_number
        kept.append(row)
    report.kept = len(kept)
    if report.total and not kept:
        raise DataError(
            f"{source}: no valid rows ({report.summary()}); first problem: "
            f"{report.examples[0] if report.examples else '?'}"
        )
    if not rows:
        raise DataError(f"{source}: no rows")
    return kept, report


def rows_to_dataset(rows: list[dict], source: str = "data"):
    """A `datasets.Dataset` from rows whose optional fields may be missing on some rows (filled with None)."""
    import datasets

    columns: dict[str, list] = {}
    names: list[str] = []
    for row in rows:
        for name in row:
            if name not in columns:
                columns[name] = []
                names.append(name)
    for name in names:
        columns[name] = [row.get(name) for row in rows]
    try:
        return datasets.Dataset.from_dict(columns)
    except Exception as exc:  # noqa: BLE001 - Arrow type clashes (e.g. meta fields with mixed types)
        raise DataError(
            f"{source}: rows cannot be stored as one table ({exc}); keep each field's type the same on every row"
        ) from None


def load_rows(path: str | os.PathLike, kind: str, skip_bad_rows: bool = False) -> tuple[list[dict], SkipReport]:
    """Read and validate as plain dicts (for code that needs rows, not a Dataset)."""
    return validate_rows(kind, read_rows(path), str(path), skip_bad_rows)


def _load(path: str | os.PathLike, kind: str, skip_bad_rows: bool):
    rows, report = load_rows(path, kind, skip_bad_rows)
    dataset = rows_to_dataset(rows, str(path))
    return (dataset, report) if skip_bad_rows else dataset


def load_sft(path: str | os.PathLike, skip_bad_rows: bool = False):
    """SFT demonstrations -> Dataset; with skip_bad_rows=True -> (Dataset, SkipReport)."""
    return _load(path, "sft", skip_bad_rows)


def load_prompts(path: str | os.PathLike, skip_bad_rows: bool = False):
    """Prompts for PPO/eval/generation -> Dataset; with skip_bad_rows=True -> (Dataset, SkipReport)."""
    return _load(path, "prompts", skip_bad_rows)


def load_pairs(path: str | os.PathLike, skip_bad_rows: bool = False):
    """Preference pairs -> Dataset; with skip_bad_rows=True -> (Dataset, SkipReport)."""
    return _load(path, "pairs", skip_bad_rows)


def load_candidates(path: str | os.PathLike, skip_bad_rows: bool = False):
    """Candidates for review -> Dataset; with skip_bad_rows=True -> (Dataset, SkipReport)."""
    return _load(path, "candidates", skip_bad_rows)


def load_rankings(path: str | os.PathLike, skip_bad_rows: bool = False):
    """Rankings -> Dataset; with skip_bad_rows=True -> (Dataset, SkipReport)."""
    return _load(path, "rankings", skip_bad_rows)


# --------------------------------------------------------------------------------------------------
# Rankings -> pairs
# --------------------------------------------------------------------------------------------------


def _group_of(row: dict, group: Optional[str]) -> str:
    if group is not None:
        return str(group)
    if row.get("id") is not None:
        return str(row["id"])
    return json.dumps(row.get("prompt"), sort_keys=True, ensure_ascii=False)


def _texts_by_id(row: dict) -> dict[str, Any]:
    return {str(response["id"]): response["text"] for response in row["responses"]}


def ranking_to_pairs(row: dict, group: Optional[str] = None) -> list[dict]:
    """Every response in a higher tier beats every response in a lower tier; ties give no pair.

    Returns {"prompt", "chosen", "rejected", "group"} (+ "margin" when the ranking has one, copied to
    each pair). `group` defaults to the ranking's id. A strict ranking of K responses gives C(K,2)
    pairs, ordered by the winner's tier then the loser's. Two responses with identical text give no
    pair even in different tiers: a preference between the same text is pure label noise.
    """
    texts = _texts_by_id(row)
    group_id = _group_of(row, group)
    tiers = [[str(response_id) for response_id in tier] for tier in row["ranking"]]
    pairs: list[dict] = []
    for upper_index, upper in enumerate(tiers):
        for lower in tiers[upper_index + 1 :]:
            for winner in upper:
                for loser in lower:
                    if texts[winner] == texts[loser]:
                        continue
                    pair = {
                        "prompt": row["prompt"],
                        "chosen": texts[winner],
                        "rejected": texts[loser],
                        "group": group_id,
                    }
                    if row.get("margin") is not None:
                        pair["margin"] = row["margin"]
                    pairs.append(pair)
    return pairs


def _tier_index(row: dict) -> dict[str, int]:
    return {str(response_id): index for index, tier in enumerate(row["ranking"]) for response_id in tier}


def _vote_weight(row: dict, weight_key: Optional[str]) -> float:
    """A ranking's vote: int 1 without weights (so vote counts stay integers), else its weight (1 if missing)."""
    if weight_key is None:
        return 1
    return 1.0 if row.get(weight_key) is None else float(row[weight_key])


def majority_vote_pairs(
    rankings: list[dict], min_agreement: float = 0.5, weight_key: Optional[str] = None
) -> tuple[list[dict], list[dict]]:
    """Combine several reviewers' rankings of the same prompt/response set into agreed pairs.

    Rankings are grouped by their id (rows without an id by their prompt); each ranking is one
    reviewer's vote. For every unordered pair of responses {a, b} of a group, with
      n      = number of rankings in the group that rank both a and b (a tie counts as a vote for neither),
      wins_a = rankings that put a in a higher tier than b, wins_b likewise,
      share  = max(wins_a, wins_b) / n,
    the pair (majority winner as chosen) is *kept* when share > min_agreement and wins_a != wins_b,
    and *disputed* otherwise, unless nobody preferred either (all ties: no pair at all). With the
    default 0.5 a single reviewer's pair is kept (share 1), two reviewers who disagree are disputed
    (1/2), a 2-1 split of three is kept (2/3), and a preference plus a tie is disputed (1/2).

    Returns (kept_pairs, disputed_pairs). Kept pairs have the pairs format plus "group" and the mean
    "margin" of the winning votes when rankings carry margins. Disputed pairs carry the leading
    direction as chosen/rejected plus "votes_chosen", "votes_rejected", "votes_tied" and "agreement".
    Pairs of identical texts are dropped as in `ranking_to_pairs`. For a group of one ranking the kept
    pairs equal `ranking_to_pairs` of that ranking.

    With `weight_key`, each ranking's vote counts `row[weight_key]` (1 when the row has none) instead
    of 1: wins, ties and the share are sums of weights (`rlhf rm` with rm.weight_by_quality uses the
    reviewer's `quality_weight`). A group of one ranking is unaffected, since the share is then 1.
    """
    if not 0.0 <= min_agreement < 1.0:
        raise ValueError(f"min_agreement must be in [0, 1), got {min_agreement}")
    groups: dict[str, list[dict]] = {}
    for row in rankings:
        groups.setdefault(_group_of(row, None), []).append(row)

    kept: list[dict] = []
    disputed: list[dict] = []
    for group_id, rows in groups.items():
        texts: dict[str, Any] = {}
        for row in rows:
            for response_id, text in _texts_by_id(row).items():
                texts.setdefault(response_id, text)
        tier_maps = [(_tier_index(row), row.get("margin"), _vote_weight(row, weight_key)) for row in rows]
        # Pair order follows the first ranking's tiers so a single reviewer reproduces ranking_to_pairs.
        order = [str(response_id) for tier in rows[0]["ranking"] for response_id in tier]
        order += [response_id for response_id in texts if response_id not in order]
        for first_index, first in enumerate(order):
            for second in order[first_index + 1 :]:
                if texts[first] == texts[second]:
                    continue
                wins_first = wins_second = ties = 0
                margins_first: list[float] = []
                margins_second: list[float] = []
                for tiers, margin, weight in tier_maps:
                    if first not in tiers or second not in tiers:
                        continue
                    if tiers[first] < tiers[second]:
                        wins_first += weight
                        margins_first.append(margin)
                    elif tiers[second] < tiers[first]:
                        wins_second += weight
                        margins_second.append(margin)
                    else:
                        ties += weight
                if wins_first == wins_second == 0:
                    continue
                voters = wins_first + wins_second + ties
                first_leads = wins_first >= wins_second
                winner, loser = (first, second) if first_leads else (second, first)
                votes_for, votes_against = (wins_first, wins_second) if first_leads else (wins_second, wins_first)
                share = votes_for / voters if voters else 0.0  # all voters weighing 0
                pair = {
                    "prompt": rows[0]["prompt"],
                    "chosen": texts[winner],
                    "rejected": texts[loser],
                    "group": group_id,
                }
                if share > min_agreement and votes_for != votes_against:
                    winning_margins = [m for m in (margins_first if first_leads else margins_second) if m is not None]
                    if winning_margins:
                        pair["margin"] = sum(winning_margins) / len(winning_margins)
                    kept.append(pair)
                else:
                    pair.update(votes_chosen=votes_for, votes_rejected=votes_against, votes_tied=ties, agreement=share)
                    disputed.append(pair)
    return kept, disputed


def rankings_to_pairs(rankings: Iterable[dict]) -> list[dict]:
    """All pairs of a list of single-reviewer rankings (no vote): ranking_to_pairs of each row."""
    pairs: list[dict] = []
    for row in rankings:
        pairs.extend(ranking_to_pairs(row))
    return pairs
