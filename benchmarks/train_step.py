"""Is a LoRA training step bound by the GPU or by launching kernels? Times the AV-SFT step: eager, CUDA graphs, compiled.

    python benchmarks/train_step.py --device cuda --graphs 64,128 --compile "" --out train_step.json   # ~1 minute, one H200

The model is SmolLM2-135M's shape with random weights (the time of a step does not depend on the values), LoRA r=24
on every projection as `nlakit.train.common.add_lora` puts it, frozen weights in bf16 under bf16 autocast as the
pipeline trains (`--fp32-frozen`: fp32). One step = the AV SFT loss (`nlakit.train.av_sft.ResponseLoss`: forward on
`inputs_embeds`, cross-entropy over the response half of each row), backward, gradient clip, AdamW; `--graphs`
batches run it through `nlakit.train.graphs.StepGraphs` as the pipeline does on one GPU (the row says whether the
capture held). If the eager time per step barely grows with the batch, the step is bound by kernel launches, not by
the GPU, and graphs (or compiling) remove most of it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from nlakit.io import write_json  # noqa: E402
from nlakit.train.av_sft import ResponseLoss  # noqa: E402
from nlakit.train.common import add_lora, freeze_to  # noqa: E402
from nlakit.train.graphs import StepGraphs  # noqa: E402

SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, max_position_embeddings=2048, rope_theta=100000.0, tie_word_embeddings=True)


def make_model(device: str, n_layers: int | None, frozen_bf16: bool, lora_rank: int | None = 24, seed: int = 0):
    """SmolLM2-135M's shape with random weights, LoRA of `lora_rank` on every projection (None: no adapters, in eval
    mode, as GRPO's merged reference), the frozen weights in bf16 on a GPU with `frozen_bf16`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    shape = {**SMOLLM2_135M, **({"num_hidden_layers": n_layers} if n_layers else {})}
    model = LlamaForCausalLM(LlamaConfig(**shape)).to(device)
    model.requires_grad_(False)
    if lora_rank:
        model = add_lora(model, lora_rank)
        for n, p in model.named_parameters():
            p.requires_grad_("lora_" in n)
    if frozen_bf16 and device.startswith("cuda"):
        freeze_to(model, torch.bfloat16)
    return model.train() if lora_rank else model.eval()


def time_steps(model, batch: int, length: int, steps: int, device: str, mode: str) -> dict:
    """mode: eager, graphs (StepGraphs) or compiled (torch.compile of the model, one static shape)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    d = model.config.hidden_size
    g = torch.Generator(device="cpu").manual_seed(batch)
    amp = device.startswith("cuda")
    dtype = torch.bfloat16 if amp else None
    embeds = (torch.randn(batch, length, d, generator=g) * 0.02).to(device, next(model.parameters()).dtype)
    labels = torch.randint(0, model.config.vocab_size, (batch, length // 2), generator=g).to(device)
    loss_module = ResponseLoss(torch.compile(model, dynamic=False) if mode == "compiled" else model, dtype)
    graphs = StepGraphs(loss_module, name=f"bench b={batch}") if mode == "graphs" else None
    fwd = graphs or loss_module

    def step() -> float:
        loss = fwd(embeds, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item()

    sync = torch.cuda.synchronize if amp else (lambda: None)
    t0 = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - t0
    for _ in range(2):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    sec = (time.perf_counter() - t0) / steps
    row = {"batch": batch, "length": length, "mode": mode, "compiled": mode == "compiled", "first_step_sec": first,
           "sec_per_step": sec, "tokens_per_sec": batch * length / sec}
    if graphs is not None:
        row["graphs"] = graphs.mode
        graphs.close()
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batches", default="64,128,256")
    ap.add_argument("--length", type=int, default=96, help="tokens per sequence (AV prompt + a 66-token explanation)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--layers", type=int, default=None, help="fewer blocks (a CPU smoke run)")
    ap.add_argument("--graphs", default="64,128,256", help="batches also timed through CUDA graphs (empty: none)")
    ap.add_argument("--compile", default="", help="batches also timed compiled (empty: none; ~2 minutes a shape)")
    ap.add_argument("--fp32-frozen", action="store_true", help="frozen weights in fp32 (the pipeline keeps them in bf16)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    model = make_model(args.device, args.layers, frozen_bf16=not args.fp32_frozen)
    res = {"command": "python benchmarks/train_step.py " + " ".join(sys.argv[1:]),
           "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU",
           "torch": torch.__version__, "rows": []}
    plan = [(int(b), mode) for mode, batches in (("eager", args.batches), ("graphs", args.graphs), ("compiled", args.compile))
            for b in batches.split(",") if b]
    for b, mode in plan:
        try:
            row = time_steps(model, b, args.length, args.steps, args.device, mode)
        except Exception as e:  # noqa: BLE001 - a failed compile is a result here
            row = {"batch": b, "length": args.length, "mode": mode, "error": f"{type(e).__name__}: {e}"[:300]}
        res["rows"].append(row)
        print(json.dumps(row), flush=True)
        if args.out:  # after every row: a run cut short keeps what it measured
            write_json(Path(args.out), res)

if __name__ == "__main__":
    main()
