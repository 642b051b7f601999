"""The transfer experiment on tiny models: base NLA applied to a variant directly and through ridge maps."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from typer.testing import CliRunner

from nlakit.errors import NlakitError
from nlakit.experiments.transfer import (
    TransferConfig,
    answer_phase,
    chat_prefix,
    fit_map,
    fit_residual_map,
    pick_positions,
    run_transfer,
)
from nlakit.targets import tiny_target


def _corpus(path):
    rows = [{"id": f"m{i}", "kind": "math", "text": "x", "messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                                                                     {"role": "assistant", "content": f"It is {2 * i}."}]}
            for i in range(4)]
    rows += [{"id": f"c{i}", "kind": "chat", "text": "x", "messages": [{"role": "user", "content": f"Tell me about the cat number {i}."},
                                                                      {"role": "assistant", "content": "Cats sit on mats."}]}
             for i in range(4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _map_corpus(path, docs):
    rows = [{"text": d, "messages": [{"role": "user", "content": "Say something."}, {"role": "assistant", "content": d[:60]}]}
            for d in docs]  # the assistant turns feed the frustration classifier's neutral class
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _variant_dir(path, base, kind="sft", scale=0.02, d_model=None):
    """A 'fine-tuned' variant: the base's weights plus seeded noise, saved as an HF dir with a variant.json."""
    if d_model is None:
        model = copy.deepcopy(base.model)
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(scale * torch.randn(p.shape, generator=g))
        tok = base.tokenizer
    else:
        other = tiny_target(d_model=d_model)
        model, tok = other.model, other.tokenizer
    model.save_pretrained(path)
    tok.save_pretrained(path)
    (path / "variant.json").write_text(json.dumps({"kind": kind}))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_llama, make_nla, docs):
    tmp = tmp_path_factory.mktemp("transfer")
    variant = _variant_dir(tmp / "sft", tiny_llama)
    cfg = TransferConfig(nla="unused", base="tiny:llama", variants=(str(variant),), corpus=str(_corpus(tmp / "c.jsonl")),
                         map_corpus=str(_map_corpus(tmp / "m.jsonl", docs * 2)), n_neutral=8, n_behaviour=3, n_corpus=2,
                         prompt_positions=2, response_positions=3, max_new_tokens=5, map_sizes=(10, 30), map_positions_per_doc=3,
                         explain_max_new_tokens=6, n_examples=2, device="cpu", baselines=("mean", "ridge_token", "echo_ar8"))
    results = run_transfer(cfg, nla=make_nla("llama", 2), targets={"tiny:llama": tiny_llama})
    return tmp, cfg, results


def test_results_cover_every_model_route_and_position(setup):
    _, cfg, r = setup
    assert r["kind"] == "transfer" and json.loads(json.dumps(r)) == r  # JSON-clean
    labels = [m["label"] for m in r["models"]]
    assert labels == ["base:tiny-llama", "sft:sft"] and r["models"][1]["drift_cos_to_base"]
    keys = {(d["model"], d["route"], d["map_n"], d["space"]) for d in r["degradation"]}
    assert ("base:tiny-llama", "direct", None, "model") in keys and ("sft:sft", "direct", None, "model") in keys
    for route in ("ridge", "residual"):
        for n in cfg.map_sizes:
            assert ("sft:sft", route, n, "variant") in keys and ("sft:sft", route, n, "base") in keys
    assert not any(d["route"] != "direct" and d["model"].startswith("base") for d in r["degradation"])  # no map for the base
    cells = [d for d in r["degradation"] if d["model"] == "sft:sft" and d["route"] == "direct" and d["group"] == "all"]
    assert {c["position"] for c in cells} == {"prompt", "last_prompt", "response", "all"}
    assert all(-10 < c["fve_nrm"] < 1 and c["fve_nrm_ci95"][0] <= c["fve_nrm"] <= c["fve_nrm_ci95"][1] for c in cells)
    assert [(s["route"], s["map_n"]) for s in r["map_sweep"]] == [(k, n) for k in ("ridge", "residual") for n in cfg.map_sizes]
    assert {b["baseline"] for b in r["baselines"]} == {"mean", "ridge_token", "echo_ar8"}
    assert r["n_prompts"] == {"behaviour": 3, "corpus_chat": 1, "corpus_math": 1}
    assert {f["route"] for f in r["frustration"]} == {"direct", "ridge30", "residual30"} and len(r["examples"]) == 2
    # every explanation row carries its position type and phase; the variant's rows have the mapped explanation
    rows = [x for x in r["rows"] if x["model"] == "sft:sft"]
    assert rows and all(set(x["mapped"]) == {"ridge n=30", "residual n=30"} for x in rows)
    assert {x["phase"] for x in r["rows"]} <= {"prompt", "last_prompt", "response_pre", "response_post"}


def test_prompt_positions_are_the_same_tokens_for_every_model(setup):
    _, _, r = setup
    by_model = {}
    for x in r["rows"]:
        if x["type"] == "prompt":
            by_model.setdefault(x["model"], []).append((x["prompt"], x["pos"], x["token"]))
    a, b = by_model.values()
    assert a == b


