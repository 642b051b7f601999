"""The language-switch dataset (generator, split, attribution), the detectors, the SFT variant and its lingua score."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from nlakit.errors import NlakitError
from nlakit.experiments.language_switch import dataset as D
from nlakit.experiments.language_switch import detect as X


def _pud(path: Path, n: int = 24) -> Path:
    """A small multilingual file in the corpus's schema: n parallel PUD groups (tiny 'translations')."""
    words = {"en": "the {i} cat sat on the mat near the old house", "fr": "le chat {i} était assis sur le tapis près de la vieille maison",
             "de": "die Katze {i} saß auf der Matte neben dem alten Haus", "es": "el gato {i} se sentó en la alfombra junto a la casa vieja",
             "it": "il gatto {i} era seduto sul tappeto vicino alla vecchia casa", "pt": "o gato {i} sentou no tapete perto da casa velha"}
    rows = [{"id": f"pud-{lang}-{i}", "lang": lang, "text": t.format(i=i), "group": f"pud:n{i:04d}",
             "source": f"UniversalDependencies/UD_{lang}-PUD", "license": "CC-BY-SA-3.0"} for i in range(n) for lang, t in words.items()]
    rows.append({"id": "ja-1", "lang": "ja", "text": "猫", "group": "ja_gsd:1", "source": "x", "license": "CC-BY-SA-4.0"})
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def test_generator_is_seeded_balanced_and_splits_by_sentence(tmp_path):
    corpus = _pud(tmp_path / "ml.jsonl.gz")
    a, b = D.generate_dataset(D.LanguageSwitchConfig(), corpus), D.generate_dataset(D.LanguageSwitchConfig(), corpus)
    assert a == b and a != D.generate_dataset(D.LanguageSwitchConfig(seed=1), corpus)
    counts = {lang: sum(e.lang == lang for e in a) for lang in (*D.LANGUAGES, "en")}
    assert set(counts.values()) == {4}  # 24 groups, six classes, round-robin
    held = {e.group for e in a if e.split == "heldout"}
    assert held and not held & {e.group for e in a if e.split == "train"}
    for e in a:
        assert e.english in e.prompt and e.license == "CC-BY-SA-3.0" and e.sources
        if e.kind == "cue":
            assert {"name", "place"} & set(e.cues) and e.answer.endswith(e.answer.split(": ")[-1])
            assert "sentence" not in e.answer and "cat" not in e.answer  # answered in the language, not in English
        else:
            assert e.lang == "en" and e.cues == [] and e.english in e.answer


def test_no_prompt_names_a_language_or_country():
    # the shipped prompts carry names, places and phrasing, never a lexicon word: a lexicon hit in an explanation is inference
    cue_words = {w for lang in D.LANGUAGES for group in (D.NAMES, D.PLACES, D.L1, D.NATIVE) for w in group[lang]}
    for text in [*cue_words, *D.APOLOGIES, *D.L1["en"], *D.NAMES["en"], *D.PLACES["en"], *D.REQUESTS]:
        assert X.lexicon_languages(text) == [], text


def test_shipped_file_matches_the_generator_and_carries_attribution():
    shipped = D.load_dataset()
    assert {e.lang for e in shipped} == {*D.LANGUAGES, "en"} and {e.split for e in shipped} == {"train", "heldout"}
    text = (D.DATA_DIR / "ATTRIBUTION.md").read_text()
    assert "CC-BY-SA-3.0" in text and "UD_French-PUD" in text
    if not Path(D.DEFAULT_CORPUS).exists():
        pytest.skip("the shared corpus is not on this machine")
    assert D.generate_dataset() == shipped


def test_dataset_bad_input(tmp_path):
    with pytest.raises(NlakitError, match="does not exist"):
        D.read_pud(tmp_path / "nope.jsonl.gz", D.LANGUAGES)
    with pytest.raises(NlakitError, match="unknown cue languages"):
        D.LanguageSwitchConfig(languages=("xx",))
    (tmp_path / "bad.jsonl").write_text('{"id": "a"}\n')
    with pytest.raises(NlakitError, match="lacks the fields"):
        D.load_dataset(tmp_path / "bad.jsonl")
    path = D.write_dataset(D.generate_dataset(corpus=_pud(tmp_path / "ml.jsonl.gz")), tmp_path / "out" / "ls.jsonl.gz")
    assert (path.parent / "ATTRIBUTION.md").exists() and D.load_dataset(path, split="heldout")


def test_explanation_detection_lexicon_quotes_and_foreign():
    ident = X.Identifier(("en", "fr", "de"))
    hits = X.explanation_hits('This is French text. The text so far ends with: "…de la ville et de la maison".', ident, ("fr", "de"),
                              context="xx de la ville et de la maison")
    assert hits["lexicon"] == ["fr"] and hits["quote"] == ["fr"] and hits["quote_echo"] == ["fr"]
    hits = X.explanation_hits('A chat. It ends with: "Die Katze saß auf der Matte".', ident, ("fr", "de"))
    assert hits["lexicon"] == [] and hits["quote"] == ["de"] and hits["quote_echo"] == []
    plain = X.explanation_hits('This is a chat. It ends with: "the cat sat on the mat".', ident, ("fr", "de"))
    assert plain == {"lexicon": [], "quote": [], "quote_echo": [], "foreign": False}
    assert X.explanation_hits("The user writes in a foreign language.", ident, ("fr",))["foreign"]
    assert X.quoted_fragments('a “b c” «d e» „f g“ "h"') == ["b c", "d e", "f g"]


