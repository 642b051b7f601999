"""`nlakit cost`: the formulas against hand-computed numbers, the policies, calibration, errors, the CLI end to end."""

from __future__ import annotations

import dataclasses
import json

import pytest
from typer.testing import CliRunner

from nlakit.errors import NlakitError
from nlakit.experiments import cost
from nlakit.experiments.cost import roofline as cost_roofline
from nlakit.experiments.cost import (
    CostConfig,
    Efficiency,
    Hardware,
    ModelSpec,
    Phase,
    calibrate,
    forward_bytes,
    forward_flops,
    gpus_needed,
)

# A toy model and GPU small enough to do by hand: P = 1000 params, 2 layers, d = 10, kv_dim = 5
# → KV bytes per token = 2 (K,V) · 2 layers · 5 · 2 bytes = 40.
TOY = ModelSpec("toy", 1000, 10, 2, 5, nla_layer=0)
TOY_GPU = Hardware("toy-gpu", peak_flops=1e3, mem_bw=1e2, hbm_bytes=1e9, usd_per_gpu_hour=3600)  # $1 per GPU-second
EXACT = Efficiency(prefill=1.0, decode=1.0, overhead_s_per_layer=0.0, source="test")


def toy_config(**kw) -> CostConfig:
    base = dict(target=TOY, hardware=TOY_GPU, efficiency=EXACT, monitor_batch=1, serving_batch=1, serving_context=4,
                av_prompt_len=2, explanation_len=3, ar_template_len=1, tokens_per_day=1000, transcripts_per_day=10)
    return CostConfig(**{**base, **kw})


# ---------------------------------------------------------------------------------------------- formulas


def test_forward_flops_by_hand():
    # decode: 2·1000 + 4·2·10·(4+1) = 2000 + 400
    assert forward_flops(TOY, batch=1, n_new=1, ctx=4) == 2400
    # prefill of 3 tokens: 2·1000·3 + 4·2·10·(1+2+3) = 6000 + 480; a batch multiplies it
    assert forward_flops(TOY, batch=1, n_new=3, ctx=0) == 6480
    assert forward_flops(TOY, batch=5, n_new=3, ctx=0) == 5 * 6480


def test_forward_bytes_by_hand_dense_and_moe():
    kw = dict(bytes_per_param=2, kv_bytes=2)
    assert forward_bytes(TOY, batch=3, n_new=1, ctx=4, **kw) == 2 * 1000 + 3 * 40 * 5
    moe = ModelSpec("toy-moe", 1000, 10, 2, 5, params_total=10_000)
    assert forward_bytes(moe, batch=3, n_new=1, ctx=4, **kw) == 2 * 3000 + 3 * 40 * 5  # only the routed experts
    assert forward_bytes(moe, batch=20, n_new=1, ctx=4, **kw) == 2 * 10_000 + 20 * 40 * 5  # every expert


def test_phase_roofline_overhead_and_binding():
    ph = Phase("x", "toy", calls=3, batch=2, gpus=2, flops=2400, bytes=2600, peak_flops=1e3, mem_bw=1e2,
               efficiency=0.5, overhead_s=0.2)
    assert ph.compute_s == pytest.approx(2.4) and ph.bandwidth_s == pytest.approx(26)
    assert ph.binds == "bandwidth"
    assert ph.gpu_s == pytest.approx(3 * (26 / 0.5 + 2 * 0.2))  # GPU-s: roofline/eff + gpus·overhead, per call
    assert ph.wall_s == pytest.approx(ph.gpu_s / 2)
    assert ph.to_dict()["gpu_s_per_seq"] == pytest.approx(ph.gpu_s / 2)
    assert dataclasses.replace(ph, bytes=100).binds == "compute"
    assert dataclasses.replace(ph, overhead_s=100).binds == "overhead"


def test_gpus_needed_is_the_smallest_power_of_two_that_fits():
    hw = dataclasses.replace(TOY_GPU, hbm_bytes=1000)
    kw = dict(hw=hw, bytes_per_param=2, kv_bytes=2, memory_utilisation=1.0)
    assert gpus_needed(TOY, batch=1, max_ctx=0, **kw) == 2  # 2000 B of weights
    assert gpus_needed(TOY, batch=1, max_ctx=3, **kw) == 4  # + 120 B of KV
    assert gpus_needed(dataclasses.replace(TOY, params_active=100), batch=1, max_ctx=0, **kw) == 1


