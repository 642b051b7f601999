"""Training pipeline on a tiny random model: every stage runs, resumes, and writes a loadable bundle."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from nlakit.bundle import load_nla
from nlakit.errors import NlakitError
from nlakit.targets import tiny_target
from nlakit.train.ar_sft import ARConfig
from nlakit.train.av_sft import AVConfig
from nlakit.train.common import load_pairs, parse_duration
from nlakit.train.config import load_config
from nlakit.train.datagen import DatagenConfig, datagen, template_explanation
from nlakit.train.pipeline import TrainConfig, auto_injection_scale, train_all
from nlakit.train.rl import FAIL_REWARD, RLConfig, group_advantages

DOCS = [
    {"id": f"d{i}", "kind": k, "text": t * 3}
    for i, (k, t) in enumerate([
        ("prose", "The quick brown fox jumps over the lazy dog near the river bank. "),
        ("fiction", "Once upon a time there was a little girl who lived in a village near the forest. "),
        ("code", "def main(): return x + y  # add the two numbers and return the result\n"),
        ("math", "The equation y = x0 * x1 + 3 has two variables, and we solve for x. "),
    ] * 3)
]
DOCS.append({"id": "chat0", "kind": "chat", "text": "User: hi", "messages": [{"role": "user", "content": "Solve 2 + 2 please."},
                                                                             {"role": "assistant", "content": "The answer is 4."}]})


@pytest.fixture()
def corpus(tmp_path: Path) -> tuple[str, str]:
    train = tmp_path / "train.jsonl"
    held = tmp_path / "heldout.jsonl"
    train.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    held.write_text("".join(json.dumps({**d, "id": "h" + d["id"]}) + "\n" for d in DOCS[:6]))
    return str(train), str(held)


def tiny_config(out: Path, corpus, **kw) -> TrainConfig:
    train, held = corpus
    base = dict(out=str(out), target="tiny:llama", layer=2, data=train, eval_data=held, device="cpu", n_docs=13, positions_per_doc=2,
                eval_positions=8, final_eval_positions=8, describe=True, datagen_batch=8,
                ar=ARConfig(rank=2, batch_size=8, epochs=1), av=AVConfig(rank=2, batch_size=8, epochs=1, eval_max_new_tokens=8),
                rl=RLConfig(steps=2, n_prompts=2, group=2, max_new_tokens=8, save_every=1, eval_every=1, eval_n=4))
    base.update(kw)
    return TrainConfig(**base)


def test_exact_template_keeps_newlines_and_spaces_that_the_tidy_one_collapses():
    """`template` reads a newline as " / ", like a literal slash, and drops a whitespace token; `template_exact` keeps
    both apart and keeps code's indentation and a word-start token's leading space."""
    tail, token, guesses = "x = a / b\n    return x\n        ", "\n        ", ["\n", " self", "\t"]
    tidy = template_explanation("code", tail, token, guesses)
    exact = template_explanation("code", tail, token, guesses, exact=True)
    assert '"…x = a / b / return x /"' in tidy and 'token is "/"' in tidy  # the newline and the slash read alike
    assert '"…x = a / b\\n    return x\\n        "' in exact and 'token is "\\n        "' in exact
    assert 'one of "\\n", " self", "\\t"' in exact and "\n" not in exact.split("\n\n")[1]  # one line per sentence group
    assert exact.startswith("This is programming documentation or code.")
    assert template_explanation("prose", "the cat", " sat", [" on"], exact=True).endswith('token is " sat". The next word is likely one of " on".')


def test_supervised_stages_train_on_the_exact_template(tmp_path, corpus):
    res = train_all(tiny_config(tmp_path / "run", corpus, source="template_exact", describe=False, rl=RLConfig(steps=0)))
    assert res["ar_sft"]["config"]["source"] == "template_exact" and res["av_sft"]["config"]["source"] == "template_exact"
    assert res["ar_sft"]["eval_gold_fve_nrm"]["n"] == 8 and res["av_sft"]["eval"]["n"] == 8
    assert len(res["ar_sft"]["eval_gold_fve_nrm_by_position"]) == 8 and len(res["av_sft"]["eval"]["fve_nrm_by_position"]) == 8


def test_train_ar_stops_after_the_ar(tmp_path, corpus):
    """`nlakit train ar`: datagen and the AR's supervised stage, then it stops (no AV stage, no RL) and says what the AR reads."""
    from typer.testing import CliRunner

    from nlakit.cli import app
    from nlakit.train.config import save_config

    run = tmp_path / "run"
    config = save_config(tiny_config(run, corpus, describe=False), tmp_path / "cfg")
    r = CliRunner().invoke(app, ["train", "ar", "--config", str(config)])
    assert r.exit_code == 0, r.output
    assert (run / "ar_sft.done.json").exists() and not (run / "av_sft.done.json").exists()
    assert "AR SFT:" in r.output and "AV SFT:" not in r.output
    assert json.loads((run / "results.json").read_text())["stopped_after"] == "ar_sft"


