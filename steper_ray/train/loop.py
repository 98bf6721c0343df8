"""train_loop_per_worker: DeepSpeed ZeRO fine-tuning of the student with the StepER loss.

Runs under Ray Train (``TorchTrainer``) and also as a plain single-process function (GPU checks
without Ray): ``train_loop_per_worker(config)`` with ``config = make_loop_config(...)``.
Reads top to bottom: set up, load data, build model and engine, resume, train, export.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from steper_ray.config import TrainConfig
from steper_ray.train.checkpoints import resume_dir
from steper_ray.train.data import collate, encode_for_loss, plan_steps, shard_rows
from steper_ray.train.deepspeed_config import build_deepspeed_config
from steper_ray.models.prompt_format import record_prompt_format, resolve_prompt_format
from steper_ray.reasoning.prompts import PromptBuilder
from steper_ray.train.loss import TASKS, StepERLoss, per_task_token_ce
from steper_ray.train.tracking import MetricSinks

log = logging.getLogger(__name__)

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12}


class StudentWithLoss(nn.Module):
    """Model and loss in one module, so DeepSpeed owns (and ZeRO partitions) both."""

    def __init__(self, model: nn.Module, loss: StepERLoss):
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                task_ids: torch.Tensor, step_cnt: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        ce_sum, ce_cnt = per_task_token_ce(logits, labels, task_ids, len(TASKS))
        return self.loss(ce_sum, ce_cnt, step_cnt), ce_sum.detach(), ce_cnt.detach()


def make_loop_config(train: TrainConfig, student: str, examples: str, out: str) -> dict[str, Any]:
    return {"train": train.model_dump(), "student": student, "examples": examples, "out": out}


def _in_ray() -> bool:
    try:
        import ray.train

        ray.train.get_context().get_world_size()
        return True
    except Exception:  # noqa: BLE001 - not inside a Ray Train worker
        return False


def _init_single_process() -> None:
    """Plain mode: a one-process group so DeepSpeed runs without a launcher."""
    if dist.is_initialized():
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
        os.environ.setdefault(key, value)


def _read_examples(path: str, rank: int, world: int, in_ray: bool) -> list[dict[str, Any]]:
    """This worker's examples (every worker reads all rows and keeps a deterministic share)."""
    if in_ray:
        import ray.train

        rows = list(ray.train.get_dataset_shard("train").iter_rows())
    else:
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    return shard_rows(rows, rank, world)


def _lr_lambda(total: int, warmup: int):  # type: ignore[no-untyped-def]
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def _param_groups(module: StudentWithLoss, cfg: TrainConfig) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in module.model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name or name.endswith("bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay, "lr": cfg.lr},
              {"params": no_decay, "weight_decay": 0.0, "lr": cfg.lr}]
    if module.loss.log_vars.requires_grad:
        # At lr 5e-6 the sigmas would not move: they get their own rate and no decay.
        groups.append({"params": [module.loss.log_vars], "weight_decay": 0.0, "lr": cfg.loss.sigma_lr})
    return [g for g in groups if g["params"]]


