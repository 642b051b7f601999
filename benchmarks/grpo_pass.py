"""GRPO's reference and policy passes at the pipeline's shape: a row per rollout, or each group packed behind one prompt.

    python benchmarks/grpo_pass.py --device cuda --out grpo_pass.json      # ~1 minute on one H200

The model is SmolLM2-135M's shape with random weights (`train_step.make_model`: LoRA r=24 on every projection, frozen
weights in bf16 under bf16 autocast), the reference the same shape without adapters (bf16), as `rl.py` merges it. One
step = the reference log-probs (no grad) and one policy update (`nlakit.train.rl.PolicyLoss` forward + backward,
gradient clip, AdamW) on `--groups` x `--group` rollouts: the prompt is `--prompt` tokens (87 for the SmolLM2 AV),
the responses are right-padded to `--length` tokens (max_new_tokens + 1, the fixed shape of `rl.cuda_graphs`) with
real lengths drawn from 40 to `--length`. `rows`: a row of prompt + response per rollout (the default until
`rl.pack_groups`); `packed`: one row per group, the prompt once and then the group's responses
(`Verbalizer.group_batch`, `verbalizer.group_layout`). Both run eagerly and through `StepGraphs` as on one GPU, and
the reference log-probs of the two layouts (the same frozen model, the same rollouts) are compared.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_step import make_model  # noqa: E402

from nlakit.io import write_json  # noqa: E402
from nlakit.train.graphs import StepGraphs  # noqa: E402
from nlakit.train.rl import PolicyLoss, RLConfig, TokenLogprobs  # noqa: E402
from nlakit.verbalizer import group_layout  # noqa: E402


def rollouts(groups: int, group: int, prompt: int, length: int, d: int, vocab: int, seed: int = 0):
    """Prompt embeddings (groups, P, D), responses' embeddings (groups*group, R, D) and labels (groups*group, R)."""
    g = torch.Generator().manual_seed(seed)
    prompts = torch.randn(groups, prompt, d, generator=g) * 0.02
    resp = torch.randn(groups * group, length, d, generator=g) * 0.02
    labels = torch.randint(0, vocab, (groups * group, length), generator=g)
    lengths = torch.randint(min(40, length), length + 1, (groups * group,), generator=g)
    labels[torch.arange(length)[None, :] >= lengths[:, None]] = -100
    return prompts, resp, labels