def test_source_ab_trains_one_ar_per_source_on_one_datagen_and_pairs_them(tmp_path, corpus):
    """benchmarks/source_ab.py: the second source's run reads the first's data through a link (one datagen), each
    AR's done file lands in --dest, and `compare` pairs them position by position, by kind of the held-out text."""
    import pytest
    from conftest import load_benchmark

    from nlakit.metrics import summarize
    from nlakit.train.config import save_config

    mod = load_benchmark("source_ab")
    config = save_config(tiny_config(tmp_path / "a", corpus, describe=False), tmp_path / "cfg")
    dest = tmp_path / "dest"
    mod.run(config, tmp_path / "a", ["template_exact", "template"], {}, [], dest)
    assert (tmp_path / "a_template" / "data").is_symlink() and not (tmp_path / "a" / "av_sft.done.json").exists()
    a, b = (json.loads((dest / f"{s}.json").read_text()) for s in ("template_exact", "template"))
    assert (a["config"]["source"], b["config"]["source"]) == ("template_exact", "template")
    kinds = mod.eval_kinds("tiny:llama", corpus[1], 8)
    assert kinds == [r["kind"] for r in load_pairs(tmp_path / "a" / "data" / "eval").rows]  # the scored positions' order
    res = mod.compare(dest / "template_exact.json", dest / "template.json", kinds)
    diff = [x - y for x, y in zip(a["eval_gold_fve_nrm_by_position"], b["eval_gold_fve_nrm_by_position"])]
    assert res["n"] == 8 and res["template_exact_minus_template"]["mean"] == pytest.approx(summarize(diff)["mean"])
    assert sum(v["n"] for v in res["by_kind"].values()) == 8 and set(res["by_kind"]) <= {d["kind"] for d in DOCS}
    with pytest.raises(SystemExit, match="pass the held-out file"):
        mod.compare(dest / "template_exact.json", dest / "template.json", kinds[:5])


