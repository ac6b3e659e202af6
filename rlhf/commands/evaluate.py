"""Compare policies on held-out prompts: reward-model and gold scores, KL to a reference, win rates.

    rlhf eval --policies sft=runs/tiny/sft/model ppo=runs/tiny/ppo/policy \
        --prompts data/tiny/prompts_eval.jsonl --judge tiny --reward-model runs/tiny/rm/model \
        --reference runs/tiny/sft/model --ppo-runs runs/tiny/ppo --out runs/tiny

Every policy answers the same prompts with the same sampling seed. Per policy we report the mean RM
score, the mean gold score (when a judge is given), KL(policy || reference) per response (the summed
per-token log-ratio of the sampled tokens under temperature-scaled logits: an unbiased Monte-Carlo
estimate of the sequence KL), response length, EOS rate and distinct-n. Win rates compare two policies
prompt by prompt (a tie counts half) with a 95% Wilson score interval (not the Wald interval, which has
zero width at 0 and 1). Outputs: report.json (every sample),
report.md (tables and side-by-side samples) and plots/ (training curves of the PPO runs and, with
several runs, the reward-KL frontier).
"""

from __future__ import annotations

import argparse
import json
import math
from itertools import combinations
from pathlib import Path
from typing import Any, Optional

from rlhf.commands.judge_report import compare_rules, plot_rules, ppo_rule_curve, render_rules_markdown
from rlhf.errors import ConfigError, UserError
from rlhf.plugins import load_judge
from rlhf.tracking import save_figure

