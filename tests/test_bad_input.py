"""Every user mistake gets one NlakitError line (problem, then the fix), never a traceback from deep inside."""

import logging
import shutil

import pytest
import torch

from nlakit.activations import extract
from nlakit.bundle import export_released, load_nla, load_released
from nlakit.errors import NlakitError
from nlakit.evaluate import EvalConfig, evaluate, score_vectors
from nlakit.targets import load_target
from nlakit.verbalizer import parse_explanation


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and "Fix: " in msg
    return msg


# ---- text -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["", "   \n"])
def test_empty_text(tiny_llama, bad):
    with pytest.raises(NlakitError, match="is empty") as e:
        extract(tiny_llama, ["fine", bad], 1)
    one_line(e)


def test_text_longer_than_the_context_is_truncated_with_a_warning(tiny_llama, caplog):
    long = "The quick brown fox jumps over the lazy dog. " * 80  # > 512 tokens
    with caplog.at_level(logging.WARNING, logger="nlakit.targets"):
        (d,) = extract(tiny_llama, [long], 1, "last")
    assert len(d.token_ids) == tiny_llama.max_length == 512
    assert any("truncated to the context window of 512" in r.getMessage() for r in caplog.records)


def test_layer_out_of_range(tiny_llama, make_nla):
    for layer in (4, -1):
        with pytest.raises(NlakitError, match="out of range") as e:
            extract(tiny_llama, ["hello world"], layer)
        assert "--layer between 0 and 3" in one_line(e)
    from nlakit.reconstructor import Reconstructor

    with pytest.raises(NlakitError, match="out of range"):
        Reconstructor.from_target(tiny_llama, make_nla("llama", 2).meta.with_(layer=9))


@pytest.mark.parametrize("spec", [[50], [-50], "span:500-600", "match:zebra", "bogus"])
def test_position_out_of_range_or_bad(tiny_llama, spec):
    with pytest.raises(NlakitError) as e:
        extract(tiny_llama, ["hello world"], 1, spec)
    one_line(e)


# ---- vectors ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make,match", [
    (lambda d: torch.randn(2, d + 1), "expected \\(N, 64\\)"),
    (lambda d: torch.full((1, d), float("nan")), "NaN or inf"),
    (lambda d: torch.zeros(2, d), "all zeros"),
])
def test_bad_vectors(make_nla, make, match):
    nla = make_nla("llama", 2)
    for call in (lambda v: nla.explain(v, max_new_tokens=2), lambda v: score_vectors(nla, v, ["x"] * v.shape[0])):
        with pytest.raises(NlakitError, match=match) as e:
            call(make(nla.d_model))
        one_line(e)


def test_unparseable_explanation_is_reported_not_hidden(make_nla):
    nla = make_nla("llama", 2)
    expl = [parse_explanation("no tags at all"), parse_explanation("<explanation>a cat</explanation>")]
    out = score_vectors(nla, torch.randn(2, nla.d_model), expl)
    assert [r["ok"] for r in out["rows"]] == [False, True] and out["parse_rate"] == 0.5
    assert out["rows"][0]["explanation"] == "no tags at all"  # the AR read the raw output, and the row says so


# ---- model paths ------------------------------------------------------------------------------------------
def test_unknown_model_path(tmp_path):
    for spec in ("/no/such/model", "not-a-model-name"):
        with pytest.raises(NlakitError, match="does not exist") as e:
            load_target(spec)
        one_line(e)
    (tmp_path / "empty").mkdir()
    with pytest.raises(NlakitError, match="no config.json"):
        load_target(str(tmp_path / "empty"))


def test_gguf_of_unsupported_architecture(tmp_path):
    import numpy as np
    from gguf import GGUFWriter

    path = tmp_path / "odd.gguf"
    w = GGUFWriter(str(path), "mamba_zeta")
    w.add_block_count(2)
    w.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(NlakitError, match="architecture 'mamba_zeta'") as e:
        load_target(str(path))
    one_line(e)
    (tmp_path / "junk.gguf").write_bytes(b"definitely not gguf")
    with pytest.raises(NlakitError, match="not a readable GGUF"):
        load_target(str(tmp_path / "junk.gguf"))


# ---- bundles ----------------------------------------------------------------------------------------------
@pytest.fixture
def bundle_copy(tmp_path, tiny_bundle):
    dst = tmp_path / "nla"
    shutil.copytree(tiny_bundle, dst)
    return dst


def test_bundle_d_model_mismatch(bundle_copy):
    from nlakit.targets import tiny_target

    with pytest.raises(NlakitError, match="d_model=64 but target") as e:
        load_nla(bundle_copy, target=tiny_target("llama", d_model=32))
    one_line(e)


