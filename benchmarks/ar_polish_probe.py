"""Probe: does a short AR fine-tune on the AV's *greedy* explanations help the held-out score?

GRPO co-trains the AR on sampled (T = 1) explanations, while every evaluation reads greedy ones. This probe takes a
bundle, explains N training activations greedily, runs a few supervised AR steps on those (explanation, activation)
pairs (`nlakit.train.rl.ar_step`, the online AR step of GRPO) and saves the bundle with the tuned AR, so that
`nlakit eval` on the same held-out positions gives a paired AR-only comparison (the AV, hence every explanation, is
unchanged):

    python benchmarks/ar_polish_probe.py --nla BUNDLE --n 1024 --lr 1e-4 --head-lr 2e-4 --epochs 2 --out polished
    nlakit eval --nla polished --data heldout.jsonl.gz --n-positions 480 --seed 2 --max-new-tokens 96 --out pol.json
    python benchmarks/paired_eval.py pol.json BUNDLE_eval.json

Training activations: `eval_selection` on the training corpus (4 positions per document, documents cut to 160
tokens, seed 7), extracted at the bundle's layer. CPU, fp32.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from nlakit.blocks import extract_rows  # noqa: E402
from nlakit.bundle import load_nla, save_bundle  # noqa: E402
from nlakit.targets import load_target  # noqa: E402
from nlakit.train.ar_sft import ar_optimizer  # noqa: E402
from nlakit.train.datagen import eval_selection  # noqa: E402
from nlakit.train.heldout import generate  # noqa: E402
from nlakit.train.pipeline import default_corpus  # noqa: E402
from nlakit.train.rl import Rollout, ar_step  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nla", default="default")
    ap.add_argument("--target", default="smollm2")
    ap.add_argument("--data", default=None, help="training corpus (default: the shared train.jsonl.gz)")
    ap.add_argument("--n", type=int, default=1024, help="training activations to explain")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--head-lr", type=float, default=2e-4)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", required=True, help="where the bundle with the tuned AR goes")
    args = ap.parse_args()
    torch.manual_seed(0)
    t0 = time.time()
    nla = load_nla(args.nla)
    target = load_target(args.target, device="cpu")
    sel = eval_selection(target, args.data or default_corpus("train.jsonl.gz"), n=args.n, max_tokens=160, per_doc=4, seed=7)
    rows = [target.encode([text], max_length=160).input_ids[0].tolist() for _, text, _ in sel]
    hidden = extract_rows(target.model, rows, nla.meta.layer)
    vectors = torch.stack([hidden[k][p] for k, (_, _, pos) in enumerate(sel) for p in pos])
    exps = nla.av.decode(generate(nla.av, vectors, max_new_tokens=96, temperature=0.0, batch_size=64))
    texts, ok = [e.text for e in exps], [bool(e.ok and not e.truncated) for e in exps]
    print(f"{len(texts)} greedy explanations ({sum(ok)} parsed), {time.time() - t0:.0f} s", flush=True)
    ar = nla.ar
    for name, p in ar.backbone.named_parameters():  # a loaded bundle is frozen: train the adapters and the head
        p.requires_grad_("lora_" in name)
    ar.value_head.requires_grad_(True)
    opt = ar_optimizer(ar, args.lr, args.head_lr)
    for epoch in range(args.epochs):
        order = torch.randperm(len(texts)).tolist()
        losses = []
        for s in range(0, len(order), args.batch_size):
            idx = order[s : s + args.batch_size]
            ro = Rollout(vectors[idx], [[0]] * len(idx), [texts[i] for i in idx], torch.tensor([ok[i] for i in idx]),
                         None, None, None, None)
            losses.append(ar_step(ar, opt, ro)[0])
        done = [x for x in losses if x is not None]
        print(f"epoch {epoch + 1}: mean mse_nrm before each step {sum(done) / max(1, len(done)):.4f}, {time.time() - t0:.0f} s",
              flush=True)
    save_bundle(nla, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
