"""The StepER multi-task loss.

L = sum_j exp(-s_j) * L_j / 2 + s_j / 2 with s_j = log sigma_j^2 learned per task (the stable
form of L_j / (2 sigma_j^2) + log sigma_j, Kendall et al. 2018 as used by StepER: sigma can
never go negative). Modes: ``steper`` (learned s_j), ``uniform`` (fixed weights, L = sum_j w_j
L_j) and ``vanilla_kd`` (agg only).

L_j is task j's mean cross-entropy over its labelled tokens in the whole optimizer step, on
every rank: a step is many micro-batches (gradient accumulation x data-parallel ranks), each
holding one task, so a plain per-micro-batch mean would weight a task by how many micro-batches
it got. Each micro-batch instead contributes its share, sum_j (n_j / N_j) [exp(-s_j) L_j^mb / 2
+ s_j / 2] with n_j its tokens of task j and N_j the step's, and these shares sum to L exactly
(the same fix as transformers' loss normalisation across gradient accumulation, which divides by
the tokens of the whole accumulated batch). Token means, not example means: with cumulative
targets examples differ in length, and every target token then counts the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

TASKS = ("init", "exp", "agg")
IGNORE = -100


def label_target(mode: str, target: str) -> str:
    """Which tokens carry loss: vanilla KD (the paper's baseline) always trains on the whole chain
    R<S and the answer given all passages; the other modes follow ``target``."""
    return "cumulative" if mode == "vanilla_kd" else target


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

    def forward(self, ce_sum: torch.Tensor, ce_cnt: torch.Tensor, step_cnt: torch.Tensor | None = None) -> torch.Tensor:
        """This micro-batch's share of the step loss. ``ce_sum``, ``ce_cnt``: summed CE and token
        counts per task in the micro-batch, shape (tasks,); ``step_cnt``: the tokens per task in
        the whole optimizer step on all ranks (None: the micro-batch is the whole step). Summed
        over the step's micro-batches on every rank this is exactly the closed form above."""
        total = ce_cnt if step_cnt is None else step_cnt.to(ce_cnt.dtype)
        share = torch.where(total > 0, ce_cnt / total.clamp(min=1.0), torch.zeros_like(ce_cnt))  # n_j / N_j
        losses = self.task_losses(ce_sum, ce_cnt)  # L_j^mb; 0 for a task absent here
        if self.mode == "steper":
            s = self.log_vars.to(losses.dtype)
            return (share * (torch.exp(-s) * losses / 2 + s / 2)).sum()
        return (share * self.fixed_weights.to(losses.dtype) * losses).sum()

    def effective_weights(self) -> torch.Tensor:
        """The multiplier on each L_j: exp(-s_j)/2 (steper) or the fixed weight."""
        if self.mode == "steper":
            return torch.exp(-self.log_vars.detach().float()) / 2
        return self.fixed_weights.clone()

    def sigmas(self) -> torch.Tensor:
        """sigma_j = exp(s_j / 2)."""
        return torch.exp(self.log_vars.detach().float() / 2)