# --------------------------------------------------------------------------------------------------
# Pure statistics
# --------------------------------------------------------------------------------------------------


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion successes / n (successes may be fractional: ties count half).

    Unlike the Wald interval it has no zero width at 0 or 1 and keeps its coverage near the ends, where a
    policy that beats (or loses to) another on every prompt lands.
    """
    from statistics import NormalDist

    if n <= 0:
        raise ValueError("wilson_interval needs n > 0")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half_width = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low = 0.0 if successes <= 0 else max(0.0, center - half_width)  # exactly 0 / 1 at the ends (no rounding)
    high = 1.0 if successes >= n else min(1.0, center + half_width)
    return low, high


def win_rate(scores_a: list[float], scores_b: list[float], tie_tolerance: float = 1e-9) -> dict:
    """Share of prompts where A beats B with a 95% Wilson score interval.

    A tie counts as half a win, in the rate and in the interval (Wilson's for wins + ties/2 successes of n
    prompts). A tie varies less than a coin flip, so with ties the interval is, if anything, conservative.
    """
    if len(scores_a) != len(scores_b) or not scores_a:
        raise ValueError("win_rate needs two equally long, non-empty score lists")
    outcomes = [
        1.0 if a - b > tie_tolerance else 0.0 if b - a > tie_tolerance else 0.5 for a, b in zip(scores_a, scores_b)
    ]
    n = len(outcomes)
    successes = sum(outcomes)
    return {
        "win_rate": successes / n,
        "ci95": list(wilson_interval(successes, n)),
        "interval": "wilson",
        "wins": sum(1 for x in outcomes if x == 1.0),
        "ties": sum(1 for x in outcomes if x == 0.5),
        "losses": sum(1 for x in outcomes if x == 0.0),
        "n": n,
    }


def distinct_n(texts: list[str], n: int) -> float:
    """Unique word n-grams / all word n-grams over every response (1.0: no n-gram repeats anywhere)."""
    total, unique = 0, set()
    for text in texts:
        words = text.split()
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        unique.update(grams)
    return len(unique) / total if total else 0.0


def mean(values) -> float:
    values = list(values)
    return float(sum(values) / len(values)) if values else float("nan")


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------


def load_reward_stats(reward_model_dir: str) -> dict:
    path = Path(reward_model_dir) / "reward_stats.json"
    return json.loads(path.read_text()) if path.exists() else {"mean": 0.0, "std": 1.0}


def evaluate(
    policies: dict[str, str],
    prompts: list[Any],
    reward_model: Optional[str] = None,
    reference: Optional[str] = None,
    judge: Optional[str] = None,
    max_new_tokens: int = 24,
    temperature: float = 0.7,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 64,
    precision: str = "fp32",
    device: Optional[str] = "auto",
    dtype: Optional[str] = None,
) -> dict:
    """Sample every policy on the prompts and score the samples; returns the report as a dict.

    Every model runs on `device` (auto: cuda when available) in one dtype (`dtype`, else `precision`
    resolved for that device), so the KL compares like with like (rlhf/inference.py)."""
    from rlhf.commands.generate import sample
    from rlhf.inference import inference_device, inference_dtype, load_for_inference
    from rlhf.modeling import check_same_tokenizers, load_causal_lm, load_scalar_model
    from rlhf.scoring import response_logprobs, reward_scores

    if not temperature > 0:  # the KL divides logits by it; greedy decoding has no KL to a sampling reference
        raise ConfigError(
            f"bad value for '--temperature': {temperature!r}; rlhf eval samples and measures KL to the reference "
            "from softmax(logits / temperature), so it needs a positive temperature (greedy: use rlhf generate)"
        )
    judge_fn = load_judge(judge, "--judge")
    reference = reference or next(iter(policies.values()))
    # Every model shares one tokenizer, checked before any weights load (exit 2 names both paths).
    roles = {"reference": reference, **{f"policy '{name}'": path for name, path in policies.items()}}
    if reward_model:
        roles["reward"] = reward_model
    tokenizer = check_same_tokenizers(roles)["reference"]
    run_on = inference_device(device)
    dtype = inference_dtype(precision, dtype, run_on, reference)
    reference_model = load_for_inference(load_causal_lm, reference, tokenizer, run_on, dtype)
    rm = load_for_inference(load_scalar_model, reward_model, tokenizer, run_on, dtype) if reward_model else None
    stats = load_reward_stats(reward_model) if reward_model else None

    per_policy: dict[str, dict] = {}
    samples_by_policy: dict[str, list] = {}
    for name, path in policies.items():
        model = (
            reference_model if path == reference else load_for_inference(load_causal_lm, path, tokenizer, run_on, dtype)
        )
        samples = sample(
            model,
            tokenizer,
            prompts,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            batch_size=batch_size,
            progress=True,
        )
        prompt_ids = [s.prompt_ids for s in samples]
        response_ids = [s.response_ids for s in samples]
        policy_lp = response_logprobs(model, prompt_ids, response_ids, tokenizer.pad_token_id, temperature, batch_size)
        ref_lp = (
            policy_lp
            if model is reference_model
            else response_logprobs(
                reference_model, prompt_ids, response_ids, tokenizer.pad_token_id, temperature, batch_size
            )
        )
        kls = [float((a - b).sum()) for a, b in zip(policy_lp, ref_lp)]
        rm_scores = (
            reward_scores(rm, prompt_ids, response_ids, tokenizer.pad_token_id, batch_size).tolist()
            if rm is not None
            else [None] * len(samples)
        )
        gold = judge_fn.scores(prompts, [s.text for s in samples]) if judge_fn else [None] * len(samples)
        gold_rules = (  # the judge's score split by rule, when it exposes one (see judge_report.py)
            [judge_fn.breakdown(prompt, s.text) for prompt, s in zip(prompts, samples)]
            if judge_fn is not None and judge_fn.has_breakdown
            else [None] * len(samples)
        )
        rows = [
            {
                "prompt": prompt,
                "response": s.text,
                "rm_score": r,
                "rm_score_normalized": (r - stats["mean"]) if r is not None else None,
                "gold_score": g,
                "gold_rules": rules,
                "kl": k,
                "length": s.num_tokens,
                "eos": s.finished,
            }
            for prompt, s, r, g, rules, k in zip(prompts, samples, rm_scores, gold, gold_rules, kls)
        ]
        samples_by_policy[name] = rows
        per_policy[name] = {
            "path": path,
            "rm_score": mean(r["rm_score"] for r in rows) if rm is not None else None,
            "rm_score_normalized": mean(r["rm_score_normalized"] for r in rows) if rm is not None else None,
            "gold_score": mean(r["gold_score"] for r in rows) if judge_fn else None,
            "kl_to_reference": mean(kls),
            "length": mean(r["length"] for r in rows),
            "eos_rate": mean(1.0 if r["eos"] else 0.0 for r in rows),
            "distinct_1": distinct_n([r["response"] for r in rows], 1),
            "distinct_2": distinct_n([r["response"] for r in rows], 2),
        }

    win_rates = []
    for a, b in combinations(list(policies), 2):
        for first, second in ((b, a),):  # later policies (e.g. ppo) against earlier ones (e.g. sft)
            entry = {"policy": first, "against": second}
            if judge_fn:
                entry["gold"] = win_rate(
                    [r["gold_score"] for r in samples_by_policy[first]],
                    [r["gold_score"] for r in samples_by_policy[second]],
                )
            if rm is not None:
                entry["rm"] = win_rate(
                    [r["rm_score"] for r in samples_by_policy[first]],
                    [r["rm_score"] for r in samples_by_policy[second]],
                )
            win_rates.append(entry)

    side_by_side = [
        {
            "prompt": prompts[i],
            "responses": {
                name: {k: v for k, v in samples_by_policy[name][i].items() if k != "prompt"} for name in policies
            },
        }
        for i in range(len(prompts))
    ]
    return {
        "settings": {
            "num_prompts": len(prompts),
            "reference": reference,
            "reward_model": reward_model,
            "judge": judge,
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "seed": seed,
            "reward_stats": stats,
            "device": str(run_on),
            "dtype": dtype,
        },
        "policies": per_policy,
        "win_rates": win_rates,
        "gold_rules": compare_rules(samples_by_policy),
        "samples": side_by_side,
    }


# --------------------------------------------------------------------------------------------------
# Report and plots
# --------------------------------------------------------------------------------------------------


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def render_markdown(report: dict, extra_sections: Optional[list[str]] = None, num_examples: int = 6) -> str:
    settings = report["settings"]
    lines = [
        "# Evaluation report",
        "",
        f"{settings['num_prompts']} held-out prompts"
        + (f" from `{settings['prompts_file']}`" if settings.get("prompts_file") else "")
        + f"; temperature {settings['temperature']}, top_p "
        f"{settings['top_p']}, "
        f"max {settings['max_new_tokens']} new tokens, seed {settings['seed']}; KL reference: "
        f"`{settings['reference']}`"
        + (f"; {settings['dtype']} on {settings['device']}" if settings.get("device") else "")
        + ".",
        "",
    ]
    lines += [
        "## Policies",
        "",
        "| policy | gold score | RM score (normalised) | KL to reference (nats/response) | length | EOS rate | "
        "distinct-1 | distinct-2 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in report["policies"].items():
        lines.append(
            f"| {name} | {_fmt(m['gold_score'])} | {_fmt(m['rm_score_normalized'])} | {_fmt(m['kl_to_reference'])} | "
            f"{_fmt(m['length'], 1)} | {_fmt(m['eos_rate'], 2)} | "
            f"{_fmt(m['distinct_1'], 2)} | {_fmt(m['distinct_2'], 2)} |"
        )
    if report["win_rates"]:
        lines += [
            "",
            "## Win rates (ties count half; 95% Wilson score interval)",
            "",
            "| policy | against | judge | win rate | 95% CI | wins / ties / losses |",
            "|---|---|---|---|---|---|",
        ]
        for entry in report["win_rates"]:
            for judge_name in ("gold", "rm"):
                if judge_name in entry:
                    w = entry[judge_name]
                    lines.append(
                        f"| {entry['policy']} | {entry['against']} | {judge_name} | {w['win_rate']:.3f} | "
                        f"[{w['ci95'][0]:.3f}, {w['ci95'][1]:.3f}] | {w['wins']} / {w['ties']} / {w['losses']} |"
                    )
    for section in extra_sections or []:
        lines += ["", section]
    lines += ["", "## Samples", ""]
    for item in report["samples"][:num_examples]:
        lines += [f"**Prompt:** `{item['prompt']!r}`", ""]
        for name, response in item["responses"].items():
            lines.append(
                f"- **{name}** (gold {_fmt(response['gold_score'], 2)}, RM {_fmt(response['rm_score'], 2)}): "
                f"{response['response']!r}"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def plot_ppo_runs(run_dirs: list[str], out_dir: Path) -> list[Path]:
    """Reward and KL over updates; the critic's explained variance and value loss; gold vs RM score over
    updates (over-optimisation shows as a gap);
    with several runs, the reward-KL frontier of their final updates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rlhf.tracking import read_metrics

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    runs = {str(d): read_metrics(Path(d) / "metrics.jsonl") for d in run_dirs if (Path(d) / "metrics.jsonl").exists()}
    if not runs:
        return written

    def series(rows, key):
        points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        return zip(*points) if points else ((), ())

    fig, (ax_reward, ax_kl) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for name, rows in runs.items():
        label = Path(name).name if len(runs) > 1 else None
        ax_reward.plot(*series(rows, "objective/scores"), label=f"{label or ''} RM score".strip())
        ax_reward.plot(
            *series(rows, "objective/rlhf_reward"), linestyle="--", label=f"{label or ''} RM score - KL penalty".strip()
        )
        ax_kl.plot(*series(rows, "objective/kl"), label=label)
    ax_reward.set_ylabel("reward (normalised)")
    ax_reward.legend(fontsize=7)
    ax_kl.set_ylabel("KL(policy || ref), nats/response")
    ax_kl.set_xlabel("PPO update")
    for axis in (ax_reward, ax_kl):
        axis.grid(alpha=0.3)
    fig.suptitle("PPO: reward and KL over updates")
    written.append(save_figure(fig, out_dir / "ppo_reward_kl.png"))

    if any(any("val/explained_variance" in r for r in rows) for rows in runs.values()):
        fig, (ax_ev, ax_vloss) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
        for name, rows in runs.items():
            label = Path(name).name if len(runs) > 1 else None
            ax_ev.plot(*series(rows, "val/explained_variance"), label=label)
            ax_vloss.plot(*series(rows, "loss/value_avg"), label=label)
        ax_ev.axhline(0.0, color="grey", linewidth=0.8)  # below 0: worse than predicting the mean return
        ax_ev.set_ylabel("explained variance")
        ax_vloss.set_ylabel("value loss")
        ax_vloss.set_xlabel("PPO update")
        for axis in (ax_ev, ax_vloss):
            axis.grid(alpha=0.3)
            if len(runs) > 1:
                axis.legend(fontsize=7)
        fig.suptitle("PPO critic: explained variance of the returns, value loss")
        written.append(save_figure(fig, out_dir / "ppo_critic.png"))

    if any(any("eval/gold_score" in r for r in rows) for rows in runs.values()):
        fig, axis = plt.subplots(figsize=(7, 4))
        twin = axis.twinx()
        for _name, rows in runs.items():
            axis.plot(*series(rows, "eval/gold_score"), marker="o", color="tab:green", label="gold score (judge)")
            twin.plot(*series(rows, "eval/rm_score"), marker="s", color="tab:blue", label="RM score")
        axis.set_xlabel("PPO update")
        axis.set_ylabel("gold score", color="tab:green")
        twin.set_ylabel("RM score (normalised)", color="tab:blue")
        axis.grid(alpha=0.3)
        fig.legend(loc="lower right", fontsize=7)
        fig.suptitle(
            "Gold vs reward-model score on held-out prompts\n(a widening gap = over-optimisation)", fontsize=10
        )
        written.append(save_figure(fig, out_dir / "gold_vs_rm.png"))

    if len(runs) > 1:
        fig, axis = plt.subplots(figsize=(6, 4))
        for _name, rows in runs.items():
            kl = [r["objective/kl"] for r in rows if "objective/kl" in r][-5:]
            reward_key = "eval/gold_score" if any("eval/gold_score" in r for r in rows) else "objective/scores"
            reward = [r[reward_key] for r in rows if reward_key in r][-5:]
            if kl and reward:
                axis.scatter(mean(kl), mean(reward))
                axis.annotate(Path(name).parent.name or Path(name).name, (mean(kl), mean(reward)), fontsize=7)
        axis.set_xlabel("KL(policy || ref) at the end of training")
        axis.set_ylabel("reward at the end of training")
        axis.grid(alpha=0.3)
        fig.suptitle("Reward-KL frontier")
        written.append(save_figure(fig, out_dir / "reward_kl_frontier.png"))
    return written


