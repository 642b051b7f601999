"""`nlakit demo`: the README's main job, end to end on a tiny bundle (the real run uses the bundled SmolLM2 NLA)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from nlakit.cli import app


def test_demo_writes_a_self_contained_report(tiny_bundle, tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": "The quick brown fox jumps over the lazy dog near the river. " * 4}) + "\n"
                             for _ in range(6)))
    out = tmp_path / "report.html"
    res = CliRunner().invoke(app, ["demo", "--nla", str(tiny_bundle), "--out", str(out), "--max-new-tokens", "4",
                                   "--train-data", str(train), "--n-train-positions", "8"])
    assert res.exit_code == 0, res.output
    html = out.read_text()
    assert html.startswith("<!doctype html>") and "<script src=" not in html and "http://" not in html.split("</head>")[0]
    results = json.loads(out.with_suffix(".json").read_text())
    assert results["kind"] == "explain" and len(results["rows"]) >= 5
    names = {r["name"] for r in results["aggregate"]}
    assert {"mean", "ridge_token"} <= names


def test_demo_without_a_bundle_says_so(tmp_path, monkeypatch):
    import nlakit.bundle as bundle

    monkeypatch.setattr(bundle, "DEFAULT_BUNDLE", tmp_path / "missing")
    res = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "r.html")])
    assert res.exit_code != 0
    assert "no default NLA" in str(res.exception) or "no default NLA" in res.output
