"""Stage 3 — RL: GRPO on the AV with reward = -mse_nrm (or -log mse_nrm) from the (co-trained) AR.

    nlakit train rl --data runs/smol/data --out runs/smol --steps 300

The variant, exactly:
- each step samples `n_prompts` activations from the ``rl`` split and `group` explanations per activation at
  temperature `temperature`, capped at `max_new_tokens`;
- reward = -m with `reward: mse` (the default), or -log(max(m, 1e-6)) with `reward: log_mse` (the paper's transform),
  where m = mse_nrm(AR(explanation), v) = 2 (1 - cos); a failed parse or a capped (truncated) sample is scored as
  m = 2.0 (orthogonal-equivalent, `nla-checkpoint-format.md` §7), so its reward is -2.0 or -log 2;
- advantages are normalised within each group: (r - mean_g) / (std_g + 1e-4); no value function;
- `ppo_epochs` updates per batch of rollouts (default 1). Per token t of sample i, with the ratio
  rho_it = p_it / p_it^old against the log-probs at the first pass: loss = -mean_i(mean_t min(rho_it A_i,
  clip(rho_it, 1 - clip, 1 + clip) A_i)) + `kl_coef` * mean_i mean_t KL_k3(p || p_sft), the k3 estimator against
  the frozen supervised AV, exp(d) - d - 1 with d = log p_sft - log p_it (with `kl_clamp` c: min(that, c) on d clamped
  to [-20, 20]; default uncapped); per-token mean within a sequence, then mean over sequences. At the first pass rho = 1
  and nothing is clipped, so with ``ppo_epochs=1`` the gradient is exactly that of the on-policy loss
  -mean_i(A_i * mean_t log p_it) + KL term; gradients are clipped to norm 1.0 before each AdamW step;
- the learning rates (the AV's `lr`, the AR's `ar_lr` and `ar_head_lr`) are constant, or with `lr_decay` d > 0 fall
  linearly over the last fraction d of the run to `lr_final` times their value (`lr_scale`), the run's progress at a
  step being the larger of step / `steps` and the steps' own time so far / `max_minutes`;
- the AR keeps training online: one supervised step on the batch's fresh, parsed explanations (its gradient never
  reaches the AV), every `ar_every` steps (default: every step). By default it comes after the policy update and the
  rewards are read by a separate forward pass (of the AR, or with `merged_reward` of its merged copy). With
  `reward_from_ar_update`, on the steps where the AR step runs it comes first and its own forward pass gives the
  rewards: the same AR weights, so the same rewards up to rounding, and one AR forward on that step instead of two
  (the other steps read them in a separate pass as before). Neither order lets the AR step see the policy update, or
  the policy update see the AR step.

Under torchrun each rank draws the same `n_prompts` activations from the same seeded sampler and takes a contiguous
share of them (`distributed.shard`); it decodes its rows with their row numbers in the whole batch (the engine's
counter-based sampling), so the union of the ranks' rollouts is the single-process batch. Rewards and advantages are
computed per group on the rank that holds it; the policy and AR gradients are summed over ranks
(`distributed.all_reduce_grads`) with the losses normalised by the whole batch, so every rank takes the same update
and re-syncs its own merged decoding copy. Rank 0 writes checkpoints and logs and runs the held-out evaluations.

Speed: rollouts are decoded by `nlakit.engine` from a plain copy of the AV (LoRA merged, in the autocast dtype)
whose weights are refreshed in place after every update (`MergedAV.sync`), so the engine's compiled step and CUDA
graph are built once and reused for the whole run. The KL anchor is a merged copy of the supervised AV in the same
dtype. Log-probs are computed only on response positions, in micro-batches of similar length; with `pack_groups`
each group's `group` responses share one row behind one copy of their prompt (`Verbalizer.group_batch`, read through
`verbalizer.group_layout`'s block mask: every response sees the prompt and itself, with the positions it has alone),
the same log-probs for (group - 1) prompts fewer per group, the micro-batches then whole groups in order. With `cuda_graphs`
(one GPU) the reference, policy and AR passes replay CUDA graphs (`nlakit.train.graphs.StepGraphs`): every
policy/reference batch is padded to `micro_batch` rows of `max_new_tokens` + 1 response tokens and
the AR batch to all the step's rollouts, padding rows carrying no weight, so one shape covers the run; each pass is
checked against an eager one at capture and runs eagerly if it differs. The update is the same. Each step's record
splits its time into generation / reward / reference / policy / AR; `profile_step` profiles one step's kernels phase
by phase. With `frozen_dtype: bfloat16` the frozen weights of the AV and AR are cast to bf16 for this stage, so the
policy and AR passes run on bf16 activations while the adapters, their gradients and AdamW stay fp32 (the variant
above is unchanged; only the precision of the forward passes differs).
Checkpoints (`rl_state.pt`: adapters, heads, optimisers, RNG, step, log) are written every `save_every` steps and
when the time budget runs out; the next call resumes from them.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, NamedTuple

import torch

from nlakit import distributed
from nlakit.engine_profile import PhaseProfiler
from nlakit.errors import NlakitError
from nlakit.io import write_json
from nlakit.metrics import Reference, fve_baseline, mse_nrm
from nlakit.reconstructor import Reconstructor
from nlakit.train.ar_sft import ReadLoss, ar_inputs, ar_optimizer
from nlakit.train.common import (Budget, MergedAR, MergedAV, Pairs, cast_frozen, load_lora_state, load_state, lora_state, rng_state, save_state,
                                 seed_everything, set_rng_state, write_stage_done)
from nlakit.train.graphs import StepGraphs, causal_mask
from nlakit.train.heldout import copy_rate, evaluate_heldout, generate
from nlakit.verbalizer import Verbalizer, group_layout, packed_attention, response_logprobs

log = logging.getLogger(__name__)

FAIL_MSE = 2.0  # what a failed or truncated sample is scored as: an orthogonal reconstruction
FAIL_REWARD = -FAIL_MSE  # its reward under the default `reward: mse`
REWARDS = ("mse", "log_mse")


@dataclass(frozen=True)
class RLConfig:
    steps: int = 300
    max_minutes: float | None = None  # also end (finished) once the steps' own time reaches this; evals not counted
    n_prompts: int = 32
    group: int = 8
    temperature: float = 1.0
    max_new_tokens: int = 96
    lr: float = 2e-5  # AV LoRA
    kl_coef: float = 0.02
    kl_clamp: float | None = None  # cap each token's k3 term at this (e.g. 10; no gradient above it); None: uncapped
    reward: str = "mse"  # "mse": -mse_nrm; "log_mse": -log mse_nrm (the paper's; see the module docstring)
    ppo_epochs: int = 1  # updates per batch of rollouts (1 = on-policy, no clipping in effect)
    clip: float = 0.2  # ratio clipping, used from the second pass on
    lr_decay: float = 0.0  # over this last fraction of the run (by steps or max_minutes) the lrs fall linearly to lr_final x
    lr_final: float = 0.1  #   their value; 0: constant lrs
    ar_lr: float = 5e-5  # AR LoRA, online
    ar_head_lr: float = 2e-4
    co_train_ar: bool = True
    ar_every: int = 1  # the online AR step runs every `ar_every` RL steps
    merged_reward: bool = False  # score rewards with a merged copy of the AR in the autocast dtype (re-synced after AR steps)
    reward_from_ar_update: bool = False  # read the rewards off the online AR step's own forward pass (it then runs first)
    micro_batch: int = 128  # sequences per backward pass
    pack_groups: bool = False  # the reference and policy passes read each group's responses behind one copy of the prompt
    #   (the same log-probs, fewer tokens); needs micro_batch a multiple of group and SDPA or eager attention
    cuda_graphs: bool = False  # on one GPU: the reference, policy and online-AR passes replay CUDA graphs (fixed shapes:
    #   rollouts padded to micro_batch rows and max_new_tokens + 1 tokens; the policy pass needs one micro-batch a step)
    profile_step: int = 0  # profile this step (1-based) phase by phase into out/rl_profile.json; 0: never
    frozen_dtype: str | None = None  # "bfloat16": the AV's and AR's frozen weights in bf16 for GRPO (LoRA stays fp32); needs dtype (train_all drops it on fp32 runs)
    save_every: int = 25
    eval_every: int = 50
    eval_n: int = 256
    seed: int = 0
    dtype: str | None = None


class Rollout(NamedTuple):
    vectors: torch.Tensor  # (P*G, D) the activation each sample explains
    responses: list[list[int]]  # (P*G) sampled token ids, EOS appended when the sample finished
    texts: list[str]  # (P*G) parsed payloads (raw text when the parse failed)
    ok: torch.Tensor  # (P*G,) bool: parsed and not truncated
    mse: torch.Tensor  # (P*G,) mse_nrm of the AR's reconstruction, FAIL_MSE where not ok
    rewards: torch.Tensor  # (P*G,)
    advantages: torch.Tensor  # (P*G,)
    lengths: torch.Tensor  # (P*G,) generated tokens


def reconstruction_mse(ar: Reconstructor, texts: list[str], vectors: torch.Tensor, ok: torch.Tensor, dtype=None) -> torch.Tensor:
    """mse_nrm of the AR's reconstruction from each text; FAIL_MSE where `ok` is False. (N,)"""
    m = torch.full((len(texts),), FAIL_MSE)
    idx = ok.nonzero().flatten().tolist()
    if idx:
        pred = ar.reconstruct([texts[i] for i in idx], dtype=dtype, batch_size=256)
        m[idx] = mse_nrm(pred, vectors[idx]).float().cpu()
    return m


