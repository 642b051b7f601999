"""The AV (activation verbalizer): an LM that reads one injected activation and writes an explanation.

Injection follows `nla-checkpoint-format.md` §4 exactly:
1. the AV template (with the marker char) is the content of one user message, rendered with the chat
   template and the generation prompt, tokenised with ``add_special_tokens=False`` (no double BOS);
2. the prompt is embedded with the AV's own input embedding module (so Gemma's sqrt(d) scale applies);
3. the marker slot p is the unique position with ``ids[p] == marker`` and the sidecar's neighbours on each side;
4. ``embeds[p] = v * injection_scale / ||v||`` (norm in fp32, clamped) — replaced, not added, not embed-scaled.
The explanation is the first ``<explanation>…</explanation>`` payload; a missing closing tag is a failed parse,
reported, never hidden.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass

import torch

from nlakit.errors import NlakitError
from nlakit.meta import NLAMeta
from nlakit.targets import eos_ids, pad_id
from nlakit.vectors import check_vectors  # noqa: F401  (also re-exported: nlakit.verbalizer.check_vectors)

log = logging.getLogger(__name__)

_EXPLANATION_RE = re.compile(r"<explanation>\s*(.*?)\s*</explanation>", re.DOTALL)


@dataclass(frozen=True)
class Explanation:
    text: str  # the payload (stripped); the raw text when the parse failed
    raw: str  # everything the AV generated (special tokens removed)
    ok: bool  # True when a complete <explanation>…</explanation> pair was found
    n_tokens: int = 0  # generated tokens
    truncated: bool = False  # stopped by the length cap, not by EOS


def parse_explanation(raw: str, n_tokens: int = 0, truncated: bool = False) -> Explanation:
    """Payload of the first <explanation> pair; ok=False (text = raw, stripped) when there is none."""
    m = _EXPLANATION_RE.search(raw)
    if m is None or not m.group(1).strip():
        return Explanation(text=raw.strip(), raw=raw, ok=False, n_tokens=n_tokens, truncated=truncated)
    return Explanation(text=m.group(1).strip(), raw=raw, ok=True, n_tokens=n_tokens, truncated=truncated)


def wrap_explanation(text: str) -> str:
    """The SFT target form of an explanation."""
    return f"<explanation>\n{text.strip()}\n</explanation>"


def marker_token_id(tokenizer, char: str) -> int:
    ids = tokenizer.encode(char, add_special_tokens=False)
    if len(ids) != 1 or ids[0] == getattr(tokenizer, "unk_token_id", None):
        raise NlakitError(f"injection char {char!r} is not one token in this tokenizer (got {ids})",
                          "pick a rare char that encodes to exactly one token (e.g. ●)")
    return int(ids[0])


class Verbalizer:
    """An AV: `model` (HF causal LM, possibly a PEFT wrapper), its tokenizer, and the sidecar it obeys."""

    def __init__(self, model: torch.nn.Module, tokenizer, meta: NLAMeta):
        self.model = model
        self.tokenizer = tokenizer
        self.meta = meta
        if not meta.injection_scale or meta.injection_scale != meta.injection_scale:  # None or NaN
            raise NlakitError("the AV sidecar has no injection_scale", "set extraction.injection_scale in nla_meta.yaml")
        self.prompt_ids, self.slot = self._build_prompt()
        # the turn ends of this tokenizer, plus the ones the NLA was trained to stop with (recorded by `nlakit train`)
        self.eos = sorted(set(eos_ids(tokenizer, model)) | {int(i) for i in (meta.nlakit or {}).get("stop_ids", [])})

    @staticmethod
    def canonical_prompt(tokenizer, template: str, char: str) -> list[int]:
        if not getattr(tokenizer, "chat_template", None):
            raise NlakitError("the AV tokenizer has no chat template", "use the tokenizer saved with the AV (it sets the injection position)")
        content = template.format(injection_char=char)
        text = tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)
        return tokenizer.encode(text, add_special_tokens=False)

    def _build_prompt(self) -> tuple[list[int], int]:
        m = self.meta
        marker = marker_token_id(self.tokenizer, m.injection_char)
        if m.injection_token_id >= 0 and marker != m.injection_token_id:
            raise NlakitError(f"injection char {m.injection_char!r} encodes to {marker}, the sidecar says {m.injection_token_id}",
                              "use the tokenizer the AV was trained with")
        ids = self.canonical_prompt(self.tokenizer, m.av_template, m.injection_char)
        sites = [p for p in range(1, len(ids) - 1) if ids[p] == marker
                 and (m.left_neighbor_id < 0 or ids[p - 1] == m.left_neighbor_id)
                 and (m.right_neighbor_id < 0 or ids[p + 1] == m.right_neighbor_id)]
        if len(sites) != 1:
            raise NlakitError(f"the AV prompt has {len(sites)} valid injection sites (need exactly 1)",
                              "keep the AV template and tokenizer byte-identical to the ones it was trained with")
        return ids, sites[0]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def end_id(self) -> int:
        """The token SFT targets end with: the tokenizer's EOS, else the lowest turn-end id."""
        return self.eos[0] if self.tokenizer.eos_token_id is None else int(self.tokenizer.eos_token_id)

    # ---- injection ---------------------------------------------------------------------------------------
    def inject(self, embeds: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """Replace row `slot` of (B, T, D) `embeds` with each vector rescaled to `injection_scale` (returns a new tensor)."""
        v = vectors.to(embeds.device).float()
        v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12) * self.meta.injection_scale
        out = embeds.clone()
        out[:, self.slot] = v.to(embeds.dtype)
        return out

    def embed(self, ids: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """Embeddings of (B, T) ids that start with the canonical prompt, with the vectors injected: (B, T, D)."""
        emb = self.model.get_input_embeddings()(ids.to(self.device))
        return self.inject(emb, vectors)

    def prompt_embeds(self, vectors: torch.Tensor) -> torch.Tensor:
        """(B, P, D) prompt embeddings for a batch of vectors; every row has the same prompt, so no padding."""
        ids = torch.tensor(self.prompt_ids, dtype=torch.long).expand(vectors.shape[0], -1)
        return self.embed(ids, vectors)

    # ---- generation (plain HF generate; nlakit.engine is the fast path) ---------------------------------------
    @torch.no_grad()
    def generate_ids(self, vectors: torch.Tensor, *, max_new_tokens: int = 150, temperature: float = 0.0,
                     seed: int = 0) -> list[list[int]]:
        """Generated token ids per vector (EOS excluded)."""
        vectors = check_vectors(vectors, self.meta.d_model)
        embeds = self.prompt_embeds(vectors)
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        kwargs = dict(max_new_tokens=max_new_tokens, do_sample=temperature > 0, pad_token_id=pad_id(self.tokenizer),
                      eos_token_id=self.eos)
        if temperature > 0:
            kwargs["temperature"] = temperature
            kwargs["top_k"] = 0
            kwargs["top_p"] = 1.0
            torch.manual_seed(seed)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        out = self.model.generate(inputs_embeds=embeds, attention_mask=mask, **kwargs)
        rows = []
        for r in out.tolist():  # generate from embeds returns only the new tokens
            cut = next((i for i, t in enumerate(r) if t in self.eos), None)
            rows.append(r[:cut] if cut is not None else r + [-1])  # -1 marks "hit the cap"
        return rows

    def decode(self, rows: list[list[int]]) -> list[Explanation]:
        out = []
        for r in rows:
            truncated = bool(r) and r[-1] == -1
            ids = [t for t in r if t >= 0]
            raw = self.tokenizer.decode(ids, skip_special_tokens=True)
            out.append(parse_explanation(raw, n_tokens=len(ids), truncated=truncated))
        return out

    def explain(self, vectors: torch.Tensor, *, max_new_tokens: int = 150, temperature: float = 0.0, seed: int = 0,
                batch_size: int = 64, engine: str = "auto") -> list[Explanation]:
        """Explanations of a batch of activation vectors (greedy by default).

        `engine`: "auto" (the fast `nlakit.engine` where the architecture is supported, else HF generate),
        "fast", or "hf" (plain HF generate, the reference path).
        """
        from nlakit import engine as _engine

        vectors = check_vectors(vectors, self.meta.d_model)
        out = self.decode(_engine.generate(self, vectors, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                                           batch_size=batch_size, engine=engine))
        n_bad = sum(not e.ok for e in out)
        if n_bad:
            log.warning("%d of %d explanations did not parse (no <explanation>…</explanation> pair)", n_bad, len(out))
        return out

    # ---- training helpers --------------------------------------------------------------------------------
    def response_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids of SFT targets: the wrapped explanation followed by the turn-end token."""
        end = self.end_id
        return [self.tokenizer.encode(wrap_explanation(t), add_special_tokens=False) + [end] for t in texts]

    def batch(self, vectors: torch.Tensor, responses: list[list[int]],
              pad_to: int = 1, length: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher-forcing inputs: (embeds (B, P+R, D), attention mask (B, P+R), labels (B, P+R) with -100 off the response).

        Right-padded: R is the longest response, rounded up to a multiple of `pad_to`; `length`: R is that (a fixed
        shape, at least the longest response)."""
        P = len(self.prompt_ids)
        R = max(len(r) for r in responses)
        if length is not None and length < R:
            raise ValueError(f"a response of {R} tokens does not fit length={length}")
        R = length if length is not None else -(-R // pad_to) * pad_to
        B, pad, prompt = len(responses), pad_id(self.tokenizer), list(self.prompt_ids)
        responses = [list(r) for r in responses]
        ids = torch.tensor([prompt + r + [pad] * (R - len(r)) for r in responses], dtype=torch.long).view(B, P + R)
        labels = torch.tensor([[-100] * P + r + [-100] * (R - len(r)) for r in responses], dtype=torch.long).view(B, P + R)
        mask = torch.tensor([[1] * (P + len(r)) + [0] * (R - len(r)) for r in responses], dtype=torch.long).view(B, P + R)
        return self.embed(ids, vectors), mask.to(self.device), labels.to(self.device)

    def group_batch(self, vectors: torch.Tensor, responses: list[list[int]], length: int | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forcing inputs with the prompt once per vector: (embeds (N, P + k*R, D), labels (N*k, R)) for N
        vectors and k = len(responses) / N responses each (responses of vector i at rows i*k ... i*k + k-1), every
        response right-padded to R tokens (the longest, or `length`). Read them with `group_layout(model, P, R, k)`
        (who attends to whom, the positions, which logits predict what) and `response_logprobs`."""
        N, P = vectors.shape[0], len(self.prompt_ids)
        k = len(responses) // N
        if k * N != len(responses) or k < 1:
            raise ValueError(f"{len(responses)} responses do not split evenly over {N} vectors")
        R = max(len(r) for r in responses)
        if length is not None and length < R:
            raise ValueError(f"a response of {R} tokens does not fit length={length}")
        R = length if length is not None else R
        pad = pad_id(self.tokenizer)
        padded = [list(r) + [pad] * (R - len(r)) for r in responses]
        ids = torch.tensor([list(self.prompt_ids) + sum(padded[i * k:(i + 1) * k], []) for i in range(N)], dtype=torch.long)
        labels = torch.tensor([list(r) + [-100] * (R - len(r)) for r in responses], dtype=torch.long).view(N * k, R)
        return self.embed(ids.view(N, P + k * R), vectors), labels.to(self.device)

    def token_logprobs(self, vectors: torch.Tensor, responses: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs of each response token under the AV, (B, R), and the response mask, (B, R). Differentiable."""
        embeds, mask, labels = self.batch(vectors, responses)
        tgt = labels[:, len(self.prompt_ids):]
        return response_logprobs(self.model, embeds, tgt, mask), (tgt != -100).float()


def response_logprobs(model: torch.nn.Module, embeds: torch.Tensor, labels: torch.Tensor,
                      attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                      keep: torch.Tensor | None = None) -> torch.Tensor:
    """Log-probs (B, R) of the response tokens `labels` (B, R; -100 off the response, where the result is 0) that end
    the right-padded inputs `embeds` (B, P+R, D): logits only at the R positions that predict one (position t predicts
    token t+1), an fp32 log-softmax. `attention_mask`: 2D padding or 4D causal, or None (causal attention alone).

    Packed rows (`Verbalizer.group_batch`): `embeds` (N, L, D) hold several responses each, `keep` (k*R,) the
    positions whose logits predict them, `position_ids` (N, L) and a 4D `attention_mask` say who reads whom; `labels`
    is then (N*k, R), the k responses of each row in order."""
    R = labels.shape[1]
    if keep is None:
        logits = model(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False, logits_to_keep=R + 1).logits[:, :R]
    else:
        logits = model(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids, use_cache=False,
                       logits_to_keep=keep).logits.reshape(labels.shape[0], R, -1)
    resp = (labels != -100).float()
    lp = -torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.clamp_min(0).flatten(), reduction="none")
    return lp.view_as(resp) * resp


def attention_of(model: torch.nn.Module) -> tuple[str | None, int | None]:
    """(attention implementation, sliding window) of an HF model, a PEFT wrapper of one or a DDP `.module`; (None,
    None) where there is no config."""
    config = getattr(model, "config", None) or getattr(getattr(model, "module", None), "config", None)
    return getattr(config, "_attn_implementation", None), getattr(config, "sliding_window", None)


def packed_attention(model: torch.nn.Module, span: int) -> str | None:
    """The attention implementation ("sdpa" or "eager") that reads `group_layout`'s mask exactly over responses of
    prompt + response = `span` tokens, else None (another implementation, or a sliding window shorter than `span`,
    beyond which a 4D mask would not apply the window)."""
    impl, window = attention_of(model)
    return impl if impl in ("sdpa", "eager") and (window is None or span <= window) else None


def group_layout(model: torch.nn.Module, prompt_len: int, length: int, group: int, device: torch.device | str
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """How `Verbalizer.group_batch`'s rows are read: the prompt once, then `group` responses of `length` tokens, each
    response attending to the prompt and causally to itself only, its positions continuing the prompt's, so that every
    response gets exactly the log-probs it gets in a row of its own, for (group - 1) * prompt_len fewer tokens.

    Returns (position_ids (1, L), attention mask (1, 1, L, L): boolean for SDPA, additive for eager attention, keep
    (group * length,): the positions whose logits predict each response token, the prompt's last for the first), or
    None where the model's attention cannot take such a mask (`packed_attention`). The tensors are built once per
    shape and device and shared: read them, never write them."""
    impl = packed_attention(model, prompt_len + length)
    return None if impl is None else _group_layout(impl, prompt_len, length, group, torch.device(device))


@functools.lru_cache(maxsize=8)
def _group_layout(impl: str, P: int, R: int, G: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    block = torch.cat([torch.full((P,), -1), torch.arange(G).repeat_interleave(R)])  # -1: the prompt
    position_ids = torch.cat([torch.arange(P), (P + torch.arange(R)).repeat(G)])
    q, k = torch.arange(P + G * R)[:, None], torch.arange(P + G * R)[None, :]
    allowed = (k <= q) & ((block[None, :] == -1) | (block[None, :] == block[:, None]))
    mask = allowed if impl == "sdpa" else torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    keep = torch.cat([torch.cat([torch.tensor([P - 1]), P + j * R + torch.arange(R - 1)]) for j in range(G)])
    return position_ids[None].to(device), mask[None, None].to(device), keep.to(device)


def new_meta_for(tokenizer, *, d_model: int, layer: int, injection_scale: float, base_checkpoint: str,
                 injection_char: str | None = None, av_template: str | None = None, ar_template: str | None = None) -> NLAMeta:
    """A fresh sidecar for a new NLA: finds the marker id and its canonical neighbours, and the AR suffix ids."""
    import math

    from nlakit.meta import DEFAULT_AR_TEMPLATE, DEFAULT_AV_TEMPLATE, DEFAULT_INJECTION_CHAR

    char = injection_char or DEFAULT_INJECTION_CHAR
    av_t = av_template or DEFAULT_AV_TEMPLATE
    ar_t = ar_template or DEFAULT_AR_TEMPLATE
    marker = marker_token_id(tokenizer, char)
    ids = Verbalizer.canonical_prompt(tokenizer, av_t, char)
    sites = [p for p in range(1, len(ids) - 1) if ids[p] == marker]
    if len(sites) != 1:
        raise NlakitError(f"the AV template yields {len(sites)} marker positions (need exactly 1, not at either end)",
                          "put {injection_char} exactly once inside the template")
    p = sites[0]
    suffix = ar_t.split("{explanation}", 1)[1]
    suffix_ids = tokenizer.encode(suffix, add_special_tokens=False)[1:]
    return NLAMeta(d_model=d_model, layer=layer, injection_scale=float(injection_scale), mse_scale=math.sqrt(d_model),
                   injection_char=char, injection_token_id=marker, left_neighbor_id=ids[p - 1], right_neighbor_id=ids[p + 1],
                   critic_suffix_ids=tuple(suffix_ids), av_template=av_t, ar_template=ar_t, base_checkpoint=base_checkpoint)
