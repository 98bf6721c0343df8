"""GPU training throughput without Ray: a random-init Llama of about 1B parameters built from
a config, bf16, DeepSpeed ZeRO-2 on one GPU, the same DeepSpeed config builder and loss as the
product. Prints one JSON object: tokens/s and MFU with the card's name.

    python bench/gpu_train.py [--steps 20] [--micro-batch 8] [--seq-len 2048]

Needs torch with CUDA, transformers and deepspeed (not Ray, not vLLM).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--grad-ckpt", action="store_true")
    args = ap.parse_args()

    import deepspeed
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from steper_ray.train.deepspeed_config import build_deepspeed_config
    from steper_ray.train.loss import StepERLoss, per_task_token_ce

    if not torch.cuda.is_available():
        print("bench/gpu_train.py: needs a CUDA GPU (torch.cuda.is_available() is False); "
              "steper-ray bench training measures training on CPU", file=sys.stderr)
        sys.exit(2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(port)}.items():
        os.environ.setdefault(k, v)
    deepspeed.init_distributed(dist_backend="nccl", verbose=False)

    cfg = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                      num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=args.seq_len,
                      tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    model.config._attn_implementation = "sdpa"
    if args.grad_ckpt:
        model.gradient_checkpointing_enable()
    n_params = sum(p.numel() for p in model.parameters())
    loss_mod = StepERLoss("steper").cuda()
    ds_cfg = build_deepspeed_config(zero_stage=2, micro_batch_size=args.micro_batch, grad_accum=1,
                                    world_size=1, on_gpu=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=True)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=opt, config=ds_cfg)

    tokens_per_step = args.micro_batch * args.seq_len
    times = []
    for step in range(args.warmup + args.steps):
        ids = torch.randint(0, cfg.vocab_size, (args.micro_batch, args.seq_len), device="cuda")
        labels = ids.clone()
        labels[:, : args.seq_len // 2] = -100  # prompt half masked, as in step examples
        tasks = torch.arange(args.micro_batch, device="cuda") % 3
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        logits = engine(input_ids=ids).logits
        ce_sum, ce_cnt = per_task_token_ce(logits, labels, tasks)
        loss = loss_mod(ce_sum, ce_cnt)
        engine.backward(loss)
        engine.step()
        torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
    tps = tokens_per_step * len(times) / sum(times)
    name = torch.cuda.get_device_name(0)
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    # 6 N per token for forward + backward over the matmul weights (the input embedding is a
    # lookup), plus attention, 12 L h s per token (PaLM, Chowdhery et al. 2022, appendix B)
    n_matmul = n_params - model.get_input_embeddings().weight.numel()
    flops_per_token = 6 * n_matmul + 12 * cfg.num_hidden_layers * cfg.hidden_size * args.seq_len
    print(json.dumps({
        "benchmark": "gpu_train", "gpu": name, "params": n_params, "dtype": "bf16", "zero_stage": 2,
        "micro_batch": args.micro_batch, "seq_len": args.seq_len, "grad_ckpt": args.grad_ckpt,
        "steps_timed": len(times), "step_s": round(sum(times) / len(times), 4),
        "tokens_per_s": round(tps, 1),
        "mfu": round(tps * flops_per_token / peak, 4) if peak else None,
        "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    }))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
