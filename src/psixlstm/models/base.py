"""The interface every sequence model shares (teacher, baselines, students): normalised voltages and per-step dt in,
normalised currents out, with a state that carries across chunks (truncated BPTT) and streaming calls."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn


@dataclass
class ModelOutput:
    y: Tensor  # (B, T, n_out) currents / output_scale_a
    state: Any  # carried to the next chunk (detach before reuse)
    hidden: Tensor | None = None  # (B, T, d) hidden trajectory, for distillation and discovery
    extras: dict[str, Tensor] = field(default_factory=dict)


class SequenceModel(nn.Module):
    """u (B, T, n_in) = V / input_scale_v, dt (B, T) in seconds, state -> ModelOutput."""

    def forward(self, u: Tensor, dt: Tensor, state: Any = None) -> ModelOutput:  # pragma: no cover - interface
        raise NotImplementedError

    def physics_residuals(self, out: ModelOutput, u: Tensor, dt: Tensor) -> dict[str, Tensor]:
        """Device-specific residual terms for this batch (empty where nothing applies)."""
        return {}

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def detach_state(state: Any) -> Any:
    """Detach every tensor of a (nested tuple/dict) state, for truncated BPTT."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.detach()
    if isinstance(state, tuple | list):
        return type(state)(detach_state(s) for s in state)
    if isinstance(state, dict):
        return {k: detach_state(v) for k, v in state.items()}
    raise TypeError(f"cannot detach state of type {type(state).__name__}")


def select_state(state: Any, index: Tensor) -> Any:
    """The state of a subset of the batch (index over dim 0)."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state[index]
    if isinstance(state, tuple | list):
        return type(state)(select_state(s, index) for s in state)
    if isinstance(state, dict):
        return {k: select_state(v, index) for k, v in state.items()}
    raise TypeError(f"cannot index state of type {type(state).__name__}")
