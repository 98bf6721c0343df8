"""The DeepSpeed config, built by a pure function from the training config."""

from __future__ import annotations

from typing import Any


def build_deepspeed_config(
    *,
    zero_stage: int,
    micro_batch_size: int,
    grad_accum: int,
    world_size: int,
    on_gpu: bool,
    offload_optimizer: bool = False,
    offload_params: bool = False,
    grad_clip: float = 1.0,
) -> dict[str, Any]:
    """ZeRO 2 or 3, optional CPU offload, bf16 on GPU and fp32 on CPU, accumulation, clipping.

    The optimizer and scheduler are passed to ``deepspeed.initialize`` as objects (the sigma
    parameters need their own learning rate and no weight decay), so they are not in here.
    """
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0-3, got {zero_stage}")
    if offload_params and zero_stage != 3:
        raise ValueError("offload_params needs ZeRO stage 3")
    zero: dict[str, Any] = {"stage": zero_stage}
    if zero_stage >= 2:
        zero.update(overlap_comm=on_gpu, contiguous_gradients=True, reduce_scatter=True)
    if zero_stage == 3:
        zero.update(
            stage3_gather_16bit_weights_on_model_save=True,
            stage3_param_persistence_threshold=10_000,
        )
    if offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
    if offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": on_gpu}
    return {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": micro_batch_size * grad_accum * world_size,
        "gradient_clipping": grad_clip,
        "bf16": {"enabled": on_gpu},
        "fp16": {"enabled": False},
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,  # torch AdamW with per-group learning rates
        "wall_clock_breakdown": False,
        "steps_per_print": 10**9,  # we log ourselves
    }
