"""What a project asks reviewers for besides the ranking: a 1-7 rating per response, flags per response,
and the rationale; the project's settings and the checks of a submission against them.

All three are optional per project (`rlhf annotate serve --ratings --flags ... --rationale ...`), stored
as one JSON setting. The scale is InstructGPT's (1-7 overall quality); flags are the project's own
words, e.g. "fails to follow the instruction", "made-up facts", "inappropriate", "harmful". When ratings
are on, every response must be rated: a half-rated task is a rating nobody can use. The page and the
API speak card labels (A, B...); the store keeps response ids.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Optional

from annotation.errors import InvalidInput
from annotation.ranking import card_labels

RATING_MIN, RATING_MAX = 1, 7
MAX_FLAGS = 12
MAX_FLAG_CHARS = 60
RationaleMode = Literal["optional", "required", "off"]
RATIONALE_MODES = ("optional", "required", "off")


@dataclass(frozen=True)
class JudgementConfig:
    ratings: bool = False
    flags: list[str] = field(default_factory=list)
    rationale: RationaleMode = "optional"

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "JudgementConfig":
        data = json.loads(text)
        return cls(
            ratings=bool(data.get("ratings", False)),
            flags=list(data.get("flags", [])),
            rationale=data.get("rationale", "optional"),
        )


def make_config(
    ratings: bool = False, flags: Optional[list[str]] = None, rationale: str = "optional"
) -> JudgementConfig:
    """Checked project settings (a UserError names the bad option)."""
    from rlhf.errors import UserError

    cleaned: list[str] = []
    for flag in flags or []:
        name = flag.strip()
        if not name:
            continue
        if len(name) > MAX_FLAG_CHARS or not name.isprintable():
            raise UserError(f"--flags: {flag!r} must be 1 to {MAX_FLAG_CHARS} printable characters")
        if name in cleaned:
            raise UserError(f"--flags: {name!r} is given twice")
        cleaned.append(name)
    if len(cleaned) > MAX_FLAGS:
        raise UserError(f"--flags: at most {MAX_FLAGS} flags, got {len(cleaned)}")
    if rationale not in RATIONALE_MODES:
        raise UserError(f"--rationale must be one of {', '.join(RATIONALE_MODES)}, got {rationale!r}")
    return JudgementConfig(ratings=ratings, flags=cleaned, rationale=rationale)  # type: ignore[arg-type]


def check_ratings(config: JudgementConfig, ratings: Any, shown_order: list[str]) -> Optional[dict[str, int]]:
    """{card label: 1..7} -> {response id: rating}; every card when ratings are on, nothing when off."""
    if ratings is None or ratings == {}:
        if config.ratings:
            raise InvalidInput(f"'ratings' is required: rate every response from {RATING_MIN} to {RATING_MAX}")
        return None
    if not config.ratings:
        raise InvalidInput("'ratings': this project does not collect ratings")
    if not isinstance(ratings, dict):
        raise InvalidInput("'ratings' must be an object of card label -> rating")
    labels = card_labels(len(shown_order))
    id_of_label = dict(zip(labels, shown_order, strict=True))
    result: dict[str, int] = {}
    for label, value in ratings.items():
        if label not in id_of_label:
            raise InvalidInput(f"'ratings.{label}': no such card; the cards are {', '.join(labels)}")
        if isinstance(value, bool) or not isinstance(value, int) or not RATING_MIN <= value <= RATING_MAX:
            raise InvalidInput(
                f"'ratings.{label}' must be a whole number from {RATING_MIN} to {RATING_MAX}, got {value!r}"
            )
        result[id_of_label[label]] = value
    missing = [label for label in labels if label not in ratings]
    if missing:
        raise InvalidInput(f"'ratings' leaves out card(s) {', '.join(missing)}; rate every response")
    return result


def check_flags(config: JudgementConfig, flags: Any, shown_order: list[str]) -> Optional[dict[str, list[str]]]:
    """{card label: [flag names]} -> {response id: [flags]} (cards without flags left out); None if empty."""
    if flags is None or flags == {}:
        return None
    if not isinstance(flags, dict):
        raise InvalidInput("'flags' must be an object of card label -> list of flag names")
    labels = card_labels(len(shown_order))
    id_of_label = dict(zip(labels, shown_order, strict=True))
    result: dict[str, list[str]] = {}
    for label, names in flags.items():
        if label not in id_of_label:
            raise InvalidInput(f"'flags.{label}': no such card; the cards are {', '.join(labels)}")
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise InvalidInput(f"'flags.{label}' must be a list of flag names")
        for name in names:
            if name not in config.flags:
                allowed = ", ".join(repr(f) for f in config.flags) or "none (this project has no flags)"
                raise InvalidInput(f"'flags.{label}': unknown flag {name!r}; the flags are {allowed}")
        if len(set(names)) != len(names):
            raise InvalidInput(f"'flags.{label}' names a flag twice")
        if names:
            # keep the project's order, so exports compare equal whatever order the page sent
            result[id_of_label[label]] = [name for name in config.flags if name in names]
    return result or None


def check_rationale(config: JudgementConfig, rationale: Optional[str]) -> Optional[str]:
    if config.rationale == "off" and rationale:
        raise InvalidInput("'rationale': this project does not collect rationales")
    if config.rationale == "required" and not rationale:
        raise InvalidInput("'rationale' is required in this project: say why you ranked them this way")
    return rationale


def to_labels(by_id: Optional[dict[str, Any]], shown_order: list[str]) -> dict[str, Any]:
    """{response id: value} -> {card label: value} for this reviewer's card order (pre-filling after undo)."""
    if not by_id:
        return {}
    label_of = dict(zip(shown_order, card_labels(len(shown_order)), strict=True))
    return {label_of[response_id]: value for response_id, value in by_id.items() if response_id in label_of}
