"""Stage 1 — AR supervised: explanation text -> activation direction.

    nlakit train ar --data runs/smol/data --out runs/smol

The AR is the target's blocks 0..K (LoRA adapters) plus an identity-initialised value head (trained in full).
Loss = mse_nrm = mean_d (n(AR(e)) - n(v))^2 = 2 (1 - cos), on the ``ar`` split. Saves ``ar_sft.pt``
(adapter + head), and reports held-out fve_nrm of the AR fed the gold explanation text (the ceiling of the
warm-start source) and fed shuffled text (a control that must be far below zero). With held-out pairs it also records
that ceiling on the first ``curve_positions`` of them every ``curve_every`` steps and at the last (``gold_curve``: is the
AR still learning?).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from nlakit import distributed
from nlakit.metrics import Reference, by_position, fve_nrm, mse_nrm, summarize
from nlakit.reconstructor import Reconstructor
from nlakit.train.common import (Budget, Pairs, add_lora, batches, cast_frozen, cosine_lr, load_lora_state,
                                 lora_state, save_state, seed_everything, stage_done, write_stage_done)
from nlakit.train.graphs import StepGraphs, causal_mask

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ARConfig:
    source: str = "template"
    rank: int = 16
    lr: float = 5e-4  # LoRA
    head_lr: float = 1e-3
    batch_size: int = 64
    epochs: float = 2.0
    max_length: int = 256
    seed: int = 0
    dtype: str | None = None  # autocast on GPU
    frozen_dtype: str | None = None  # "bfloat16": the frozen weights in bf16 for this stage (LoRA stays fp32); needs dtype (train_all drops it on fp32 runs)
    save_every: int = 50  # steps between partial checkpoints (a killed run resumes from the last one)
    cuda_graphs: bool = True  # on one GPU, each step replays a CUDA graph per padded length (nlakit.train.graphs)
    curve_positions: int = 256  # held-out positions for the gold-text ceiling during training (0: the final one only)
    curve_every: int = 200  # steps between those measurements, and one at the last step (0: the last step only)


def new_ar(target, meta, rank: int) -> Reconstructor:
    ar = Reconstructor.from_target(target, meta)
    ar.backbone = add_lora(ar.backbone, rank)
    ar.value_head.requires_grad_(True)
    return ar


class ReadLoss(torch.nn.Module):
    """mse_nrm of an AR's predictions on a right-padded batch, from tensors alone: (ids (B, T), read positions (B,),
    gold (B, D)) -> the mean over rows (`per_sample`: one per row). `model` is the Reconstructor (or its DDP wrapper).
    No padding mask: causal attention is exact for right padding (`Reconstructor.forward`, `causal_mask`)."""

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype | None, per_sample: bool = False, force_mask: bool = False):
        super().__init__()
        self.model, self.dtype, self.per_sample, self.force_mask = model, dtype, per_sample, force_mask

    def forward(self, ids: torch.Tensor, read: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
        backbone = getattr(self.model, "module", self.model).backbone  # through a DDP wrapper
        mask = causal_mask(backbone, ids.shape[1], ids.device, force=self.force_mask)  # None: causal alone
        # cache_enabled=False: autocast's weight-cast cache cannot live across CUDA graph replays (StepGraphs)
        with torch.autocast(device_type=ids.device.type, dtype=self.dtype, enabled=self.dtype is not None, cache_enabled=False):
            pred = self.model(ids, mask, read)
        per = mse_nrm(pred.float(), gold)
        return per if self.per_sample else per.mean()


def ar_inputs(ar: Reconstructor, texts: list[str], gold: torch.Tensor, max_length: int,
              pad_to: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ReadLoss's inputs on the AR's device: the encoded texts, each row's last real position, the gold vectors."""
    ids, mask = ar.encode(texts, max_length=max_length, pad_to=pad_to)
    return ids.to(ar.device), (mask.sum(1) - 1).to(ar.device), gold.to(ar.device)


def ar_optimizer(ar: Reconstructor, lr: float, head_lr: float) -> torch.optim.Optimizer:
    lora = [p for n, p in ar.backbone.named_parameters() if p.requires_grad]
    return torch.optim.AdamW([{"params": lora, "lr": lr, "base_lr": lr},
                              {"params": ar.value_head.parameters(), "lr": head_lr, "base_lr": head_lr}], weight_decay=0.0)