def test_estimate_matches_a_hand_computation():
    """Every number of the toy config, computed by hand (efficiency 1, batch 1, one GPU, $1 per GPU-second)."""
    s = cost.estimate(toy_config())
    pa = s["per_activation"]
    ph = {p["name"]: p for p in pa["phases"]}
    # AV prefill, 2 tokens: FLOPs 2·1000·2 + 4·2·10·3 = 4240 (4.24 s); bytes 2000 + 40·2 = 2080 (20.8 s) → bandwidth
    assert ph["av_prefill"]["flops_per_seq"] == pytest.approx(4240)
    assert ph["av_prefill"]["gpu_s_per_seq"] == pytest.approx(20.8) and ph["av_prefill"]["binds"] == "bandwidth"
    # AV decode, 3 steps at contexts 2, 3, 4 (mean 3): FLOPs 3·(2000 + 80·4) = 6960; bytes 3·(2000 + 40·4) → 64.8 s
    assert ph["av_decode"]["flops_per_seq"] == pytest.approx(6960)
    assert ph["av_decode"]["gpu_s_per_seq"] == pytest.approx(64.8)
    # AR = first K+1 = 1 layer: P 500, kv 20 B/token; prefill 3+1 tokens: FLOPs 4000 + 4·1·10·10 = 4400; bytes 1000 + 80 → 10.8 s
    assert s["ar"].startswith("toy [first 1/2 layers]")
    assert ph["ar_prefill"]["flops_per_seq"] == pytest.approx(4400)
    assert ph["ar_prefill"]["gpu_s_per_seq"] == pytest.approx(10.8)
    assert pa["gpu_s"] == pytest.approx(20.8 + 64.8 + 10.8)
    assert pa["usd"] == pytest.approx(96.4)
    assert pa["latency_s"] == pytest.approx(96.4)  # one GPU, batch 1: wall = GPU-seconds
    # Serving one token at context 4: FLOPs 2400 (2.4 s), bytes 2000 + 40·5 = 2200 (22 s)
    assert s["serving"]["gpu_s_per_token"] == pytest.approx(22)
    assert pa["serving_token_equivalents"]["flops"] == pytest.approx((4240 + 6960 + 4400) / 2400)
    assert pa["serving_token_equivalents"]["gpu_time"] == pytest.approx(96.4 / 22)
    # Break-even at 10% of serving: 0.1 · 22 / 96.4 of the tokens
    be = {b["overhead"]: b for b in s["break_even"]}
    assert be[0.1]["fraction"] == pytest.approx(0.1 * 22 / 96.4)
    assert be[0.1]["one_in"] == pytest.approx(96.4 / 2.2)
    # Every token explained: the multiple of serving is the GPU-time equivalent
    pol = {p["key"]: p for p in s["policies"]}
    assert pol["every_token"]["multiple_of_serving"] == pytest.approx(96.4 / 22)
    assert pol["every_token"]["usd_per_day"] == pytest.approx(1000 * 96.4)


def test_decode_at_mean_context_equals_the_sum_over_steps():
    cfg = dataclasses.replace(toy_config(), explanation_len=7, av_prompt_len=5)
    dec = cost.monitor_phases(cfg)[1]
    by_step = sum(forward_flops(TOY, batch=1, n_new=1, ctx=5 + j) for j in range(7))
    assert dec.calls * dec.flops == pytest.approx(by_step)


def test_no_ar_drops_the_ar_phase():
    with_ar, without = cost.estimate(toy_config()), cost.estimate(toy_config(include_ar=False))
    assert [p["name"] for p in without["per_activation"]["phases"]] == ["av_prefill", "av_decode"]
    assert without["per_activation"]["gpu_s"] == pytest.approx(with_ar["per_activation"]["gpu_s"] - 10.8)


# ---------------------------------------------------------------------------------------------- behaviour


def test_policies_count_what_they_explain():
    t, n = 1_000_000, 100
    assert cost.EveryToken().explained_per_day(t, n) == t
    assert cost.EveryKth(100).explained_per_day(t, n) == 10_000
    assert cost.BeforeAction(20).explained_per_day(t, n) == 2000
    assert cost.BeforeAction(20).explained_per_day(10, n) == 10  # never more than the tokens
    assert cost.SampledTraffic(0.01).explained_per_day(t, n) == 10_000
    assert cost.RandomPerTranscript(50).explained_per_day(t, n) == 5000
    assert [p.blocking for p in toy_config().policies].count(True) == 1