def test_output_onset_finds_the_switch():
    ident = X.Identifier(("en", "fr"))
    text = "Sure, here it is: le chat était assis sur le tapis près de la vieille maison."
    at = X.output_onset(text, "fr", ident)
    assert at is not None and text[at:].startswith(("le chat", "is: le"))
    assert X.output_onset("The cat sat on the mat near the old house in Lyon.", "fr", ident) is None


def test_smoothing_and_onset():
    assert X.onset([0, 1, 0, 1, 1]) == 3 and X.onset([1, 1]) == 0 and X.onset([1, 0]) is None and X.onset([]) is None
    assert X.onset([0, 0, 0, 1], min_run=3) is None and X.onset([0, 1, 1, 1], min_run=3) == 1
    s = X.smooth(np.array([0, 0, 1, 0, 0, 1, 1, 1.0]), 3)
    assert np.allclose(s[:3], [0, 1 / 3, 1 / 3]) and X.onset(s >= 0.5) == 5  # a lone blip is smoothed away
    assert np.array_equal(X.smooth(np.array([0, 1.0]), 1), [0, 1])


def test_language_token_ids_are_specific(tiny_llama):
    texts = {"en": ["the cat sat on the mat"] * 5, "fr": ["le chat sur le tapis"] * 5}
    ids = X.language_token_ids(tiny_llama.tokenizer, texts, ratio=4.0, min_count=3)
    fr_only = set(tiny_llama.tokenizer("le chat sur le tapis", add_special_tokens=False)["input_ids"]) - set(
        tiny_llama.tokenizer("the cat sat on the mat", add_special_tokens=False)["input_ids"])
    assert ids["fr"] and set(ids["fr"]) <= fr_only and not set(ids["fr"]) & set(ids["en"])


FAST = {"n_train": 6, "max_steps": 2, "batch_size": 2, "max_length": 192, "lora_r": 4, "lora_alpha": 8, "device": "cpu"}


def test_variant_trains_merges_and_scores(tmp_path):
    import torch

    from nlakit.experiments.common import VARIANT_META, variant_info
    from nlakit.experiments.language_switch.score import (
        LanguageScoreConfig,
        score_models,
    )
    from nlakit.experiments.language_switch.variant import (
        KIND,
        SwitchVariantConfig,
        build_variant,
    )
    from nlakit.targets import load_target, tiny_target

    base = tiny_target()
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    res = build_variant(SwitchVariantConfig(target="tiny", out_dir=str(tmp_path), **FAST), target=base)
    meta = json.loads((Path(res.path) / VARIANT_META).read_text())
    assert res.kind == KIND == meta["kind"] and meta["dataset"]["n_train"] == 6 and meta["train"]["steps"] == 2
    assert variant_info(res.path)["kind"] == KIND
    v = load_target(res.path)
    assert any(not torch.allclose(w, before[k]) for k, w in v.model.state_dict().items() if k in before)
    assert all(torch.equal(w, before[k]) for k, w in base.model.state_dict().items())  # trained on a copy
    out = score_models(LanguageScoreConfig(models=("base", res.path), n_per_language=2, max_new_tokens=4, device="cpu"),
                       targets={"base": base, res.path: v})
    assert [m["kind"] for m in out["models"]] == ["base", KIND] and out["n_prompts"] == {**{l: 2 for l in D.LANGUAGES}, "en": 2}
    for m in out["models"]:
        for lang, row in m["languages"].items():
            rate = row["false_switch" if lang == "en" else "accuracy"]
            assert 0.0 <= rate["mean"] <= 1.0 and rate["ci95"][0] <= rate["mean"] <= rate["ci95"][1]
            assert sum(row["detected"].values()) == row["n"] == 2
    json.dumps(out)


def test_cli_language_switch_dataset_build_score(tmp_path):
    from typer.testing import CliRunner

    from nlakit.cli import app
    from nlakit.targets import tiny_target

    runner = CliRunner()
    corpus = _pud(tmp_path / "ml.jsonl.gz", n=36)
    r = runner.invoke(app, ["variants", "dataset", "--kind", "language-switch", "--corpus", str(corpus), "--out", str(tmp_path / "d.jsonl")])
    assert r.exit_code == 0, r.output
    assert len((tmp_path / "d.jsonl").read_text().splitlines()) == 36 and (tmp_path / "ATTRIBUTION.md").exists()
    r = runner.invoke(app, ["variants", "dataset", "--kind", "language-switch", "--n", "5", "--out", str(tmp_path / "e.jsonl")])
    assert isinstance(r.exception, NlakitError) and "--n" in str(r.exception)
    r = runner.invoke(app, ["variants", "build", "--kind", "nope", "--out", str(tmp_path)])
    assert isinstance(r.exception, NlakitError) and "language-switch" in r.exception.fix
    base = tmp_path / "base"
    t = tiny_target()
    t.model.save_pretrained(base)
    t.tokenizer.save_pretrained(base)
    r = runner.invoke(app, ["variants", "build", "--kind", "language-switch", "--target", str(base), "--out", str(tmp_path / "v"),
                            "--dataset", str(tmp_path / "d.jsonl"), "--n-train", "4", "--max-steps", "1", "--batch-size", "2",
                            "--max-length", "160", "--lora-r", "2", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    variant = tmp_path / "v" / "language-switch"
    assert (variant / "config.json").exists()
    r = runner.invoke(app, ["variants", "score-language", "--models", f"{base},{variant}", "--dataset", str(tmp_path / "d.jsonl"),
                            "--n-per-language", "1", "--max-new-tokens", "3", "--out", str(tmp_path / "s.json"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "s.json").read_text())["kind"] == "language_score"


def test_translation_strips_the_lead_in():
    for e in D.load_dataset()[:60]:
        t = D.translation(e)
        assert e.answer.endswith(t) and len(t) < len(e.answer) and not any(t.startswith(x) for x in D.LEADINS[e.lang])