def test_datagen_writes_pairs_from_both_sources(tmp_path, corpus):
    target = tiny_target("llama")
    cfg = DatagenConfig(data=corpus[0], out=str(tmp_path / "data"), layer=2, n_docs=13, positions_per_doc=2, batch_size=4,
                        describe=True, describe_tokens=4, eval_data=corpus[1], eval_positions=6)
    datagen(cfg, target)
    pairs = load_pairs(tmp_path / "data")
    assert len(pairs) > 10 and pairs.vectors.shape == (len(pairs), target.d_model)
    assert torch.isfinite(pairs.vectors).all()
    assert {r["split"] for r in pairs.rows} <= {"av", "ar", "rl"}
    specials = set(target.tokenizer.all_special_tokens)
    for r in pairs.rows:
        assert set(r["explanations"]) == {"template", "template_exact", "self"}
        assert r["pos"] >= cfg.min_position
        for text in r["explanations"].values():
            assert not any(s in text for s in specials), "a literal special token would become a control token in SFT"
    # documents never straddle splits
    by_doc: dict[str, set] = {}
    for r in pairs.rows:
        by_doc.setdefault(r["doc"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_doc.values())
    ev = load_pairs(tmp_path / "data" / "eval")
    assert all(r["pos"] >= 33 for r in ev.rows) and all(r["doc"].startswith("h") for r in ev.rows)


def test_datagen_refuses_the_heldout_file(tmp_path, corpus):
    with pytest.raises(NlakitError, match="held-out"):
        datagen(DatagenConfig(data=str(tmp_path / "heldout.jsonl"), out=str(tmp_path / "x"), layer=2), tiny_target("llama"))


def test_train_all_end_to_end_and_bundle_loads(tmp_path, corpus):
    out = tmp_path / "run"
    res = train_all(tiny_config(out, corpus))
    assert res["finished"]
    for key in ("final_eval", "final_eval_frozen_ar", "final_eval_gold_ceiling"):
        assert key in res
    fe = res["final_eval"]
    assert fe["n"] == 8 and -10 < fe["fve_nrm"]["mean"] < 1
    assert len(res["rl_history"]) == 2 and all("kl" in h and "copy_rate_4gram" in h for h in res["rl_history"])
    assert [r["name"] for r in res["baselines"]] == list(tiny_config(out, corpus).baselines)
    assert all(r["n"] == fe["n"] and set(r["by_kind"]) == set(fe["by_kind"]) for r in res["baselines"])
    assert {"gen_sec", "reward_sec", "ref_sec", "policy_sec", "ar_sec"} <= set(res["rl_history"][0])
    assert res["rl_history"][0]["engine_mode"] == "eager"
    nla = load_nla(out / "bundle")  # target "tiny:llama" is rebuilt from its spec
    assert nla.layer == 2 and nla.reference is not None and set(nla.baselines) == {"ridge_token", "ridge_token_bag8"}
    assert set(nla.meta.nlakit["stop_ids"]) <= set(nla.av.eos)  # the trained stop tokens travel with the bundle
    assert load_config(out / "config.yaml") == tiny_config(out, corpus)  # the resolved config reproduces the run
    exp = nla.explain(torch.randn(2, nla.d_model), max_new_tokens=4)
    assert len(exp) == 2
    # calling again is a no-op that keeps the finished result
    again = train_all(tiny_config(out, corpus))
    assert again["rl"]["steps_done"] == 2


def test_the_bundle_names_bundle_target_when_given(tmp_path, corpus):
    """A run on a copied model file can name the model users load it with (the shipped default names `smollm2`)."""
    from nlakit.meta import NLAMeta

    train_all(tiny_config(tmp_path / "run", corpus, bundle_target="tiny:gemma3", rl=RLConfig(steps=0)))
    assert NLAMeta.load(tmp_path / "run" / "meta").nlakit["target"] == "tiny:gemma3"
    train_all(tiny_config(tmp_path / "plain", corpus, rl=RLConfig(steps=0)))
    assert NLAMeta.load(tmp_path / "plain" / "meta").nlakit["target"] == "tiny:llama"  # the target as given


def test_budget_stop_then_resume(tmp_path, corpus):
    out = tmp_path / "run"
    first = train_all(tiny_config(out, corpus, time_budget="1s"))
    assert not first["finished"] and first["stopped_in"] == "ar_sft"
    assert (out / "ar_sft.partial.pt").exists() and not (out / "ar_sft.done.json").exists()
    second = train_all(tiny_config(out, corpus))
    assert second["finished"] and not (out / "ar_sft.partial.pt").exists()


def test_group_advantages_are_centred_per_group():
    r = torch.tensor([1.0, 2.0, 3.0, FAIL_REWARD, 0.5, 0.5])
    a = group_advantages(r, 3)
    assert torch.allclose(a.view(2, 3).mean(1), torch.zeros(2), atol=1e-5)
    assert a[2] > a[1] > a[0]


def test_log_reward_orders_like_mse_and_fails_below_every_better_than_orthogonal_sample(tmp_path, corpus):
    from nlakit.train.rl import FAIL_MSE, to_reward

    mse = torch.tensor([0.1, 0.5, 1.9, FAIL_MSE, 3.0])
    for kind in ("mse", "log_mse"):
        r = to_reward(mse, kind)
        assert (r[:-1] > r[1:]).all()  # lower mse, higher reward, the failure in its orthogonal place
    assert torch.allclose(to_reward(mse, "log_mse"), -torch.log(mse)) and torch.equal(to_reward(mse, "mse"), -mse)
    # the log keeps relative gains: 0.1 -> 0.05 is worth as much as 1.0 -> 0.5
    lr = to_reward(torch.tensor([0.1, 0.05, 1.0, 0.5]), "log_mse")
    assert torch.isclose(lr[1] - lr[0], lr[3] - lr[2])
    out = tmp_path / "run"
    with pytest.raises(NlakitError, match="rl.reward = 'cosine'"):
        train_all(tiny_config(out, corpus, rl=RLConfig(steps=1, n_prompts=2, group=2, max_new_tokens=8, reward="cosine")))
    res = train_all(tiny_config(out, corpus, rl=RLConfig(steps=2, n_prompts=2, group=2, max_new_tokens=8, reward="log_mse",
                                                         eval_every=0)))
    assert res["finished"] and all(0 <= h["ok_rate"] <= 1 for h in res["rl_history"])


def test_helpers():
    assert parse_duration("9m") == 540 and parse_duration("90s") == 90 and parse_duration(None) is None
    with pytest.raises(NlakitError):
        parse_duration("soon")
    assert auto_injection_scale(218.0) == 250.0
    assert auto_injection_scale(74000.0) >= 74000.0


def test_rl_options_merged_reward_sparse_ar_and_ppo_epochs(tmp_path, corpus):
    rl = RLConfig(steps=2, n_prompts=2, group=2, max_new_tokens=8, save_every=1, eval_every=0, merged_reward=True, ar_every=2,
                  ppo_epochs=2)
    res = train_all(tiny_config(tmp_path / "run", corpus, rl=rl))
    assert res["finished"] and len(res["rl_history"]) == 2
    first, second = res["rl_history"]
    assert second["ar_loss"] is None  # the AR stepped on step 1 only
    assert all(0.0 <= h["clip_frac"] <= 1.0 for h in res["rl_history"])


def test_profiling_a_step_writes_its_phases_and_trains_the_same(tmp_path, corpus):
    rl = RLConfig(steps=2, n_prompts=2, group=2, max_new_tokens=8, save_every=1, eval_every=0)
    plain = train_all(tiny_config(tmp_path / "plain", corpus, rl=rl))
    profiled = train_all(tiny_config(tmp_path / "prof", corpus, rl=replace(rl, profile_step=2)))
    prof = json.loads((tmp_path / "prof" / "rl_profile.json").read_text())
    assert prof["step"] == 2 and list(prof["phases"]) == ["rollout", "reference_and_policy", "ar_update", "weight_sync"]
    assert all(ph["wall_ms_profiled"] > 0 for ph in prof["phases"].values())
    assert [h.get("profiled", False) for h in profiled["rl_history"]] == [False, True]
    assert not (tmp_path / "plain" / "rl_profile.json").exists()
    for a, b in zip(plain["rl_history"], profiled["rl_history"]):  # the profiler only watches
        assert a["reward"] == b["reward"] and a["kl"] == b["kl"]


def test_rl_frozen_bf16_weights_train_the_adapters_under_bf16_autocast_only(tmp_path, corpus):
    rl = RLConfig(steps=2, n_prompts=2, group=2, max_new_tokens=8, save_every=1, eval_every=0, frozen_dtype="bfloat16")
    fp32 = train_all(tiny_config(tmp_path / "fp32", corpus, rl=replace(rl, steps=1)))  # no autocast (CPU): the setting is a no-op
    assert fp32["finished"] and fp32["rl"]["config"]["frozen_dtype"] is None
    res = train_all(tiny_config(tmp_path / "run", corpus, rl=rl, dtype="bfloat16"))  # CPU bf16 autocast
    assert res["finished"] and len(res["rl_history"]) == 2 and all(math.isfinite(h["kl"]) for h in res["rl_history"])
    sft, rl_state = (torch.load(tmp_path / "run" / f, map_location="cpu", weights_only=False) for f in ("av_sft.pt", "rl_state.pt"))
    assert all(v.dtype == torch.float32 for v in rl_state["av_lora"].values())  # the adapters kept fp32 and moved
    assert any(not torch.equal(v, sft["lora"][k]) for k, v in rl_state["av_lora"].items())
    nla = load_nla(tmp_path / "run" / "bundle")
    assert len(nla.explain(torch.randn(1, nla.d_model), max_new_tokens=4)) == 1
    with pytest.raises(NlakitError, match=r"av\.frozen_dtype = 'float16' needs bfloat16 autocast"):
        train_all(tiny_config(tmp_path / "f16", corpus, av=replace(tiny_config(tmp_path, corpus).av, frozen_dtype="float16"),
                              dtype="bfloat16"))
    shipped = replace(rl, merged_reward=True, reward_from_ar_update=True)  # with the default config's reward settings
    every = tiny_config(tmp_path / "all", corpus, rl=shipped, dtype="bfloat16",  # the two SFT stages on bf16 weights too,
                        baselines=("mean", "echo_ar8"))  # and a baseline read by that AR (under the run's autocast)
    every = replace(every, ar=replace(every.ar, frozen_dtype="bfloat16"), av=replace(every.av, frozen_dtype="bfloat16"))
    res = train_all(every)
    assert res["finished"] and [r["name"] for r in res["baselines"]] == ["mean", "echo_ar8"]


def test_rl_max_minutes_ends_rl_as_finished_and_resume_keeps_it_ended(tmp_path, corpus):
    rl = RLConfig(steps=50, n_prompts=2, group=2, max_new_tokens=8, save_every=1, eval_every=0, max_minutes=1e-9)
    cfg = tiny_config(tmp_path / "run", corpus, rl=rl)
    res = train_all(cfg)
    assert res["finished"] and res["rl"]["stopped_by"] == "max_minutes" and res["rl"]["steps_done"] == 1
    assert "final_eval" in res  # a time-capped RL stage is finished: the final eval runs
    again = train_all(cfg)  # resuming does not train further
    assert again["rl"]["steps_done"] == 1


def test_rl_ablation_runs_every_variant_from_the_same_warm_start(tmp_path, corpus, monkeypatch):
    """benchmarks/rl_ablation.py: a compile warm-up first, then each variant from copies of one supervised run, for
    its minutes of steps, scored on the same held-out positions."""
    from conftest import load_benchmark

    from nlakit.train.config import save_config

    abl = load_benchmark("rl_ablation")
    run, out = tmp_path / "run", tmp_path / "abl"
    cfg = tiny_config(run, corpus)
    train_all(tiny_config(run, corpus, rl=RLConfig(steps=0)))  # the supervised stages only
    config = save_config(cfg, tmp_path / "cfg")
    monkeypatch.setattr("sys.argv", ["rl_ablation.py", "--run", str(run), "--config", str(config), "--target", "tiny:llama",
                                     "--minutes", "0.002", "--out", str(out), "--variant", "base", "--variant", "lr=1e-4,kl_coef=0",
                                     "--ar-variant", "lr=2e-3", "--eval-every", "1"])
    abl.main()
    d = json.loads((out / "rl_ablation.json").read_text())
    assert [r["name"] for r in d["rows"]] == ["base", "lr=1e-4,kl_coef=0", "ar.lr=2e-3"] and (out / "warm-up" / "results.json").exists()
    prof = json.loads((out / "warm-up" / "rl_profile.json").read_text())  # the warm-up's second, compiled step
    assert prof["step"] == 2 and {"rollout", "reference_and_policy", "weight_sync"} <= set(prof["phases"])
    ar_dir = out / "ar.lr_2e-3"  # the AR warm start trained again; the data and the AV warm start are the run's
    assert (ar_dir / "av_sft.pt").read_bytes() == (run / "av_sft.pt").read_bytes()
    assert (ar_dir / "ar_sft.pt").read_bytes() != (run / "ar_sft.pt").read_bytes()
    assert load_config(ar_dir / "config.yaml").ar.lr == 2e-3 and d["rows"][2]["ar_changes"] == {"lr": 2e-3}
    assert d["rows"][2]["ar_gold_fve_nrm_sft"] is not None and d["rows"][2]["ar_sft_minutes"] > 0
    assert d["rows"][1]["changes"] == {"lr": 1e-4, "kl_coef": 0.0}
    assert {"gen_sec", "ref_sec", "policy_sec", "ar_sec"} <= set(d["rows"][0]["split_sec"])
    for r, vdir in zip(d["rows"], ("base", "lr_1e-4+kl_coef_0", "ar.lr_2e-3")):
        assert r["rl_steps"] >= 1 and r["rl_minutes"] >= 0.002 and r["n"] == cfg.final_eval_positions
        assert (out / vdir / "av_sft.pt").read_bytes() == (run / "av_sft.pt").read_bytes()  # the same warm start
    assert load_config(out / "lr_1e-4+kl_coef_0" / "config.yaml").rl.lr == 1e-4  # the variant's resolved settings
    assert all(len(r["curve"]) == r["rl_steps"] for r in d["rows"]) and d["eval_n"] == cfg.rl.eval_n  # eval every step
    assert "`lr=1e-4,kl_coef=0`" in abl.table(out / "rl_ablation.json")
    assert "during GRPO" in abl.table(out / "rl_ablation.json")
    assert all(len(r["fve_nrm_by_position"]) == cfg.final_eval_positions for r in d["rows"])
    paired = abl.paired_to_first(d["rows"])  # each variant against base, on the same positions
    assert paired[0] == "—" and all(c.startswith(("+", "-")) and "[" in c for c in paired[1:])
    assert abl.paired_to_first([{"fve_nrm_by_position": [0.1, 0.2]}, {"fve_nrm_by_position": [0.3, 0.4]}, {}])[1:] == [
        "+0.200 [+0.200, +0.200]", "—"]
    with pytest.raises(NlakitError, match="unknown key 'rl.stepz'"):
        abl.parse_variant("stepz=1")
    with pytest.raises(NlakitError, match="unknown key 'ar.epochz'"):
        abl.parse_variant("epochz=1", "ar")


def test_ar_records_its_gold_ceiling_during_training(tmp_path, corpus):
    ar = ARConfig(rank=2, batch_size=8, epochs=2, curve_positions=4, curve_every=2)
    res = train_all(tiny_config(tmp_path / "run", corpus, ar=ar, rl=RLConfig(steps=0), split=(0.3, 0.5, 0.2)))
    assert list(res["datagen"]["config"]["split"]) == [0.3, 0.5, 0.2]  # the document split reaches datagen
    curve, steps = res["ar_sft"]["gold_curve"], res["ar_sft"]["steps"]
    assert curve["positions"] == 4
    assert [p["step"] for p in curve["points"]] == sorted({*range(2, steps + 1, 2), steps})  # every 2 steps and the last
    assert all(math.isfinite(p["gold_fve_nrm"]) and p["epochs"] > 0 for p in curve["points"])
    assert curve["points"][-1]["epochs"] == pytest.approx(steps * 8 / res["datagen"]["splits"]["ar"])
    none = train_all(tiny_config(tmp_path / "off", corpus, ar=replace(ar, curve_positions=0), rl=RLConfig(steps=0)))
    assert "gold_curve" not in none["ar_sft"]
    last = train_all(tiny_config(tmp_path / "last", corpus, ar=replace(ar, curve_every=0), rl=RLConfig(steps=0)))
    assert [p["step"] for p in last["ar_sft"]["gold_curve"]["points"]] == [last["ar_sft"]["steps"]]  # 0: the last step only
    # BENCHMARKS §1 renders the curve from the results alone
    from conftest import load_benchmark

    train_eval = load_benchmark("train_eval")
    md = train_eval.markdown(train_eval.benchmark_json(res, "cmd"))
    assert "During its SFT (first 4 positions): step 2 (" in md and f"step {steps} (" in md


def test_train_eval_export_only_packs_a_run_as_it_stands(tmp_path, corpus, monkeypatch):
    """benchmarks/train_eval.py --export-only: no training, the run's log, done files and the bundle of its last RL
    checkpoint packed for the device's return folder (a watching call's copy of a run that may be lost)."""
    import sys
    import tarfile

    from conftest import load_benchmark

    run = tmp_path / "run"
    train_all(tiny_config(run, corpus, describe=False, rl=RLConfig(steps=2, n_prompts=2, group=2, max_new_tokens=8,
                                                                    save_every=1, eval_every=0)))
    (run / "results.json").unlink()  # as mid-run: no results yet
    train_eval = load_benchmark("train_eval")
    dest = tmp_path / "exp"
    monkeypatch.setattr(sys, "argv", ["train_eval.py", "--export-only", str(run), "--export", str(dest), "--export-bundle"])
    train_eval.main()
    with tarfile.open(dest / "run.tar.gz") as t:
        assert {"log.jsonl", "ar_sft.done.json", "av_sft.done.json"} <= set(t.getnames()) and "results.json" not in t.getnames()
    with tarfile.open(dest / "bundle_rest.tar") as t:
        assert "bundle/nla_meta.yaml" in t.getnames()
    with tarfile.open(dest / "bundle_av.tar") as t:
        assert any(n.startswith("bundle/av/") for n in t.getnames())
    monkeypatch.setattr(sys, "argv", ["train_eval.py", "--export-only", str(run)])
    with pytest.raises(SystemExit, match="needs --export"):
        train_eval.main()


def test_gpu_session_script_starts_and_watches_a_detached_job(tmp_path):
    """benchmarks/gpu_session.sh: `start` detaches train_eval.py, `watch` waits for it and leaves its log in $OUT; a
    job that fails at once (a bad --set) is reported as ended, without a final export."""
    import os
    import subprocess

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "ROOT_DIR": str(tmp_path / "root"), "OUT": str(tmp_path / "out")}
    (tmp_path / "out").mkdir()
    run = lambda *a: subprocess.run(["bash", "benchmarks/gpu_session.sh", *a], cwd=root, env=env, capture_output=True,
                                    text=True, timeout=120)
    started = run("start", "--set", "n_docs=bogus")
    assert started.returncode == 0 and "started pid" in started.stdout
    watched = run("watch", "60")
    assert watched.returncode == 0 and "the job has ended" in watched.stdout and "no final export" in watched.stdout
    assert "n_docs = 'bogus' should be int" in (tmp_path / "out" / "job.log").read_text()
    assert run("bogus").returncode == 2


