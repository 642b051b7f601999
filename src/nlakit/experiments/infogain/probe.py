"""Cross-validated classifiers for one label: output text, NLA explanation, both, the raw activation, and a
shuffled-label control; accuracy / AUROC with 95% intervals, and the paired gain of "both" over "output only".

Folds are grouped by prompt (`StratifiedGroupKFold`), so one prompt's rows (several models, say) never sit in
the training and the test fold at once. TF-IDF vocabularies are fitted inside each training fold. Hyperparameters
are fixed (word 1-2 grams, sublinear tf, min_df 2, L2 logistic regression C=1; the activation probe standardises
and uses C=0.1), not tuned on the test folds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FEATURES = ("output", "explanation", "both", "activation", "shuffled")
_PAD = "xxconst"


def _text_pipeline(columns: Sequence[str]):
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    def vec():
        return TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, token_pattern=r"(?u)\b\w+\b")

    ct = ColumnTransformer([(c, vec(), i) for i, c in enumerate(columns)])
    return make_pipeline(ct, LogisticRegression(C=1.0, max_iter=2000))


def _vector_pipeline():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))


def folds(y: np.ndarray, groups: np.ndarray, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified, grouped folds (as many as the smallest class and the number of groups allow, at least 2)."""
    from sklearn.model_selection import StratifiedGroupKFold

    _, counts = np.unique(y, return_counts=True)
    k = int(max(2, min(n_folds, counts.min(), len(np.unique(groups)))))
    return list(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, groups))


def oof_proba(kind: str, X, y: np.ndarray, splits, classes: np.ndarray) -> np.ndarray:
    """Out-of-fold class probabilities, (n, n_classes); a fold whose training part lacks a class gives it 0."""
    P = np.zeros((len(y), len(classes)))
    for tr, te in splits:
        model = _vector_pipeline() if kind == "activation" else _text_pipeline(["a", "b"][: X.shape[1]])
        Xtr, Xte = X[tr], X[te]
        if len(np.unique(y[tr])) < 2:
            P[te] = (classes == y[tr][0]).astype(float)
            continue
        model.fit(Xtr, y[tr])
        p = model.predict_proba(Xte)
        cols = [int(np.where(classes == c)[0][0]) for c in model.classes_]
        P[np.ix_(te, cols)] = p
    return P


def auroc(y_idx: np.ndarray, P: np.ndarray) -> float | None:
    """Binary AUROC of P[:, 1], or macro one-vs-rest AUROC for more classes; None when one class only."""
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y_idx)) < 2:
        return None
    if P.shape[1] == 2:
        return float(roc_auc_score(y_idx, P[:, 1]))
    present = np.unique(y_idx)
    return float(np.mean([roc_auc_score(y_idx == c, P[:, c]) for c in present]))


def _boot(y_idx: np.ndarray, Ps: list[np.ndarray], n_boot: int, seed: int):
    """Bootstrap replicates over rows: per replicate, (accuracy, AUROC) of every P in Ps (AUROC nan if one class)."""
    rng = np.random.default_rng(seed)
    acc = np.full((n_boot, len(Ps)), np.nan)
    auc = np.full((n_boot, len(Ps)), np.nan)
    for b in range(n_boot):
        ix = rng.integers(0, len(y_idx), len(y_idx))
        for j, P in enumerate(Ps):
            acc[b, j] = float((P[ix].argmax(1) == y_idx[ix]).mean())
            a = auroc(y_idx[ix], P[ix])
            auc[b, j] = np.nan if a is None else a
    return acc, auc


def _ci(x: np.ndarray) -> list[float | None]:
    x = x[np.isfinite(x)]
    return [float(np.percentile(x, 2.5)), float(np.percentile(x, 97.5))] if x.size else [None, None]


def evaluate_label(labels: Sequence[str], groups: Sequence, output: Sequence[str], explanation: Sequence[str], vectors: np.ndarray,
                   *, n_folds: int = 5, n_boot: int = 500, seed: int = 0) -> dict:
    """Every feature set on one label at one position type.

    Returns {"n", "classes", "class_counts", "majority_accuracy", "features": {name: {accuracy, accuracy_ci95, auroc,
    auroc_ci95}}, "gain_both_over_output": {accuracy, accuracy_ci95, auroc, auroc_ci95}} or, when only one class
    occurs, {"n", "classes", "class_counts", "degenerate": True}."""
    y = np.asarray(labels)
    classes, counts = np.unique(y, return_counts=True)
    head = {"n": len(y), "classes": [str(c) for c in classes], "class_counts": {str(c): int(k) for c, k in zip(classes, counts)}}
    if len(classes) < 2 or counts.min() < 2:
        return head | {"degenerate": True}
    g = np.asarray([str(x) for x in groups])
    y_idx = np.searchsorted(classes, y)
    splits = folds(y, g, n_folds, seed)
    output = [f"{_PAD} {o}" for o in output]  # a constant word: no fold ever has an empty vocabulary
    explanation = [f"{_PAD} {e}" for e in explanation]
    text = {"output": np.array([[o] for o in output], dtype=object), "explanation": np.array([[e] for e in explanation], dtype=object),
            "both": np.array([[o, e] for o, e in zip(output, explanation)], dtype=object)}
    y_shuf = y[np.random.default_rng(seed + 1).permutation(len(y))]  # features-label pairing broken, class counts kept
    P = {k: oof_proba("text", v, y, splits, classes) for k, v in text.items()}
    P["activation"] = oof_proba("activation", np.asarray(vectors, dtype=np.float64), y, splits, classes)
    P_shuf = oof_proba("text", text["both"], y_shuf, splits, classes)
    y_shuf_idx = np.searchsorted(classes, y_shuf)
    names = list(P)
    acc_b, auc_b = _boot(y_idx, [P[k] for k in names], n_boot, seed)
    acc_s, auc_s = _boot(y_shuf_idx, [P_shuf], n_boot, seed)
    feats = {}
    for j, k in enumerate(names):
        feats[k] = {"accuracy": float((P[k].argmax(1) == y_idx).mean()), "accuracy_ci95": _ci(acc_b[:, j]),
                    "auroc": auroc(y_idx, P[k]), "auroc_ci95": _ci(auc_b[:, j])}
    feats["shuffled"] = {"accuracy": float((P_shuf.argmax(1) == y_shuf_idx).mean()), "accuracy_ci95": _ci(acc_s[:, 0]),
                         "auroc": auroc(y_shuf_idx, P_shuf), "auroc_ci95": _ci(auc_s[:, 0])}
    jb, jo = names.index("both"), names.index("output")
    gain = {"accuracy": feats["both"]["accuracy"] - feats["output"]["accuracy"], "accuracy_ci95": _ci(acc_b[:, jb] - acc_b[:, jo]),
            "auroc": None if feats["both"]["auroc"] is None else feats["both"]["auroc"] - feats["output"]["auroc"],
            "auroc_ci95": _ci(auc_b[:, jb] - auc_b[:, jo])}
    return head | {"degenerate": False, "n_folds": len(splits), "majority_accuracy": float(counts.max() / counts.sum()),
                   "features": feats, "gain_both_over_output": gain}