def test_bundle_layer_mismatch(bundle_copy, tiny_llama):
    meta = bundle_copy / "nla_meta.yaml"
    meta.write_text(meta.read_text().replace("extraction_layer_index: 2", "extraction_layer_index: 1"))
    with pytest.raises(NlakitError, match="does not fit the model built from the sidecar") as e:
        load_nla(bundle_copy, target=tiny_llama)
    one_line(e)


@pytest.mark.parametrize("part,match", [("ar/value_head.safetensors", "is missing"), ("av/model.safetensors", "is missing"),
                                        ("nla_meta.yaml", "is missing")])
def test_bundle_missing_file(bundle_copy, tiny_llama, part, match):
    (bundle_copy / part).unlink()
    with pytest.raises(NlakitError, match=match) as e:
        load_nla(bundle_copy, target=tiny_llama)
    one_line(e)


@pytest.mark.parametrize("part", ["av/model.safetensors", "ar/value_head.safetensors", "reference.safetensors"])
def test_bundle_corrupted_safetensors(bundle_copy, tiny_llama, part):
    (bundle_copy / part).write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(NlakitError, match="corrupted") as e:
        load_nla(bundle_copy, target=tiny_llama)
    one_line(e)


def test_bundle_bad_sidecar_yaml(bundle_copy, tiny_llama):
    (bundle_copy / "nla_meta.yaml").write_text("d_model: [unclosed\n")
    with pytest.raises(NlakitError, match="not valid YAML"):
        load_nla(bundle_copy, target=tiny_llama)


def test_released_halves_that_disagree(tmp_path, make_nla):
    av_dir, ar_dir = export_released(make_nla("llama", 2), tmp_path, dtype="float32")
    side = ar_dir / "nla_meta.yaml"
    side.write_text(side.read_text().replace("extraction_layer_index: 2", "extraction_layer_index: 1"))
    with pytest.raises(NlakitError, match="do not match") as e:
        load_released(av_dir, ar_dir)
    one_line(e)
    (ar_dir / "config.json").unlink()
    with pytest.raises(NlakitError, match="config.json is missing"):
        load_released(av_dir, ar_dir)


def test_no_default_nla(monkeypatch, tmp_path):
    monkeypatch.setattr("nlakit.bundle.DEFAULT_BUNDLE", tmp_path / "not-installed")  # an install without the bundled NLA
    with pytest.raises(NlakitError, match="no default NLA is bundled") as e:
        load_nla("default")
    assert "--nla DIR" in one_line(e)


# ---- evaluation settings and inputs -----------------------------------------------------------------------------
def test_eval_config_collects_every_problem():
    with pytest.raises(NlakitError) as e:
        EvalConfig(n_positions=0, min_position=300, baselines=("mean", "psychic"))
    msg = one_line(e)
    assert "n_positions" in msg and "min_position" in msg and "psychic" in msg


def test_eval_on_documents_that_are_too_short(make_nla, tiny_llama):
    with pytest.raises(NlakitError, match="no held-out position at or after token 33") as e:
        evaluate(make_nla("llama", 2), tiny_llama, ["short text", "another one"], None, EvalConfig(baselines=("mean",)))
    one_line(e)


def test_report_errors(tmp_path):
    from nlakit.commands.report import render_results
    from nlakit.io import read_json

    with pytest.raises(NlakitError, match="does not exist"):
        read_json(tmp_path / "nope.json")
    with pytest.raises(NlakitError, match="no report template"):
        render_results({"kind": "no-such-kind"}, tmp_path / "x.html")
    with pytest.raises(NlakitError, match="no 'kind' field"):
        render_results({}, tmp_path / "x.html")


def test_cli_bad_inputs(tiny_bundle, tmp_path):
    from typer.testing import CliRunner

    from nlakit.cli import app

    runner = CliRunner()
    cases = [
        (["explain", "", "--nla", str(tiny_bundle)], "is empty"),
        (["explain", "hello world", "--at", "40", "--nla", str(tiny_bundle)], "out of range"),
        (["extract", "hello", "--layer", "7", "--out", str(tmp_path / "x.safetensors"), "--target", "tiny:llama"], "out of range"),
        (["reconstruct", "  ", "--nla", str(tiny_bundle)], "is empty"),
        (["eval", "--nla", str(tiny_bundle), "--data", "held.txt", "--out", str(tmp_path / "r.json")], "--data held.txt does not exist"),
        (["info", "--nla", str(tmp_path / "missing")], "does not exist"),
    ]
    for args, match in cases:
        result = runner.invoke(app, args)
        assert isinstance(result.exception, NlakitError), (args, result.output)
        assert match in str(result.exception), (args, str(result.exception))
    bad = tmp_path / "rows.jsonl"
    bad.write_text('{"body": "x"}\n')
    result = runner.invoke(app, ["extract", str(bad), "--layer", "1", "--out", str(tmp_path / "y.safetensors"), "--target", "tiny:llama"])
    assert isinstance(result.exception, NlakitError) and "line 1 has no non-empty string field 'text'" in str(result.exception)
