"""`nlakit experiment symreg` end to end on a tiny random target and a tiny NLA (no downloads)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from nlakit.errors import NlakitError
from nlakit.experiments.symreg import nla as N
from nlakit.experiments.symreg import tasks as T
from nlakit.experiments.symreg.run import ALL_METHODS, SymregConfig, rescore, run
from nlakit.io import write_json
from nlakit.report import write_report

FAST = {"max_new_tokens": 6, "nla_max_new_tokens": 6, "pyoperon_schedule_s": (1,), "search_time_s": 3.0, "search_max_size": 4,
        "baselines": ("mean", "echo_ar8"), "n_shuffles": 50, "batch_size": 4}


def test_config_validation_and_round_trip(tmp_path):
    cfg = SymregConfig(n_tasks=3, methods=("model", "linear"), pyoperon_schedule_s=(1, 2))
    assert SymregConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(NlakitError, match="unknown methods"):
        SymregConfig(methods=("model", "magic"))
    with pytest.raises(NlakitError, match="n_tasks"):
        SymregConfig(n_tasks=-2)
    with pytest.raises(NlakitError, match="no tasks"):
        SymregConfig(n_tasks=0, include_reference=False)
    with pytest.raises(NlakitError, match="train_data"):
        SymregConfig(train_data=str(tmp_path / "missing.jsonl"))
    assert not SymregConfig(methods=("linear",), nla=None).needs_target


@pytest.fixture(scope="module")
def results(tiny_llama, make_nla):
    cfg = SymregConfig(target="tiny:llama", n_tasks=2, methods=ALL_METHODS, **FAST)
    return run(cfg, target=tiny_llama, nla=make_nla("llama", 2))


def test_end_to_end_on_a_tiny_model(results, tmp_path):
    assert results["kind"] == "symreg" and len(results["tasks"]) == 3  # reference + 2 generated
    assert results["tasks"][0]["source"] == "reference" and results["tasks"][0]["truth"] is None
    for t in results["tasks"]:
        assert set(t["methods"]) == set(ALL_METHODS)
        assert isinstance(t["methods"]["model"]["raw"], str)  # the model's answer is kept verbatim
    for m in ALL_METHODS:
        s = results["summary"][m]
        assert s["n"] == 2 and "reference" in s
        assert s["recovery_rate"] is None or 0.0 <= s["recovery_rate"] <= 1.0
    assert results["summary"]["search"]["reference"]["fits_table"]  # the baselines find the reference equation
    assert results["runtime_s"]["total"] > 0 and results["hardware"]["cpu_count"]
    # part 4: every named position of every task explained and scored beside the baselines
    nla = results["nla"]
    assert nla["available"] and nla["note"] is None
    assert {r["position"] for r in nla["rows"]} <= set(N.POSITIONS) and len(nla["rows"]) >= 3
    assert all(np.isfinite(r["fve_nrm"]) and set(r["baselines"]) == {"mean", "echo_ar8"} for r in nla["rows"])
    assert "final" in nla["aggregate"] and nla["aggregate"]["final"][0]["name"] == "nla"
    fp = nla["form_prediction"]["final"]["true_equation"]
    assert fp["n"] == 2 and 0.0 <= fp["match_rate"] <= 1.0 and 0.0 < fp["p_value"] <= 1.0
    # the report renders from the JSON alone
    path = write_json(tmp_path / "symreg.json", results)
    html = write_report("symreg", path, tmp_path / "symreg.html").read_text()
    assert "Symbolic regression" in html and "reference table" in html and "foretell" in html


def test_rescore_rederives_the_same_scores_without_a_model(results):
    again = rescore(json.loads(json.dumps(results)))  # through JSON, as from disk
    assert again["summary"] == json.loads(json.dumps(results["summary"]))
    assert [t["methods"]["model"]["expr"] for t in again["tasks"]] == [t["methods"]["model"]["expr"] for t in results["tasks"]]
    assert again["nla"]["form_prediction"] == json.loads(json.dumps(results["nla"]["form_prediction"]))
    assert "rescored" in again and "rescored" not in results
    tampered = json.loads(json.dumps(results))
    tampered["tasks"][1]["truth"] = "x0 + 12345"
    with pytest.raises(NlakitError, match="does not match"):
        rescore(tampered)
    with pytest.raises(NlakitError, match="not a symreg"):
        rescore({"kind": "eval"})


def test_final_position_is_the_last_prompt_token(tiny_llama):
    task = T.generate_tasks(1, seed=0)[0]
    chat = tiny_llama.chat_text([{"role": "user", "content": task.prompt}])
    chars = N.position_chars(chat, task.prompt)
    assert chars["final"] == len(chat) - 1 and chat.endswith("assistant\n")
    assert chat[chars["format_y"] : chars["format_y"] + 5] == "y = <"
    assert chat[chars["instruction"]] == "." and chat[chars["table_end"] + 1 : chars["table_end"] + 3] == "\n\n"
    offsets = [(0, 3), (3, 5), (5, 9)]
    assert [N.char_to_token(offsets, c) for c in (0, 4, 8, 20)] == [0, 1, 2, 2]


def test_missing_nla_skips_part_4_cleanly(tiny_llama, tmp_path):
    cfg = SymregConfig(n_tasks=1, methods=("linear",), nla=str(tmp_path / "no-such-nla"), **FAST)
    res = run(cfg, target=tiny_llama)
    assert res["nla"]["available"] is False and "does not exist" in res["nla"]["note"]
    html = write_report("symreg", write_json(tmp_path / "r.json", res), tmp_path / "r.html").read_text()
    assert "Not run" in html


def test_mentioned_form_and_shuffled_agreement():
    assert N.mentioned_form("a squared term plus the cosine of the second column") == {
        "cos": True, "power": True, "division": False, "linear": False}
    assert N.mentioned_form("numbers in a table") == dict.fromkeys(T.FORMS, False)
    forms = [dict(zip(T.FORMS, bits)) for bits in
             [(1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1), (1, 1, 0, 0), (0, 1, 1, 0)] * 3]
    perfect = N.agreement(forms, forms, n_shuffles=200)
    assert perfect["match_rate"] == 1.0 and perfect["shuffled_match_rate"] < 0.5 and perfect["p_value"] < 0.05
    none = N.agreement(forms, [None] * len(forms))
    assert none["n"] == 0 and none["match_rate"] is None


def test_cli_end_to_end(tmp_path):
    from nlakit.cli import app

    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["experiment", "symreg", "--target", "tiny:llama", "--n-tasks", "1", "--methods", "model,linear",
                                      "--no-nla", "--max-new-tokens", "4", "--out", str(out)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 0, result.output
    assert (out / "symreg.json").exists() and (out / "symreg.html").exists()
    assert json.loads((out / "symreg.json").read_text())["methods"] == ["model", "linear"]


def test_cli_bad_method_is_a_clean_error(tmp_path):
    from nlakit.cli import app

    result = CliRunner().invoke(app, ["experiment", "symreg", "--methods", "model,oracle", "--out", str(tmp_path)])
    assert isinstance(result.exception, NlakitError) and "unknown methods" in str(result.exception)
