"""SIGKILL `nlakit train all` in the middle of AR SFT, AV SFT and RL, resume each time, and compare with a run that was
never interrupted (issue 13).

Tiny model on CPU, fp32, one thread. Tolerance: the resumed run must equal the uninterrupted one to atol 1e-5 on every
adapter and value-head tensor and to 1e-5 on the final held-out fve_nrm, with the same RL history (steps and rewards).
Both runs replay the same batches and seeds, so in practice they agree to the last bit; the tolerance only allows for
summation-order noise. No step may be lost beyond the last checkpoint, and every file left in the run directory after a
kill must load (temporary siblings of atomic writes, `.name.*.tmp`, are the only leftovers allowed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from test_train import DOCS

CONFIG = {
    "target": "tiny:llama", "layer": 2, "device": "cpu", "n_docs": 13, "positions_per_doc": 2, "eval_positions": 8,
    "final_eval_positions": 8, "describe": False, "datagen_batch": 8,
    "ar": {"rank": 2, "batch_size": 2, "epochs": 2, "save_every": 2},
    "av": {"rank": 2, "batch_size": 2, "epochs": 2, "save_every": 2, "eval_max_new_tokens": 8},
    "rl": {"steps": 8, "n_prompts": 2, "group": 2, "max_new_tokens": 8, "save_every": 2, "eval_every": 4, "eval_n": 4},
}


def start(out: Path, config: Path) -> subprocess.Popen:
    import nlakit

    env = {**os.environ, "PYTHONPATH": str(Path(nlakit.__file__).parents[1]), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    code = "import torch; torch.set_num_threads(1); from nlakit.cli import main; main()"
    return subprocess.Popen([sys.executable, "-c", code, "train", "all", "--config", str(config), "--out", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    """SIGKILL `proc` as soon as `ready()` holds (polled every 5 ms)."""
    t0 = time.monotonic()
    while not ready():
        assert proc.poll() is None, f"the run ended before the kill point: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() - t0 < timeout, "kill point never reached"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def checkpoint_step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["step"] if path.exists() else 0


def assert_every_file_loads(out: Path) -> None:
    from nlakit.io import read_json, read_jsonl, read_safetensors

    for f in sorted(out.rglob("*")):
        if not f.is_file() or (f.name.startswith(".") and f.name.endswith(".tmp")):
            continue
        if f.suffix == ".pt":
            torch.load(f, map_location="cpu", weights_only=False)
        elif f.suffix == ".safetensors":
            read_safetensors(f, "x")
        elif f.suffix == ".json":
            read_json(f)
        elif f.name == "log.jsonl":  # appended line by line: a kill may cut its last line only
            lines = f.read_text().splitlines()
            for line in lines[:-1]:
                json.loads(line)
        elif f.suffix == ".jsonl":
            read_jsonl(f)
        elif f.suffix == ".yaml":
            yaml.safe_load(f.read_text())


def adapter_tensors(out: Path) -> dict[str, torch.Tensor]:
    """The final fp32 adapters and value head (the last RL checkpoint; the bundle stores them rounded to bf16)."""
    st = torch.load(out / "rl_state.pt", map_location="cpu", weights_only=False)
    return {f"{part}:{k}": v.float() for part in ("av_lora", "ar_lora", "ar_head") for k, v in st[part].items()}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    (root / "train.jsonl").write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    (root / "held.jsonl").write_text("".join(json.dumps({**d, "id": "h" + d["id"]}) + "\n" for d in DOCS[:6]))
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "data": str(root / "train.jsonl"), "eval_data": str(root / "held.jsonl")}))
    return root, config


def test_kill_in_each_stage_then_resume_equals_an_uninterrupted_run(setup):
    root, config = setup
    straight, killed = root / "straight", root / "killed"
    p = start(straight, config)
    assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:]

    # 1. mid AR SFT: a partial checkpoint exists (step ≥ 2), the stage is not done
    p = start(killed, config)
    kill_when(p, lambda: checkpoint_step(killed / "ar_sft.partial.pt") >= 2)
    assert not (killed / "ar_sft.done.json").exists()
    ar_step = checkpoint_step(killed / "ar_sft.partial.pt")
    assert_every_file_loads(killed)
    # 2. mid AV SFT
    p = start(killed, config)
    kill_when(p, lambda: checkpoint_step(killed / "av_sft.partial.pt") >= 2)
    assert (killed / "ar_sft.done.json").exists() and not (killed / "av_sft.done.json").exists()
    assert json.loads((killed / "ar_sft.done.json").read_text())["steps"] >= ar_step  # resumed, not restarted from 0
    assert_every_file_loads(killed)
    # 3. mid RL
    p = start(killed, config)
    kill_when(p, lambda: (killed / "rl_state.pt").exists() and 2 <= checkpoint_step(killed / "rl_state.pt") < 8)
    assert not (killed / "rl.done.json").exists()
    rl_step = checkpoint_step(killed / "rl_state.pt")
    assert_every_file_loads(killed)
    # 4. resume to the end
    p = start(killed, config)
    assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:]
    assert_every_file_loads(killed)

    a, b = json.loads((straight / "results.json").read_text()), json.loads((killed / "results.json").read_text())
    assert b["finished"] and b["rl"]["steps_done"] == 8
    assert [h["step"] for h in b["rl_history"]] == list(range(1, 9))  # no RL step lost or repeated in the log
    assert rl_step >= 2
    for x, y in zip(a["rl_history"], b["rl_history"]):
        assert y["reward"] == pytest.approx(x["reward"], abs=1e-5)
    assert b["final_eval"]["fve_nrm"]["mean"] == pytest.approx(a["final_eval"]["fve_nrm"]["mean"], abs=1e-5)
    ta, tb = adapter_tensors(straight), adapter_tensors(killed)
    assert ta.keys() == tb.keys()
    worst = max((ta[k] - tb[k]).abs().max().item() for k in ta)
    assert worst <= 1e-5, f"resumed weights differ from the uninterrupted run by {worst}"
