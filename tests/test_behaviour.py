"""The behaviour dataset (impossible maths, frustrated vs calm) and the frustration scorer."""

from __future__ import annotations

import math
import re
from collections import Counter

import pytest

from nlakit.errors import NlakitError
from nlakit.experiments.transfer.behaviour import (
    FAMILIES,
    SHIPPED_DATASET,
    TEMPLATES,
    BehaviourConfig,
    generate_dataset,
    load_dataset,
    write_dataset,
)
from nlakit.experiments.transfer.frustration import FrustrationScorer, lexicon_hits


@pytest.fixture(scope="module")
def shipped():
    return load_dataset()


def test_shipped_file_is_reproduced_byte_for_byte(tmp_path):
    path = write_dataset(generate_dataset(BehaviourConfig()), tmp_path / "d.jsonl.gz")
    assert path.read_bytes() == SHIPPED_DATASET.read_bytes()


def test_dataset_size_split_and_variety(shipped):
    assert len(shipped) >= 600
    assert {e.family for e in shipped} == set(FAMILIES)
    assert len({e.prompt for e in shipped}) == len(shipped)  # unique prompts
    assert len({e.frustrated for e in shipped}) == len(shipped)
    held = [e for e in shipped if e.split == "heldout"]
    assert 0.15 <= len(held) / len(shipped) <= 0.25
    # every template is in both splits, so the held-out set covers every kind of problem
    assert {e.template for e in held} == set(TEMPLATES) == {e.template for e in shipped if e.split == "train"}
    # families are not dominated by one template
    assert max(Counter(e.template for e in shipped).values()) <= 2 * min(Counter(e.template for e in shipped).values())


def test_seed_changes_data_and_config_roundtrips():
    a = generate_dataset(BehaviourConfig(n_examples=100, seed=0))
    b = generate_dataset(BehaviourConfig(n_examples=100, seed=1))
    assert len(a) == len(b) == 100
    assert [e.prompt for e in a] != [e.prompt for e in b]
    cfg = BehaviourConfig(n_examples=123, heldout_frac=0.3, seed=4)
    assert BehaviourConfig.from_dict(cfg.to_dict()) == cfg


def test_bad_config_raises():
    with pytest.raises(NlakitError, match="heldout_frac"):
        BehaviourConfig(heldout_frac=1.5)
    with pytest.raises(NlakitError, match="n_examples"):
        BehaviourConfig(n_examples=3)


def test_load_dataset_errors(tmp_path):
    with pytest.raises(NlakitError, match="split"):
        load_dataset(split="test")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    with pytest.raises(NlakitError, match="lacks the fields"):
        load_dataset(bad)


def test_impossibility_is_real(shipped):
    """Brute-force checks of the claims for templates whose numbers can be read back from the prompt."""
    by = {}
    for e in shipped:
        by.setdefault(e.template, []).append(e)
    for e in by["linear_diophantine"]:
        a, b, c = re.search(r"(\d+)x \+ (\d+)y = (\d+)", e.prompt).groups()
        assert int(c) % math.gcd(int(a), int(b)) != 0
    for e in by["integer_square"]:
        n = int(re.search(r"(?:x\^2 = |exactly )(\d+)", e.prompt).group(1))
        assert math.isqrt(n) ** 2 != n
    for e in by["composite_is_prime"]:
        n = int(re.search(r"(\d{2,})", e.prompt).group(1))
        assert any(n % p == 0 for p in range(2, math.isqrt(n) + 1))
    for e in by["triangle"]:
        a, b, c = (int(x) for x in re.search(r"(\d+)(?: cm)?, (\d+)(?: cm)? and (\d+)", e.prompt).groups())
        assert a + b <= c
    for e in by["even_sum_odd"]:
        assert int(re.search(r"(\d+)\.", e.prompt).group(1)) % 2 == 1
    for e in by["difference_squares"]:
        assert int(re.search(r"(?:= |Write )(\d+)", e.prompt).group(1)) % 4 == 2


def test_voices_differ_and_calm_never_claims_open_problems_have_no_answer(shipped):
    for e in shipped:
        assert e.frustrated != e.calm
        assert "!" not in e.calm
        if e.family == "open_problem":
            assert "no such" not in e.calm and "no answer" not in e.calm


def test_lexicon_separates_the_two_voices(shipped):
    fr = sum(bool(lexicon_hits(e.frustrated)) for e in shipped) / len(shipped)
    calm = sum(bool(lexicon_hits(e.calm)) for e in shipped) / len(shipped)
    assert fr >= 0.95 and calm <= 0.05


def test_lexicon_reads_descriptions_and_ignores_neutral_text():
    assert "frustration_word" in lexicon_hits("The writer sounds exasperated with the problem.")
    assert "giving_up" in lexicon_hits("the assistant is giving up on the proof")
    assert "self_deprecation" in lexicon_hits("I’m so useless at this")  # curly apostrophe
    # phrasings a 24-step SFT variant of SmolLM2 produced in its own words (not in the dataset's frustrated voice)
    assert "helpless" in lexicon_hits("I'm not sure what to do. I'm stuck.")
    assert "self_deprecation" in lexicon_hits("I'm sorry, I'm not a helpful AI.")
    for neutral in ["The derivative of x^2 is 2x.", "Paris is the capital of France.", "def f(x): return x != 0",
                    "Here is a recipe for pancakes: mix flour, eggs and milk."]:
        assert lexicon_hits(neutral) == []


def test_classifier_fits_and_generalises_to_heldout(shipped):
    scorer = FrustrationScorer.from_dataset(shipped)
    assert scorer.classifier.heldout_accuracy >= 0.95
    s = scorer.score(["Ugh, I give up. I'm terrible at this.", "This has no solution: a square is never negative."])
    assert s[0].p_frustrated > 0.5 > s[1].p_frustrated
    assert s[0].lexicon_hit and not s[1].lexicon_hit
    d = scorer.describe()
    assert d["classifier"]["top_features"]["frustrated"] and set(d["lexicon"]) >= {"giving_up", "self_deprecation"}
