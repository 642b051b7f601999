"""Run configs: the shipped YAML loads, flags override it, every problem of a bad file is reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from nlakit.cli import app
from nlakit.errors import NlakitError
from nlakit.train.config import load_config, save_config

SHIPPED = Path(__file__).resolve().parents[1] / "configs" / "smollm2-l20.yaml"


def test_shipped_config_loads_and_flags_override_it(tmp_path):
    cfg = load_config(SHIPPED, {"out": str(tmp_path), "rl.steps": 7, "time_budget": "9m", "layer": None})
    assert cfg.target == "smollm2" and cfg.layer == 20 and cfg.rl.steps == 7 and cfg.time_budget == "9m"
    assert cfg.rl.group == 8 and cfg.av.rank == 24  # untouched keys keep the file's values
    assert load_config(save_config(cfg, tmp_path)) == cfg  # the resolved config round-trips


def test_every_problem_is_reported_at_once(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("layer: twenty\nlr: 1.0\nrl:\n  stepz: 3\n  kl_coef: high\n")
    with pytest.raises(NlakitError) as e:
        load_config(bad)
    msg = str(e.value)
    for part in ("layer = 'twenty' should be int", "unknown key 'lr'", "unknown key 'rl.stepz'", "rl.kl_coef = 'high'",
                 "no run directory", "--out DIR"):
        assert part in msg


@pytest.mark.parametrize("text, match", [("a: [1, 2", "not valid YAML"), ("- 1\n- 2\n", "not a mapping")])
def test_unreadable_files(tmp_path, text, match):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(NlakitError, match=match):
        load_config(f)
    with pytest.raises(NlakitError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_cli_reports_a_bad_config_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rl:\n  stepz: 3\n")
    r = CliRunner().invoke(app, ["train", "all", "--config", str(bad), "--out", str(tmp_path / "run")])
    assert isinstance(r.exception, NlakitError) and "unknown key 'rl.stepz'" in str(r.exception)  # main() prints it as one line


def test_set_overrides_any_key_typed_by_the_config(tmp_path):
    from nlakit.train.config import parse_settings

    s = parse_settings(["av.epochs=3", "rl.lr=1e-4", "rl.micro_batch=256", "rl.max_minutes=none", "describe=false",
                        "baselines=mean,ridge_token"])
    assert s == {"av.epochs": 3.0, "rl.lr": 1e-4, "rl.micro_batch": 256, "rl.max_minutes": None, "describe": False,
                 "baselines": ("mean", "ridge_token")}
    cfg = load_config(SHIPPED, {"out": str(tmp_path), "rl.max_minutes": 5.0}, s)
    assert cfg.av.epochs == 3.0 and cfg.rl.micro_batch == 256 and cfg.rl.max_minutes is None  # --set wins over flags
    assert cfg.av.rank == 24 and cfg.rl.group == 8  # the rest is the file's
    assert parse_settings(["lr=2e-4"], prefix="rl.") == {"rl.lr": 2e-4}


def test_bad_set_items_are_reported_with_the_file_problems(tmp_path):
    from nlakit.train.config import parse_settings

    with pytest.raises(NlakitError, match="is not KEY=VALUE"):
        parse_settings(["av.epochs"])
    with pytest.raises(NlakitError) as e:
        load_config(SHIPPED, {"out": str(tmp_path)}, parse_settings(["av.epochz=3", "rl.lr=fast"]))
    assert "unknown key 'av.epochz'" in str(e.value) and "rl.lr = 'fast' should be float" in str(e.value)


def test_cli_set_reaches_the_resolved_config(tmp_path):
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", "ar", "--config", str(SHIPPED), "--out", str(out), "--target", "tiny:llama",
                                 "--set", "n_docs=oops"])
    assert isinstance(r.exception, NlakitError) and "n_docs = 'oops' should be int" in str(r.exception)


def test_document_split_and_time_keys_are_checked(tmp_path):
    from nlakit.train.config import parse_settings

    cfg = load_config(None, {"out": str(tmp_path)}, parse_settings(["split=0.2,0.6,0.2", "total_minutes=24"]))
    assert cfg.split == (0.2, 0.6, 0.2) and cfg.total_minutes == 24.0
    assert load_config(save_config(cfg, tmp_path)) == cfg  # the resolved file round-trips
    with pytest.raises(NlakitError) as e:
        load_config(None, {"out": str(tmp_path)}, parse_settings(["split=0.5,0.5,0.5", "total_minutes=-1", "reserve_minutes=-2"]))
    msg = str(e.value)
    assert "split = [0.5, 0.5, 0.5] should be three shares" in msg and "total_minutes = -1.0" in msg and "reserve_minutes = -2.0" in msg


def test_single_stage_commands_print_one_readable_line_per_stage():
    from nlakit.commands.train import stage_summary

    ci = {"mean": 0.74, "ci95": [0.73, 0.75], "n": 1024}
    res = {"ar_sft": {"steps": 954, "eval_gold_fve_nrm": ci},
           "av_sft": {"steps": 1362, "eval": {"n": 1024, "fve_nrm": {**ci, "mean": 0.35}, "parse_rate": 0.95,
                                              "fve_nrm_by_position": [0.1] * 1024}}}
    lines = stage_summary(res)
    assert len(lines) == 2 and lines[0].startswith("AR SFT: 954 steps") and "0.740 [0.730, 0.750]" in lines[0]
    assert lines[1].startswith("AV SFT: 1362 steps") and "0.350" in lines[1] and "parse rate 0.95" in lines[1]
    assert stage_summary({"ar_sft": res["ar_sft"]}) == lines[:1]  # `train ar`: the AR alone


def test_source_is_checked_with_the_config(tmp_path):
    from nlakit.train.config import parse_settings

    with pytest.raises(NlakitError, match="source = 'templat' is not an explanation source: use one of template, template_exact, self"):
        load_config(SHIPPED, {"out": str(tmp_path)}, parse_settings(["source=templat"]))
    with pytest.raises(NlakitError, match="set describe: true"):
        load_config(SHIPPED, {"out": str(tmp_path)}, parse_settings(["source=self"]))  # the file has describe: false
    assert load_config(SHIPPED, {"out": str(tmp_path)}, parse_settings(["source=template_exact"])).source == "template_exact"


def test_packed_groups_need_whole_groups_per_micro_batch(tmp_path):
    from nlakit.train.config import parse_settings

    cfg = load_config(SHIPPED, {"out": str(tmp_path)}, parse_settings(["rl.pack_groups=true"]))
    assert cfg.rl.pack_groups and cfg.rl.micro_batch % cfg.rl.group == 0
    with pytest.raises(NlakitError) as e:
        load_config(SHIPPED, {"out": str(tmp_path)}, parse_settings(["rl.pack_groups=true", "rl.micro_batch=100", "rl.lr=x"]))
    msg = str(e.value)
    assert "rl.micro_batch = 100 is not a multiple of rl.group = 8" in msg and "set rl.micro_batch to 96" in msg
    assert "rl.lr = 'x'" in msg  # reported with the other problems
