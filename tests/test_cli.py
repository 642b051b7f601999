"""Every foundation verb end to end on tiny models through typer's CliRunner (no downloads)."""

import gzip
import json

import pytest
from typer.testing import CliRunner

from nlakit.cli import app

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def jsonl(tmp_path_factory, docs):
    d = tmp_path_factory.mktemp("data")
    held, train = d / "held.jsonl", d / "train.jsonl.gz"
    held.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs[8:]))
    with gzip.open(train, "wt") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for t in docs[:8])
    return held, train


def test_help_lists_the_verbs():
    out = invoke("--help").output
    for verb in ("info", "extract", "explain", "reconstruct", "eval", "report"):
        assert verb in out


def test_info(tiny_bundle):
    assert "builtin_targets" in invoke("info").output
    facts = json.loads(invoke("info", "--target", "tiny:llama", "--nla", tiny_bundle, "--json").stdout)
    assert facts["target"]["d_model"] == 64 and facts["target"]["n_layers"] == 4
    assert facts["nla"]["layer"] == 2 and facts["nla"]["target"] == "tiny:llama" and "nla_meta.yaml" in facts["nla"]["files"]


def test_extract_text_and_jsonl(tmp_path, jsonl):
    from nlakit.activations import load_shard

    invoke("extract", "The cat sat on the mat.", "--layer", 1, "--out", tmp_path / "a.safetensors", "--target", "tiny:llama")
    shard = load_shard(tmp_path / "a.safetensors")
    assert shard["vectors"].shape[1] == 64 and shard["meta"]["layer"] == "1"
    out = invoke("extract", jsonl[0], "--layer", 2, "--out", tmp_path / "b.safetensors", "--target", "tiny:gemma3",
                 "--positions", "last", "--shard-docs", 2).output
    shards = sorted(tmp_path.glob("b-*.safetensors"))
    assert len(shards) == 2 and "wrote 4 vectors" in out
    assert all(load_shard(s)["vectors"].shape == (2, 64) for s in shards)


def test_explain_json_out_and_html(tmp_path, tiny_bundle, jsonl):
    res = invoke("explain", "The cat sat on the mat.", "--at", "2,-1", "--nla", tiny_bundle, "--max-new-tokens", 3, "--json",
                 "--out", tmp_path / "e.json", "--html", tmp_path / "e.html")
    r = json.loads(res.stdout)
    assert r["kind"] == "explain" and len(r["rows"]) == 2
    assert json.loads((tmp_path / "e.json").read_text()) == r
    html = (tmp_path / "e.html").read_text()
    assert "pos-1" in html and "onclick" in html and "<script src" not in html  # self-contained
    table = invoke("explain", "The cat sat on the mat.", "--nla", tiny_bundle, "--target", "tiny:llama", "--max-new-tokens", 2).output
    assert "echo_ar8" in table and "fve_nrm" in table and "need --train-data" in table
    fitted = json.loads(invoke("explain", "The cat sat on the mat.", "--nla", tiny_bundle, "--max-new-tokens", 2, "--json",
                               "--train-data", jsonl[1], "--n-train-positions", 16).stdout)
    assert fitted["skipped_baselines"] == [] and "oracle_echo8" in fitted["rows"][0]["baselines"]


def test_reconstruct(tmp_path, tiny_bundle):
    r = json.loads(invoke("reconstruct", "The text is about a cat.", "--nla", tiny_bundle, "--json", "--out", tmp_path / "v.safetensors").stdout)
    assert len(r["vector"]) == 64 and r["layer"] == 2 and -1 <= r["cos_to_reference_mean"] <= 1
    assert (tmp_path / "v.safetensors").exists()
    assert "AR output at layer 2" in invoke("reconstruct", "a cat", "--nla", tiny_bundle).output


def test_eval_then_report(tmp_path, tiny_bundle, jsonl):
    held, train = jsonl
    out = invoke("eval", "--nla", tiny_bundle, "--data", held, "--train-data", train, "--n-positions", 6, "--n-train-positions", 24,
                 "--min-position", 4, "--max-new-tokens", 3, "--out", tmp_path / "r.json").output
    assert "oracle_echo32" in out and "parse rate" in out
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["n_positions"] == 6 and len(r["aggregate"]) == 9 and r["data"]["train"] == str(train)
    invoke("report", tmp_path / "r.json", "--out", tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    assert "Scores beside the baselines" in html and "<svg" in html and "ridge_token_bag8" in html
    # without training text the fitted baselines are skipped, and said so
    out = invoke("eval", "--nla", tiny_bundle, "--data", held, "--n-positions", 2, "--min-position", 4, "--max-new-tokens", 2,
                 "--baselines", "mean,ridge_token", "--out", tmp_path / "r2.json").output
    assert "need --train-data" in out and json.loads((tmp_path / "r2.json").read_text())["skipped_baselines"] == ["ridge_token"]


def test_missing_default_nla_is_one_clean_line(monkeypatch, capsys, tmp_path):
    import sys

    from nlakit import cli

    monkeypatch.setattr("nlakit.bundle.DEFAULT_BUNDLE", tmp_path / "not-installed")  # an install without the bundled NLA
    monkeypatch.setattr(sys, "argv", ["nlakit", "explain", "hello", "--target", "tiny:llama"])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "no default NLA is bundled" in err and "Fix: pass --nla DIR" in err
    assert "Traceback" not in err


def test_wrong_target_for_the_nla_is_one_clean_line(monkeypatch, capsys, tiny_bundle):
    import sys

    from nlakit import cli

    monkeypatch.setattr(sys, "argv", ["nlakit", "reconstruct", "a cat", "--nla", str(tiny_bundle), "--target", "tiny:gemma3"])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 2
    # tiny:gemma3 has the same width, so the mismatch surfaces when the weights do not fit
    assert "error:" in capsys.readouterr().err
