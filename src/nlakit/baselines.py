"""Baselines every NLA score is printed beside: how much of an activation do cheap predictors already recover?

Each baseline is a small function that returns predictions for the held-out positions; `nlakit.evaluate`
scores them with the same `metrics.score` call as the NLA. Ridge maps are fitted on *training* positions only.

- ``mean``: the training-set mean vector (raw), the same prediction for every position. Its fve_raw is ≈ 0 by
  construction; its fve_nrm is below 0, because mse_nrm rescales every prediction to norm sqrt(d) while fve_nrm's
  zero is the *unscaled* mean of the normalised vectors.
- ``ridge_token``: ridge regression (alpha by leave-one-out CV) from the current token's input embedding.
- ``ridge_token_bag8``: the same from [current token embedding, mean embedding of the 8 tokens before it].
- ``echo_ar8`` / ``echo_ar32``: the NLA's own AR fed the decoded last k tokens (current one included) as the
  "explanation": what the AR gets from quoting the context verbatim.
- ``oracle_echo4`` / ``8`` / ``32``: the target re-run on only the exact last k tokens (current one included; BOS
  prepended when the tokenizer adds one), its layer-L vector at the last token, then a ridge map fitted on training
  positions to the full-context activation. How much context the activation needs: a strong, unfair baseline.

Ridge targets are the sqrt(d)-normalised activations (the headline metric compares directions), so ridge
predictions, like the AR's, are direction-only and are rescaled to the training mean norm for fve_raw.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from nlakit.activations import DocActivations, run_to_layer
from nlakit.errors import NlakitError
from nlakit.metrics import Reference, normalize
from nlakit.targets import Target, pad_id

log = logging.getLogger(__name__)

RIDGE_ALPHAS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5)


@dataclass
class Samples:
    """Activation vectors at chosen positions, one row per position, with the token context of each row."""

    doc: list[int]  # index of the row's document in `token_ids`
    pos: list[int]  # token index inside that document
    vectors: torch.Tensor  # (N, d_model) float32, the gold activations
    token_ids: list[list[int]] = field(repr=False)  # per document: every token id
    texts: list[str] = field(repr=False)  # per document
    offsets: list[list[tuple[int, int]]] = field(repr=False)  # per document: char span of every token

    @classmethod
    def from_docs(cls, docs: list[DocActivations]) -> Samples:
        rows = [(i, p) for i, d in enumerate(docs) for p in d.positions]
        d_model = docs[0].vectors.shape[-1] if docs else 0
        vectors = torch.cat([d.vectors for d in docs]) if rows else torch.zeros(0, d_model)
        return cls(doc=[r[0] for r in rows], pos=[r[1] for r in rows], vectors=vectors,
                   token_ids=[d.token_ids for d in docs], texts=[d.text for d in docs], offsets=[d.offsets for d in docs])

    def __len__(self) -> int:
        return len(self.pos)

    def token_id(self, i: int) -> int:
        return self.token_ids[self.doc[i]][self.pos[i]]

    def token_text(self, i: int) -> str:
        s, e = self.offsets[self.doc[i]][self.pos[i]]
        return self.texts[self.doc[i]][s:e]

    def context(self, i: int, chars: int = 80) -> str:
        """Up to `chars` characters of text before row i's token (the token itself excluded)."""
        s, _ = self.offsets[self.doc[i]][self.pos[i]]
        return self.texts[self.doc[i]][max(0, s - chars) : s]

    def window(self, i: int, k: int) -> list[int]:
        """The last `k` token ids up to and including row i's token (fewer near the start of the document)."""
        ids, p = self.token_ids[self.doc[i]], self.pos[i]
        return ids[max(0, p - k + 1) : p + 1]


@dataclass(frozen=True)
class Prediction:
    """One baseline's output: (N, d_model) vectors and whether only their direction means anything."""

    vectors: torch.Tensor
    direction_only: bool


