"""Where the reward model and the gold judge part ways, rule by rule (part of `rlhf eval`'s report).

A judge that exposes `breakdown(prompt, response) -> {rule: points}` (the built-in tasks' judges do) lets
the report split the gold score into its rules instead of averaging a blind spot away:

- per rule and policy: the mean points and the share of responses where the rule fired (points != 0),
  so "the closing sentence vanished after PPO" reads as closing_last 0.45 -> 0.01;
- per rule: the reward model's own view of it, `rm_gap` = mean normalised RM score of the responses
  where the rule fired minus that of the others, within each policy, averaged. A rule the judge penalises but
  the RM scores at or above zero is one the RM does not see: marked "blind spot?" when PPO also made
  it fire more often;
- over PPO updates: the RM and gold scores of PPO's held-out evaluations (`ppo.eval_every`) with each
  rule's points (eval/gold/<rule>), so a rising RM score over a falling rule shows when it happened.

Pure functions over the evaluation report and PPO's metrics.jsonl; plots in `plot_rules`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

from rlhf.tracking import save_figure

RULE_PREFIX = "eval/gold/"


def _mean(values: list[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


def policy_rules(rows: list[dict]) -> Optional[dict[str, dict[str, float]]]:
    """{rule: {"points": mean points, "rate": share of responses where the rule fired}} over a policy's rows."""
    breakdowns = [row["gold_rules"] for row in rows if row.get("gold_rules") is not None]
    if not breakdowns:
        return None
    rules = list(dict.fromkeys(rule for parts in breakdowns for rule in parts))
    return {
        rule: {
            "points": sum(parts.get(rule, 0.0) for parts in breakdowns) / len(breakdowns),
            "rate": sum(1 for parts in breakdowns if parts.get(rule, 0.0) != 0.0) / len(breakdowns),
        }
        for rule in rules
    }


def rm_rule_gaps(samples_by_policy: dict[str, list[dict]]) -> dict[str, Optional[float]]:
    """Per rule: the RM's mean normalised score where the rule fired minus where it did not, within each policy
    (so that PPO's higher scores overall are not read as the RM liking whatever PPO does), averaged over the
    policies that have both kinds of response, weighted by their rows. None when no policy has both."""
    scored = {
        name: [row for row in rows if row.get("gold_rules") is not None and row.get("rm_score_normalized") is not None]
        for name, rows in samples_by_policy.items()
    }
    rules = list(dict.fromkeys(rule for rows in scored.values() for row in rows for rule in row["gold_rules"]))
    gaps: dict[str, Optional[float]] = {}
    for rule in rules:
        weighted, weight = 0.0, 0
        for rows in scored.values():
            fired = [row["rm_score_normalized"] for row in rows if row["gold_rules"].get(rule, 0.0) != 0.0]
            quiet = [row["rm_score_normalized"] for row in rows if row["gold_rules"].get(rule, 0.0) == 0.0]
            if fired and quiet:
                weighted += len(rows) * (_mean(fired) - _mean(quiet))
                weight += len(rows)
        gaps[rule] = weighted / weight if weight else None
    return gaps


def compare_rules(
    samples_by_policy: dict[str, list[dict]], base: Optional[str] = None, other: Optional[str] = None
) -> Optional[dict[str, Any]]:
    """The report's `gold_rules` section: each policy's rules, the RM's gap per rule, and base -> other deltas.

    `base`/`other` default to the first and last policy (sft and ppo in the pipeline)."""
    per_policy = {name: policy_rules(rows) for name, rows in samples_by_policy.items()}
    per_policy = {name: rules for name, rules in per_policy.items() if rules is not None}
    if not per_policy:
        return None
    names = list(per_policy)
    base = base or names[0]
    other = other or names[-1]
    gaps = rm_rule_gaps(samples_by_policy)
    rows = []
    for rule in per_policy[base]:
        before, after = per_policy[base][rule], per_policy[other].get(rule, {"points": 0.0, "rate": 0.0})
        delta = after["points"] - before["points"]
        gap = gaps.get(rule)
        # The judge took points from this rule after PPO, and the RM does not score the responses where it
        # fires any lower: PPO was not steered away from it, so the RM likely cannot see it.
        blind = base != other and delta < -1e-9 and after["points"] < 0 and gap is not None and gap >= 0
        rows.append(
            {
                "rule": rule,
                "base_points": before["points"],
                "base_rate": before["rate"],
                "other_points": after["points"],
                "other_rate": after["rate"],
                "delta_points": delta,
                "rm_gap": gap,
                "blind_spot": blind,
            }
        )
    return {"base": base, "other": other, "per_policy": per_policy, "rules": rows}


def ppo_rule_curve(metrics_rows: list[dict]) -> list[dict]:
    """PPO's held-out evaluations over updates: {update, rm_score, gold_score, rules: {rule: points}}."""
    curve = []
    for row in metrics_rows:
        if not isinstance(row.get("eval/gold_score"), (int, float)):
            continue
        curve.append(
            {
                "update": row.get("step"),
                "rm_score": row.get("eval/rm_score"),
                "gold_score": row["eval/gold_score"],
                "rules": {key[len(RULE_PREFIX) :]: value for key, value in row.items() if key.startswith(RULE_PREFIX)},
            }
        )
    return curve