def test_multiples_are_linear_in_the_count_and_break_even_is_consistent():
    s = cost.estimate(CostConfig(target=cost.resolve_model("70b")))
    ratio = s["per_activation"]["gpu_s"] / s["serving"]["gpu_s_per_token"]
    for p in s["policies"]:
        assert p["multiple_of_serving"] == pytest.approx(p["fraction_of_tokens"] * ratio)
    for b in s["break_even"]:
        assert b["fraction"] * ratio == pytest.approx(min(b["overhead"], ratio))


def test_one_activation_costs_several_hundred_served_tokens_in_flops():
    """Sanity against the research notes: ≈ (prompt + L) + (K+1)/N·(L + template) target tokens, i.e. several hundred."""
    for key in cost.SCENARIOS:
        cfg = CostConfig(target=cost.resolve_model(key))
        eq = cost.estimate(cfg)["per_activation"]["serving_token_equivalents"]["flops"]
        m = cfg.target
        matmul_only = (cfg.av_prompt_len + cfg.explanation_len) + (m.layer + 1) / m.n_layers * (cfg.explanation_len + cfg.ar_template_len)
        assert 200 < eq < 1000
        assert eq == pytest.approx(matmul_only, rel=0.25)  # attention terms move it, but not much
        longer = cost.estimate(dataclasses.replace(cfg, explanation_len=500))
        assert longer["per_activation"]["serving_token_equivalents"]["flops"] > 2 * eq


def test_equal_efficiency_scaling_leaves_multiples_unchanged():
    cfg = CostConfig(target=cost.resolve_model("7b"), efficiency=Efficiency(0.2, 0.2))
    fast = dataclasses.replace(cfg, efficiency=Efficiency(0.4, 0.4))
    a, b = cost.estimate(cfg), cost.estimate(fast)
    assert b["per_activation"]["gpu_s"] == pytest.approx(a["per_activation"]["gpu_s"] / 2)
    for pa, pb in zip(a["policies"], b["policies"]):
        assert pb["multiple_of_serving"] == pytest.approx(pa["multiple_of_serving"])


def test_moe_at_batch_one_reads_only_active_weights():
    moe = cost.resolve_model("1t-moe")
    assert moe.hypothetical
    dense_like = dataclasses.replace(moe, params_total=None)
    kw = dict(bytes_per_param=2, kv_bytes=2)
    assert forward_bytes(moe, batch=1, n_new=1, ctx=0, **kw) == forward_bytes(dense_like, batch=1, n_new=1, ctx=0, **kw)
    assert forward_bytes(moe, batch=256, n_new=1, ctx=0, **kw) > 10 * forward_bytes(dense_like, batch=1, n_new=1, ctx=0, **kw)


def test_a_smaller_av_is_cheaper():
    target = cost.resolve_model("70b")
    small = ModelSpec("av-1b", 1e9, 2048, 16, 512)
    big, cheap = cost.estimate(CostConfig(target=target)), cost.estimate(CostConfig(target=target, av=small))
    assert cheap["av"] == "av-1b"
    assert cheap["per_activation"]["gpu_s"] < big["per_activation"]["gpu_s"]


def test_long_context_serving_is_bandwidth_bound_and_the_monitor_turns_compute_bound_with_batch():
    s = cost.estimate(CostConfig(target=cost.resolve_model("7b")))
    assert s["serving"]["per_token"]["binds"] == "bandwidth"
    b = s["per_activation"]["av_decode_compute_bound_from_batch"]
    assert b is not None and b > 1
    big = cost.estimate(CostConfig(target=cost.resolve_model("7b"), monitor_batch=2 * b))
    assert big["per_activation"]["phases"][1]["binds"] == "compute"


# ---------------------------------------------------------------------------------------------- calibration


def _synthetic_bench(eff: float, overhead: float) -> dict:
    m, hw = cost.resolve_model("smollm2"), cost.resolve_hardware("h100-sxm")
    rows = []
    for b in (64, 256, 1024, 4096):
        r = cost_roofline.roofline_generation_s(m, hw, batch=b, prompt_len=35, new_tokens=64)
        t = r / eff + 65 * m.n_layers * overhead
        rows.append({"batch": b, "hf_tok_s": 1.0, "engine_tok_s": b * 64 / t})
    return {"gpu": "NVIDIA H100 80GB HBM3", "model": "smollm2", "prompt_len": 35, "new_tokens": 64, "rows": rows}


def test_calibrate_recovers_efficiency_and_overhead():
    e = calibrate(_synthetic_bench(0.4, 2e-5))
    assert e.decode == pytest.approx(0.4, rel=1e-6)
    assert e.overhead_s_per_layer == pytest.approx(2e-5, rel=1e-6)
    assert e.calibration["throughput_key"] == "engine_tok_s" and e.calibration["method"].startswith("least-squares")
    assert e.prefill == e.decode  # no prefill measurement in the file