def _gathered(params: list[torch.nn.Parameter], zero3: bool):  # type: ignore[no-untyped-def]
    import contextlib

    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None) if zero3 else contextlib.nullcontext()


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import deepspeed
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = TrainConfig(**config["train"])
    out = Path(config["out"])
    in_ray = _in_ray()
    if not in_ray:
        _init_single_process()
    on_gpu = cfg.use_gpu and torch.cuda.is_available()
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo", verbose=False)
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}" if on_gpu else "cpu")
    if on_gpu:
        torch.cuda.set_device(device)
    torch.manual_seed(cfg.seed)
    is_main = rank == 0

    # --- data -------------------------------------------------------------------------------
    tokenizer = AutoTokenizer.from_pretrained(config["student"])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # The student's prompt format; evaluation and serving read it back from the export.
    fmt, template = resolve_prompt_format(cfg.prompt_format, config["student"], tokenizer)
    builder = PromptBuilder.student(fmt, template)
    rows = _read_examples(config["examples"], rank, world, in_ray)
    items, dropped = encode_for_loss(tokenizer, rows, cfg.loss.mode, cfg.loss.target, cfg.max_len, cfg.trim, builder)
    first_plan = plan_steps(items, cfg.micro_batch_size, cfg.grad_accum, cfg.seed, 0)
    agreed = torch.tensor([len(first_plan)], dtype=torch.long)
    dist.all_reduce(agreed, op=dist.ReduceOp.MIN)  # every rank must take the same optimizer steps
    steps_per_epoch = int(agreed.item())
    if steps_per_epoch == 0:
        raise ValueError(
            f"rank {rank} has {len(items)} usable examples: fewer than one optimizer step "
            f"({cfg.micro_batch_size} x {cfg.grad_accum}); lower micro_batch_size/grad_accum or add data"
        )
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)

    # --- model, loss, engine ----------------------------------------------------------------
    model = AutoModelForCausalLM.from_pretrained(config["student"], dtype=torch.float32)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    loss = StepERLoss(cfg.loss.mode, TASKS, cfg.loss.weights, cfg.loss.init_log_var)
    module = StudentWithLoss(model, loss)
    optimizer = torch.optim.AdamW(_param_groups(module, cfg), betas=(0.9, 0.95), eps=1e-8)
    warmup = max(1, int(cfg.warmup_ratio * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(total_steps, warmup))
    ds_config = build_deepspeed_config(
        zero_stage=cfg.zero_stage, micro_batch_size=cfg.micro_batch_size, grad_accum=cfg.grad_accum,
        world_size=world, on_gpu=on_gpu, offload_optimizer=cfg.offload_optimizer,
        offload_params=cfg.offload_params, grad_clip=cfg.grad_clip,
    )
    engine, _, _, _ = deepspeed.initialize(model=module, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=ds_config)
    zero3 = cfg.zero_stage == 3

    # --- resume -----------------------------------------------------------------------------
    start_step = 0
    ckpt_dir = _latest_checkpoint(out, in_ray, local_rank)
    if ckpt_dir is not None:
        _, client = engine.load_checkpoint(str(ckpt_dir))
        start_step = int((client or {}).get("step", 0))
        if is_main:
            log.info("resumed from %s at step %d", ckpt_dir, start_step)

    sinks = None
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        sinks = MetricSinks(out, cfg.tensorboard, cfg.mlflow_uri, cfg.run_name, cfg.model_dump())
    n_params = sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in module.model.parameters())
    gpu_name = torch.cuda.get_device_name(device) if on_gpu else ""
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in gpu_name), None)

    # --- train ------------------------------------------------------------------------------
    plan_epoch, plan = 0, first_plan
    last_metrics: dict[str, Any] = {}
    for step in range(start_step, total_steps):
        epoch, within = divmod(step, steps_per_epoch)
        if epoch != plan_epoch:  # the same plan on a rerun: data order continues, not restarts
            plan, plan_epoch = plan_steps(items, cfg.micro_batch_size, cfg.grad_accum, cfg.seed, epoch), epoch
        t0 = time.perf_counter()
        ce_sum = torch.zeros(len(TASKS), dtype=torch.float64)
        ce_cnt = torch.zeros(len(TASKS), dtype=torch.float64)
        tokens = 0
        # L_j is task j's token mean over the whole step on every rank (train/loss.py): count first.
        step_cnt = torch.zeros(len(TASKS), dtype=torch.float64)
        for mb in plan[within]:
            for i in mb:
                step_cnt[items[i].task] += items[i].num_targets
        dist.all_reduce(step_cnt)
        step_cnt_dev = step_cnt.float().to(device)
        for mb in plan[within]:
            batch = {k: v.to(device) for k, v in collate([items[i] for i in mb], pad_id).items()}
            loss_value, s, c = engine(**batch, step_cnt=step_cnt_dev)
            # The shares already sum to the step loss: no 1/grad_accum, and undo the ranks' average.
            engine.backward(loss_value * world, scale_wrt_gas=False)
            engine.step()
            ce_sum += s.double().cpu()
            ce_cnt += c.double().cpu()
            tokens += int(batch["attention_mask"].sum())
        stats = torch.cat([ce_sum, ce_cnt, torch.tensor([float(tokens)], dtype=torch.float64)])
        dist.all_reduce(stats)
        elapsed = time.perf_counter() - t0
        done = step + 1
        if done % cfg.log_every == 0 or done == total_steps:
            with _gathered([loss.log_vars], zero3):
                s_vals = loss.log_vars.detach().float().cpu().tolist()
                weights = loss.effective_weights().tolist()
            sums, cnts = stats[: len(TASKS)], stats[len(TASKS): 2 * len(TASKS)]
            tok_s = float(stats[-1]) / elapsed
            m: dict[str, Any] = {
                "step": done, "epoch": epoch, "lr": scheduler.get_last_lr()[0],
                "grad_norm": float(engine.get_global_grad_norm() or 0.0),
                "tokens_per_s": round(tok_s, 1),
            }
            for j, task in enumerate(TASKS):
                m[f"loss_{task}"] = float(sums[j] / cnts[j]) if cnts[j] > 0 else None
                m[f"s_{task}"] = s_vals[j]
                m[f"sigma_{task}"] = math.exp(s_vals[j] / 2)
                m[f"weight_{task}"] = weights[j]
            if peak:
                m["mfu"] = round(6 * n_params * tok_s / (peak * world), 4)
            last_metrics = m
            if sinks is not None:
                sinks.log(m)
                log.info("step %d/%d %s", done, total_steps,
                         " ".join(f"{k}={v:.4g}" for k, v in m.items() if isinstance(v, float)))
        if done % cfg.checkpoint_every == 0 or done == total_steps:
            _checkpoint(engine, out, done, last_metrics, in_ray)

    if sinks is not None:
        sinks.close()

    # --- export -----------------------------------------------------------------------------
    with _gathered(list(module.model.parameters()), zero3):
        state = {k: v.detach().cpu().clone() for k, v in module.model.state_dict().items()} if is_main else None
    used = torch.tensor([len(items)], dtype=torch.long)
    dist.all_reduce(used)
    all_dropped: list[Any] = [None] * world
    dist.all_gather_object(all_dropped, dict(dropped))
    dropped_total: dict[str, int] = {}
    for d in all_dropped:
        for k, v in d.items():
            dropped_total[k] = dropped_total.get(k, 0) + v
    if is_main:
        export = out / "model"
        module.model.save_pretrained(export, state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(export)
        record_prompt_format(export, fmt)
        (out / "train_state.json").write_text(json.dumps({
            "steps": total_steps, "steps_per_epoch": steps_per_epoch, "world_size": world,
            "examples_used": int(used.item()), "dropped_examples": dropped_total,
            "final": last_metrics, "params": n_params,
        }, indent=2))
    dist.barrier()


def _latest_checkpoint(out: Path, in_ray: bool, local_rank: int) -> Path | None:
    if in_ray:
        import ray.train

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            return None
        # Ray Train V2 hands every worker the merged directory of all workers' files.
        return resume_dir(ckpt, local_rank, dist.barrier)
    root = out / "checkpoints"
    if not (root / "latest").is_file():
        return None
    return root


def _checkpoint(engine: Any, out: Path, step: int, metrics: dict[str, Any], in_ray: bool) -> None:
    """Every rank writes its ZeRO shards; Ray Train collects them into one checkpoint."""
    if in_ray:
        import ray.train

        with tempfile.TemporaryDirectory() as tmp:
            engine.save_checkpoint(tmp, tag=f"step{step:08d}", client_state={"step": step})
            ray.train.report({**metrics, "step": step}, checkpoint=ray.train.Checkpoint.from_directory(tmp))
    else:
        engine.save_checkpoint(str(out / "checkpoints"), tag=f"step{step:08d}", client_state={"step": step})