def test_total_minutes_caps_rl_so_the_pipeline_fits(tmp_path, corpus):
    from nlakit.train.pipeline import _rl_time_cap

    cfg = tiny_config(tmp_path / "run", corpus, total_minutes=10.0, reserve_minutes=1.5)
    timings = {"datagen": 60.0, "ar_sft": 120.0, "av_sft": 180.0, "rl": 999.0}  # RL's own time is not "before RL"
    assert _rl_time_cap(cfg.rl, cfg, timings).max_minutes == pytest.approx(2.5)
    assert _rl_time_cap(replace(cfg.rl, max_minutes=2.0), cfg, timings).max_minutes == 2.0  # the lower cap wins
    assert _rl_time_cap(cfg.rl, replace(cfg, total_minutes=None), timings) == cfg.rl
    rl = RLConfig(steps=50, n_prompts=2, group=2, max_new_tokens=8, save_every=1, eval_every=0)
    res = train_all(tiny_config(tmp_path / "tight", corpus, rl=rl, total_minutes=1e-6))  # no time left for RL
    assert res["finished"] and res["rl"]["steps_done"] == 0 and res["rl"]["stopped_by"] == "max_minutes"
    assert "final_eval" in res
    with pytest.raises(NlakitError, match="total_minutes = 0"):
        load_config(None, {"out": str(tmp_path / "x")}, {"total_minutes": 0.0, "reserve_minutes": -1.0})