def test_calibrate_falls_back_when_overhead_bound_on_the_feasibility_measurement():
    e = cost.measured_efficiency()
    assert e.calibration["method"].startswith("largest batch")  # step time falls with batch there
    assert 0.01 < e.decode < 0.05  # 38k tok/s vs a ~1.4M tok/s roofline
    assert "feasibility" in e.source and "recalibrated" in e.source
    assert "overhead-bound" in cost.run([CostConfig(target=TOY, efficiency=e)])["efficiency_caveat"]


def test_default_efficiency_is_the_published_one_and_both_are_in_the_assumptions():
    e = cost.default_efficiency()
    assert e == cost.PUBLISHED_EFFICIENCY and CostConfig(target=TOY).efficiency == e
    assert "Databricks 2023" in e.source and "Pope et al. 2022" in e.source
    assert cost.run([CostConfig(target=TOY)])["efficiency_caveat"] is None
    rows = {r["name"]: r for r in CostConfig(target=TOY).assumptions()}
    assert rows["decode_efficiency"]["value"] == e.decode
    shown = rows["decode_efficiency (nlakit's own measurement; --calibrate FILE uses one, not used)"]
    assert shown["value"] == cost.measured_efficiency().decode and "feasibility" in shown["source"]
    calibrated = {r["name"] for r in CostConfig(target=TOY, efficiency=cost.measured_efficiency()).assumptions()}
    assert "decode_efficiency (published serving benchmarks, the default, not used)" in calibrated


def test_calibrate_prefill_from_extract_throughput():
    bench = {**_synthetic_bench(0.4, 0.0), "extract_tok_s": 1e6, "extract_seq_len": 256}
    e = calibrate(bench)
    m = cost.resolve_model("smollm2")
    assert e.prefill == pytest.approx(1e6 * forward_flops(m, batch=1, n_new=256, ctx=0) / 256 / 989e12)