def test_positions_and_phases(tiny_llama):
    prompt = "Prove that 1 = 2."
    prefix = chat_prefix(tiny_llama, prompt)
    answer = " Okay, let me try. Ugh, I give up."
    text = prefix + answer
    offsets = tiny_llama.encode([text]).offsets[0]
    ps = pick_positions(text, prefix, prompt, offsets, n_prompt=3, n_response=40, rng_key="k")
    start = prefix.index(prompt)
    for p in ps:
        s, e = offsets[p["pos"]]
        if p["type"] == "prompt":
            assert start <= s and e <= start + len(prompt)
        elif p["type"] == "last_prompt":
            assert s < len(prefix) and offsets[p["pos"] + 1][0] >= len(prefix)
        else:
            assert s >= len(prefix)
    assert [p["type"] for p in ps].count("last_prompt") == 1
    phases = [answer_phase(text, len(prefix), offsets, p) for p in ps if p["type"] == "response"]
    assert phases[0] == "response_pre" and phases[-1] == "response_post"
    assert phases == sorted(phases, key=lambda x: x == "response_post")  # once frustrated, always post
    assert pick_positions(text, prefix, prompt, offsets, n_prompt=3, n_response=0, rng_key="k")[:3] == ps[:3]  # seeded


def test_chat_prefix_never_writes_bos_twice(tiny_gemma):
    t = copy.copy(tiny_gemma)
    t.tokenizer = copy.deepcopy(tiny_gemma.tokenizer)
    t.tokenizer.chat_template = "{{ bos_token }}" + t.tokenizer.chat_template  # as Gemma's real template does
    prefix = chat_prefix(t, "hi")
    assert not prefix.startswith("<bos>")
    ids = t.encode([prefix + "ok"]).input_ids[0].tolist()
    assert ids[0] == t.tokenizer.bos_token_id and ids[1] != t.tokenizer.bos_token_id


def test_maps_recover_a_linear_drift():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 16, generator=g) + 2.0  # a shared offset, as residual streams have
    w = torch.eye(16) + 0.1 * torch.randn(16, 16, generator=g)
    y = x @ w
    for fitter in (fit_map, fit_residual_map):
        pred = fitter(x[:300], y[:300])(x[300:])
        assert torch.nn.functional.cosine_similarity(pred, y[300:], dim=-1).mean() > 0.99


def test_residual_map_stays_near_identity_with_few_pairs():
    """With 8 pairs in 64 dims a plain ridge collapses towards the mean; the residual map keeps each vector's direction."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(208, 64, generator=g) + 1.0
    y = x + 0.05 * torch.randn(208, 64, generator=g)  # a variant that barely moved
    plain, resid = fit_map(x[:8], y[:8])(x[8:]), fit_residual_map(x[:8], y[:8])(x[8:])
    cos = lambda p: torch.nn.functional.cosine_similarity(p, y[8:], dim=-1).mean()
    assert cos(resid) > 0.99 and cos(resid) > cos(plain)


def test_config_validation():
    with pytest.raises(NlakitError, match="no variants"):
        TransferConfig()
    with pytest.raises(NlakitError, match="map_sizes"):
        TransferConfig(variants=("v",), map_sizes=(100, 10))
    with pytest.raises(NlakitError, match="map_kinds"):
        TransferConfig(variants=("v",), map_kinds=("mlp",))
    with pytest.raises(NlakitError, match="unknown baselines"):
        TransferConfig(variants=("v",), baselines=("nope",))
    cfg = TransferConfig(variants=("a", "b"), map_sizes=(5, 50))
    assert TransferConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_variant_of_another_width_is_refused(setup, tiny_llama, make_nla, tmp_path):
    _, cfg, _ = setup
    wide = _variant_dir(tmp_path / "wide", tiny_llama, d_model=32)
    bad = TransferConfig.from_dict({**cfg.to_dict(), "variants": [str(wide)]})
    with pytest.raises(NlakitError, match="d_model"):
        run_transfer(bad, nla=make_nla("llama", 2), targets={"tiny:llama": tiny_llama})


def test_report_renders_from_json(setup, tmp_path):
    from nlakit.io import write_json
    from nlakit.report import write_report

    _, _, r = setup
    html = write_report("transfer", write_json(tmp_path / "t.json", r), tmp_path / "t.html").read_text()
    assert "<svg" in html and "sft:sft" in html and "Degradation" in html and "http" not in html.split("</style>")[-1][:200]


def test_cli_end_to_end(setup, tiny_bundle):
    from nlakit.cli import app

    tmp, cfg, _ = setup
    out = tmp / "cli"
    args = ["experiment", "transfer", "--nla", str(tiny_bundle), "--base", "tiny:llama", "--variants", cfg.variants[0],
            "--out", str(out), "--corpus", cfg.corpus, "--map-corpus", cfg.map_corpus, "--n-neutral", "4", "--n-behaviour", "2",
            "--n-corpus", "1", "--max-new-tokens", "3", "--map-sizes", "10", "--baselines", "mean", "--explain-max-new-tokens", "4",
            "--device", "cpu"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert json.loads((out / "transfer.json").read_text())["kind"] == "transfer" and (out / "transfer.html").exists()
    r = CliRunner().invoke(app, args[:-2] + ["--map-sizes", "10,x"])
    assert isinstance(r.exception, NlakitError)
