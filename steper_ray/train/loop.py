"""The training worker: DeepSpeed ZeRO fine-tuning of the student with the StepER loss.

One worker body for both modes: ``train_worker(config, ctx)`` with a ``TrainContext``
(``train.context``) that says where rows come from, where checkpoints come from and go, and
how metrics are reported with them: ``RayTrainContext`` under Ray Train (``TorchTrainer``), or
``LocalContext`` as a plain single-process function (GPU checks, benchmarks, no Ray).
``train_loop_per_worker(config)`` with ``config = make_loop_config(...)`` picks the context.
Reads top to bottom: setup (data, model, engine, resume), step, metrics, export.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from steper_ray.config import TrainConfig
from steper_ray.errors import LossNotFinite
from steper_ray.layout import TrainDir
from steper_ray.models.prompt_format import record_prompt_format, resolve_prompt_format
from steper_ray.reasoning.prompts import PromptBuilder, PromptFormat
from steper_ray.train.context import LocalContext, RayTrainContext, TrainContext, in_ray_train_worker
from steper_ray.train.data import Encoded, collate, encode_for_loss, plan_steps, read_example_rows, shard_rows
from steper_ray.train.deepspeed_config import build_deepspeed_config
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
    """The worker's whole input: the training config, the base model directory, the examples
    (Parquet file or directory) and the training directory (``layout.TrainDir``).

    Paths are made absolute here, in the driver: Ray Train workers run in another working
    directory (the session's artifacts), where ``runs/local/...`` names nothing."""
    def absolute(path: str) -> str:
        return str(Path(path).expanduser().resolve()) if path else path

    local_student = Path(student).expanduser()
    return {"train": train.model_dump(), "student": absolute(student) if local_student.exists() else student,
            "examples": absolute(examples), "out": absolute(out)}


def decay_parameter_names(model: nn.Module) -> set[str]:
    """Parameters that get weight decay, by transformers' rule (not biases, not any norm)."""
    from transformers import Trainer

    # The method reads nothing of the trainer: called unbound, it is the library's helper.
    return set(Trainer.get_decay_parameter_names(None, model))  # type: ignore[arg-type]


def param_groups(module: StudentWithLoss, cfg: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups: decayed weights, the rest without decay, and the sigmas with their own rate."""
    decay_names = decay_parameter_names(module.model)
    decay, no_decay = [], []
    for name, p in module.model.named_parameters():
        if p.requires_grad:
            (decay if name in decay_names else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay, "lr": cfg.lr},
              {"params": no_decay, "weight_decay": 0.0, "lr": cfg.lr}]
    if module.loss.log_vars.requires_grad:
        # At lr 5e-6 the sigmas would not move: they get their own rate and no decay.
        groups.append({"params": [module.loss.log_vars], "weight_decay": 0.0, "lr": cfg.loss.sigma_lr})
    return [g for g in groups if g["params"]]


def warmup_steps(cfg: TrainConfig, total_steps: int) -> int:
    """Linear warmup steps: ``warmup_ratio`` of the run, rounded up (as transformers' Trainer)."""
    return math.ceil(cfg.warmup_ratio * total_steps)


def _gathered(params: list[torch.nn.Parameter], zero3: bool) -> Any:
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None) if zero3 else contextlib.nullcontext()


@dataclass
class Worker:
    """Everything one rank holds between steps (built by ``setup``)."""

    cfg: TrainConfig
    ctx: TrainContext
    files: TrainDir
    student: str
    rank: int
    world: int
    device: torch.device
    tokenizer: Any
    pad_id: int
    prompt_format: PromptFormat
    items: list[Encoded]
    dropped: Counter[str]
    steps_per_epoch: int
    total_steps: int
    module: StudentWithLoss
    engine: Any
    scheduler: Any
    start_step: int
    n_params: int
    peak_flops: float | None
    sinks: MetricSinks | None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def zero3(self) -> bool:
        return self.cfg.zero_stage == 3


@dataclass(frozen=True)
class StepStats:
    """One optimizer step summed over every rank: CE sums and token counts per task (shape
    (len(TASKS),)), non-padding tokens, and this rank's wall seconds."""

    ce_sum: torch.Tensor
    ce_cnt: torch.Tensor
    tokens: float
    seconds: float
    loss: float = 0.0  # the step's loss summed over micro-batches and ranks: only its finiteness is used


def skip_shm_comm_op() -> None:
    """Tell DeepSpeed's CPU backend not to JIT-build its shared-memory all-reduce op.

    ``deepspeed.comm.torch.build_shm_op`` compiles ``deepspeed_shm_comm`` (40-100 s on 2 cores,
    again for every new virtual environment) whenever the CPU accelerator is active, but only
    ``inference_all_reduce`` (DeepSpeed inference) uses it; ZeRO training's collectives go
    through ``torch.distributed`` (gloo). Marking the op incompatible in DeepSpeed's
    compatible-ops table is the switch its builder checks; nothing else reads that entry."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def setup(config: dict[str, Any], ctx: TrainContext) -> Worker:
    """Process group, this rank's encoded examples and step count, model + loss + optimizer +
    scheduler inside DeepSpeed, the resumed step, and (rank 0) the metric sinks.

    Raises ValueError when a rank has fewer examples than one optimizer step."""
    import deepspeed
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_cosine_schedule_with_warmup

    cfg = TrainConfig(**config["train"])
    files = TrainDir(Path(config["out"]))
    ctx.init_process_group()
    on_gpu = cfg.use_gpu and torch.cuda.is_available()
    if not on_gpu:
        skip_shm_comm_op()
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo", verbose=False)
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}" if on_gpu else "cpu")
    if on_gpu:
        torch.cuda.set_device(device)
    torch.manual_seed(cfg.seed)
    if cfg.threads_per_worker:
        torch.set_num_threads(cfg.threads_per_worker)

    # --- data: this rank's share, encoded in the student's prompt format ---------------------
    tokenizer = AutoTokenizer.from_pretrained(config["student"])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # The student's prompt format; evaluation and serving read it back from the export.
    fmt, template = resolve_prompt_format(cfg.prompt_format, config["student"], tokenizer)
    builder = PromptBuilder.student(fmt, template)
    rows = shard_rows(read_example_rows(config["examples"]), rank, world)
    items, dropped = encode_for_loss(tokenizer, rows, cfg.loss.mode, cfg.loss.target, cfg.max_len, cfg.trim, builder)
    agreed = torch.tensor([len(plan_steps(items, cfg.micro_batch_size, cfg.grad_accum, cfg.seed, 0))],
                          dtype=torch.long)
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

    # --- model, loss, engine -----------------------------------------------------------------
    model = AutoModelForCausalLM.from_pretrained(config["student"], dtype=torch.float32)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    module = StudentWithLoss(model, StepERLoss(cfg.loss.mode, TASKS, cfg.loss.weights, cfg.loss.init_log_var))
    optimizer = torch.optim.AdamW(param_groups(module, cfg), betas=(0.9, 0.95), eps=1e-8)
    scheduler = get_cosine_schedule_with_warmup(optimizer, warmup_steps(cfg, total_steps), total_steps)
    ds_config = build_deepspeed_config(
        zero_stage=cfg.zero_stage, micro_batch_size=cfg.micro_batch_size, grad_accum=cfg.grad_accum,
        world_size=world, on_gpu=on_gpu, offload_optimizer=cfg.offload_optimizer,
        offload_params=cfg.offload_params, grad_clip=cfg.grad_clip,
    )
    engine, _, _, _ = deepspeed.initialize(model=module, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=ds_config)

    # --- resume --------------------------------------------------------------------------------
    start_step = 0
    ckpt_dir = ctx.resume_from(local_rank)
    if ckpt_dir is not None:
        _, client = engine.load_checkpoint(str(ckpt_dir))
        start_step = int((client or {}).get("step", 0))
        if rank == 0:
            log.info("resumed from %s at step %d", ckpt_dir, start_step)

    sinks = None
    if rank == 0:
        files.root.mkdir(parents=True, exist_ok=True)
        sinks = MetricSinks(files.root, cfg.tensorboard, cfg.mlflow_uri, cfg.run_name, cfg.model_dump(), start_step)
    gpu_name = torch.cuda.get_device_name(device) if on_gpu else ""
    return Worker(
        cfg=cfg, ctx=ctx, files=files, student=config["student"], rank=rank, world=world, device=device,
        tokenizer=tokenizer, pad_id=pad_id, prompt_format=fmt, items=items, dropped=dropped,
        steps_per_epoch=steps_per_epoch, total_steps=total_steps, module=module, engine=engine,
        scheduler=scheduler, start_step=start_step,
        n_params=sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in module.model.parameters()),
        peak_flops=next((v for k, v in PEAK_BF16_FLOPS.items() if k in gpu_name), None), sinks=sinks,
    )


def train_step(w: Worker, micro_batches: list[list[int]]) -> StepStats:
    """One optimizer step over this rank's ``micro_batches`` (lists of item indices).

    L_j is task j's token mean over the whole step on every rank (train/loss.py): the step's
    target tokens per task are counted and all-reduced first, then each micro-batch's share is
    back-propagated."""
    t0 = time.perf_counter()
    ce_sum = torch.zeros(len(TASKS), dtype=torch.float64)
    ce_cnt = torch.zeros(len(TASKS), dtype=torch.float64)
    tokens = 0
    loss_sum = torch.zeros(1, dtype=torch.float64)
    step_cnt = torch.zeros(len(TASKS), dtype=torch.float64)
    for mb in micro_batches:
        for i in mb:
            step_cnt[w.items[i].task] += w.items[i].num_targets
    dist.all_reduce(step_cnt)
    step_cnt_dev = step_cnt.float().to(w.device)
    for mb in micro_batches:
        batch = {k: v.to(w.device) for k, v in collate([w.items[i] for i in mb], w.pad_id).items()}
        loss_value, s, c = w.engine(**batch, step_cnt=step_cnt_dev)
        # The shares already sum to the step loss: no 1/grad_accum, and undo the ranks' average.
        w.engine.backward(loss_value * w.world, scale_wrt_gas=False)
        w.engine.step()
        ce_sum += s.double().cpu()
        ce_cnt += c.double().cpu()
        loss_sum += loss_value.detach().double().cpu()
        tokens += int(batch["attention_mask"].sum())
    stats = torch.cat([ce_sum, ce_cnt, torch.tensor([float(tokens)], dtype=torch.float64), loss_sum])
    dist.all_reduce(stats)
    n = len(TASKS)
    return StepStats(stats[:n], stats[n:2 * n], float(stats[-2]), time.perf_counter() - t0, float(stats[-1]))


def check_finite(stats: StepStats, step: int, total: int, cfg: TrainConfig) -> None:
    """Raise LossNotFinite when step ``step``'s loss (summed over every rank, so all ranks agree)
    is inf or NaN: its update has already spoiled the weights, and later steps would train on."""
    if math.isfinite(stats.loss):
        return
    raise LossNotFinite(
        f"the training loss became {stats.loss} at optimizer step {step} of {total}, so training stopped "
        f"before saving that step; lower train.lr ({cfg.lr}) or train.loss.sigma_lr ({cfg.loss.sigma_lr}), "
        f"or check train.loss.weights {cfg.loss.weights} and train.loss.init_log_var ({cfg.loss.init_log_var})")


def step_metrics(w: Worker, step: int, epoch: int, stats: StepStats) -> dict[str, Any]:
    """The metrics row of optimizer step ``step`` (1-based): per-task loss, s_j, sigma_j and
    effective weight, learning rate, grad norm, tokens/s, MFU on a known GPU. Every rank calls
    it (the sigmas may be gathered from ZeRO-3 shards)."""
    with _gathered([w.module.loss.log_vars], w.zero3):
        s_vals = w.module.loss.log_vars.detach().float().cpu().tolist()
        weights = w.module.loss.effective_weights().tolist()
    tok_s = stats.tokens / stats.seconds
    m: dict[str, Any] = {
        "step": step, "total_steps": w.total_steps, "epoch": epoch, "lr": w.scheduler.get_last_lr()[0],
        "grad_norm": float(w.engine.get_global_grad_norm() or 0.0),
        "tokens_per_s": round(tok_s, 1),
    }
    for j, task in enumerate(TASKS):
        m[f"loss_{task}"] = float(stats.ce_sum[j] / stats.ce_cnt[j]) if stats.ce_cnt[j] > 0 else None
        m[f"s_{task}"] = s_vals[j]
        m[f"sigma_{task}"] = math.exp(s_vals[j] / 2)
        m[f"weight_{task}"] = weights[j]
    if w.peak_flops:
        m["mfu"] = round(6 * w.n_params * tok_s / (w.peak_flops * w.world), 4)
    return m


def export(w: Worker, last_metrics: dict[str, Any]) -> None:
    """Gather the model (ZeRO-3) and, on rank 0, save it as a Hugging Face directory with its
    tokenizer and prompt format, and ``train_state.json`` with the examples every rank used
    and dropped. Every rank calls it."""
    with _gathered(list(w.module.model.parameters()), w.zero3):
        state = ({k: v.detach().cpu().clone() for k, v in w.module.model.state_dict().items()}
                 if w.is_main else None)
    used = torch.tensor([len(w.items)], dtype=torch.long)
    dist.all_reduce(used)
    all_dropped: list[Any] = [None] * w.world
    dist.all_gather_object(all_dropped, dict(w.dropped))
    dropped_total: Counter[str] = Counter()
    for d in all_dropped:
        dropped_total.update(d)
    if w.is_main:
        w.module.model.save_pretrained(w.files.export, state_dict=state, safe_serialization=True)
        w.tokenizer.save_pretrained(w.files.export)
        record_prompt_format(w.files.export, w.prompt_format)
        w.files.state.write_text(json.dumps({
            "steps": w.total_steps, "steps_per_epoch": w.steps_per_epoch, "world_size": w.world,
            "resumed_from_step": w.start_step,  # this attempt's checkpoint step (0: from the start)
            "examples_used": int(used.item()), "dropped_examples": dict(dropped_total),
            "final": last_metrics, "params": w.n_params,
        }, indent=2))
    dist.barrier()


def train_worker(config: dict[str, Any], ctx: TrainContext) -> None:
    """Set up, run the optimizer steps from the resumed one, log and checkpoint, export."""
    w = setup(config, ctx)
    cfg = w.cfg
    plan_epoch, plan = 0, plan_steps(w.items, cfg.micro_batch_size, cfg.grad_accum, cfg.seed, 0)
    last_metrics: dict[str, Any] = {}
    for step in range(w.start_step, w.total_steps):
        epoch, within = divmod(step, w.steps_per_epoch)
        if epoch != plan_epoch:  # the same plan on a rerun: data order continues, not restarts
            plan, plan_epoch = plan_steps(w.items, cfg.micro_batch_size, cfg.grad_accum, cfg.seed, epoch), epoch
        stats = train_step(w, plan[within])
        done = step + 1
        check_finite(stats, done, w.total_steps, cfg)
        if done % cfg.log_every == 0 or done == w.total_steps:
            last_metrics = step_metrics(w, done, epoch, stats)
            if w.sinks is not None:
                w.sinks.log(last_metrics)
                log.info("step %d/%d %s", done, w.total_steps,
                         " ".join(f"{k}={v:.4g}" for k, v in last_metrics.items() if isinstance(v, float)))
        if done % cfg.checkpoint_every == 0 or done == w.total_steps:
            ctx.checkpoint(w.engine, done, last_metrics)
    if w.sinks is not None:
        w.sinks.close()
    export(w, last_metrics)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """``TorchTrainer``'s entry, also callable as a plain function: the worker body with the
    Ray Train context inside a Ray Train worker, else the local one, which leaves no
    rendezvous variables (RANK, WORLD_SIZE, MASTER_PORT, ...) and no process group behind."""
    if in_ray_train_worker():
        train_worker(config, RayTrainContext())
        return
    # Plain mode: the process outlives the run, so its environment and process group are
    # put back as they were, also when the run fails.
    local = LocalContext(TrainDir(Path(config["out"])).local_checkpoints)
    try:
        train_worker(config, local)
    finally:
        local.close()
