"""The PPO update at four model sizes, fp32 and bf16: seconds, phases, tokens/s, FLOP/s, utilisation, RSS.

    python benchmarks/ppo_scaling.py                                  # all four sizes, fp32 and bf16 (~5 min alone)
    python benchmarks/ppo_scaling.py --exclude 135M:bf16              # a CPU without AMX (~3.5 min alone)
    python benchmarks/ppo_scaling.py --sizes 0.2M 4.5M --precisions fp32 --updates 5
    python benchmarks/ppo_scaling.py --sizes 26M --precisions fp32 bf16 --threads 2
    python benchmarks/ppo_scaling.py --sizes 350M --updates 2         # larger on request (h1536 L12)
    python benchmarks/ppo_scaling.py --sizes 0.2M 1.2M 2.5M 4.5M      # where bf16 starts to pay on a CPU
    python benchmarks/ppo_scaling.py --sizes 26M --precisions fp32 --rollout-logprobs forward  # the policy pass back

The work is `benchmarks/ppo_update.py`'s (TRL 1.12's PPOTrainer measured on the same): 16 prompts x 24
new tokens, 1 PPO epoch, 2 mini-batches, random-init Llama policy, value and reward models of one shape,
through `ppo.trainer.train` as `rlhf ppo` runs it. Each (size, precision) runs in a fresh process (so peak
RSS is its own); the first `--warmup` updates are dropped and medians of the rest reported.

FLOPs per update are counted from the model config (PaLM's convention: 2 FLOPs per parameter per token
forward, 4 x layers x hidden x context for attention, backward = 2 x forward): generation (prompt then
each new token against the KV cache), scoring (policy, reference and the LM head on the response only,
value and reward backbones; no policy pass when its log-probs come from generation, `ppo.rollout_logprobs`:
by default in fp32), training (policy + value forward and backward per epoch; no value model under rloo
and grpo). Utilisation is the achieved FLOP/s over this machine's matmul peak for that dtype, measured
here by timing a large matmul (on a GPU the same ratio is MFU). Prints one JSON table; writes it and a
plot to `--out-dir`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

# name -> (hidden, layers, heads, ffn); vocabulary ~500 (the tiny tokenizer)
SIZES = {
    "0.2M": (64, 2, 4, 256),
    "1.2M": (128, 4, 4, 512),  # 1.2M and 2.5M: where bf16 overtakes fp32 on a CPU (rlhf.precision)
    "2.5M": (192, 4, 4, 768),
    "3.4M": (224, 4, 4, 896),  # between 2.5M and 4.5M: where bf16 overtakes fp32 on an AMX CPU
    "4.5M": (256, 4, 4, 1024),
    "26M": (512, 6, 8, 2048),
    "135M": (1024, 8, 16, 4096),
    "350M": (1536, 12, 16, 6144),
}
DEFAULT_SIZES = ("0.2M", "4.5M", "26M", "135M")
# TRL 1.12 PPOTrainer on the same work, compute only (its two gc.collect() per update removed), 2-core CPU
TRL_SECONDS = {"fp32": {"0.2M": 0.077, "4.5M": 0.358, "26M": 1.682, "135M": 7.32}}
TRL_SECONDS["bf16"] = {"0.2M": 0.073, "4.5M": 0.347, "26M": 1.529, "135M": 7.61}
PROMPTS, NEW_TOKENS, EPOCHS, MINI_BATCHES = 16, 24, 1, 2


def forward_flops_per_token(hidden: int, layers: int, ffn: int, context: float) -> float:
    """Matmul FLOPs of one token through the decoder layers (no LM head): 2 x weights + attention."""
    weights = layers * (4 * hidden * hidden + 3 * hidden * ffn)  # q, k, v, o (no GQA) + gate, up, down
    return 2 * weights + 4 * layers * hidden * context


def update_flops(
    hidden: int,
    layers: int,
    ffn: int,
    vocab: int,
    prompt_len: float,
    response_len: float,
    policy_scoring_pass: bool = True,
    critic: bool = True,
    sequences: int = PROMPTS,
) -> dict:
    """FLOPs of one PPO update by phase (see the module docstring for the convention); `critic` False for
    rloo / grpo, which run no value model; `sequences`: prompts x ppo.samples_per_prompt."""
    total = prompt_len + response_len
    head = 2 * hidden * vocab  # LM head per token it is computed on
    body = forward_flops_per_token(hidden, layers, ffn, total)
    # generation: the prompt in one forward, then each new token against the cache (mean context)
    prompt_pass = prompt_len * forward_flops_per_token(hidden, layers, ffn, prompt_len) + head
    decode = response_len * (forward_flops_per_token(hidden, layers, ffn, prompt_len + response_len / 2) + head)
    generation = sequences * (prompt_pass + decode)
    # scoring: policy (unless from generation) and reference (LM head on the response only), value and reward
    lm_passes = 2 if policy_scoring_pass else 1
    value_passes = 1 if critic else 0
    scoring = sequences * ((1 + value_passes + lm_passes) * total * body + lm_passes * (response_len + 1) * head)
    # training: policy (+ value), forward and backward (3 x forward), per epoch
    training = EPOCHS * 3 * sequences * ((1 + value_passes) * total * body + (response_len + 1) * head)
    return {"generation": generation, "scoring": scoring, "training": training}


def matmul_peak_flops(dtype_name: str, device: str = "cpu", size: int | None = None, seconds: float = 1.5) -> float:
    """Best FLOP/s of an n x n matmul in this dtype on this device (a CPU: this process's threads): the
    machine's matmul peak. fp32 on CUDA runs as torch is set (TF32 off by default), as the PPO run does."""
    import torch

    size = size or (8192 if device == "cuda" else 2048)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = (torch.randn(size, size, dtype=dtype, device=device) for _ in range(2))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    torch.mm(a, b)  # warm-up
    sync()
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        torch.mm(a, b)
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def device_name() -> str:
    """What the update runs on: the GPU's name (the trainer takes CUDA when there is one), else the CPU's."""
    import platform

    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "cpu"


def run_one(
    size: str, precision: str, updates: int, warmup: int, rollout_logprobs: str = "auto", extra: tuple = ()
) -> dict:
    """One (size, precision) in this process: the update's figures as a dict."""
    import torch

    os.environ.setdefault("WANDB_MODE", "disabled")
    from ppo_update import _prompts, _texts

    from ppo.models import uses_critic
    from ppo.rollout import generation_logprobs
    from ppo.trainer import train
    from rlhf.app.schema import load_config
    from rlhf.modeling import init_tiny, load_scalar_model, load_tokenizer, save_model

    hidden, layers, heads, ffn = SIZES[size]
    device = "cuda" if torch.cuda.is_available() else "cpu"  # where ppo.trainer.train runs it (accelerate)
    peak = matmul_peak_flops(precision, device)
    with tempfile.TemporaryDirectory(prefix="ppo-scaling-") as tmp:
        root = Path(tmp)
        with contextlib.redirect_stdout(sys.stderr):
            torch.manual_seed(0)
            policy_dir = init_tiny(
                root / "policy",
                _texts(),
                vocab_size=500,
                hidden_size=hidden,
                num_layers=layers,
                num_heads=heads,
                intermediate_size=ffn,
            )
            tokenizer = load_tokenizer(str(policy_dir))
            save_model(load_scalar_model(str(policy_dir), tokenizer), tokenizer, root / "rm", merge=False)
        _prompts(root / "prompts.jsonl")
        cfg = load_config(
            None,
            [
                f"model.name_or_path={policy_dir}",
                f"ppo.reward_model_path={root / 'rm'}",
                f"data.train_file={root / 'prompts.jsonl'}",
                f"run.output_dir={root / 'run'}",
                f"ppo.num_updates={warmup + updates}",
                f"ppo.rollout_batch_size={PROMPTS}",
                f"ppo.rollout_forward_batch_size={PROMPTS}",
                f"ppo.max_new_tokens={NEW_TOKENS}",
                "ppo.temperature=0.7",
                f"ppo.ppo_epochs={EPOCHS}",
                f"ppo.num_mini_batches={MINI_BATCHES}",
                "train.gradient_accumulation_steps=1",
                f"train.precision={precision}",
                f"ppo.rollout_logprobs={rollout_logprobs}",
                "ppo.sample_every=0",
                "ppo.save_every=0",
                "tracking.report_to=[jsonl]",
                "tracking.plots=false",
                "train.logging_steps=1000000",
                *extra,
            ],
        )
        with contextlib.redirect_stdout(sys.stderr):
            history = train(cfg)["history"][warmup:]
        params = sum(p.numel() for p in load_scalar_model(str(root / "rm"), tokenizer).parameters())

    def median(key: str) -> float:
        return statistics.median(row[key] for row in history)

    seconds = median("time/update")
    response_len = median("val/response_length")
    sequences = PROMPTS * cfg.ppo.samples_per_prompt
    prompt_len = median("perf/tokens_per_second") * seconds / sequences - response_len
    from_generation = generation_logprobs(rollout_logprobs, precision, torch.float32)  # the weights: fp32
    flops = update_flops(
        hidden, layers, ffn, len(tokenizer), prompt_len, response_len, not from_generation, uses_critic(cfg), sequences
    )
    total_flops = sum(flops.values())
    phases = {"generation": median("time/generation"), "scoring": median("time/scoring")}
    phases["training"] = median("time/training")
    trl = TRL_SECONDS.get(precision, {}).get(size) if device == "cpu" else None  # that table is the 2-core CPU's
    return {
        "size": size,
        "precision": precision,
        "rollout_logprobs": f"{rollout_logprobs}: {'generation' if from_generation else 'forward'}",
        "overrides": list(extra),
        "device": device_name(),
        "hidden": hidden,
        "layers": layers,
        "params_per_model": params,
        "seconds_per_update": round(seconds, 4),
        "seconds_by_phase": {k: round(v, 4) for k, v in phases.items()},
        "tokens_per_second": round(median("perf/tokens_per_second"), 1),
        "gflop_per_update": round(total_flops / 1e9, 2),
        "gflop_by_phase": {k: round(v / 1e9, 2) for k, v in flops.items()},
        "achieved_gflops": round(total_flops / seconds / 1e9, 1),
        "achieved_gflops_by_phase": {k: round(flops[k] / phases[k] / 1e9, 1) for k in phases if phases[k] > 0},
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "utilisation": round(total_flops / seconds / peak, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_gpu_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device == "cuda" else None,
        "trl_compute_seconds": trl,
        "ratio_to_trl": round(seconds / trl, 3) if trl else None,
        "measured_updates": len(history),
        "torch_threads": torch.get_num_threads(),
    }


def run_child(
    size: str,
    precision: str,
    updates: int,
    warmup: int = 1,
    rollout_logprobs: str = "auto",
    overrides: list[str] | tuple = (),
    threads: int | None = None,
) -> tuple[dict | None, int]:
    """`run_one` in a fresh process (its peak RSS its own): (its row, 0), or (None, exit code) after its stderr."""
    command = [sys.executable, __file__, "--one", size, precision, "--updates", str(updates), "--warmup", str(warmup)]
    command += ["--rollout-logprobs", rollout_logprobs]
    command += ["--set", *overrides] if overrides else []
    command += ["--threads", str(threads)] if threads else []
    child = subprocess.run(command, capture_output=True, text=True)
    if child.returncode:
        sys.stderr.write(child.stderr[-3000:])
        return None, child.returncode
    return json.loads(child.stdout.strip().splitlines()[-1]), 0


def markdown_table(rows: list[dict]) -> str:
    """The table of docs/performance.md."""
    lines = [
        "| size | precision | s/update | generation / scoring / training s | tokens/s | GFLOP/update | GFLOP/s "
        "| matmul peak GFLOP/s | utilisation | peak RSS MB (/ GPU MB) | TRL s | ours/TRL |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        phases = " / ".join(f"{r['seconds_by_phase'][k]:.3f}" for k in ("generation", "scoring", "training"))
        ratio = f"{r['ratio_to_trl']:.2f}x" if r["ratio_to_trl"] else "-"
        gpu = r.get("peak_gpu_memory_mb")
        memory = f"{r['peak_rss_mb']:.0f}" + (f" / {gpu:.0f}" if gpu is not None else "")
        lines.append(
            f"| {r['size']} | {r['precision']} | {r['seconds_per_update']:.3f} | {phases} "
            f"| {r['tokens_per_second']:.0f} "
            f"| {r['gflop_per_update']:.1f} | {r['achieved_gflops']:.1f} | {r['matmul_peak_gflops']:.0f} "
            f"| {100 * r['utilisation']:.1f}% | {memory} | {r['trl_compute_seconds'] or '-'} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for precision, marker in (("fp32", "o"), ("bf16", "s")):
        mine = [r for r in rows if r["precision"] == precision]
        if not mine:
            continue
        params = [r["params_per_model"] / 1e6 for r in mine]
        left.plot(params, [r["seconds_per_update"] for r in mine], marker=marker, label=f"ours {precision}")
        trl = [(p, r["trl_compute_seconds"]) for p, r in zip(params, mine) if r["trl_compute_seconds"]]
        if trl:
            left.plot(*zip(*trl), marker=marker, linestyle="--", alpha=0.6, label=f"TRL 1.12 {precision}")
        right.plot(params, [100 * r["utilisation"] for r in mine], marker=marker, label=precision)
    left.set(xscale="log", yscale="log", xlabel="parameters per model (M)", ylabel="seconds per PPO update")
    right.set(xscale="log", xlabel="parameters per model (M)", ylabel="% of this machine's matmul peak")
    left.legend()
    right.legend()
    left.grid(alpha=0.3)
    right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), choices=list(SIZES))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument(
        "--exclude",
        nargs="*",
        default=[],
        metavar="SIZE:PRECISION",
        help="pairs to skip, e.g. 135M:bf16 on a CPU without AMX (bf16 is emulated there: ~4x slower)",
    )
    parser.add_argument("--updates", type=int, default=3, help="measured updates per run (after warm-up)")
    parser.add_argument("--warmup", type=int, default=1, help="updates run first and not measured")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in each run")
    parser.add_argument("--out-dir", default=str(REPO / "benchmarks" / "results"), help="where the JSON and plot go")
    parser.add_argument(
        "--rollout-logprobs",
        default="auto",
        choices=["auto", "generation", "forward"],
        help="ppo.rollout_logprobs: the policy's old log-probs from generation or a scoring forward (auto: "
        "generation in fp32)",
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="more PPO config overrides for every run, e.g. train.max_grad_norm=0 (TRL's PPOTrainer does not clip)",
    )
    parser.add_argument("--one", nargs=2, metavar=("SIZE", "PRECISION"), help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    if args.one:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        print(json.dumps(run_one(*args.one, args.updates, args.warmup, args.rollout_logprobs, tuple(args.set))))
        return
    rows, failed = [], []
    load_before = os.getloadavg()[0]
    for size in args.sizes:
        for precision in args.precisions:
            if f"{size}:{precision}" in args.exclude:
                continue
            row, exit_code = run_child(
                size, precision, args.updates, args.warmup, args.rollout_logprobs, args.set, args.threads
            )
            if row is None:  # say so and go on: one size out of memory must not lose the others
                failed.append(f"{size}:{precision} (exit {exit_code})")
                print(f"[ppo_scaling] {size} {precision} failed (exit {exit_code})", file=sys.stderr)
                continue
            rows.append(row)
            print(f"[ppo_scaling] {size} {precision}: {rows[-1]['seconds_per_update']} s/update", file=sys.stderr)
    report = {
        "work": {"prompts": PROMPTS, "new_tokens": NEW_TOKENS, "ppo_epochs": EPOCHS, "mini_batches": MINI_BATCHES},
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "rows": rows,
        "failed": failed,
    }
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ppo_scaling.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "ppo_scaling.md").write_text(markdown_table(rows))
    plot(rows, out / "ppo_scaling.png")
    print(json.dumps(report, indent=2))
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