def _fmt(value: Optional[float], digits: int = 2, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def render_rules_markdown(gold_rules: Optional[dict], curve: Optional[list[dict]] = None) -> Optional[str]:
    """The report's sections on rules (None when the judge has no breakdown and PPO logged no gold score)."""
    lines: list[str] = []
    if gold_rules:
        base, other = gold_rules["base"], gold_rules["other"]
        lines += [
            f"## Gold judge by rule: {base} against {other}",
            "",
            "Mean points of each rule of the judge and the share of responses where it fired. `RM gap`: the "
            "reward model's mean normalised score where the rule fired minus where it did not (within each "
            "policy, averaged); a rule the judge "
            f"penalises that {other} fires more while the RM gap is not negative is marked: the reward model "
            "does not see it.",
            "",
            f"| rule | {base} points | {base} rate | {other} points | {other} rate | change | RM gap | |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in gold_rules["rules"]:
            lines.append(
                f"| {row['rule']} | {_fmt(row['base_points'])} | {_fmt(row['base_rate'])} | "
                f"{_fmt(row['other_points'])} | {_fmt(row['other_rate'])} | {_fmt(row['delta_points'], signed=True)} | "
                f"{_fmt(row['rm_gap'], signed=True)} | {'blind spot?' if row['blind_spot'] else ''} |"
            )
    if curve:
        # the rules table's order; rules that never scored a point in PPO's evaluations are left out
        order = [row["rule"] for row in gold_rules["rules"]] if gold_rules else []
        found = list(dict.fromkeys(rule for point in curve for rule in point["rules"]))
        rules = [
            rule
            for rule in dict.fromkeys(order + sorted(found))
            if rule in found and any(point["rules"].get(rule) for point in curve)
        ]
        lines += [
            *([""] if lines else []),
            "## Gold against RM over PPO updates (held-out prompts)",
            "",
            "| update | RM score | gold score | " + " | ".join(rules) + " |",
            "|---|---|---|" + "---|" * len(rules),
        ]
        for point in curve:
            cells = " | ".join(_fmt(point["rules"].get(rule)) for rule in rules)
            lines.append(
                f"| {point['update']} | {_fmt(point['rm_score'])} | {_fmt(point['gold_score'])} | {cells} |"
                if rules
                else f"| {point['update']} | {_fmt(point['rm_score'])} | {_fmt(point['gold_score'])} |"
            )
    return "\n".join(lines) if lines else None


def plot_rules(gold_rules: Optional[dict], curve: Optional[list[dict]], out_dir: Path) -> list[Path]:
    """gold_rules.png: points per rule, base vs other; gold_rules_over_updates.png: each rule and the RM score
    over PPO updates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    out_dir.mkdir(parents=True, exist_ok=True)
    if gold_rules:
        rows = gold_rules["rules"]
        positions = range(len(rows))
        fig, axis = plt.subplots(figsize=(max(6, 0.6 * len(rows) + 2), 4))
        width = 0.4
        axis.bar([p - width / 2 for p in positions], [r["base_points"] for r in rows], width, label=gold_rules["base"])
        axis.bar(
            [p + width / 2 for p in positions], [r["other_points"] for r in rows], width, label=gold_rules["other"]
        )
        for position, row in zip(positions, rows):
            if row["blind_spot"]:
                axis.annotate("blind spot?", (position, row["other_points"]), fontsize=7, color="tab:red", ha="center")
        axis.set_xticks(list(positions), [r["rule"] for r in rows], rotation=45, ha="right", fontsize=7)
        axis.axhline(0, color="black", linewidth=0.5)
        axis.set_ylabel("mean gold points per response")
        axis.legend()
        fig.suptitle("Gold judge by rule")
        written.append(save_figure(fig, out_dir / "gold_rules.png"))
    if curve and any(point["rules"] for point in curve):
        fig, axis = plt.subplots(figsize=(7, 4))
        updates = [point["update"] for point in curve]
        rules = list(dict.fromkeys(rule for point in curve for rule in point["rules"]))
        for rule in rules:
            axis.plot(updates, [point["rules"].get(rule, 0.0) for point in curve], marker=".", label=rule)
        twin = axis.twinx()
        twin.plot(updates, [point["rm_score"] for point in curve], color="black", linestyle="--", label="RM score")
        axis.set_xlabel("PPO update")
        axis.set_ylabel("gold points per response")
        twin.set_ylabel("RM score (normalised), dashed")
        axis.legend(fontsize=6, ncol=2)
        axis.grid(alpha=0.3)
        fig.suptitle("Gold rules against the RM score over PPO updates")
        written.append(save_figure(fig, out_dir / "gold_rules_over_updates.png"))
    return written