def train_ar(cfg: ARConfig, target, meta, pairs: Pairs, eval_pairs: Pairs | None, ref: Reference, out: Path,
             budget: Budget | None = None, log_fn: Callable[[dict], None] | None = None) -> Reconstructor:
    """Train the AR on the ``ar`` split; resumable from ``out/ar_sft.pt``. Returns the trained AR.

    Under torchrun every rank runs its share of each batch through DistributedDataParallel (the union is the batch
    one process takes) and rank 0 writes the checkpoints."""
    seed_everything(cfg.seed)
    ar = new_ar(target, meta, cfg.rank)
    cast_frozen("ar.frozen_dtype", cfg.frozen_dtype, cfg.dtype, ar.backbone)  # LoRA (and a head) stay fp32; see rl.frozen_dtype
    ckpt = out / "ar_sft.pt"
    if stage_done(out, "ar_sft") and ckpt.exists():  # reloaded at the precision it was trained at
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        load_lora_state(ar.backbone, state["lora"])
        ar.value_head.load_state_dict(state["head"])
        return ar
    dtype = {"bfloat16": torch.bfloat16}.get(cfg.dtype or "")
    data = pairs.split("ar")
    texts = data.texts(cfg.source)
    opt = ar_optimizer(ar, cfg.lr, cfg.head_lr)
    partial = out / "ar_sft.partial.pt"
    start, losses, curve = 0, [], []
    if partial.exists():  # a budget-stopped or killed run: continue from its last checkpoint
        st = torch.load(partial, map_location="cpu", weights_only=False)
        load_lora_state(ar.backbone, st["lora"])
        ar.value_head.load_state_dict(st["head"])
        opt.load_state_dict(st["opt"])
        start, losses, curve = st["step"], st["losses"], st.get("curve", [])

    def save_partial(done: int) -> None:
        if distributed.is_main():
            save_state(partial, {"lora": lora_state(ar.backbone), "head": ar.value_head.state_dict(), "opt": opt.state_dict(),
                                 "step": done, "losses": losses, "curve": curve})
        distributed.barrier()

    distributed.require_shares({"ar.batch_size": cfg.batch_size})
    model = distributed.data_parallel(ar)  # gradients averaged over ranks; `ar` itself in one process
    curve_pairs = eval_pairs.head(cfg.curve_positions) if eval_pairs is not None and cfg.curve_positions > 0 else None
    step_loss = StepGraphs(ReadLoss(model, dtype), enabled=cfg.cuda_graphs, name="ar_sft")
    ar.train()
    for step, total, idx in batches(len(data), cfg.batch_size, seed=cfg.seed, epochs=cfg.epochs):
        if step < start:
            continue
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, total, g["base_lr"])
        mine = distributed.shard(idx)  # this rank's share of the batch
        loss = step_loss(*ar_inputs(ar, [texts[i] for i in mine], data.vectors[mine], cfg.max_length, step_loss.pad_to))
        opt.zero_grad(set_to_none=True)
        (loss * distributed.loss_weight(len(mine), len(idx))).backward()
        torch.nn.utils.clip_grad_norm_([p for p in ar.parameters() if p.requires_grad], 1.0)
        opt.step()
        losses.append(distributed.batch_mean(loss.item(), len(mine), len(idx)))
        if log_fn and (step % 20 == 0 or step == total - 1):
            log_fn({"stage": "ar_sft", "step": step, "of": total, "loss": sum(losses[-20:]) / len(losses[-20:])})
        if curve_pairs is not None and (cfg.curve_every > 0 and (step + 1) % cfg.curve_every == 0 or step == total - 1):
            if distributed.is_main():
                point = {"step": step + 1, "epochs": (step + 1) * cfg.batch_size / len(data),
                         "gold_fve_nrm": gold_ceiling(ar.eval(), curve_pairs, ref, cfg.source, dtype)["eval_gold_fve_nrm"]["mean"]}
                curve.append(point)
                ar.train()
                if log_fn:
                    log_fn({"stage": "ar_sft_curve", **point})
            distributed.barrier()
        if budget is not None and distributed.any_rank(budget.out(margin=30)) and step + 1 < total:
            log.warning("AR stage stopped by the time budget at step %d/%d; the next call continues it", step + 1, total)
            save_partial(step + 1)
            step_loss.close()
            return ar.eval()
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < total:
            save_partial(step + 1)
    step_loss.close()
    ar.eval()
    summary = {"config": asdict(cfg), "steps": len(losses), "final_loss": sum(losses[-20:]) / max(1, len(losses[-20:])),
               "step_mode": step_loss.mode}
    if curve:
        summary["gold_curve"] = {"positions": min(cfg.curve_positions, len(eval_pairs)) if eval_pairs is not None else None,
                                 "points": curve}
    if eval_pairs is not None and distributed.is_main():
        summary.update(gold_ceiling(ar, eval_pairs, ref, cfg.source, dtype))
    if distributed.is_main():
        save_state(ckpt, {"lora": lora_state(ar.backbone), "head": ar.value_head.state_dict()})
        write_stage_done(out, "ar_sft", summary)
        partial.unlink(missing_ok=True)
    distributed.barrier()
    return ar


@torch.no_grad()
def gold_ceiling(ar: Reconstructor, eval_pairs: Pairs, ref: Reference, source: str, dtype=None) -> dict:
    """Held-out fve_nrm of the AR fed the gold warm-start text, and fed a shuffled pairing (control)."""
    texts = eval_pairs.texts(source) if source in eval_pairs.rows[0]["explanations"] else eval_pairs.texts("template")
    pred = ar.reconstruct(texts, dtype=dtype)
    perm = torch.randperm(len(texts), generator=torch.Generator().manual_seed(0))
    pred_shuf = pred[perm]
    gold = fve_nrm(pred, eval_pairs.vectors, ref.mu_nrm)
    return {"eval_gold_fve_nrm": summarize(gold),
            "eval_gold_fve_nrm_by_position": by_position(gold),  # in eval_pairs' order
            "eval_shuffled_fve_nrm": summarize(fve_nrm(pred_shuf, eval_pairs.vectors, ref.mu_nrm))}
