"""Shared fixtures: a tiny model built once per session (no network), quiet libraries."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

TINY_TEXTS = [
    "User: Tell me about cats.\nAssistant: Hi! Cats purr. Cats nap a lot. Hope this helps.",
    "User: What do you know about the sea?\nAssistant: Hello! The sea is salty. Waves move sand. Bye!",
    "User: Describe volcanoes.\nAssistant: Hi! Lava is hot. Ash can fly far. Have a nice day.",
] * 4


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A ~60k-parameter Llama and its locally trained BPE tokenizer, saved as an HF directory."""
    from rlhf.modeling import init_tiny

    out = tmp_path_factory.mktemp("tiny") / "model"
    return init_tiny(
        out,
        TINY_TEXTS,
        vocab_size=300,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
    )


@pytest.fixture(scope="session")
def tiny_reward_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny Llama with a fresh scalar head (seed 1), saved as an HF directory: the reward model (and
    the value model's start) of the PPO tests. Read-only; the global RNG is left as it was."""
    import torch

    from rlhf.modeling import load_scalar_model, load_tokenizer, save_model

    out = tmp_path_factory.mktemp("tiny_rm") / "rm"
    tokenizer = load_tokenizer(str(tiny_model_dir))
    with torch.random.fork_rng():
        torch.manual_seed(1)
        save_model(load_scalar_model(str(tiny_model_dir), tokenizer), tokenizer, out, merge=False)
    return out


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread; on a busy 2-core machine more threads spin (10-20x slower).

    Modules that train tiny models in-process use it (`pytestmark = pytest.mark.usefixtures(...)`); the
    distributed tests also need it so the in-process reference runs like each launched 1-thread process.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory):
    """Tiny causal LMs with the tokenizer conventions of Llama 3, Qwen 2.5, GPT-2 and Llama 2 (tests/families.py),
    each an HF directory with its generation config: {family: path}."""
    from families import FAMILIES, build_family

    root = tmp_path_factory.mktemp("families")
    return {family: build_family(family, root / family) for family in FAMILIES}
