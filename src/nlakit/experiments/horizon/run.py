"""`nlakit experiment horizon`: how far ahead of the next sentence can each reader of an activation see it coming?

    nlakit experiment horizon --target smollm2 --nla default --data heldout.jsonl.gz --train-data train.jsonl.gz

1. Prompts are the first `prompt_tokens` tokens of held-out documents; the target continues each greedily.
2. In each continuation, every sentence that starts after the prompt and ends inside the continuation is a
   *next sentence*; for k in `ks`, the activation k tokens before its first token is read by every reader:
   - ``nla``: the NLA's explanation of the layer-L activation;
   - ``logit_lens``: the top tokens of the layer-L residual put through the final norm and the unembedding;
   - ``tuned_lens``: the top tokens of an affine (ridge) map from layer L to the final hidden state, fitted on
     training positions, then unembedded (a tuned-lens-style probe);
   - ``model_next``: the top tokens of the model's own next-token distribution (what the output itself shows);
   - ``context_echo``: the last `echo_tokens` tokens of text up to that position, a control that knows only the
     past (a continuation that repeats its context rewards any reader that describes the context);
   - ``greedy``: the model's own greedy continuation from that position (an upper bound: the next sentence is its
     own greedy output, so this reader sees it once it is within reach; with sampled continuations,
     `continuation_temperature` > 0, it is only the model's most likely future, no longer the actual one).
3. Each reader's text is compared with the actual next sentence: sentence-embedding cosine (all-MiniLM-L6-v2),
   content-word recall and F1; the shuffled control pairs the reader's text with another sample's next sentence at
   the same k. Curves over k carry bootstrap 95% intervals.
4. The same curves and table again on the *novel* next sentences only: those of which at most `novel_max_recall`
   of the content words already occur in the text before them. A continuation that repeats its context lets any
   reader of the past look like a reader of the future; on novel sentences it cannot (the context echo falls).
"""

from __future__ import annotations

import logging
import random
import re
import time
from dataclasses import asdict, dataclass

import torch

from nlakit.errors import NlakitError
from nlakit.experiments.common import Progress
from nlakit.experiments.horizon.similarity import default_embedder, overlap
from nlakit.metrics import summarize

log = logging.getLogger(__name__)

READERS = ("nla", "logit_lens", "tuned_lens", "model_next", "context_echo", "greedy")
METRICS = ("embed_cos", "recall", "f1")
_END = re.compile(r"""([.!?]["')\]]*\s*$)|\n""")


@dataclass(frozen=True)
class HorizonConfig:
    data: str  # held-out JSONL(.gz): prompts are the starts of its documents
    target: str = "smollm2"
    nla: str = "default"
    train_data: str | None = None  # training JSONL for the tuned-lens probe (skipped without it)
    n_prompts: int = 24
    prompt_tokens: int = 48
    continuation_tokens: int = 96
    continuation_temperature: float = 0.0  # 0 = greedy continuations; > 0 samples them (seeded), which repeat less
    ks: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
    table_ks: tuple[int, ...] = (1, 4, 16)
    kinds: tuple[str, ...] = ("prose", "fiction")  # document kinds used as prompts (all when empty)
    top_k: int = 10  # tokens shown by the lens readers
    echo_tokens: int = 24  # context the context_echo control quotes
    min_sentence_tokens: int = 4
    max_new_tokens: int = 96  # explanation cap
    probe_docs: int = 200
    probe_tokens: int = 128
    seed: int = 0
    batch_size: int = 16
    device: str = "cpu"
    dtype: str = "float32"
    n_examples: int = 8
    novel_max_recall: float = 0.5  # a next sentence is novel when at most this share of its content words came before

    def __post_init__(self):
        problems = ["continuation_temperature must be >= 0"] if self.continuation_temperature < 0 else []
        problems += [f"{n} must be >= 1" for n in ("n_prompts", "prompt_tokens", "continuation_tokens", "top_k", "batch_size")
                    if getattr(self, n) < 1]
        if not 0.0 <= self.novel_max_recall <= 1.0:
            problems.append("novel_max_recall must be between 0 and 1")
        if not self.ks or min(self.ks) < 1:
            problems.append("ks must be positive token offsets")
        if problems:
            raise NlakitError("bad horizon settings: " + "; ".join(problems), "fix the options named above")


@dataclass
class Sample:
    seq: int  # which continuation
    start: int  # first token of the next sentence (absolute index)
    k: int  # tokens before it
    sentence: str  # the actual next sentence
    past_recall: float = 0.0  # share of its content words already in the text before it