# ---------------------------------------------------------------------------------------------------------------
# Ridge helper
# ---------------------------------------------------------------------------------------------------------------
def fit_ridge(x_train: torch.Tensor, y_train: torch.Tensor, alphas=RIDGE_ALPHAS):
    """Standardised features → RidgeCV (one alpha for all outputs, efficient leave-one-out). Returns the fitted pipeline."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), RidgeCV(alphas=list(alphas)))
    model.fit(x_train.double().numpy(), y_train.double().numpy())
    log.info("ridge: %d samples, %d features, alpha=%g", x_train.shape[0], x_train.shape[1], model[-1].alpha_)
    return model


def ridge_predict(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor) -> Prediction:
    """Fit on the training rows (targets normalised to sqrt(d)), predict the test rows."""
    model = fit_ridge(x_train, normalize(y_train))
    pred = torch.from_numpy(np.asarray(model.predict(x_test.double().numpy()))).float()
    return Prediction(pred, direction_only=True)


@dataclass(frozen=True)
class LinearMap:
    """A fitted ridge baseline as plain tensors: standardise the features, then one affine map. Ships in bundles.

    predict(x) = ((x - mean) / scale) @ coef.T + intercept, (N, in) -> (N, out): exactly sklearn's
    StandardScaler -> Ridge pipeline that `fit_ridge` returns.
    """

    mean: torch.Tensor  # (in,)
    scale: torch.Tensor  # (in,)
    coef: torch.Tensor  # (out, in)
    intercept: torch.Tensor  # (out,)

    @classmethod
    def from_pipeline(cls, model) -> LinearMap:
        scaler, ridge = model[0], model[-1]
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
        return cls(t(scaler.mean_), t(scaler.scale_), t(ridge.coef_), t(ridge.intercept_))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() - self.mean.float()) / self.scale.float()
        return x @ self.coef.float().T + self.intercept.float()


STORED_BASELINES = ("ridge_token", "ridge_token_bag8")  # fitted at training time and saved with the NLA
_FEATURES = {"ridge_token": lambda target, s: token_features(target, s),
             "ridge_token_bag8": lambda target, s: token_bag_features(target, s, 8)}


def fit_stored(target: Target, train: Samples, names: tuple[str, ...] = STORED_BASELINES) -> dict[str, LinearMap]:
    """Fit the baselines a bundle carries (so eval/explain print ridge rows without training text)."""
    return {name: LinearMap.from_pipeline(fit_ridge(_FEATURES[name](target, train), normalize(train.vectors))) for name in names}


def save_stored(maps: dict[str, LinearMap], path, dtype: torch.dtype = torch.float16) -> None:
    """Write fitted maps as one safetensors file (`name.mean`, `name.scale`, `name.coef`, `name.intercept`).

    Stored in float16 by default (a 1152 x 576 map is 1.3 MB); predictions are computed in float32.
    """
    from safetensors.torch import save_file

    from nlakit.io import atomic_path

    tensors = {f"{name}.{part}": getattr(m, part).to(dtype).contiguous()
               for name, m in maps.items() for part in ("mean", "scale", "coef", "intercept")}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "nlakit-baselines", "names": ",".join(maps)})


def load_stored(tensors: dict[str, torch.Tensor]) -> dict[str, LinearMap]:
    names = sorted({k.rsplit(".", 1)[0] for k in tensors})
    return {n: LinearMap(*(tensors[f"{n}.{part}"].float() for part in ("mean", "scale", "coef", "intercept"))) for n in names}


def stored_predict(name: str, m: LinearMap, target: Target, test: Samples) -> Prediction:
    return Prediction(m.predict(_FEATURES[name](target, test)), direction_only=True)


def _embeddings(target: Target) -> torch.Tensor:
    return target.model.get_input_embeddings().weight.detach().float().cpu()  # (V, D)


# ---------------------------------------------------------------------------------------------------------------
# The baselines, one small function each
# ---------------------------------------------------------------------------------------------------------------
def mean_vector(ref: Reference, test: Samples) -> Prediction:
    """(a) The training-set mean (raw) for every position."""
    return Prediction(ref.mean_raw.float().expand(len(test), -1).clone(), direction_only=False)


def token_features(target: Target, s: Samples) -> torch.Tensor:
    """Input embedding of each row's current token, (N, D)."""
    ids = torch.tensor([s.token_id(i) for i in range(len(s))], dtype=torch.long)
    return _embeddings(target)[ids]


def token_bag_features(target: Target, s: Samples, bag: int = 8) -> torch.Tensor:
    """[current token embedding, mean embedding of the `bag` tokens before it], (N, 2D). Zeros when there are none."""
    emb = _embeddings(target)
    rows = []
    for i in range(len(s)):
        window = s.window(i, bag + 1)  # the bag plus the current token
        before = window[:-1]
        ctx = emb[torch.tensor(before)].mean(0) if before else torch.zeros(emb.shape[1])
        rows.append(torch.cat([emb[window[-1]], ctx]))
    return torch.stack(rows)


def ridge_token(target: Target, train: Samples, test: Samples) -> Prediction:
    """(b) Ridge from the current token's input embedding."""
    return ridge_predict(token_features(target, train), train.vectors, token_features(target, test))


def ridge_token_bag(target: Target, train: Samples, test: Samples, bag: int = 8) -> Prediction:
    """(b2) Ridge from the current token plus a mean-bag of the `bag` tokens before it."""
    return ridge_predict(token_bag_features(target, train, bag), train.vectors, token_bag_features(target, test, bag))


def echo_ar(ar, tokenizer, test: Samples, k: int, *, batch_size: int = 64, dtype: torch.dtype | None = None) -> Prediction:
    """(c) The AR fed the decoded last `k` context tokens as its explanation (under `dtype` autocast when given)."""
    texts = [tokenizer.decode(test.window(i, k), skip_special_tokens=True) for i in range(len(test))]
    return Prediction(ar.reconstruct(texts, batch_size=batch_size, dtype=dtype), direction_only=True)


