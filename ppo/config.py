"""The PPO stage's config section.

    rlhf ppo --config configs/tiny/ppo.yaml ppo.kl_coef=0.1

The section's keys sit under `ppo:` in a config file; `PPOStageConfig` is the typed object the stage's
`train(cfg)` receives (the shared sections from rlhf.config plus this one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

from rlhf.config import CommonConfig


@dataclass
class RewardFunctionConfig:
    spec: str = ""  # package.module:function or path/to/file.py:function: fn(prompt, response) -> float
    weight: float = 1.0  # the term added to the score is weight * fn(prompt, response)
    name: Optional[str] = None  # metric name reward_fn/<name> (default: the function's name)


@dataclass
class PPOSection:
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "kl_estimator": ("k1", "k2", "k3"),
        "kl_loss_estimator": ("k1", "k2", "k3"),
        "value_init": ("reward_model", "policy"),
        "rollout_logprobs": ("auto", "generation", "forward"),
        "advantage_estimator": ("gae", "rloo", "grpo"),
    }
    # models
    reward_model_path: Optional[str] = None  # trained reward model directory (required)
    ref_model_path: Optional[str] = None  # reference policy (default: model.name_or_path)
    value_model_path: Optional[str] = None  # value model init (default: reward_model_path)
    value_init: str = "reward_model"  # reward_model (its output normalised like the score) | policy (fresh head)
    value_lora: Optional[bool] = None  # LoRA (model.lora's settings) on the value model's backbone, head trained
    # in full (None: follow model.lora.enabled, so a LoRA run has no full-size critic and its AdamW states)
    # rollout
    num_updates: int = 100  # PPO updates (one rollout + optimisation each): the most the run does
    stop_at_kl: Optional[float] = None  # end the run after the first update whose rollout KL (nats) exceeds this
    max_minutes: Optional[float] = None  # end the run once its updates have taken this long (summed over resumed jobs)
    rollout_batch_size: int = 16  # prompts per rollout per process
    samples_per_prompt: int = 1  # responses sampled per prompt (a rollout holds rollout_batch_size x this many)
    rollout_forward_batch_size: int = 16  # chunk size of the no-grad forward passes in a rollout
    generation_batch_size: Optional[int] = None  # rows generated at once (bounds the KV cache; None: the whole rollout)
    rollout_logprobs: str = "auto"  # auto: from generation in fp32, else a scoring forward | generation | forward
    max_new_tokens: int = 24  # response length budget
    temperature: float = 0.7  # sampling temperature (also divides logits for policy and reference logprobs)
    top_k: int = 0  # top-k sampling (0: off; > 0 samples from a truncated softmax: rollouts are then off-policy)
    top_p: float = 1.0  # nucleus sampling (1.0: off; < 1 samples from a truncated softmax: rollouts are off-policy)
    do_sample: bool = True  # sample responses (False: greedy decoding, for debugging and exactness tests)
    # reward shaping
    kl_coef: float = 0.05  # initial coefficient of the per-token KL penalty
    kl_estimator: str = "k1"  # k1 | k2 | k3 folded into the reward; only k1 gives the KL's gradient (k2/k3: biased)
    kl_loss_coef: float = 0.0  # weight of a KL loss term on the policy (verl's use_kl_loss; 0: off)
    kl_loss_estimator: str = "k3"  # k1 | k2 | k3 in the loss term: k2's gradient is KL(pi||ref)'s, k3's KL(ref||pi)'s
    adaptive_kl: bool = False  # Ziegler et al. adaptive KL controller
    kl_target: float = 6.0  # adaptive controller's target KL (nats per response)
    kl_horizon: int = 10000  # adaptive controller's horizon (episodes)
    missing_eos_penalty: Optional[float] = 1.0  # subtracted from the score of responses without EOS
    normalize_reward: bool = True  # shift RM scores by the mean stored with the reward model
    normalize_reward_std: bool = False  # also divide by the stored std
    reward_clip: Optional[float] = None  # clip normalised scores to [-c, c]
    reward_functions: list[RewardFunctionConfig] = field(
        default_factory=list
    )  # rule-based terms added to the normalised RM score: [{spec, weight, name}], each logged as reward_fn/<name>
    repeated_clause_penalty: float = 0.0  # subtracted from the reward of every token of a clause that repeats an
    # earlier clause of its response (rlhf.rewards.repeated_clause_tokens): the credit lands on the repeat (0: off)
    repeat_unlikelihood_coef: float = 0.0  # weight of an unlikelihood loss, -log(1 - p), on the policy's own
    # repeated-clause tokens (Welleck et al. 2019's sequence-level unlikelihood, beside PPO's loss; 0: off)
    whiten_rewards: bool = False  # whiten the shaped per-token rewards
    # advantages and losses
    advantage_estimator: str = "gae"  # gae (critic) | rloo | grpo: per-prompt baselines, no value model
    # (both need samples_per_prompt >= 2; the KL penalty is then summed into each response's reward)
    gamma: float = 1.0  # discount
    lam: float = 0.95  # GAE lambda
    whiten_advantages: bool = True  # whiten advantages over each rollout
    cliprange: float = 0.2  # policy ratio clip
    cliprange_value: float = 0.2  # value clip around the rollout values
    vf_coef: float = 0.1  # value loss coefficient
    entropy_coef: float = 0.0  # entropy bonus coefficient
    ratio_threshold: Optional[float] = None  # skip a mini-batch whose mean ratio exceeds this
    # optimisation
    ppo_epochs: int = 1  # passes over each rollout
    num_mini_batches: int = 2  # mini-batches per epoch (gradient accumulation splits them further)
    value_learning_rate: Optional[float] = None  # value model LR (default: train.learning_rate)
    critic_warmup_updates: int = 0  # the first N of num_updates train only the value model (policy unchanged)
    ptx_coef: float = 0.0  # PPO-ptx: weight of the LM loss on SFT data (0: off)
    ptx_file: Optional[str] = None  # SFT data for PPO-ptx
    # bookkeeping
    save_every: int = 0  # checkpoint every N updates (0: at the end only)
    eval_every: int = 0  # evaluate on data.eval_file every N updates (0: never)
    eval_num_prompts: int = 64  # held-out prompts per evaluation
    sample_every: int = 10  # log a table of sample completions every N updates
    resume: str = "auto"  # auto/true: continue from this run's newest checkpoint when there is one; false: start over
    updates_per_job: Optional[int] = (
        None  # checkpoint and stop after this many updates (time-limited jobs; rerun the same command)
    )
    gold_judge: Optional[str] = (
        None  # judge whose score evaluations log: a task name, module:function or file.py:function
    )
    zero3_gather_for_generation: bool = True  # under ZeRO-3, gather weights once per rollout for generation


@dataclass
class PPOStageConfig(CommonConfig):
    ppo: PPOSection = field(default_factory=PPOSection)
