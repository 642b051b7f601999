"""Stage 0 — data generation: activations of the target plus warm-start explanations, with no external API.

    nlakit datagen --target smollm2 --layer 20 --out runs/smol/data --n-docs 12000

For each sampled training document (never the held-out file): tokenize the first `max_tokens` tokens (chat and math
documents are rendered with the target's chat template, so chat-formatted data is included), sample positions spread
over the document (skipping attention sinks and the first `min_position` tokens), run the target once, keep the
layer-L vector and the target's own next-token predictions, and write explanation targets from these sources:

- ``template``: a sentence template from the context and the target's own predictions — the genre (naming the
  language of non-English text, from the corpus's ``lang`` field: "This is French text"), the last
  `tail_tokens` tokens of context, the current token, and the target's top next-token guesses. The quoted spans are
  tidied: whitespace collapses to single spaces and a newline reads " / " (as a literal "/" does);
- ``template_exact``: the same sentences with the quoted spans written exactly, on one line: a newline as ``\\n``, a
  tab as ``\\t``, every space kept (the indentation of code, the leading space of a word-start token);
- ``self`` (with ``describe``): the ``template`` text preceded by the target's own one-line description of the
  document so far (the target is asked, through its chat template, what the text is about).

All are natural language; `nlakit train` picks one with ``--source``. Documents are split (by document) into
``av`` (AV supervised), ``ar`` (AR supervised) and ``rl`` portions. The reference statistics that FVE is centred on
are computed from all training vectors.

Under torchrun each rank takes a contiguous run of the document batches and a share of the ``describe`` generations;
rank 0 merges them, in the order one process makes them, into the same files (docs/DISTRIBUTED.md).
"""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from nlakit import distributed
from nlakit.errors import NlakitError
from nlakit.corpus import read_rows
from nlakit.metrics import Reference
from nlakit.targets import Target
from nlakit.train.common import REFERENCE, Pairs, save_pairs, stage_done, write_stage_done

log = logging.getLogger(__name__)

SOURCES = ("template", "template_exact", "self")  # warm-start explanation sources (`self` needs `describe`)
WINDOW = 33  # token ids kept per pair (current token last): the token / bag-of-8 ridge baselines and echo oracles read them

KIND_WORDS = {"prose": "non-fiction prose", "fiction": "a story", "chat": "a chat between a user and an assistant",
              "math": "a math word problem", "code": "programming documentation or code", "multilingual": "non-English text"}
TEXT_FIX = "give every document a 'text' field (JSONL) or column (Parquet); docs/INPUTS.md lists the formats"

# ISO 639-1 codes of the corpus's `lang` field -> the language's English name (the genre line names the language)
LANGUAGE_NAMES = {"ar": "Arabic", "cs": "Czech", "de": "German", "en": "English", "es": "Spanish", "fi": "Finnish",
                  "fr": "French", "hi": "Hindi", "id": "Indonesian", "is": "Icelandic", "it": "Italian", "ja": "Japanese",
                  "ko": "Korean", "nl": "Dutch", "pl": "Polish", "pt": "Portuguese", "ru": "Russian", "sv": "Swedish",
                  "th": "Thai", "tr": "Turkish", "uk": "Ukrainian", "vi": "Vietnamese", "zh": "Chinese"}


@dataclass(frozen=True)
class DatagenConfig:
    data: str  # training documents (`nlakit.corpus` formats: JSONL(.gz), Parquet, text, folders); never the held-out file
    out: str
    layer: int
    n_docs: int = 6000
    positions_per_doc: int = 6
    max_tokens: int = 256
    min_position: int = 16
    tail_tokens: int = 12
    n_guesses: int = 3  # next-token guesses in the template
    describe: bool = True  # also write the `self` source (costs one short generation per document)
    describe_tokens: int = 24
    split: tuple[float, float, float] = (0.4, 0.3, 0.3)  # av / ar / rl, by document
    batch_size: int = 32
    seed: int = 42
    dtype: str | None = None  # autocast dtype on GPU, e.g. "bfloat16"
    eval_data: str | None = None  # held-out JSONL: evaluation positions only, never trained on
    eval_positions: int = 512


def _doc_text(target: Target, row: dict) -> str:
    msgs = row.get("messages")
    if msgs and getattr(target.tokenizer, "chat_template", None):
        try:
            return target.chat_text([{"role": m["role"], "content": m["content"]} for m in msgs], add_generation_prompt=False)
        except Exception:  # a template that rejects the roles: fall back to the plain rendering
            pass
    return row["text"]


