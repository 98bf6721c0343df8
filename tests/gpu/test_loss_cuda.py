"""GPU-only: the StepER loss on bf16 CUDA logits gives the loss and sigma gradients of the same
computation on CPU. Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch

from steper_ray.train.loss import IGNORE, StepERLoss, per_task_token_ce

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_loss_and_sigma_grads_on_cuda_bf16_match_cpu() -> None:
    torch.manual_seed(0)
    batch, seq, vocab = 6, 96, 32000
    logits = torch.randn(batch, seq, vocab).to(torch.bfloat16)
    labels = torch.randint(0, vocab, (batch, seq))
    labels[:, : seq // 2] = IGNORE  # prompt positions carry no loss, as in step examples
    labels[5, :] = IGNORE  # a row with no target tokens at all
    tasks = torch.tensor([0, 1, 2, 0, 1, 2])

    def run(device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loss_mod = StepERLoss("steper", init_log_var=0.3).to(device)
        x = logits.to(device).requires_grad_(True)
        ce_sum, ce_cnt = per_task_token_ce(x, labels.to(device), tasks.to(device))
        loss = loss_mod(ce_sum, ce_cnt)
        loss.backward()
        return loss.detach().cpu(), loss_mod.log_vars.grad.cpu(), ce_cnt.cpu()

    cpu_loss, cpu_grad, cpu_cnt = run("cpu")
    gpu_loss, gpu_grad, gpu_cnt = run("cuda")
    assert torch.equal(gpu_cnt, cpu_cnt) and cpu_cnt.tolist() == [96.0, 96.0, 48.0]
    assert torch.allclose(gpu_loss, cpu_loss, rtol=1e-4, atol=1e-5)
    assert torch.allclose(gpu_grad, cpu_grad, rtol=1e-4, atol=1e-5)
    assert torch.isfinite(gpu_loss) and gpu_loss > 0
