"""Is a LoRA training step bound by the GPU or by launching kernels? Times the AV-SFT step shape, eager and compiled.

    python benchmarks/train_step.py --device cuda --out train_step.json      # ~2 minutes on one H200; no weights needed

The model is SmolLM2-135M's shape with random weights (the time of a step does not depend on the values), LoRA r=24
on every projection as `nlakit.train.common.add_lora` puts it, fp32 weights under bf16 autocast as the pipeline
trains. One step = forward on `inputs_embeds`, cross-entropy over every position, backward, gradient clip, AdamW.
If the time per step barely grows with the batch, the step is bound by kernel launches, not by the GPU, and a larger
batch (or a compiled step) is nearly free.
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
from nlakit.train.common import add_lora  # noqa: E402

SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, max_position_embeddings=2048, rope_theta=100000.0, tie_word_embeddings=True)


def make_model(device: str, n_layers: int | None):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    shape = {**SMOLLM2_135M, **({"num_hidden_layers": n_layers} if n_layers else {})}
    model = LlamaForCausalLM(LlamaConfig(**shape)).to(device)
    model.requires_grad_(False)
    model = add_lora(model, 24)
    for n, p in model.named_parameters():
        p.requires_grad_("lora_" in n)
    return model.train()


def time_steps(model, batch: int, length: int, steps: int, device: str, compiled: bool) -> dict:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    d = model.config.hidden_size
    g = torch.Generator(device="cpu").manual_seed(batch)
    embeds = torch.randn(batch, length, d, generator=g).to(device) * 0.02
    labels = torch.randint(0, model.config.vocab_size, (batch, length), generator=g).to(device)
    mask = torch.ones(batch, length, dtype=torch.long, device=device)
    fwd = torch.compile(model, dynamic=False) if compiled else model
    amp = device.startswith("cuda")

    def step() -> float:
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=amp):
            logits = fwd(inputs_embeds=embeds, attention_mask=mask, use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten())
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
    return {"batch": batch, "length": length, "compiled": compiled, "first_step_sec": first, "sec_per_step": sec,
            "tokens_per_sec": batch * length / sec}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batches", default="64,128,256")
    ap.add_argument("--length", type=int, default=96, help="tokens per sequence (AV prompt + a 66-token explanation)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--layers", type=int, default=None, help="fewer blocks (a CPU smoke run)")
    ap.add_argument("--compile", default="64,128", help="batches also timed compiled (empty: none)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    model = make_model(args.device, args.layers)
    res = {"command": "python benchmarks/train_step.py " + " ".join(sys.argv[1:]),
           "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU",
           "torch": torch.__version__, "rows": []}
    plan = [(int(b), False) for b in args.batches.split(",") if b] + [(int(b), True) for b in args.compile.split(",") if b]
    for b, compiled in plan:
        try:
            row = time_steps(model, b, args.length, args.steps, args.device, compiled=compiled)
        except Exception as e:  # noqa: BLE001 - a failed compile is a result here
            row = {"batch": b, "length": args.length, "compiled": compiled, "error": f"{type(e).__name__}: {e}"[:300]}
        res["rows"].append(row)
        print(json.dumps(row), flush=True)
        if args.out:  # after every row: a run cut short keeps what it measured
            write_json(Path(args.out), res)

if __name__ == "__main__":
    main()