def _clean(s: str) -> str:
    """A span tidied for the `template` source: whitespace collapsed, a newline as " / "."""
    return " ".join(s.replace("\n", " / ").split())


def _exact(s: str) -> str:
    """A span written exactly on one line for the `template_exact` source: newline as \\n, tab as \\t, spaces kept."""
    return s.replace("\r\n", "\n").replace("\t", "\\t").replace("\n", "\\n")


def _word(tok, token_id: int, special: set[int]) -> str:
    """A predicted token as a word; special tokens (turn ends) as a phrase, never as their literal marker."""
    return "(end of message)" if token_id in special else tok.decode([token_id])


def sanitize(text: str, tokenizer) -> str:
    """Drop literal special-token strings: inside an SFT target they would encode as real control tokens (e.g. EOS)."""
    for t in getattr(tokenizer, "all_special_tokens", []) or []:
        if t and t in text:
            text = text.replace(t, " ")
    return text


def genre(kind: str, lang: str | None = None) -> str:
    """The genre phrase of the template: the kind of text, naming the language of non-English text ("French text")."""
    if lang and lang != "en":
        name = LANGUAGE_NAMES.get(lang)
        if name:
            return f"{name} text" if kind in ("multilingual", "text", None) else f"{KIND_WORDS.get(kind, 'text')} in {name}"
    return KIND_WORDS.get(kind, "text")


def template_explanation(kind: str, tail: str, token: str, guesses: list[str], lang: str | None = None,
                         exact: bool = False) -> str:
    """The `template` source text (`exact`: the `template_exact` one). Plain sentences, no raw dumps."""
    genre_ = genre(kind, lang)
    span = _exact if exact else _clean
    g = ", ".join(f'"{span(x)}"' for x in guesses if span(x).strip()) or "unclear"
    return (f"This is {genre_}. The text so far ends with: \"…{span(tail)}\".\n\n"
            f"The current token is \"{span(token)}\". The next word is likely one of {g}.")


def pair_row(doc: dict, doc_id: str, split: str, text_so_far: str, tids: list[int], p: int, top_ids: list[int], tok,
             special: set[int], tail_tokens: int) -> dict:
    """The row of one training or held-out pair at token `p` of a document: where it is, what it reads, its window of
    token ids and its warm-start texts (`top_ids`: the target's next-token guesses there)."""
    tail = tok.decode(tids[max(0, p - tail_tokens + 1) : p + 1], skip_special_tokens=True)
    token = tok.decode([tids[p]])
    guesses = [_word(tok, t, special) for t in top_ids]
    kind, lang = doc.get("kind", "text"), doc.get("lang")
    return {"doc": doc_id, "pos": p, "token": token, "kind": kind, "lang": lang, "split": split, "text": text_so_far[-400:],
            "window_ids": tids[max(0, p - WINDOW + 1) : p + 1],
            "explanations": template_sources(kind, tail, token, guesses, lang, tok)}


def template_sources(kind: str, tail: str, token: str, guesses: list[str], lang: str | None, tokenizer) -> dict[str, str]:
    """A pair's `template` and `template_exact` texts, free of literal special tokens."""
    return {name: sanitize(template_explanation(kind, tail, token, guesses, lang, exact=exact), tokenizer)
            for name, exact in (("template", False), ("template_exact", True))}