def test_load_calibration_from_file_and_its_errors(tmp_path):
    good = tmp_path / "engine.json"
    good.write_text(json.dumps(_synthetic_bench(0.5, 0.0)))
    assert cost.load_calibration(good).decode == pytest.approx(0.5)
    (tmp_path / "empty.json").write_text("{}")
    with pytest.raises(NlakitError, match="no 'rows'"):
        cost.load_calibration(tmp_path / "empty.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(NlakitError, match="not a JSON object"):
        cost.load_calibration(tmp_path / "list.json")
    with pytest.raises(NlakitError, match="does not exist"):
        cost.load_calibration(tmp_path / "missing.json")
    (tmp_path / "norate.json").write_text(json.dumps({"rows": [{"batch": 8}]}))
    with pytest.raises(NlakitError, match="has no hf_tok_s"):
        cost.load_calibration(tmp_path / "norate.json")


# ---------------------------------------------------------------------------------------------- config + errors


def test_config_round_trips_through_a_dict():
    cfg = CostConfig(target=cost.resolve_model("1t-moe"), av=ModelSpec("av", 1e9, 2048, 16, 512), explanation_len=500)
    assert CostConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_every_assumption_has_a_value_and_a_source():
    rows = CostConfig(target=cost.resolve_model("7b")).assumptions()
    names = {r["name"] for r in rows}
    assert {"explanation_len", "av_prompt_len", "serving_batch", "peak_flops", "decode_efficiency", "usd_per_gpu_hour"} <= names
    assert all(r["source"] for r in rows)
    assert next(r for r in rows if r["name"] == "ar_layers")["value"] == 21  # K+1 resolved, not None


@pytest.mark.parametrize("make, match", [
    (lambda: toy_config(explanation_len=0), "explanation_len must be ≥ 1"),
    (lambda: toy_config(sample_fraction=2.0), "sample_fraction"),
    (lambda: toy_config(transcripts_per_day=1e12), "transcripts_per_day exceeds"),
    (lambda: toy_config(ar_layers=3), "ar_layers"),
    (lambda: ModelSpec("bad", -1, 10, 2, 5), "params_active"),
    (lambda: ModelSpec("bad", 10, 10, 2, 5, params_total=1), "params_total"),
    (lambda: ModelSpec("bad", 10, 10, 2, 5, nla_layer=2), "nla_layer"),
    (lambda: Hardware("bad", 0, 1, 1, 1), "impossible specs"),
    (lambda: Efficiency(1.5, 0.5), "efficiencies"),
    (lambda: cost.resolve_model("gpt-5"), "unknown model"),
    (lambda: cost.resolve_hardware("tpu-v9"), "unknown GPU"),
    (lambda: cost.run([]), "no target model"),
])
def test_user_errors_name_the_problem_and_the_fix(make, match):
    with pytest.raises(NlakitError, match=match) as e:
        make()
    assert e.value.fix


def test_config_collects_every_problem_at_once():
    with pytest.raises(NlakitError) as e:
        toy_config(explanation_len=0, monitor_batch=0, tokens_per_day=-1)
    assert all(k in str(e.value) for k in ("explanation_len", "monitor_batch", "tokens_per_day"))


def test_library_does_not_print(capsys):
    cost.run([toy_config()])
    assert capsys.readouterr().out == ""


# ---------------------------------------------------------------------------------------------- CLI


def _cli(args):
    from nlakit.cli import app

    return CliRunner().invoke(app, ["cost", *args], env={"COLUMNS": "200"})


def test_cli_writes_json_and_html(tmp_path):
    res = _cli(["--out", str(tmp_path), "--decode-efficiency", "0.5", "--prefill-efficiency", "0.4"])
    assert res.exit_code == 0, res.output
    assert "Llama-3.3-70B-Instruct" in res.output and "× serving" in res.output
    r = json.loads((tmp_path / "cost.json").read_text())
    assert r["kind"] == "cost" and len(r["scenarios"]) == 3
    assert r["efficiency"]["decode"] == 0.5 and "command line" in r["efficiency"]["source"]
    assert r["efficiency_caveat"] is None  # both efficiencies set by hand: no "overhead-bound" warning
    assert "--decode-efficiency 0.5" in r["command"]
    assert any(s["hypothetical"] for s in r["scenarios"])
    assert {p["key"] for p in r["scenarios"][0]["policies"]} == {
        "every_token", "every_kth", "before_action", "sampled_fraction", "random_per_transcript"}
    html = (tmp_path / "cost.html").read_text()
    assert html.count("<svg") >= 2 and "MoE-1T (hypothetical)" in html and "Assumptions" in html
    # the report renders from the JSON alone too (no figures)
    from nlakit.report import render

    assert "Sensitivity" in render("cost", r)
    assert "Sensitivity" in render("cost", r, figs={})  # what `nlakit report` passes for kinds it has no figures for


def test_cli_custom_target_gpu_and_calibration(tmp_path):
    bench = tmp_path / "engine.json"
    bench.write_text(json.dumps(_synthetic_bench(0.5, 0.0)))
    res = _cli(["--name", "my-13b", "--params", "13e9", "--d-model", "5120", "--layers", "40", "--gpu", "h200",
                "--usd-per-gpu-hour", "4", "--calibrate", str(bench), "--explanation-len", "500", "--no-ar", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    r = json.loads((tmp_path / "cost.json").read_text())
    (s,) = r["scenarios"]
    assert s["target"]["name"] == "my-13b" and s["target"]["kv_dim"] == 5120
    assert r["hardware"]["name"] == "H200" and r["hardware"]["usd_per_gpu_hour"] == 4
    assert r["efficiency"]["decode"] == pytest.approx(0.5)
    assert [p["name"] for p in s["per_activation"]["phases"]] == ["av_prefill", "av_decode"]
    assert s["config"]["explanation_len"] == 500


def test_cli_errors_are_nlakit_errors():
    res = _cli(["--params", "13e9"])
    assert isinstance(res.exception, NlakitError) and "--d-model" in str(res.exception)
    res = _cli(["--av-params", "1e9"])
    assert isinstance(res.exception, NlakitError) and "--av-layers" in str(res.exception)
    res = _cli(["--model", "nope"])
    assert isinstance(res.exception, NlakitError)


def test_a_wider_replica_cuts_latency_not_gpu_seconds():
    cfg = CostConfig(target=cost.resolve_model("7b"), efficiency=Efficiency(0.5, 0.5))
    a, b = cost.estimate(cfg), cost.estimate(dataclasses.replace(cfg, gpus_per_replica=4))
    assert b["gpus_per_replica"]["av_decode"] == 4 * a["gpus_per_replica"]["av_decode"]
    assert b["per_activation"]["gpu_s"] == pytest.approx(a["per_activation"]["gpu_s"])
    assert b["per_activation"]["latency_s"] < a["per_activation"]["latency_s"]
    for s in (a, b):
        assert s["per_activation"]["latency_s_batch1"] <= s["per_activation"]["latency_s"]
