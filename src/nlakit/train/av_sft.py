"""Stage 2 — AV supervised: injected activation -> warm-start explanation (next-token cross-entropy on the response).

    nlakit train av --data runs/smol/data --out runs/smol

The AV is a copy of the target with LoRA adapters; the activation replaces the marker's embedding exactly as at
inference (`Verbalizer.embed`). The loss covers the wrapped explanation and the turn-end token only (prompt masked).
Saves ``av_sft.pt`` (adapter) and a held-out evaluation with the SFT-time AR.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from nlakit import distributed
from nlakit.metrics import Reference
from nlakit.reconstructor import Reconstructor
from nlakit.train.common import (Budget, MergedAV, Pairs, add_lora, batches, cast_frozen, cosine_lr, load_lora_state,
                                 lora_state, save_state, seed_everything, stage_done, write_stage_done)
from nlakit.train.heldout import evaluate_heldout
from nlakit.verbalizer import Verbalizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AVConfig:
    source: str = "template"
    rank: int = 24
    lr: float = 5e-4
    batch_size: int = 64
    epochs: float = 2.0
    seed: int = 0
    dtype: str | None = None
    frozen_dtype: str | None = None  # "bfloat16": the frozen weights in bf16 for this stage (LoRA stays fp32); needs dtype (train_all drops it on fp32 runs)
    eval_max_new_tokens: int = 96
    save_every: int = 50  # steps between partial checkpoints (a killed run resumes from the last one)


def new_av(target, meta, rank: int) -> Verbalizer:
    model = add_lora(copy.deepcopy(target.model), rank)
    model.requires_grad_(False)
    for n, p in model.named_parameters():
        if "lora_" in n:
            p.requires_grad_(True)
    return Verbalizer(model, target.tokenizer, meta)


def sft_loss(av: Verbalizer, vectors: torch.Tensor, responses: list[list[int]], dtype,
             forward: torch.nn.Module | None = None) -> torch.Tensor:
    """Cross-entropy per response token, averaged over the batch's tokens; `forward` runs `av.model` instead (its DDP wrapper).

    Logits only where a response token is predicted (positions P-1 .. P+R-2; the prompt's are never scored), so the
    LM head and the fp32 log-softmax cover R of the P+R positions."""
    embeds, mask, labels = av.batch(vectors, responses)
    R = labels.shape[1] - len(av.prompt_ids)
    with torch.autocast(device_type=embeds.device.type, dtype=dtype, enabled=dtype is not None):
        logits = (forward or av.model)(inputs_embeds=embeds, attention_mask=mask, use_cache=False, logits_to_keep=R + 1).logits
    return torch.nn.functional.cross_entropy(logits[:, :R].float().flatten(0, 1), labels[:, -R:].flatten(), ignore_index=-100)


def train_av(cfg: AVConfig, target, meta, pairs: Pairs, eval_pairs: Pairs | None, ar: Reconstructor, ref: Reference, out: Path,
             budget: Budget | None = None, log_fn: Callable[[dict], None] | None = None) -> Verbalizer:
    """Train the AV on the ``av`` split; resumable from ``out/av_sft.pt``.

    Under torchrun every rank runs its share of each batch through DistributedDataParallel and rank 0 writes the
    checkpoints and runs the held-out evaluation."""
    seed_everything(cfg.seed)
    av = new_av(target, meta, cfg.rank)
    ckpt = out / "av_sft.pt"
    if stage_done(out, "av_sft") and ckpt.exists():
        load_lora_state(av.model, torch.load(ckpt, map_location="cpu", weights_only=False)["lora"])
        return av
    dtype = {"bfloat16": torch.bfloat16}.get(cfg.dtype or "")
    cast_frozen("av.frozen_dtype", cfg.frozen_dtype, cfg.dtype, av.model)  # LoRA (and a head) stay fp32; see rl.frozen_dtype
    data = pairs.split("av")
    responses = av.response_ids(data.texts(cfg.source))
    params = [p for p in av.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    partial = out / "av_sft.partial.pt"
    start, losses = 0, []
    if partial.exists():  # a budget-stopped or killed run: continue from its last checkpoint
        st = torch.load(partial, map_location="cpu", weights_only=False)
        load_lora_state(av.model, st["lora"])
        opt.load_state_dict(st["opt"])
        start, losses = st["step"], st["losses"]

    def save_partial(done: int) -> None:
        if distributed.is_main():
            save_state(partial, {"lora": lora_state(av.model), "opt": opt.state_dict(), "step": done, "losses": losses})
        distributed.barrier()

    distributed.require_shares({"av.batch_size": cfg.batch_size})
    model = distributed.data_parallel(av.model)  # gradients averaged over ranks; `av.model` itself in one process
    av.model.train()
    for step, total, idx in batches(len(data), cfg.batch_size, seed=cfg.seed, epochs=cfg.epochs):
        if step < start:
            continue
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, total, cfg.lr)
        mine = distributed.shard(idx)  # this rank's share of the batch; the loss is a mean over response tokens
        n_mine, n_all = sum(len(responses[i]) for i in mine), sum(len(responses[i]) for i in idx)
        loss = sft_loss(av, data.vectors[mine], [responses[i] for i in mine], dtype, forward=model)
        opt.zero_grad(set_to_none=True)
        (loss * distributed.loss_weight(n_mine, n_all)).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(distributed.batch_mean(loss.item(), n_mine, n_all))
        if log_fn and (step % 20 == 0 or step == total - 1):
            log_fn({"stage": "av_sft", "step": step, "of": total, "loss": sum(losses[-20:]) / len(losses[-20:])})
        if budget is not None and distributed.any_rank(budget.out(margin=60)) and step + 1 < total:
            log.warning("AV stage stopped by the time budget at step %d/%d; the next call continues it", step + 1, total)
            save_partial(step + 1)
            av.model.eval()
            return av
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < total:
            save_partial(step + 1)
    av.model.eval()
    summary = {"config": asdict(cfg), "steps": len(losses), "final_loss": sum(losses[-20:]) / max(1, len(losses[-20:]))}
    if eval_pairs is not None and distributed.is_main():
        decoder = MergedAV(av, dtype).sync().verbalizer  # LoRA merged: the engine's fast path
        summary["eval"] = evaluate_heldout(decoder, ar, eval_pairs, ref, max_new_tokens=cfg.eval_max_new_tokens, dtype=dtype)
        del decoder
    if distributed.is_main():
        save_state(ckpt, {"lora": lora_state(av.model)})
        write_stage_done(out, "av_sft", summary)
        partial.unlink(missing_ok=True)
    distributed.barrier()
    return av