# ---- data ------------------------------------------------------------------------------------------------
def prompts(target, cfg: HorizonConfig) -> list[list[int]]:
    """Token ids of `n_prompts` document starts of exactly `prompt_tokens` tokens (seeded choice of documents)."""
    from nlakit.io import read_jsonl

    docs = [d for d in read_jsonl(cfg.data) if isinstance(d.get("text"), str) and (not cfg.kinds or d.get("kind", "text") in cfg.kinds)]
    random.Random(cfg.seed).shuffle(docs)
    out = []
    for d in docs:
        ids = target.tokenizer(d["text"], add_special_tokens=True)["input_ids"][: cfg.prompt_tokens]
        if len(ids) == cfg.prompt_tokens:
            out.append(ids)
        if len(out) == cfg.n_prompts:
            break
    if not out:
        raise NlakitError(f"no document in {cfg.data} of kind {list(cfg.kinds)} has {cfg.prompt_tokens} tokens",
                          "pass --kinds '' (all kinds) or a smaller --prompt-tokens")
    return out


@torch.no_grad()
def greedy(target, rows: list[list[int]], n: int, batch_size: int, temperature: float = 0.0, seed: int = 0) -> list[list[int]]:
    """The target's greedy continuation (n tokens, cut at the first turn end) of each row of ids (left-padded);
    sampled at `temperature` (seeded) when it is > 0."""
    from nlakit.targets import eos_ids, pad_id

    if temperature > 0:
        torch.manual_seed(seed)
    sampling = {"do_sample": temperature > 0, "temperature": temperature or None, "top_p": None, "top_k": None}

    tok, eos = target.tokenizer, set(eos_ids(target.tokenizer, target.model))
    out: list[list[int]] = []
    for s in range(0, len(rows), batch_size):
        chunk = rows[s : s + batch_size]
        T = max(len(r) for r in chunk)
        ids = torch.full((len(chunk), T), pad_id(tok), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(chunk):
            ids[i, T - len(r) :], mask[i, T - len(r) :] = torch.tensor(r), 1
        res = target.model.generate(input_ids=ids.to(target.device), attention_mask=mask.to(target.device),
                                    max_new_tokens=n, pad_token_id=pad_id(tok), eos_token_id=sorted(eos), **sampling)
        for r in res[:, T:].tolist():
            cut = next((i for i, t in enumerate(r) if t in eos), len(r))
            out.append(r[:cut])
    return out


def next_sentences(tokenizer, ids: list[int], first: int, min_tokens: int) -> list[tuple[int, int]]:
    """(start, end) token spans (end inclusive) of the sentences that start at or after `first` and end in `ids`.

    A sentence starts at a token with a letter or digit right after a token that ends a sentence (., !, ? — with
    closing quotes or brackets — or a line break) and runs to the next such token.
    """
    texts = [tokenizer.decode([t]) for t in ids]
    ends = [bool(_END.search(t)) for t in texts]
    spans = []
    for j in range(max(first, 1), len(ids)):
        if ends[j - 1] and re.search(r"\w", texts[j]):
            e = next((i for i in range(j, len(ids)) if ends[i]), None)
            if e is not None and e - j + 1 >= min_tokens:
                spans.append((j, e))
    return spans


# ---- readers ---------------------------------------------------------------------------------------------
def top_tokens(tokenizer, logits: torch.Tensor, k: int) -> list[str]:
    """Each row's top-k tokens as one space-joined string."""
    idx = logits.float().topk(k, dim=-1).indices.tolist()
    return [" ".join(tokenizer.decode([t]).strip() for t in row) for row in idx]


def fit_tuned_lens(target, layer: int, cfg: HorizonConfig):
    """Ridge from the layer-`layer` residual to the final (normed) hidden state on training positions, or None."""
    if not cfg.train_data:
        return None
    from nlakit.baselines import fit_ridge
    from nlakit.io import read_jsonl

    docs = [d["text"] for d in read_jsonl(cfg.train_data) if isinstance(d.get("text"), str)]
    random.Random(cfg.seed + 1).shuffle(docs)
    xs, ys = [], []
    for s in range(0, min(cfg.probe_docs, len(docs)), cfg.batch_size):
        enc = target.encode(docs[s : s + cfg.batch_size], max_length=cfg.probe_tokens)
        with torch.no_grad():
            out = target.model(input_ids=enc.input_ids.to(target.device), attention_mask=enc.attention_mask.to(target.device),
                               output_hidden_states=True, use_cache=False)
        keep = enc.attention_mask.bool()
        keep[:, 0] = False  # position 0 is an attention sink
        xs.append(out.hidden_states[layer + 1][keep.to(target.device)].float().cpu())
        ys.append(out.hidden_states[-1][keep.to(target.device)].float().cpu())
    return fit_ridge(torch.cat(xs), torch.cat(ys))


def _unembed_normed(arch, h: torch.Tensor) -> torch.Tensor:
    out = arch.lm_head(h)
    return torch.tanh(out / arch.final_softcap) * arch.final_softcap if arch.final_softcap is not None else out


# ---- the experiment --------------------------------------------------------------------------------------
def run(cfg: HorizonConfig, progress: Progress | None = None, *, target=None, nla=None) -> dict:
    """Run the experiment; returns the results dict (JSON-ready). `target`/`nla` may be passed in already loaded."""
    from nlakit.blocks import Arch
    from nlakit.bundle import load_nla
    from nlakit.targets import load_target

    t0 = time.time()
    tick = progress or (lambda *a: None)
    target = target or load_target(cfg.target, device=cfg.device, dtype=cfg.dtype)
    nla = nla or load_nla(cfg.nla, target=target, device=cfg.device, dtype=cfg.dtype)
    tok, layer, arch = target.tokenizer, nla.layer, Arch(target.model)
    # 1. prompts and the target's own continuations
    rows = prompts(target, cfg)
    conts = greedy(target, rows, cfg.continuation_tokens, cfg.batch_size, cfg.continuation_temperature, cfg.seed)
    seqs = [p + c for p, c in zip(rows, conts)]
    tick("continuations", len(seqs), len(seqs))
    # 2. next sentences and the positions k tokens before them
    samples: list[Sample] = []
    for i, ids in enumerate(seqs):
        for start, end in next_sentences(tok, ids, cfg.prompt_tokens, cfg.min_sentence_tokens):
            sentence = tok.decode(ids[start : end + 1], skip_special_tokens=True).strip()
            past = overlap(tok.decode(ids[:start], skip_special_tokens=True), sentence)[0]
            samples += [Sample(i, start, k, sentence, past) for k in cfg.ks if start - k >= 1]
    if not samples:
        raise NlakitError("no complete next sentence in the continuations", "pass more --n-prompts or a longer --continuation-tokens")
    # 3. activations and logits at every sampled position (one forward per sequence)
    h_l, logit_l, logit_final = [], [], []
    probe = fit_tuned_lens(target, layer, cfg)
    tuned = []
    by_seq: dict[int, list[Sample]] = {}  # samples were built sequence by sequence: concatenating keeps their order
    for smp in samples:
        by_seq.setdefault(smp.seq, []).append(smp)
    for seq, group in by_seq.items():
        ids = torch.tensor([seqs[seq]], device=target.device)
        with torch.no_grad():
            out = target.model(input_ids=ids, output_hidden_states=True, use_cache=False)
            pos = torch.tensor([smp.start - smp.k for smp in group], device=target.device)
            h = out.hidden_states[layer + 1][0, pos].float()
            h_l.append(h.cpu())
            logit_l.append(arch.logits(h.to(out.logits.dtype)).float().cpu())
            logit_final.append(out.logits[0, pos].float().cpu())
            if probe is not None:
                y = torch.from_numpy(probe.predict(h.double().cpu().numpy())).to(target.device, out.logits.dtype)
                tuned.append(_unembed_normed(arch, y).float().cpu())
    vectors = torch.cat(h_l)
    texts: dict[str, list[str]] = {"logit_lens": top_tokens(tok, torch.cat(logit_l), cfg.top_k),
                                   "model_next": top_tokens(tok, torch.cat(logit_final), cfg.top_k)}
    if probe is not None:
        texts["tuned_lens"] = top_tokens(tok, torch.cat(tuned), cfg.top_k)
    tick("lenses", len(samples), len(samples))
    # 4. the NLA's explanations (through the engine) and the greedy upper bound
    expl = []
    for s in range(0, len(samples), 64):
        expl += nla.explain(vectors[s : s + 64], max_new_tokens=cfg.max_new_tokens, batch_size=64)
        tick("explain", min(s + 64, len(samples)), len(samples))
    texts["nla"] = [e.text for e in expl]
    texts["context_echo"] = [tok.decode(seqs[s.seq][max(0, s.start - s.k + 1 - cfg.echo_tokens) : s.start - s.k + 1],
                                        skip_special_tokens=True) for s in samples]
    texts["greedy"] = _greedy_reader(target, seqs, samples, cfg, tok)
    tick("greedy", len(samples), len(samples))
    # 5. similarity to the actual next sentence, and the shuffled control
    sentences = [s.sentence for s in samples]
    rng = random.Random(cfg.seed)
    shuffled = list(range(len(samples)))
    for k in cfg.ks:  # a derangement inside each k group: another sample's sentence at the same distance
        idx = [j for j, s in enumerate(samples) if s.k == k]
        rng.shuffle(idx)
        for a, b in zip(idx, idx[1:] + idx[:1]):
            shuffled[a] = b
    embedder = default_embedder().fit(sentences + [t for rt in texts.values() for t in rt])  # one space for all texts
    embed = lambda xs: torch.from_numpy(embedder.encode(xs))  # noqa: E731 - unit-norm rows
    e_sent = embed(sentences)
    scores: dict[str, dict[str, list[float]]] = {}
    for reader, rtexts in texts.items():
        e_r = embed(rtexts)
        ov = [overlap(t, sentences[j]) for j, t in enumerate(rtexts)]
        ov_s = [overlap(t, sentences[shuffled[j]]) for j, t in enumerate(rtexts)]
        scores[reader] = {"embed_cos": (e_r * e_sent).sum(-1).tolist(), "recall": [o[0] for o in ov], "f1": [o[1] for o in ov],
                          "embed_cos_shuffled": (e_r * e_sent[shuffled]).sum(-1).tolist(),
                          "recall_shuffled": [o[0] for o in ov_s], "f1_shuffled": [o[1] for o in ov_s]}
        tick("similarity", list(texts).index(reader) + 1, len(texts))
    # 6. curves over k, a table at a few k (all next sentences, then the novel ones), seeded examples
    novel = [s.past_recall <= cfg.novel_max_recall for s in samples]

    def curves_and_table(keep: list[bool] | None):
        curves = {reader: {m: [_at(sc[m], samples, k, keep) for k in cfg.ks] for m in sc} for reader, sc in scores.items()}
        table = [{"reader": reader, "k": k, **{m: _at(scores[reader][m], samples, k, keep)["mean"] for m in scores[reader]}}
                 for reader in texts for k in cfg.table_ks if k in cfg.ks]
        return curves, table

    curves, table = curves_and_table(None)
    curves_novel, table_novel = curves_and_table(novel)
    ex_idx = random.Random(cfg.seed + 2).sample(range(len(samples)), min(cfg.n_examples, len(samples)))
    examples = [{"k": samples[j].k, "context_tail": tok.decode(seqs[samples[j].seq][max(0, samples[j].start - samples[j].k - 30):
                                                                          samples[j].start - samples[j].k + 1]),
                 "sentence": samples[j].sentence, **{r: texts[r][j] for r in texts}} for j in ex_idx]
    return {"kind": "horizon", "config": {**asdict(cfg), "ks": list(cfg.ks)}, "target": target.name, "nla": cfg.nla,
            "embedder": default_embedder().name,
            "layer": layer, "n_prompts": len(seqs), "n_sentences": len({(s.seq, s.start) for s in samples}),
            "n_samples": len(samples), "readers": [r for r in READERS if r in texts],
            "skipped_readers": [r for r in READERS if r not in texts], "curves": curves, "table": table,
            "novel": {"max_recall": cfg.novel_max_recall, "n_samples": sum(novel),
                      "n_sentences": len({(s.seq, s.start) for s, keep in zip(samples, novel) if keep}),
                      "curves": curves_novel, "table": table_novel},
            "examples": examples, "seconds": time.time() - t0}


def _at(values: list[float], samples: list[Sample], k: int, keep: list[bool] | None = None) -> dict:
    keep = keep or [True] * len(samples)
    sel = torch.tensor([v for v, s, ok in zip(values, samples, keep) if s.k == k and ok], dtype=torch.float64)
    return {"k": k, **summarize(sel)} if len(sel) else {"k": k, "mean": None, "ci95": [None, None], "n": 0}


def _greedy_reader(target, seqs, samples: list[Sample], cfg: HorizonConfig, tok) -> list[str]:
    """The model's greedy continuation from each sampled position, k + the sentence's length in tokens.

    Inside a greedy continuation it *is* the actual sequence, so only positions inside the prompt are generated
    afresh; with sampled continuations every position is.
    """
    out: list[str | None] = [None] * len(samples)
    todo = []
    for j, s in enumerate(samples):
        p = s.start - s.k
        n = s.k + len(tok(s.sentence, add_special_tokens=False)["input_ids"]) + 2
        if p + 1 >= cfg.prompt_tokens and cfg.continuation_temperature == 0:
            out[j] = tok.decode(seqs[s.seq][p + 1 : p + 1 + n], skip_special_tokens=True)
        else:
            todo.append((j, p, n))
    if todo:
        n_max = max(n for _, _, n in todo)
        gen = greedy(target, [seqs[samples[j].seq][: p + 1] for j, p, _ in todo], n_max, cfg.batch_size)
        for (j, _, n), ids in zip(todo, gen):
            out[j] = tok.decode(ids[:n], skip_special_tokens=True)
    return [o or "" for o in out]