@torch.no_grad()
def window_vectors(target: Target, layer: int, s: Samples, k: int, *, batch_size: int = 64) -> torch.Tensor:
    """Layer-`layer` vector at the last token when the target reads only each row's last `k` tokens, (N, D)."""
    bos = getattr(target.tokenizer, "bos_token_id", None)
    adds_bos = bos is not None and target.tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [bos]
    rows = [s.window(i, k) for i in range(len(s))]
    rows = [([bos] if adds_bos and r[0] != bos else []) + r for r in rows]  # a window at the document start has its BOS
    out = torch.zeros(len(rows), target.d_model)
    pad = pad_id(target.tokenizer)
    for b in range(0, len(rows), batch_size):
        chunk = rows[b : b + batch_size]
        T = max(len(r) for r in chunk)
        ids = torch.full((len(chunk), T), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, r in enumerate(chunk):  # right padding: the last real token is at len(r) - 1
            ids[j, : len(r)] = torch.tensor(r)
            mask[j, : len(r)] = 1
        h = run_to_layer(target.model, target.decoder_layers, layer, ids.to(target.device), mask.to(target.device))  # (B, T, D)
        last = torch.tensor([len(r) - 1 for r in chunk])
        out[b : b + len(chunk)] = h.float().cpu()[torch.arange(len(chunk)), last]
    return out


def oracle_echo(target: Target, layer: int, train: Samples, test: Samples, k: int, *, batch_size: int = 64) -> Prediction:
    """(d) Ridge from the target's vector on only the last `k` tokens to the full-context activation."""
    x_train = window_vectors(target, layer, train, k, batch_size=batch_size)
    x_test = window_vectors(target, layer, test, k, batch_size=batch_size)
    return ridge_predict(x_train, train.vectors, x_test)


# ---------------------------------------------------------------------------------------------------------------
# All of them
# ---------------------------------------------------------------------------------------------------------------
NEEDS_TRAIN = ("ridge_token", "ridge_token_bag8", "oracle_echo4", "oracle_echo8", "oracle_echo32")
ALL_BASELINES = ("mean", "ridge_token", "ridge_token_bag8", "echo_ar8", "echo_ar32", "oracle_echo4", "oracle_echo8", "oracle_echo32")


def compute(names: tuple[str, ...], *, target: Target, ar, layer: int, ref: Reference, train: Samples | None, test: Samples,
            batch_size: int = 64, progress: Callable[[str], None] | None = None,
            stored: dict[str, LinearMap] | None = None, ar_dtype: torch.dtype | None = None) -> dict[str, Prediction]:
    """Predictions of the named baselines for `test`. Without `train`, a fitted baseline uses its `stored` map (the
    one the NLA bundle carries) when there is one, and is skipped (with a log line) otherwise.

    Args:
        names: a subset of `ALL_BASELINES`.
        target: the NLA's target (embeddings, re-runs).
        ar: the NLA's `Reconstructor` (context echo).
        layer: the NLA's layer.
        ref: the Reference (the mean baseline).
        train: training positions for the ridge fits, or None.
        test: the held-out positions.
        progress: called with each baseline's name when it is done.
        stored: fitted maps shipped with the NLA (`load_stored`), used when `train` is None.
        ar_dtype: autocast dtype for the AR (a training run's AR with bf16 frozen weights needs its bf16 autocast).
    """
    makers: dict[str, Callable[[], Prediction]] = {
        "mean": lambda: mean_vector(ref, test),
        "ridge_token": lambda: ridge_token(target, train, test),
        "ridge_token_bag8": lambda: ridge_token_bag(target, train, test, bag=8),
        "echo_ar8": lambda: echo_ar(ar, target.tokenizer, test, 8, batch_size=batch_size, dtype=ar_dtype),
        "echo_ar32": lambda: echo_ar(ar, target.tokenizer, test, 32, batch_size=batch_size, dtype=ar_dtype),
        "oracle_echo4": lambda: oracle_echo(target, layer, train, test, 4, batch_size=batch_size),
        "oracle_echo8": lambda: oracle_echo(target, layer, train, test, 8, batch_size=batch_size),
        "oracle_echo32": lambda: oracle_echo(target, layer, train, test, 32, batch_size=batch_size),
    }
    out: dict[str, Prediction] = {}
    for name in names:
        if name not in makers:
            raise NlakitError(f"unknown baseline {name!r}", f"use names from {list(ALL_BASELINES)}")
        untrained = name in NEEDS_TRAIN and (train is None or len(train) < 2)
        if untrained and name in (stored or {}):
            out[name] = stored_predict(name, stored[name], target, test)
        elif untrained:
            log.warning("baseline %s skipped: it is fitted on training positions and none were given", name)
            continue
        else:
            out[name] = makers[name]()
        if progress is not None:
            progress(name)
    return out