def test_rewards_read_off_the_ar_update_match_a_separate_reward_pass(tmp_path, corpus, monkeypatch):
    """reward_from_ar_update runs the online AR step first and scores with its forward pass: the same rewards, the same
    AR update and the same policy update as reading them in a pass of their own (fp32, up to rounding)."""
    from nlakit.verbalizer import Explanation, Verbalizer

    decode = Verbalizer.decode  # the tiny random AV never writes a parseable explanation: count every sample as parsed

    def parsed(self, rows):
        return [Explanation(text=e.raw.strip() or "x", raw=e.raw, ok=True, n_tokens=e.n_tokens, truncated=False)
                for e in decode(self, rows)]

    monkeypatch.setattr(Verbalizer, "decode", parsed)
    rl = RLConfig(steps=3, n_prompts=2, group=4, max_new_tokens=8, save_every=1, eval_every=0, profile_step=2)
    plain = train_all(tiny_config(tmp_path / "plain", corpus, rl=rl))
    fused = train_all(tiny_config(tmp_path / "fused", corpus, rl=replace(rl, reward_from_ar_update=True)))
    for a, b in zip(plain["rl_history"], fused["rl_history"]):
        assert a["ok_rate"] == b["ok_rate"] == 1.0 and a["ar_loss"] is not None  # the rewards come from the AR
        assert a["reward"] == pytest.approx(b["reward"], abs=1e-4) and a["ar_loss"] == pytest.approx(b["ar_loss"], abs=1e-4)
        assert a["reward"] > FAIL_REWARD and b["reward_sec"] > 0 and b["ar_sec"] > 0
    states = [torch.load(tmp_path / d / "rl_state.pt", map_location="cpu", weights_only=False) for d in ("plain", "fused")]
    for key in ("av_lora", "ar_lora", "ar_head"):
        for name, value in states[0][key].items():
            torch.testing.assert_close(states[1][key][name], value, atol=1e-4, rtol=1e-3)
    assert "reward_and_ar_update" in json.loads((tmp_path / "fused" / "rl_profile.json").read_text())["phases"]
    # the default config's combination: bf16 autocast, bf16 frozen weights, the merged reward copy where a step reads one
    bf16 = replace(rl, frozen_dtype="bfloat16", merged_reward=True, profile_step=0)
    runs = [train_all(tiny_config(tmp_path / f"bf16_{i}", corpus, rl=replace(bf16, reward_from_ar_update=fuse), dtype="bfloat16"))
            for i, fuse in enumerate((False, True))]
    for a, b in zip(*(r["rl_history"] for r in runs)):
        assert a["reward"] == pytest.approx(b["reward"], abs=5e-3) and a["ar_loss"] == pytest.approx(b["ar_loss"], abs=5e-3)


