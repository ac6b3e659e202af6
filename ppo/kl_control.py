"""KL coefficient controllers: fixed, or adaptive toward a target KL (Ziegler et al. 2019, §2.2).

The adaptive rule multiplies the coefficient by 1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon after
each rollout of n episodes, so a policy that drifts past the target gets pulled back harder and one that
stays close is allowed to move. Both controllers carry `state_dict()` / `load_state_dict()` so a resumed
run continues with the coefficient it had, and the trainer checkpoints them with the models.
"""

from __future__ import annotations

from typing import Any


class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Ziegler et al.'s proportional controller: KL above `target` raises the coefficient, below lowers it."""

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        if target <= 0:
            raise ValueError(f"adaptive KL target must be positive, got {target}")
        if horizon <= 0:
            raise ValueError(f"adaptive KL horizon must be positive, got {horizon}")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        """`current_kl`: mean KL per episode of the last rollout; `n_steps`: episodes in it."""
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])
        self.target = float(state.get("target", self.target))
        self.horizon = int(state.get("horizon", self.horizon))


def build_kl_controller(
    kl_coef: float, adaptive: bool, target: float, horizon: int
) -> FixedKLController | AdaptiveKLController:
    return AdaptiveKLController(kl_coef, target, horizon) if adaptive else FixedKLController(kl_coef)
