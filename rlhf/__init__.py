"""rlhf: InstructGPT-style RLHF end to end (SFT -> reward model -> PPO), with the reviewers' tool."""

__version__ = "0.1.0"