def test_grpo_with_its_passes_captured_trains_as_the_eager_run(tmp_path, corpus, monkeypatch):
    """rl.cuda_graphs end to end: with the three GRPO passes going through StepGraphs' capture, check and fixed-shape
    padding (a CPU stand-in for make_graphed_callables), the run's rewards, AR losses and final adapters match the
    eager run's, and the summary says every pass was captured; the same with rl.pack_groups on."""
    from conftest import GraphLike

    from nlakit.train import graphs as graphs_mod
    from nlakit.verbalizer import Explanation, Verbalizer

    decode = Verbalizer.decode  # the tiny random AV never parses: count every sample as parsed (as above)
    monkeypatch.setattr(Verbalizer, "decode", lambda self, rows: [
        Explanation(text=e.raw.strip() or "x", raw=e.raw, ok=True, n_tokens=e.n_tokens, truncated=False) for e in decode(self, rows)])
    rl = RLConfig(steps=3, n_prompts=2, group=4, max_new_tokens=8, save_every=1, eval_every=0, micro_batch=8,
                  reward_from_ar_update=True, ppo_epochs=2)
    eager = train_all(tiny_config(tmp_path / "eager", corpus, rl=rl))
    init = graphs_mod.StepGraphs.__init__

    def on_as_on_a_gpu(self, module, *, enabled=True, **kw):
        init(self, module, enabled=enabled, **kw)
        if enabled and self.name.startswith("rl_"):
            self.enabled, self.pad_to = True, graphs_mod.GRAPH_PAD

    monkeypatch.setattr(graphs_mod.StepGraphs, "__init__", on_as_on_a_gpu)
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", lambda module, sample, **kw: GraphLike(module, sample))
    graphed = train_all(tiny_config(tmp_path / "graphed", corpus, rl=replace(rl, cuda_graphs=True)))
    packed = train_all(tiny_config(tmp_path / "packed", corpus, rl=replace(rl, cuda_graphs=True, pack_groups=True)))
    for run in (graphed, packed):
        assert run["rl"]["pass_modes"] == {"reference": "cuda graphs (1 shapes)", "policy": "cuda graphs (1 shapes)",
                                           "ar": run["rl"]["pass_modes"]["ar"]}
        assert run["rl"]["pass_modes"]["ar"].startswith("cuda graphs")
    assert eager["rl"]["pass_modes"]["policy"] == "eager" and eager["rl"]["pass_layout"] == "a row per rollout"
    assert packed["rl"]["pass_layout"].startswith("packed groups (4 responses")
    for run in (graphed, packed):
        for a, b in zip(eager["rl_history"], run["rl_history"]):
            assert a["reward"] == pytest.approx(b["reward"], abs=1e-4) and a["ar_loss"] == pytest.approx(b["ar_loss"], abs=1e-4)
            assert a["kl"] == pytest.approx(b["kl"], abs=1e-5)
    states = [torch.load(tmp_path / d / "rl_state.pt", map_location="cpu", weights_only=False) for d in ("eager", "graphed", "packed")]
    for other in states[1:]:
        for key in ("av_lora", "ar_lora", "ar_head"):
            for name, value in states[0][key].items():
                torch.testing.assert_close(other[key][name], value, atol=1e-4, rtol=1e-3)