LR_SCHEDULE_EXAMPLES = {"lr_decay": 0.2, "lr_final": 0.1}  # the schedule's keys, each a fraction in [0, 1]


def lr_schedule_problem(key: str, value: float) -> str | None:
    """What is wrong with `value` for rl.`key` (lr_decay or lr_final), or None when it is a fraction in [0, 1]."""
    if 0.0 <= value <= 1.0:
        return None
    return f"rl.{key} = {value!r} should be a fraction between 0 and 1: set it to e.g. {LR_SCHEDULE_EXAMPLES[key]}"


def lr_scale(progress: float, decay: float, final: float) -> float:
    """The learning rates' factor at `progress` (the fraction of the run done): 1 until the last `decay` of the run,
    then linearly down to `final` at its end; always 1 with ``decay = 0``."""
    if decay <= 0:
        return 1.0
    return final + (1.0 - final) * min(1.0, max(0.0, (1.0 - progress) / decay))


def to_reward(mse: torch.Tensor, kind: str) -> torch.Tensor:
    """The GRPO reward of each sample's mse_nrm: -mse (`mse`) or -log mse (`log_mse`)."""
    return -mse if kind == "mse" else -torch.log(mse.clamp_min(1e-6))


def eval_curve(history: list[dict]) -> list[dict]:
    """The in-run held-out evals of a GRPO history (`eval_every`), as [{"step", "eval_fve_nrm"}]."""
    return [{"step": h["step"], "eval_fve_nrm": h["eval_fve_nrm"]} for h in history if "eval_fve_nrm" in h]


