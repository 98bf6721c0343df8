"""The StepER multi-task loss.

L = sum_j exp(-s_j) * L_j / 2 + s_j / 2 with s_j = log sigma_j^2 learned per task (the stable
form of L_j / (2 sigma_j^2) + log sigma_j: sigma can never go negative). L_j is the token-mean
cross-entropy over the completion tokens of task j. Modes: ``steper`` (learned s_j),
``uniform`` (fixed weights, L = sum_j w_j L_j) and ``vanilla_kd`` (agg only).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

TASKS = ("init", "exp", "agg")
IGNORE = -100


def per_task_token_ce(
    logits: torch.Tensor, labels: torch.Tensor, task_ids: torch.Tensor, num_tasks: int = len(TASKS)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token CE and token counts per task, each of shape (num_tasks,).

    ``labels`` are the input ids with ignored positions set to -100 (prompt, padding); logits
    at position t are scored against labels at t + 1. ``task_ids`` gives each row's task."""
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    ce = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
        ignore_index=IGNORE, reduction="none",
    ).view_as(shift_labels)
    mask = (shift_labels != IGNORE).float()
    per_seq_sum = (ce * mask).sum(dim=1)
    per_seq_cnt = mask.sum(dim=1)
    onehot = F.one_hot(task_ids, num_tasks).to(per_seq_sum.dtype)  # (B, T)
    return onehot.T @ per_seq_sum, onehot.T @ per_seq_cnt


class StepERLoss(nn.Module):
    def __init__(self, mode: str = "steper", tasks: Sequence[str] = TASKS,
                 weights: Sequence[float] | None = None, init_log_var: float = 0.0):
        super().__init__()
        if mode not in ("steper", "uniform", "vanilla_kd"):
            raise ValueError(f"unknown loss mode {mode!r}: use steper, uniform or vanilla_kd")
        self.mode = mode
        self.tasks = tuple(tasks)
        w = list(weights) if weights is not None else [1.0] * len(self.tasks)
        if len(w) != len(self.tasks):
            raise ValueError(f"{len(w)} weights for {len(self.tasks)} tasks")
        if mode == "vanilla_kd":
            w = [1.0 if t == "agg" else 0.0 for t in self.tasks]
        self.register_buffer("fixed_weights", torch.tensor(w, dtype=torch.float32))
        # s_j = log sigma_j^2; a parameter only in steper mode
        self.log_vars = nn.Parameter(torch.full((len(self.tasks),), float(init_log_var)),
                                     requires_grad=mode == "steper")

    def task_losses(self, ce_sum: torch.Tensor, ce_cnt: torch.Tensor) -> torch.Tensor:
        """Token-mean CE per task; a task with no tokens gives 0 (and is masked out below)."""
        return ce_sum / ce_cnt.clamp(min=1.0)

    def forward(self, ce_sum: torch.Tensor, ce_cnt: torch.Tensor) -> torch.Tensor:
        present = (ce_cnt > 0).to(ce_sum.dtype)  # a missing task contributes nothing
        losses = self.task_losses(ce_sum, ce_cnt)
        if self.mode == "steper":
            s = self.log_vars.to(losses.dtype)
            return (present * (torch.exp(-s) * losses / 2 + s / 2)).sum()
        return (present * self.fixed_weights.to(losses.dtype) * losses).sum()

    def effective_weights(self) -> torch.Tensor:
        """The multiplier on each L_j: exp(-s_j)/2 (steper) or the fixed weight."""
        if self.mode == "steper":
            return torch.exp(-self.log_vars.detach().float()) / 2
        return self.fixed_weights.clone()

    def sigmas(self) -> torch.Tensor:
        """sigma_j = exp(s_j / 2)."""
        return torch.exp(self.log_vars.detach().float() / 2)