def inputs(layout: str, prompts, resp, labels, group: int, device: str, model):
    """(embeds, labels, *layout tensors) of one micro-batch holding every rollout."""
    n, P, R = resp.shape[0], prompts.shape[1], resp.shape[1]
    if layout == "rows":
        embeds = torch.cat([prompts.repeat_interleave(group, 0), resp], 1)
        return embeds.to(device), labels.to(device)
    embeds = torch.cat([prompts, resp.reshape(n // group, group * R, -1)], 1)
    return (embeds.to(device), labels.to(device), *group_layout(model, P, R, group, device))


def time_layout(policy_model, ref_model, layout: str, graphs: bool, args, data) -> dict:
    device, amp = args.device, args.device.startswith("cuda")
    dtype = torch.bfloat16 if amp else None
    cfg = RLConfig(kl_coef=0.02)
    if amp:
        torch.cuda.reset_peak_memory_stats()
    ref_pass = StepGraphs(TokenLogprobs(ref_model, dtype), enabled=graphs, max_graphs=1, name=f"ref {layout}")
    policy_pass = StepGraphs(PolicyLoss(policy_model, dtype, cfg), enabled=graphs, max_graphs=1, name=f"policy {layout}")
    params = [p for p in policy_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    batch = inputs(layout, *data, args.group, device, policy_model)
    embeds, labels, lay = batch[0], batch[1], batch[2:]
    n = labels.shape[0]
    adv = torch.randn(n, generator=torch.Generator().manual_seed(2)).to(device)
    first, scale = torch.tensor(1.0, device=device), torch.tensor(1.0 / n, device=device)
    sync = torch.cuda.synchronize if amp else (lambda: None)

    def step() -> tuple[float, float, torch.Tensor]:  # reference s, policy s, the reference log-probs
        t0 = time.perf_counter()
        with torch.no_grad():
            ref_lp = ref_pass(embeds.to(next(ref_model.parameters()).dtype), labels, *lay).float().clone()
        sync()
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss, _, _ = policy_pass(embeds, labels, ref_lp, torch.zeros_like(ref_lp), adv, first, scale, *lay)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sync()
        return t1 - t0, time.perf_counter() - t1, ref_lp

    t0 = time.perf_counter()
    _, _, ref_lp = step()
    first_sec = time.perf_counter() - t0
    for _ in range(2):
        step()
    times = [step()[:2] for _ in range(args.steps)]
    ref_sec = sum(t[0] for t in times) / len(times)
    pol_sec = sum(t[1] for t in times) / len(times)
    tokens = embeds.shape[0] * embeds.shape[1]
    row = {"layout": layout, "graphs": graphs, "rows": embeds.shape[0], "row_tokens": embeds.shape[1], "tokens": tokens,
           "first_step_sec": first_sec, "reference_sec": ref_sec, "policy_sec": pol_sec, "both_sec": ref_sec + pol_sec,
           "pass_modes": {"reference": ref_pass.mode, "policy": policy_pass.mode}}
    if amp:
        row["peak_reserved_gb"] = torch.cuda.max_memory_reserved() / 2**30
    ref_pass.close()
    policy_pass.close()
    return row, ref_lp.cpu()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--groups", type=int, default=32, help="activations a step (rl.n_prompts)")
    ap.add_argument("--group", type=int, default=8, help="samples per activation (rl.group)")
    ap.add_argument("--prompt", type=int, default=87, help="AV prompt tokens (87 for the SmolLM2 AV)")
    ap.add_argument("--length", type=int, default=97, help="response tokens a rollout is padded to (max_new_tokens + 1)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--layers", type=int, default=None, help="fewer blocks (a CPU smoke run)")
    ap.add_argument("--modes", default="eager,graphs", help="eager and/or graphs (graphs only on a GPU)")
    ap.add_argument("--layouts", default="packed,rows", help="packed and/or rows")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    policy_model = make_model(args.device, args.layers, frozen_bf16=True)
    ref_model = make_model(args.device, args.layers, frozen_bf16=True, lora_rank=None, seed=1)
    cfg = policy_model.config
    data = rollouts(args.groups, args.group, args.prompt, args.length, cfg.hidden_size, cfg.vocab_size)
    res = {"command": "python benchmarks/grpo_pass.py " + " ".join(sys.argv[1:]),
           "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU",
           "torch": torch.__version__, "shape": {k: getattr(args, k) for k in ("groups", "group", "prompt", "length")},
           "rows": []}
    lps = {}
    modes = [m == "graphs" for m in args.modes.split(",") if m and (m == "eager" or args.device.startswith("cuda"))]
    for graphs in modes:
        for layout in [x for x in args.layouts.split(",") if x]:
            try:
                row, lps[layout] = time_layout(policy_model, ref_model, layout, graphs, args, data)
            except Exception as e:  # noqa: BLE001 - a failed pass is a result here
                row = {"layout": layout, "graphs": graphs, "error": f"{type(e).__name__}: {e}"[:300]}
            res["rows"].append(row)
            print(json.dumps(row), flush=True)
            gc.collect()  # a captured graph's memory pool goes with its last reference, some of them in cycles
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
        if "rows" in lps and "packed" in lps:
            diff = (lps["rows"] - lps["packed"]).abs()[data[2] != -100]  # over the response tokens
            res[f"reference_logprob_abs_diff_{'graphs' if graphs else 'eager'}"] = {"max": float(diff.max()), "mean": float(diff.mean())}
        lps.clear()
        if args.out:
            write_json(Path(args.out), res)
    by = {(r["layout"], r["graphs"]): r for r in res["rows"] if "error" not in r}
    for graphs in (False, True):
        if ("rows", graphs) in by and ("packed", graphs) in by:
            res[f"packed_over_rows_{'graphs' if graphs else 'eager'}"] = by[("packed", graphs)]["both_sec"] / by[("rows", graphs)]["both_sec"]
    print(json.dumps({k: v for k, v in res.items() if k.startswith(("packed_over", "reference_logprob"))}))
    if args.out:
        write_json(Path(args.out), res)


if __name__ == "__main__":
    main()