STEP_PHASES = ("gen_sec", "reward_sec", "ref_sec", "policy_sec", "ar_sec", "sync_sec")  # a step record's time split


def step_split(history: list[dict], skip: int = 5) -> dict:
    """Mean seconds a GRPO step of each phase (`STEP_PHASES`) and in all ("sec"), leaving out the first `skip` steps,
    which include compilation (all of them if the history is no longer)."""
    steady = history[skip:] or history
    return {k: sum(h.get(k) or 0.0 for h in steady) / max(1, len(steady)) for k in (*STEP_PHASES, "sec")}


def group_advantages(rewards: torch.Tensor, group: int) -> torch.Tensor:
    r = rewards.view(-1, group)
    return ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)).flatten()


def _sync(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.monotonic()


@torch.no_grad()
def rollout(av: Verbalizer, ar: Reconstructor | None, vectors: torch.Tensor, cfg: RLConfig, seed: int, dtype=None,
            timing: dict | None = None, first_row: int = 0) -> Rollout:
    """Sample `group` explanations per vector with `av` (a decoding copy: `MergedAV.verbalizer`) and score them with
    `ar` (None: unscored, `scored` fills in the mse, rewards and advantages).

    `first_row`: the index of this rollout's first sample in the step's whole batch (a rank's share under torchrun)."""
    t0 = _sync(av.device)
    rep = vectors.repeat_interleave(cfg.group, dim=0)  # (P*G, D), groups contiguous
    av.model.eval()
    with torch.autocast(device_type=av.device.type, dtype=dtype, enabled=dtype is not None and av.dtype == torch.float32):
        rows = generate(av, rep, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=seed, batch_size=1024,
                        first_row=first_row)
    t1 = _sync(av.device)
    exps = av.decode(rows)
    ok = torch.tensor([e.ok and not e.truncated for e in exps])
    mse = reconstruction_mse(ar, [e.text for e in exps], rep, ok, dtype) if ar is not None else torch.full((len(exps),), FAIL_MSE)
    end = av.end_id
    responses = [[t for t in r if t >= 0] + ([] if (r and r[-1] == -1) else [end]) for r in rows]
    responses = [r if r else [end] for r in responses]
    if timing is not None:
        timing["gen_sec"], timing["reward_sec"] = t1 - t0, _sync(av.device) - t1
    unscored = Rollout(rep, responses, [e.text for e in exps], ok, mse=mse, rewards=None, advantages=None,
                       lengths=torch.tensor([e.n_tokens for e in exps], dtype=torch.float))
    return scored(unscored, mse, cfg)  # rewards and advantages from the mse


def scored(ro: Rollout, mse: torch.Tensor, cfg: RLConfig) -> Rollout:
    """`ro` with the samples' mse_nrm and the rewards and advantages that follow from it."""
    rewards = to_reward(mse, cfg.reward)
    return ro._replace(mse=mse, rewards=rewards, advantages=group_advantages(rewards, cfg.group))


def k3(log_ratio: torch.Tensor, clamp: float | None = None) -> torch.Tensor:
    """The k3 KL estimator per token, exp(d) - d - 1 with d = log p_ref - log p, capped at `clamp` if given.

    Uncapped, one sampled token that the policy has made far less likely than the reference (d = 15) adds e^15 to the
    batch's KL and dominates its gradient. The cap first bounds d to [-20, 20] (so exp cannot overflow into a NaN
    gradient), then caps the term; above the cap the token's KL term has no gradient."""
    if clamp is None:
        return log_ratio.exp() - log_ratio - 1
    d = log_ratio.clamp(-20.0, 20.0)
    return (d.exp() - d - 1).clamp(max=clamp)


def length_batches(responses: list[list[int]], size: int) -> list[list[int]]:
    """Indices in micro-batches of at most `size` responses of similar length (less padding per batch)."""
    order = sorted(range(len(responses)), key=lambda i: len(responses[i]))
    return [order[s : s + size] for s in range(0, len(order), size)]


def _token_logprobs(model: torch.nn.Module, dtype, embeds: torch.Tensor, labels: torch.Tensor, force_mask: bool,
                    layout: tuple[torch.Tensor, ...] = ()) -> torch.Tensor:
    """`response_logprobs` in the form a CUDA graph captures: no padding mask (causal attention is exact for right
    padding; `causal_mask`), autocast without its weight-cast cache. `layout`: packed groups (`group_layout`'s
    position ids, mask and kept positions)."""
    # cache_enabled=False: autocast's weight-cast cache cannot live across CUDA graph replays (StepGraphs)
    with torch.autocast(device_type=embeds.device.type, dtype=dtype, enabled=dtype is not None, cache_enabled=False):
        if layout:
            position_ids, mask, keep = layout
            return response_logprobs(model, embeds, labels, mask, position_ids.expand(embeds.shape[0], -1), keep)
        return response_logprobs(model, embeds, labels, causal_mask(model, embeds.shape[1], embeds.device, force=force_mask))


class TokenLogprobs(torch.nn.Module):
    """(embeds (B, P+R, D), labels (B, R)) -> the response tokens' log-probs (B, R): the reference pass of GRPO (packed
    groups: embeds (B / group, P + group*R, D) and `group_layout`'s three tensors after the labels)."""

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype | None, force_mask: bool = False):
        super().__init__()
        self.model, self.dtype, self.force_mask = model, dtype, force_mask

    def forward(self, embeds: torch.Tensor, labels: torch.Tensor, *layout: torch.Tensor) -> torch.Tensor:
        return _token_logprobs(self.model, self.dtype, embeds, labels, self.force_mask, layout)