def _split_of(doc_id: str, seed: int, split: tuple[float, float, float]) -> str:
    h = int(hashlib.sha256(f"{seed}|{doc_id}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "av" if h < split[0] else ("ar" if h < split[0] + split[1] else "rl")


@torch.no_grad()
def _describe(target: Target, contexts: list[str], max_new_tokens: int, batch_size: int) -> list[str]:
    prompts = [f"In one short sentence, what is the following text about?\n\n{c[-1200:]}" for c in contexts]
    outs = target.generate(prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return [_clean(o).split(". ")[0].strip().rstrip(".") + "." if o.strip() else "" for o in outs]


def datagen(cfg: DatagenConfig, target: Target, progress: Callable[[str, int, int], None] | None = None) -> Path:
    """Run data generation; resumable (a finished run is not redone). Returns the output directory."""
    out = Path(cfg.out)
    if stage_done(out, "datagen"):
        log.info("datagen already done in %s", out)
        return out
    if "heldout" in Path(cfg.data).name:
        raise NlakitError(f"{cfg.data} looks like the held-out evaluation file", "generate training data from the training corpus")
    target.check_layer(cfg.layer)
    docs = read_rows(cfg.data, require_text=False, key_fix=TEXT_FIX)
    rng = random.Random(cfg.seed)
    rng.shuffle(docs)
    docs = [d for d in docs if isinstance(d.get("text"), str) and d["text"].strip()][: cfg.n_docs]
    if not docs:
        raise NlakitError(f"{cfg.data} has no documents with text", 'write one {"text": ...} object per line')
    tok = target.tokenizer
    special = set(tok.all_special_ids or [])
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(cfg.dtype or "", None)

    vectors: list[torch.Tensor] = []
    rows: list[dict] = []
    describe_jobs: list[tuple[int, str]] = []  # (first row index of the doc, context to describe)
    done = n_tokens = 0
    for s in distributed.shard(range(0, len(docs), cfg.batch_size)):  # torchrun: this rank's run of batches
        chunk = docs[s : s + cfg.batch_size]
        texts = [_doc_text(target, d) for d in chunk]
        enc = target.encode(texts, max_length=cfg.max_tokens)
        n_tokens += sum(enc.lengths)
        ids, mask = enc.input_ids.to(target.device), enc.attention_mask.to(target.device)
        with torch.autocast(device_type=ids.device.type, dtype=dtype, enabled=dtype is not None):
            outp = target.model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
        h = outp.hidden_states[cfg.layer + 1].float()  # (B, T, D): output of block `layer`
        top = outp.logits.float().topk(cfg.n_guesses, dim=-1).indices.cpu()  # (B, T, k)
        h = h.cpu()
        for j, doc in enumerate(chunk):
            n = enc.lengths[j]
            tids = enc.input_ids[j, :n].tolist()
            cand = [p for p in range(cfg.min_position, n) if tids[p] not in special]
            if not cand:
                continue
            prng = random.Random(f"{cfg.seed}|{doc.get('id', s + j)}")
            pos = sorted(prng.sample(cand, min(cfg.positions_per_doc, len(cand))))
            split = _split_of(str(doc.get("id", s + j)), cfg.seed, cfg.split)
            first_row = len(rows)
            for p in pos:
                rows.append(pair_row(doc, str(doc.get("id", s + j)), split, texts[j][: enc.offsets[j][p][1]], tids, p,
                                     top[j, p].tolist(), tok, special, cfg.tail_tokens))
                vectors.append(h[j, p].clone())
            if cfg.describe:
                describe_jobs.append((first_row, texts[j][: enc.offsets[j][pos[0]][1]]))
        done += len(chunk)
        if progress:  # under torchrun rank 0's pace stands for every rank's
            progress("extract", min(done * distributed.world(), len(docs)), len(docs))

    n_pairs = len(rows)
    if distributed.world() > 1:
        vectors, rows, describe_jobs, n_tokens, n_pairs = _merge_ranks(out, vectors, rows, describe_jobs, n_tokens)
    if not n_pairs:
        raise NlakitError(f"no document in {cfg.data} is longer than {cfg.min_position} tokens, so no training position "
                          "was sampled", "pass longer documents (a few hundred tokens each works well)")
    descs: list[str] = []
    if cfg.describe and describe_jobs:
        for s in distributed.shard(range(0, len(describe_jobs), 256)):
            descs += _describe(target, [c for _, c in describe_jobs[s : s + 256]], cfg.describe_tokens, batch_size=128)
            if progress:
                progress("describe", min(s + 256, len(describe_jobs)), len(describe_jobs))
        descs = [d for part in distributed.all_gather(descs) for d in part]
    if not distributed.is_main():  # rank 0 writes the files; the others wait until they are complete
        distributed.barrier()
        return out
    if descs:
        bounds = [r for r, _ in describe_jobs] + [len(rows)]
        for k, desc in enumerate(descs):
            for r in range(bounds[k], bounds[k + 1]):
                base = rows[r]["explanations"]["template"]
                rows[r]["explanations"]["self"] = sanitize(f"The model reads this as: {desc}\n\n{base}" if desc else base, tok)

    V = torch.stack(vectors)
    pairs = Pairs(V, rows)
    out.mkdir(parents=True, exist_ok=True)
    save_pairs(out, pairs)
    from nlakit.bundle import save_reference

    save_reference(Reference.from_vectors(V), out / REFERENCE)
    if cfg.eval_data:
        ev = eval_pairs(target, cfg.eval_data, cfg.layer, n=cfg.eval_positions, max_tokens=cfg.max_tokens, seed=cfg.seed,
                        tail_tokens=cfg.tail_tokens, n_guesses=cfg.n_guesses, dtype=dtype)
        save_pairs(out / "eval", ev)
    counts = {k: sum(r["split"] == k for r in rows) for k in ("av", "ar", "rl")}
    write_stage_done(out, "datagen", {"config": asdict(cfg), "n_pairs": len(rows), "n_docs": len(docs), "splits": counts,
                                      "sources": sorted(rows[0]["explanations"]) if rows else [], "tokens": n_tokens})
    distributed.barrier()
    return out


def eval_selection(target: Target, data: str, *, n: int, max_tokens: int = 256, min_position: int = 33, per_doc: int = 2,
                   seed: int = 42) -> list[tuple[dict, str, list[int]]]:
    """The held-out positions used by training's evaluation: (document, rendered text, token positions) triples.

    Documents are shuffled with `seed + 1`; each contributes `per_doc` positions >= `min_position` (no special tokens),
    drawn with a per-document RNG, until `n` positions are chosen. Benchmarks call this to score baselines on exactly
    the positions the NLA was scored on.
    """
    docs = read_rows(data, require_text=False, key_fix=TEXT_FIX)
    random.Random(seed + 1).shuffle(docs)
    special = set(target.tokenizer.all_special_ids or [])
    out, total = [], 0
    for j, doc in enumerate(docs):
        if total >= n:
            break
        text = _doc_text(target, doc)
        tids = target.encode([text], max_length=max_tokens).input_ids[0].tolist()
        cand = [p for p in range(min_position, len(tids)) if tids[p] not in special]
        pos = sorted(random.Random(f"eval|{seed}|{doc.get('id', j)}").sample(cand, min(per_doc, len(cand))))[: n - total]
        if pos:
            out.append((doc, text, pos))
            total += len(pos)
    return out


@torch.no_grad()
def eval_pairs(target: Target, data: str, layer: int, *, n: int, max_tokens: int = 256, min_position: int = 33,
               per_doc: int = 2, seed: int = 42, tail_tokens: int = 12, n_guesses: int = 3, dtype=None) -> Pairs:
    """Held-out evaluation pairs at the `eval_selection` positions, with gold template texts."""
    tok = target.tokenizer
    special = set(tok.all_special_ids or [])
    selection = eval_selection(target, data, n=n, max_tokens=max_tokens, min_position=min_position, per_doc=per_doc, seed=seed)
    vectors, rows = [], []
    for s in range(0, len(selection), 32):
        chunk = selection[s : s + 32]
        enc = target.encode([t for _, t, _ in chunk], max_length=max_tokens)
        ids, mask = enc.input_ids.to(target.device), enc.attention_mask.to(target.device)
        with torch.autocast(device_type=ids.device.type, dtype=dtype, enabled=dtype is not None):
            outp = target.model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
        h = outp.hidden_states[layer + 1].float().cpu()
        top = outp.logits.float().topk(n_guesses, dim=-1).indices.cpu()
        for j, (doc, text, pos) in enumerate(chunk):
            tids = enc.input_ids[j, : enc.lengths[j]].tolist()
            for p in pos:
                rows.append(pair_row(doc, str(doc.get("id", s + j)), "eval", text[: enc.offsets[j][p][1]], tids, p,
                                     top[j, p].tolist(), tok, special, tail_tokens))
                vectors.append(h[j, p].clone())
    return Pairs(torch.stack(vectors), rows)


def _merge_ranks(out: Path, vectors: list[torch.Tensor], rows: list[dict], describe_jobs: list[tuple[int, str]],
                 n_tokens: int) -> tuple[list[torch.Tensor], list[dict], list[tuple[int, str]], int, int]:
    """Every rank's pairs merged on rank 0, in the order one process makes them (ranks hold contiguous runs of batches).

    Pairs travel to rank 0 through per-rank files (`distributed.gather`); every rank gets the whole list of
    `describe` jobs (row index, context), so each can take its share of those generations. Returns (vectors, rows,
    describe_jobs, n_tokens, n_pairs): vectors and rows are empty on the other ranks, n_pairs counts every rank's."""
    jobs, n_pairs = [], 0
    for n_rows, part_jobs in distributed.all_gather((len(rows), describe_jobs)):
        jobs += [(first + n_pairs, ctx) for first, ctx in part_jobs]  # row indices shift by the earlier ranks' rows
        n_pairs += n_rows
    parts = distributed.gather((vectors, rows, n_tokens), out, "datagen")
    vectors, rows, n_tokens = [], [], 0
    for part_vectors, part_rows, part_tokens in parts or []:
        vectors, rows, n_tokens = vectors + part_vectors, rows + part_rows, n_tokens + part_tokens
    return vectors, rows, jobs, n_tokens, n_pairs
