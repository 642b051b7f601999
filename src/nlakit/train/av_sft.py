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
from nlakit.train.graphs import StepGraphs, causal_mask
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
    cuda_graphs: bool = True  # on one GPU, each step replays a CUDA graph per padded length (nlakit.train.graphs)


def new_av(target, meta, rank: int) -> Verbalizer:
    model = add_lora(copy.deepcopy(target.model), rank)
    model.requires_grad_(False)
    for n, p in model.named_parameters():
        if "lora_" in n:
            p.requires_grad_(True)
    return Verbalizer(model, target.tokenizer, meta)


class ResponseLoss(torch.nn.Module):
    """Cross-entropy per response token, averaged over the batch's tokens, from tensors alone: (embeds (B, P+R, D),
    labels (B, R) with -100 on padding) -> the loss. `model` is the AV's model (or its DDP wrapper).

    Logits only where a response token is predicted (positions P-1 .. P+R-2; the prompt's are never scored), so the
    LM head and the fp32 log-softmax cover R of the P+R positions. No padding mask: the rows share the prompt and are
    padded on the right, so causal attention gives every real token what the padding mask would (`causal_mask`)."""

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype | None, force_mask: bool = False):
        super().__init__()
        self.model, self.dtype, self.force_mask = model, dtype, force_mask

    def forward(self, embeds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        R = labels.shape[1]
        mask = causal_mask(self.model, embeds.shape[1], embeds.device, force=self.force_mask)  # None: causal alone
        # cache_enabled=False: autocast's weight-cast cache cannot live across CUDA graph replays (StepGraphs)
        with torch.autocast(device_type=embeds.device.type, dtype=self.dtype, enabled=self.dtype is not None, cache_enabled=False):
            logits = self.model(inputs_embeds=embeds, attention_mask=mask, use_cache=False, logits_to_keep=R + 1).logits
        return torch.nn.functional.cross_entropy(logits[:, :R].float().flatten(0, 1), labels.flatten(), ignore_index=-100)


def sft_inputs(av: Verbalizer, vectors: torch.Tensor, responses: list[list[int]],
               pad_to: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """ResponseLoss's inputs: the injected embeddings and the response labels (R rounded up to a multiple of `pad_to`)."""
    embeds, _, labels = av.batch(vectors, responses, pad_to=pad_to)
    return embeds, labels[:, len(av.prompt_ids):]


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
    step_loss = StepGraphs(ResponseLoss(model, dtype), enabled=cfg.cuda_graphs, name="av_sft")
    av.model.train()
    for step, total, idx in batches(len(data), cfg.batch_size, seed=cfg.seed, epochs=cfg.epochs):
        if step < start:
            continue
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, total, cfg.lr)
        mine = distributed.shard(idx)  # this rank's share of the batch; the loss is a mean over response tokens
        n_mine, n_all = sum(len(responses[i]) for i in mine), sum(len(responses[i]) for i in idx)
        loss = step_loss(*sft_inputs(av, data.vectors[mine], [responses[i] for i in mine], step_loss.pad_to))
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
            step_loss.close()
            av.model.eval()
            return av
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < total:
            save_partial(step + 1)
    step_loss.close()
    av.model.eval()
    summary = {"config": asdict(cfg), "steps": len(losses), "final_loss": sum(losses[-20:]) / max(1, len(losses[-20:])),
               "step_mode": step_loss.mode}
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
