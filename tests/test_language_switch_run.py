"""The language-switch experiment on tiny models: onsets, leads and false positives follow from what the readers say."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from nlakit.errors import NlakitError
from nlakit.experiments.language_switch.dataset import load_dataset
from nlakit.experiments.language_switch.run import (
    READERS,
    LanguageSwitchConfig,
    median_summary,
    run,
)

SMALL = dict(languages=("fr", "de"), n_per_language=2, n_controls=2, n_probe=3, generate=3, output_tokens=40, max_new_tokens=6,
             batch_size=16, n_curves=2, align_before=6)


@dataclass
class _Expl:
    text: str
    ok: bool = True


class SaysFrench:
    """An NLA stand-in whose every explanation names French (the layer and width of a real tiny NLA)."""

    def __init__(self, nla):
        self.layer, self.d_model = nla.layer, nla.d_model

    def explain(self, vectors, **kw):
        return [_Expl("This is French text, written by a French speaker.") for _ in range(len(vectors))]


@pytest.fixture()
def answers_in_language(tiny_llama, monkeypatch):
    """The tiny model answers every prompt with the dataset's reference answer (so cue prompts do switch)."""
    ref = {e.prompt: e.answer for e in load_dataset()}
    monkeypatch.setattr(tiny_llama, "generate", lambda prompts, **kw: [ref[p] for p in prompts])
    return tiny_llama


def test_planted_reader_gives_onset_zero_and_lead_equal_to_output_onset(answers_in_language, make_nla, tmp_path):
    from nlakit.io import write_json
    from nlakit.report import write_report

    res = run(LanguageSwitchConfig(**SMALL), target=answers_in_language, nla=SaysFrench(make_nla("llama", 2)))
    fr = [p for p in res["prompts"] if p["lang"] == "fr"]
    de = [p for p in res["prompts"] if p["lang"] == "de"]
    assert fr and de and all(p["output_onset"] is not None for p in fr)  # the reference answers are French
    for p in fr:
        assert p["output_onset"] >= p["answer_start"] > 0  # the switch happens in the answer, after the prompt
        assert p["onsets"]["nla"] == 0 and p["lead"]["nla"] == p["output_onset"]
    assert all(p["onsets"]["nla"] is None for p in de)  # "French" is not German
    row = next(r for r in res["table"] if r["lang"] == "fr" and r["reader"] == "nla")
    assert row["detected"]["mean"] == 1.0 and row["lead"]["median"] == median_summary([p["output_onset"] for p in fr], 0)["median"]
    # every control is a false positive of this reader, and none of the output (answers are English)
    assert res["controls"]["readers"]["nla"]["false_positive"]["mean"] == 1.0
    assert res["controls"]["output_false_switch"]["mean"] == 0.0
    assert res["nla_vocabulary"]["fr"]["names_target"] == 1.0 and res["nla_vocabulary"]["de"]["names_other"] == 1.0
    # aligned on the output onset, the planted reader is on for exactly the French share of the prompts defined there
    switched = [p for p in res["prompts"] if p["output_onset"] is not None]
    for pt in res["aligned"]["nla"]:
        here = [p for p in switched if 0 <= p["output_onset"] + pt["offset"] < p["n_positions"]]
        assert pt["n"] == len(here) and (not here or pt["mean"] == pytest.approx(sum(p["lang"] == "fr" for p in here) / len(here)))
    html = write_report("language_switch", write_json(tmp_path / "ls.json", res), tmp_path / "ls.html").read_text()
    assert "<svg" in html and "French" in html


def test_end_to_end_with_a_tiny_nla(answers_in_language, make_nla):
    res = run(LanguageSwitchConfig(**SMALL), target=answers_in_language, nla=make_nla("llama", 2))
    assert res["readers"] == list(READERS) and res["n_prompts"] == 6
    for p in res["prompts"]:
        for r in READERS:
            o = p["onsets"][r]
            assert o is None or 0 <= o < p["n_positions"]
            assert p["lead"][r] == (p["output_onset"] - o if o is not None and p["output_onset"] is not None else None)
    assert set(res["lens"]["token_set_sizes"]) == {"fr", "de"} and all(res["lens"]["token_set_sizes"].values())
    json.dumps(res)


def test_median_summary():
    s = median_summary([1, 2, 3, 4, 100], seed=0)
    assert s["median"] == 3 and s["iqr"] == [2, 4] and s["ci95"][0] <= 3 <= s["ci95"][1] and s["n"] == 5
    assert median_summary([], 0)["median"] is None


def test_bad_settings_and_cli(tiny_bundle, tmp_path):
    from typer.testing import CliRunner

    from nlakit.cli import app

    with pytest.raises(NlakitError, match="smooth"):
        LanguageSwitchConfig(smooth=2)
    with pytest.raises(NlakitError, match="unknown languages"):
        LanguageSwitchConfig(languages=("xx",))
    base = ["experiment", "language-switch", "--target", "tiny:llama", "--nla", str(tiny_bundle), "--out", str(tmp_path)]
    r = CliRunner().invoke(app, base + ["--languages", "fr,klingon"])
    assert isinstance(r.exception, NlakitError) and "languages" in str(r.exception)
    r = CliRunner().invoke(app, base + ["--languages", "fr", "--n-per-language", "1", "--n-controls", "1", "--n-probe", "2", "--generate", "2",
                                        "--output-tokens", "4", "--max-new-tokens", "4"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "language_switch.json").read_text())["kind"] == "language_switch"
    assert (tmp_path / "language_switch.html").exists()


def test_first_detection_precedes_or_equals_the_onset(answers_in_language, make_nla):
    res = run(LanguageSwitchConfig(**SMALL), target=answers_in_language, nla=SaysFrench(make_nla("llama", 2)))
    for p in res["prompts"]:
        for r in READERS:
            f, o = p["first_detection"][r], p["onsets"][r]
            assert o is None or (f is not None and f <= o)
    assert res["controls"]["readers"]["nla"]["any_detection"]["mean"] == 1.0