class PolicyLoss(torch.nn.Module):
    """The GRPO loss of one micro-batch (the module docstring's variant), from tensors alone, so that it can be a CUDA
    graph: (embeds, labels (B, R), ref_lp (B, R), old_lp (B, R), adv (B,), first (), scale ()) -> (loss, stats (4,):
    KL sum, loss, clipped tokens, tokens; the log-probs (B, R), detached). `first` = 1 on the first pass, whose own
    log-probs are the old ones (ratio 1); `scale` = 1 / the rollouts of the whole batch. Rows with no response token
    (all labels -100) add nothing. Packed groups: as `TokenLogprobs`, the layout after `scale`."""

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype | None, cfg: "RLConfig", force_mask: bool = False):
        super().__init__()
        self.model, self.dtype, self.force_mask = model, dtype, force_mask
        self.clip, self.kl_coef, self.kl_clamp = cfg.clip, cfg.kl_coef, cfg.kl_clamp

    def forward(self, embeds, labels, ref_lp, old_lp, adv, first, scale, *layout):
        lp = _token_logprobs(self.model, self.dtype, embeds, labels, self.force_mask, layout)
        mask = (labels != -100).float()
        old = first * lp.detach() + (1 - first) * old_lp
        ntok = mask.sum(1).clamp_min(1)
        kl = (k3((ref_lp - lp) * mask, self.kl_clamp) * mask).sum(1) / ntok  # k3 estimator per sequence
        ratio = torch.exp(lp - old)
        a = adv[:, None]
        pg = -torch.minimum(ratio * a, ratio.clamp(1 - self.clip, 1 + self.clip) * a)  # (b, R)
        loss = (((pg * mask).sum(1) / ntok + self.kl_coef * kl).sum()) * scale
        stats = torch.stack([kl.detach().sum(), loss.detach(), (((ratio - 1).abs() > self.clip).float() * mask).sum(),
                             mask.sum()])
        return loss, stats, lp.detach()


class PassGraphs(NamedTuple):
    """The three GRPO passes as `StepGraphs` (eager where graphs are off), the fixed response length they use and
    whether the reference and policy passes pack groups."""
    reference: StepGraphs
    policy: StepGraphs
    ar: StepGraphs | None
    length: int | None  # R of every policy/reference batch; None: each batch's longest response
    group: int | None = None  # responses packed per row behind one prompt (rl.pack_groups); None: a row per rollout

    @property
    def mode(self) -> dict:
        return {"reference": self.reference.mode, "policy": self.policy.mode, **({"ar": self.ar.mode} if self.ar else {})}

    @property
    def layout(self) -> str:
        """How the reference and policy passes lay out the rollouts (for the log)."""
        return f"packed groups ({self.group} responses behind one prompt a row)" if self.group else "a row per rollout"

    def close(self) -> None:
        for g in (self.reference, self.policy, self.ar):
            if g is not None:
                g.close()