def test_a_call_killed_mid_stage_still_counts_its_minutes(tmp_path, corpus, monkeypatch):
    """The running stage's time so far reaches timings.json as it runs, so total_minutes holds across a killed call."""
    import nlakit.train.pipeline as pipeline

    monkeypatch.setattr(pipeline, "TIMINGS_EVERY_SEC", 0.0)

    class Killed(Exception):
        pass

    def kill_in_av(rec):
        if rec.get("stage") == "av_sft":
            raise Killed

    cfg = tiny_config(tmp_path / "run", corpus, rl=RLConfig(steps=0))
    with pytest.raises(Killed):
        train_all(cfg, callback=kill_in_av)
    partial = json.loads((tmp_path / "run" / "timings.json").read_text())
    assert partial["av_sft"] > 0 and partial["ar_sft"] > 0  # the killed stage's minutes so far, beside the finished one's
    done = train_all(cfg)
    assert done["finished"] and done["timings_sec"]["av_sft"] > partial["av_sft"]


def test_rl_lr_decay_lowers_the_rates_over_the_end_of_the_run_and_a_resume_keeps_the_configs_rates(tmp_path, corpus):
    from nlakit.train.rl import lr_scale

    assert lr_scale(0.3, 0.0, 0.1) == 1.0 and lr_scale(0.99, 0.0, 0.1) == 1.0  # decay 0: constant
    assert lr_scale(0.5, 0.5, 0.1) == 1.0 and lr_scale(0.75, 0.5, 0.1) == pytest.approx(0.55)
    assert lr_scale(1.0, 0.5, 0.1) == pytest.approx(0.1)
    with pytest.raises(NlakitError, match=r"rl\.lr_decay = 1\.5 should be a fraction"):
        load_config(overrides={"out": str(tmp_path / "x")}, settings={"rl.lr_decay": 1.5})
    with pytest.raises(NlakitError, match=r"rl\.lr_final = 2\.0 should be a fraction"):  # a config built in code
        train_all(tiny_config(tmp_path / "bad", corpus, rl=RLConfig(steps=1, n_prompts=2, group=2, max_new_tokens=8, lr_final=2.0)))
    rl = RLConfig(steps=4, n_prompts=2, group=2, max_new_tokens=8, save_every=1, eval_every=0, lr=1e-3, lr_decay=0.5,
                  lr_final=0.2, ar_lr=2e-3, ar_head_lr=4e-3)
    out = tmp_path / "run"
    res = train_all(tiny_config(out, corpus, rl=rl))
    assert [h["lr_scale"] for h in res["rl_history"]] == pytest.approx([1.0, 1.0, 1.0, 0.6])  # progress 0, 1/4, 1/2, 3/4
    state = torch.load(out / "rl_state.pt", weights_only=False)
    assert state["opt"]["param_groups"][0]["lr"] == pytest.approx(1e-3 * 0.6)
    assert [g["lr"] for g in state["ar_opt"]["param_groups"]] == pytest.approx([2e-3 * 0.6, 4e-3 * 0.6])
    # resume at step 3 from a checkpoint whose optimisers hold other rates: the config's rates are scaled, not those
    state["step"], state["history"] = 3, state["history"][:3]
    for g in (*state["opt"]["param_groups"], *state["ar_opt"]["param_groups"]):
        g["lr"] = 123.0
    torch.save(state, out / "rl_state.pt")
    (out / "rl.done.json").unlink()
    again = train_all(tiny_config(out, corpus, rl=rl))
    assert again["rl"]["steps_done"] == 4
    state = torch.load(out / "rl_state.pt", weights_only=False)
    assert state["opt"]["param_groups"][0]["lr"] == pytest.approx(1e-3 * 0.6)
    assert [g["lr"] for g in state["ar_opt"]["param_groups"]] == pytest.approx([2e-3 * 0.6, 4e-3 * 0.6])