def plot_policy_scores(report: dict, out_dir: Path) -> Path:
    """Histogram of gold (or RM) scores per policy on the held-out prompts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = "gold_score" if report["settings"]["judge"] else "rm_score"
    fig, axis = plt.subplots(figsize=(7, 4))
    for name in report["policies"]:
        values = [
            item["responses"][name][key] for item in report["samples"] if item["responses"][name][key] is not None
        ]
        axis.hist(values, bins=20, alpha=0.5, label=f"{name} (mean {mean(values):.2f})")
    axis.set_xlabel(key.replace("_", " "))
    axis.set_ylabel("responses")
    axis.legend()
    fig.suptitle(f"{key.replace('_', ' ')} per policy on held-out prompts")
    out_dir.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, out_dir / "score_distributions.png")


def write_report(
    report: dict, out_dir: str | Path, ppo_runs: Optional[list[str]] = None, extra_sections: Optional[list[str]] = None
) -> dict[str, Path]:
    from rlhf.files import write_json_atomic, write_text_atomic
    from rlhf.tracking import read_metrics

    out = Path(out_dir)
    plots = [plot_policy_scores(report, out / "plots")] + plot_ppo_runs(ppo_runs or [], out / "plots")
    # Gold against RM over PPO updates, rule by rule: the first PPO run with held-out gold evaluations.
    curves = [
        ppo_rule_curve(read_metrics(Path(d) / "metrics.jsonl"))
        for d in ppo_runs or []
        if (Path(d) / "metrics.jsonl").exists()
    ]
    curve = next((c for c in curves if c), [])
    report["ppo_gold_curve"] = curve
    plots += plot_rules(report.get("gold_rules"), curve, out / "plots")
    report["plots"] = [str(p.relative_to(out)) for p in plots]
    plot_section = "## Plots\n\n" + "\n".join(f"![{p.stem}]({p.relative_to(out)})" for p in plots)
    rules_section = render_rules_markdown(report.get("gold_rules"), curve)
    sections = (extra_sections or []) + ([rules_section] if rules_section else []) + [plot_section]
    write_json_atomic(out / "report.json", report)
    write_text_atomic(out / "report.md", render_markdown(report, sections))
    return {"json": out / "report.json", "md": out / "report.md"}


def summary_metrics(report: dict) -> dict:
    """A flat dict of headline numbers (for summary.json and sweeps)."""
    flat: dict = {}
    for name, metrics in report["policies"].items():
        for key, value in metrics.items():
            if key != "path":
                flat[f"eval/{name}/{key}"] = value
    for entry in report["win_rates"]:
        for judge_name in ("gold", "rm"):
            if judge_name in entry:
                prefix = f"eval/{entry['policy']}_vs_{entry['against']}/{judge_name}_win_rate"
                flat[prefix] = entry[judge_name]["win_rate"]
                flat[prefix + "_ci_low"] = entry[judge_name]["ci95"][0]
                flat[prefix + "_ci_high"] = entry[judge_name]["ci95"][1]
    return flat


def read_prompts(path: str, limit: Optional[int]) -> list[Any]:
    """The prompts (strings or message lists), validated as every stage validates a prompts file."""
    from rlhf.data import load_rows

    rows, _ = load_rows(path, "prompts")
    if not rows:
        raise UserError(f"{path}: no prompts")
    prompts = [row["prompt"] for row in rows]
    return prompts[:limit] if limit else prompts


def main(argv: Optional[list[str]] = None) -> int:
    from rlhf.inference import add_device_arguments

    parser = argparse.ArgumentParser(prog="rlhf eval", description="Compare policies on held-out prompts.")
    parser.add_argument(
        "--policies", nargs="+", required=True, help="NAME=DIR pairs, e.g. sft=runs/x/sft/model ppo=runs/x/ppo/policy"
    )
    parser.add_argument("--prompts", required=True, help="JSONL of {'prompt': ...}")
    parser.add_argument("--num-prompts", type=int, default=None, help="use the first N prompts")
    parser.add_argument("--reward-model", default=None, help="reward model directory (for RM scores)")
    parser.add_argument("--reference", default=None, help="reference policy for the KL (default: the first policy)")
    parser.add_argument(
        "--judge",
        default=None,
        help="gold judge: a built-in task's name (tiny), package.module:function or path/to/file.py:function",
    )
    parser.add_argument("--ppo-runs", nargs="*", default=[], help="PPO run directories whose curves to plot")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    add_device_arguments(parser)
    parser.add_argument("--out", required=True, help="output directory for report.json, report.md and plots/")
    args = parser.parse_args(argv)
    policies = {}
    for item in args.policies:
        if "=" not in item:
            raise UserError(f"--policies entry '{item}' must be NAME=DIR")
        name, path = item.split("=", 1)
        if not Path(path).is_dir():
            raise UserError(f"policy '{name}': no model directory at {path}")
        policies[name] = path
    prompts = read_prompts(args.prompts, args.num_prompts)
    report = evaluate(
        policies,
        prompts,
        args.reward_model,
        args.reference,
        args.judge,
        args.max_new_tokens,
        args.temperature,
        args.top_p,
        args.seed,
        args.batch_size,
        args.precision,
        device=args.device,
        dtype=args.dtype,
    )
    report["settings"]["prompts_file"] = args.prompts
    paths = write_report(report, args.out, args.ppo_runs)
    print(Path(paths["md"]).read_text().split("## Samples")[0])
    return 0