def pass_graphs(av: Verbalizer, ref: Verbalizer, ar: Reconstructor | None, cfg: "RLConfig", dtype=None) -> PassGraphs:
    """GRPO's passes for this run: CUDA graphs with `cuda_graphs` on one GPU, else the same modules run eagerly
    (`ar` None: no AR pass)."""
    rows = distributed.shard(range(cfg.n_prompts))
    one_batch = (rows.stop - rows.start) * cfg.group <= cfg.micro_batch
    if cfg.cuda_graphs and not one_batch:
        log.warning("rl.cuda_graphs: the policy pass runs eagerly (its %d rollouts take several micro-batches of %d; "
                    "set rl.micro_batch to at least the rollouts a step)", (rows.stop - rows.start) * cfg.group, cfg.micro_batch)
    ref_dtype = dtype if ref.dtype == torch.float32 else None
    graphs = cfg.cuda_graphs
    policy = StepGraphs(PolicyLoss(av.model, dtype, cfg), enabled=graphs and one_batch, max_graphs=1, name="rl_policy")
    reference = StepGraphs(TokenLogprobs(ref.model, ref_dtype), enabled=graphs, max_graphs=1, name="rl_reference")
    # the AR's batch length is its longest parsed text, nearly always within a 16 or two of the cap: two shapes at most,
    # each keeping a memory pool of its own (~10-20 GB at 256 rows x 128 tokens), the others run eagerly
    ar_pass = StepGraphs(ReadLoss(ar, dtype, per_sample=True), enabled=graphs, max_graphs=2, name="rl_ar") if ar is not None else None
    length = cfg.max_new_tokens + 1 if policy.enabled or reference.enabled else None  # the longest a response can be
    return PassGraphs(reference, policy, ar_pass, length, packed_group(av, ref, cfg))


def packed_group(av: Verbalizer, ref: Verbalizer, cfg: "RLConfig") -> int | None:
    """`cfg.group` where `pack_groups` can hold (the micro-batches whole groups, both models' attention able to read
    `group_layout`'s mask at the longest response), else None, with one warning saying why."""
    if not cfg.pack_groups:
        return None
    if cfg.micro_batch % cfg.group:
        log.warning("rl.pack_groups off: rl.micro_batch (%d) is not a multiple of rl.group (%d)", cfg.micro_batch, cfg.group)
        return None
    cap = cfg.max_new_tokens + 1
    if any(packed_attention(m.model, len(m.prompt_ids) + cap) is None for m in (av, ref)):
        log.warning("rl.pack_groups off: the AV's attention cannot take a packed mask (it needs SDPA or eager attention, "
                    "and a sliding window of at least the prompt + %d tokens)", cap)
        return None
    return cfg.group


def _rows(idx: list[int], n: int) -> list[int]:
    """`idx` padded to `n` rows by repeating its first (the padding rows get zero weight)."""
    return idx + [idx[0]] * (n - len(idx)) if n > len(idx) else idx


