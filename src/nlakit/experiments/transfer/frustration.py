"""The frustration scorer, for model answers and NLA explanations alike. Two parts, both transparent:
- `lexicon_hits`: regexes in named categories (interjections, giving up, self-deprecation, exasperation,
  frustration vocabulary). The vocabulary also matches *descriptions* of frustration ("the writer is
  exasperated"), so the same scorer reads NLA explanations.
- `FrustrationClassifier`: TF-IDF (word 1-2 grams) + logistic regression fitted on the dataset's two
  response types (train split only), giving P(frustrated).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nlakit.errors import NlakitError
from nlakit.experiments.common import FRUSTRATION_LEXICON, lexicon_hits, lexicon_score  # noqa: F401 (re-exported)
from nlakit.experiments.transfer.behaviour import BehaviourExample, load_dataset


@dataclass
class FrustrationClassifier:
    """TF-IDF + logistic regression, P(frustrated) for a text. Fit on the dataset's two response types.

    Fitted on frustrated vs calm answers alone, a text with none of the learnt n-grams (an ordinary answer, an
    empty string) gets the intercept's probability, which need not be low. Optional ``neutral`` texts (ordinary
    assistant replies from the *training* corpus) join the calm class so that "not frustrated" covers them too.
    """

    pipeline: object = field(repr=False)
    n_train: int = 0
    n_neutral: int = 0
    heldout_accuracy: float | None = None

    @classmethod
    def fit(cls, examples: list[BehaviourExample], seed: int = 0, neutral: list[str] | None = None) -> FrustrationClassifier:
        """Fit on the *train* split's responses (frustrated = 1, calm = 0, plus `neutral` = 0); accuracy on the held-out split.

        The classes are re-weighted to equal total weight, so adding neutral texts does not shift the prior.
        """
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        train = [e for e in examples if e.split == "train"]
        held = [e for e in examples if e.split == "heldout"]
        if len(train) < 4:
            raise NlakitError(f"only {len(train)} training examples for the frustration classifier", "pass the full behaviour dataset")
        neutral = [t for t in (neutral or []) if isinstance(t, str) and t.strip()]
        texts = [e.frustrated for e in train] + [e.calm for e in train] + neutral
        labels = [1] * len(train) + [0] * (len(train) + len(neutral))
        pipe = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, lowercase=True),
                             LogisticRegression(C=1.0, max_iter=2000, random_state=seed, class_weight="balanced"))
        pipe.fit(texts, labels)
        clf = cls(pipeline=pipe, n_train=len(texts), n_neutral=len(neutral))
        if held:
            p = clf.predict_proba([e.frustrated for e in held] + [e.calm for e in held])
            y = [1] * len(held) + [0] * len(held)
            clf.heldout_accuracy = sum((pi > 0.5) == bool(yi) for pi, yi in zip(p, y)) / len(y)
        return clf

    def predict_proba(self, texts: list[str]) -> list[float]:
        if not texts:
            return []
        return [float(p) for p in self.pipeline.predict_proba(list(texts))[:, 1]]

    def top_features(self, k: int = 15) -> dict[str, list[str]]:
        """The k n-grams that push hardest towards each class (for the report: what the classifier keys on)."""
        vec, lr = self.pipeline.steps[0][1], self.pipeline.steps[1][1]
        names = vec.get_feature_names_out()
        order = lr.coef_[0].argsort()
        return {"frustrated": [str(names[i]) for i in order[::-1][:k]], "calm": [str(names[i]) for i in order[:k]]}


@dataclass(frozen=True)
class FrustrationScore:
    lexicon: list[str]  # matched categories
    p_frustrated: float  # classifier probability

    @property
    def lexicon_hit(self) -> bool:
        return bool(self.lexicon)


class FrustrationScorer:
    """Lexicon + classifier in one object. `score(texts)` gives per-text scores, `rates(texts)` the 0/1 lists."""

    def __init__(self, classifier: FrustrationClassifier):
        self.classifier = classifier

    @classmethod
    def from_dataset(cls, examples: list[BehaviourExample] | None = None, seed: int = 0,
                     neutral: list[str] | None = None) -> FrustrationScorer:
        """Fit the classifier on `examples` (default: the shipped dataset) plus optional neutral replies."""
        return cls(FrustrationClassifier.fit(examples if examples is not None else load_dataset(), seed=seed, neutral=neutral))

    def score(self, texts: list[str]) -> list[FrustrationScore]:
        probs = self.classifier.predict_proba(texts)
        return [FrustrationScore(lexicon_hits(t), p) for t, p in zip(texts, probs)]

    def describe(self) -> dict:
        return {"lexicon": {name: rx for name, rx in FRUSTRATION_LEXICON},
                "classifier": {"kind": "tfidf(1-2 gram) + logistic regression", "n_train": self.classifier.n_train,
                               "n_neutral": self.classifier.n_neutral,
                               "heldout_accuracy": self.classifier.heldout_accuracy,
                               "top_features": self.classifier.top_features(10)}}