def policy_step(av: Verbalizer, ref: Verbalizer, ro: Rollout, opt: torch.optim.Optimizer, cfg: RLConfig, dtype=None,
                timing: dict | None = None, graphs: PassGraphs | None = None) -> dict:
    """`ppo_epochs` GRPO updates over the rollout, in length-sorted micro-batches. Returns the mean KL and loss.

    With `graphs` whose passes are captured, every micro-batch has the fixed shape (micro_batch rows, `graphs.length`
    tokens); padding rows have no response tokens. Under torchrun `ro` is this rank's share: losses are normalised by
    the whole batch and gradients summed over ranks."""
    graphs = graphs or pass_graphs(av, ref, None, replace(cfg, cuda_graphs=False), dtype)
    n = int(distributed.total(len(ro.responses)))
    params = [p for p in av.model.parameters() if p.requires_grad]
    fixed, G = graphs.length is not None, graphs.group
    n_local = len(ro.responses)
    mbs = ([list(range(s, min(s + cfg.micro_batch, n_local))) for s in range(0, n_local, cfg.micro_batch)] if G
           else length_batches(ro.responses, cfg.micro_batch))  # packed: whole groups, in order
    empty = [av.end_id]  # a padding row's placeholder response (its labels are then cleared)

    def inputs(model_av: Verbalizer, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        rows = _rows(idx, cfg.micro_batch) if fixed else idx
        responses = [ro.responses[i] if k < len(idx) else empty for k, i in enumerate(rows)]
        layout: tuple[torch.Tensor, ...] = ()
        if G:  # rows[::G]: each group's first rollout (a padding group repeats the first real one)
            R = graphs.length or max(len(r) for r in responses)
            embeds, labels = model_av.group_batch(ro.vectors[rows[::G]], responses, length=R)
            layout = group_layout(model_av.model, len(model_av.prompt_ids), R, G, model_av.device)
        else:
            embeds, _, labels = model_av.batch(ro.vectors[rows], responses, length=graphs.length)
            labels = labels[:, len(model_av.prompt_ids):]
        if len(rows) > len(idx):
            labels[len(idx):] = -100
        return embeds, labels, layout

    t0 = _sync(av.device)
    with torch.no_grad():
        ref_lp = [graphs.reference(e, lab, *lay).float().clone() for e, lab, lay in (inputs(ref, idx) for idx in mbs)]  # a graph's output is overwritten
    t_ref = _sync(av.device) - t0
    old_lp: list[torch.Tensor] = [torch.zeros_like(r) for r in ref_lp]
    av.model.train()
    stats = {"kl": 0.0, "loss": 0.0, "clip_frac": 0.0}
    batches = [inputs(av, idx) for idx in mbs]
    scale = torch.tensor(1.0 / n, device=av.device)
    for epoch in range(cfg.ppo_epochs):
        opt.zero_grad(set_to_none=True)
        first = torch.tensor(1.0 if epoch == 0 else 0.0, device=av.device)
        sums = torch.zeros(4, device=av.device)  # kl, loss, clipped tokens, tokens: read once per pass (one host sync)
        for k, idx in enumerate(mbs):
            embeds, labels, layout = batches[k]
            adv = ro.advantages[_rows(idx, labels.shape[0])].to(av.device) * (torch.arange(labels.shape[0], device=av.device) < len(idx))
            loss, st, lp = graphs.policy(embeds, labels, ref_lp[k].to(av.device), old_lp[k], adv, first, scale, *layout)
            if epoch == 0:  # a graph's outputs are overwritten by its next replay, and carry autograd's flag: detach
                old_lp[k] = lp.detach().clone()
            loss.backward()
            sums += st.detach()
        distributed.all_reduce_grads(params)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        kl_sum, loss_sum, clipped, n_tok = distributed.all_reduce_(sums).tolist()
        stats = {"kl": kl_sum / n, "loss": loss_sum, "clip_frac": clipped / max(n_tok, 1.0)}
    av.model.eval()
    if timing is not None:
        timing["ref_sec"], timing["policy_sec"] = t_ref, _sync(av.device) - t0 - t_ref
    return stats


def ar_step(ar: Reconstructor, opt, ro: Rollout, max_length: int = 256, dtype=None,
            timing: dict | None = None, graph: StepGraphs | None = None) -> tuple[float | None, torch.Tensor]:
    """One supervised AR step on the parsed samples (the mean over every rank's, gradients summed over ranks).

    Returns the loss and each sample's mse_nrm as the step's forward pass read it, before the update (FAIL_MSE where
    not parsed): the rewards with `reward_from_ar_update`. With `timing`, the forward's time goes to reward_sec.
    With a captured `graph` (`PassGraphs.ar`) the batch is padded to all the rollouts' rows (zero weight) and its
    texts to a multiple of `graphs.GRAPH_PAD` tokens, so a few shapes cover the run."""
    t0 = _sync(ar.device)
    idx = ro.ok.nonzero().flatten().tolist()
    n_all = int(distributed.total(len(idx)))
    mse = torch.full((len(ro.texts),), FAIL_MSE)
    if not n_all:
        return None, mse
    params = [p for p in ar.parameters() if p.requires_grad]
    graph = graph or StepGraphs(ReadLoss(ar, dtype, per_sample=True), enabled=False)
    ar.train()
    opt.zero_grad(set_to_none=True)
    loss_value = 0.0
    if idx:  # a rank without parsed samples still joins the gradient sum, with zeros
        rows = _rows(idx, len(ro.texts)) if graph.enabled else idx
        per = graph(*ar_inputs(ar, [ro.texts[i] for i in rows], ro.vectors[rows], max_length, pad_to=graph.pad_to))
        per_real = per[: len(idx)]
        mse[idx] = per_real.detach().float().cpu()
        loss_value = per_real.detach().mean().item()
        if timing is not None:  # added to the rollout's own share (decoding the texts)
            timing["reward_sec"] = timing.get("reward_sec", 0.0) + _sync(ar.device) - t0
        weight = (torch.arange(len(rows), device=per.device) < len(idx)).float() / n_all  # this rank's share of the mean
        (per * weight).sum().backward()
    distributed.all_reduce_grads(params)
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    ar.eval()
    return distributed.batch_mean(loss_value, len(idx), n_all), mse


def train_rl(cfg: RLConfig, av: Verbalizer, ar: Reconstructor, pairs: Pairs, eval_pairs: Pairs | None, ref: Reference,
             out: Path, budget: Budget | None = None, log_fn: Callable[[dict], None] | None = None,
             on_checkpoint: Callable[[int], None] | None = None) -> dict:
    """Run GRPO until `cfg.steps` or the budget; resumable from ``out/rl_state.pt``. Returns the stage summary."""
    from nlakit import engine

    dtype = {"bfloat16": torch.bfloat16}.get(cfg.dtype or "")
    data = pairs.split("rl")
    if len(data) == 0 and cfg.steps > 0:
        raise NlakitError(f"the training pairs have no `rl` split ({len(pairs)} pairs in all), so GRPO has nothing to explain",
                          "sample more documents (--n-docs), or run only the supervised stages (--rl-steps 0)")
    distributed.require_shares({"rl.n_prompts": cfg.n_prompts} if cfg.steps > 0 else {})
    if cfg.reward not in REWARDS:
        raise NlakitError(f"rl.reward = {cfg.reward!r} is not a known reward", f"set rl.reward to one of {', '.join(REWARDS)}")
    problems = [m for m in (lr_schedule_problem(k, getattr(cfg, k)) for k in LR_SCHEDULE_EXAMPLES) if m]
    if problems:
        raise NlakitError("; ".join(problems), "fix the rl keys named above")
    ref_av = MergedAV(av, dtype).verbalizer  # frozen supervised AV (KL anchor), merged: a plain forward
    cast_frozen("rl.frozen_dtype", cfg.frozen_dtype, cfg.dtype, av.model, ar.backbone)  # after the reference copy
    av_params = [p for p in av.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(av_params, lr=cfg.lr, weight_decay=0.0)
    ar_opt = ar_optimizer(ar, cfg.ar_lr, cfg.ar_head_lr)
    base_lrs = [group["lr"] for group in (*opt.param_groups, *ar_opt.param_groups)]  # the config's, before a resume's load
    B = fve_baseline(ref.mu_nrm)
    state_path = out / "rl_state.pt"
    history: list[dict] = []
    start = 0
    seed_everything(cfg.seed)
    state = load_state(state_path)
    if state is not None:
        load_lora_state(av.model, state["av_lora"])
        load_lora_state(ar.backbone, state["ar_lora"])
        ar.value_head.load_state_dict(state["ar_head"])
        opt.load_state_dict(state["opt"])
        ar_opt.load_state_dict(state["ar_opt"])
        set_rng_state(state["rng"])
        history, start = state["history"], state["step"]
        log.info("resuming RL at step %d", start)
    decoder = MergedAV(av, dtype).sync()  # what the engine decodes with; re-synced after every update
    reads_every_step = cfg.reward_from_ar_update and cfg.co_train_ar and cfg.ar_every == 1  # no step reads a scorer
    scorer = MergedAR(ar, dtype).sync() if cfg.merged_reward and not reads_every_step else None  # what rewards are read with (else the AR itself)
    graphs = pass_graphs(av, ref_av, ar, cfg, dtype)  # the reference, policy and AR passes (CUDA graphs with cuda_graphs)

    def checkpoint(step: int) -> None:
        if not distributed.is_main():
            return
        save_state(state_path, {"av_lora": lora_state(av.model), "ar_lora": lora_state(ar.backbone),
                                "ar_head": ar.value_head.state_dict(), "opt": opt.state_dict(), "ar_opt": ar_opt.state_dict(),
                                "rng": rng_state(), "history": history, "step": step, "config": asdict(cfg)})
        if on_checkpoint:
            on_checkpoint(step)

    g = torch.Generator().manual_seed(cfg.seed)
    for _ in range(start):  # keep the prompt sampler in step after a resume
        torch.randint(0, len(data), (cfg.n_prompts,), generator=g)
    step = start
    time_cap = math.inf if cfg.max_minutes is None else cfg.max_minutes * 60
    capped = False
    spent = sum(h["sec"] for h in history)  # the steps' own time so far (resumed runs included)
    for step in range(start, cfg.steps):
        if distributed.any_rank(spent >= time_cap):  # ranks agree on when to stop
            log.info("RL reached max_minutes=%s at step %d/%d", cfg.max_minutes, step, cfg.steps)
            capped = True
            break
        if budget is not None and distributed.any_rank(budget.out(margin=90)):
            log.warning("RL stopped by the time budget at step %d/%d", step, cfg.steps)
            break
        t0 = time.monotonic()
        timing: dict[str, float] = {}
        scale = lr_scale(max(step / cfg.steps, spent / time_cap), cfg.lr_decay, cfg.lr_final)
        for group, base in zip((*opt.param_groups, *ar_opt.param_groups), base_lrs):  # a load replaces the groups
            group["lr"] = base * scale
        idx = torch.randint(0, len(data), (cfg.n_prompts,), generator=g)  # the same on every rank
        mine = distributed.shard(range(cfg.n_prompts))  # this rank's prompts, a contiguous share
        idx = idx[mine.start : mine.stop]
        prof = PhaseProfiler(av.device, enabled=cfg.profile_step == step + 1)  # off: each phase is a plain call
        ar_now = cfg.co_train_ar and step % cfg.ar_every == 0
        fused = ar_now and cfg.reward_from_ar_update  # the AR step first, its forward pass gives the rewards
        ro = prof.phase("rollout", lambda: rollout(decoder.verbalizer, None if fused else scorer.reconstructor if scorer else ar,
                                                   data.vectors[idx], cfg, seed=cfg.seed * 100003 + step, dtype=dtype,
                                                   timing=timing, first_row=mine.start * cfg.group))
        ar_l = None
        if fused:
            t_ar, read_before = _sync(av.device), timing.get("reward_sec", 0.0)
            ar_l, mse_read = prof.phase("reward_and_ar_update", lambda: ar_step(ar, ar_opt, ro, dtype=dtype, timing=timing, graph=graphs.ar))
            ro = scored(ro, mse_read, cfg)
            timing["ar_sec"] = _sync(av.device) - t_ar - (timing.get("reward_sec", 0.0) - read_before)  # the rest: backward + step
        stats = prof.phase("reference_and_policy", lambda: policy_step(av, ref_av, ro, opt, cfg, dtype, timing=timing, graphs=graphs))
        if not fused:
            t_ar = _sync(av.device)
            ar_l = prof.phase("ar_update", lambda: ar_step(ar, ar_opt, ro, dtype=dtype, graph=graphs.ar)[0]) if ar_now else None
            timing["ar_sec"] = _sync(av.device) - t_ar
        t_s = time.monotonic()
        prof.phase("weight_sync", lambda: (decoder.sync(), scorer.sync() if scorer is not None and ar_l is not None else None))
        timing["sync_sec"] = _sync(av.device) - t_s
        if prof.enabled and distributed.is_main():
            write_json(out / "rl_profile.json", {"step": step + 1, **prof.result()})
        ctx = [data.rows[i]["text"] if "text" in data.rows[i] else "" for i in idx.repeat_interleave(cfg.group).tolist()]
        copies = [copy_rate(t, c) for t, c in zip(ro.texts, ctx)]
        mse, ok, lengths, copies = _whole_batch(ro, copies)
        rec = {"step": step + 1, "reward": to_reward(mse, cfg.reward).mean().item(),
               "fve_nrm": (1 - mse[ok] / B).mean().item() if ok.any() else None,  # on parsed samples
               "ok_rate": ok.float().mean().item(), "kl": stats["kl"], "clip_frac": stats["clip_frac"],
               "length": lengths.mean().item(),
               "copy_rate_4gram": sum(copies) / len(copies),
               "ar_loss": ar_l, "lr_scale": scale, "sec": time.monotonic() - t0, **timing}
        if av.device.type == "cuda":  # the graphs' pools, the engine and the passes together
            rec["cuda_reserved_gb"] = torch.cuda.memory_reserved(av.device) / 2**30
        if step == start:
            rec["engine_mode"] = engine.mode_of(decoder.verbalizer)
            rec["pass_modes"] = graphs.mode  # captured on this first step (or why not)
            rec["pass_layout"] = graphs.layout
        if prof.enabled:
            rec["profiled"] = True  # its times include the profiler's overhead
        history.append(rec)
        spent += rec["sec"]
        if log_fn:
            log_fn({"stage": "rl", **rec})
        if eval_pairs is not None and cfg.eval_every and (step + 1) % cfg.eval_every == 0 and distributed.is_main():
            ev = evaluate_heldout(decoder.verbalizer, ar, eval_pairs, ref, max_new_tokens=cfg.max_new_tokens, dtype=dtype,
                                  n=cfg.eval_n, n_examples=0)
            history[-1]["eval_fve_nrm"] = ev["fve_nrm"]["mean"]
            if log_fn:
                log_fn({"stage": "rl_eval", "step": step + 1, "eval_fve_nrm": ev["fve_nrm"]["mean"]})
        if (step + 1) % cfg.save_every == 0:
            checkpoint(step + 1)
    else:
        step = cfg.steps
    done_steps = history[-1]["step"] if history else start
    pass_modes = graphs.mode
    graphs.close()
    checkpoint(done_steps)
    finished = done_steps >= cfg.steps or capped
    summary = {"config": asdict(cfg), "steps_done": done_steps, "finished": finished,
               "stopped_by": "steps" if done_steps >= cfg.steps else "max_minutes" if capped else "budget",
               "seconds": spent, "pass_modes": pass_modes, "pass_layout": graphs.layout, "history": history}
    if finished and distributed.is_main():
        write_stage_done(out, "rl", {k: v for k, v in summary.items() if k != "history"})
    distributed.barrier()
    return summary


def _whole_batch(ro: Rollout, copies: list[float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[float]]:
    """The step's mse, ok flags, lengths and copy rates over every rank's samples, in batch order (for the log)."""
    parts = distributed.all_gather((ro.mse, ro.ok, ro.lengths, copies))
    return (*(torch.cat([p[k] for p in parts]) for k in range(3)), [c for p in parts for c in p[3]])
