"""Two gloo processes against one on tiny models (issue 18): `train all` (datagen, AR SFT, AV SFT, RL), `extract`,
`eval`, the RL update on its own, and a rank killed mid-RL that torchrun restarts from the last checkpoint.

Tolerances (docs/DISTRIBUTED.md says why):
- datagen, extract, eval: identical. Every rank runs whole batches exactly as one process forms them, so the pair and
  shard files are byte-identical and the eval JSON equal (its timings aside).
- AR / AV SFT: 1e-6 on every adapter and head tensor, 1e-6 on the logged losses. Each rank runs part of every batch
  (other padding) and DDP averages the part-gradients, a different summation order.
- RL: every step's reward and KL to 1e-5. The tiny AV never writes a parseable explanation, so its advantages are
  zero and its update is AdamW on rounding noise: the end-to-end run checks the plumbing, and
  `test_rl_update_two_ranks_equals_one` checks the update itself (non-zero advantages, parsed samples, two PPO
  passes, SGD so the weights compare gradients) to 1e-6.
- The killed-and-restarted run replays the same batches and seeds as the uninterrupted one: 1e-5, as in
  test_kill_resume.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import long_docs
from test_train import DOCS

CONFIG = {
    "target": "tiny:llama", "layer": 2, "device": "cpu", "n_docs": 13, "positions_per_doc": 2, "eval_positions": 8,
    "final_eval_positions": 8, "describe": True, "datagen_batch": 4,  # 4 batches of documents: 2 per rank
    "ar": {"rank": 2, "batch_size": 3, "epochs": 1, "save_every": 2},  # 3 = uneven shares (2 + 1)
    "av": {"rank": 2, "batch_size": 3, "epochs": 1, "save_every": 2, "eval_max_new_tokens": 8},
    "rl": {"steps": 8, "n_prompts": 3, "group": 2, "max_new_tokens": 8, "save_every": 2, "eval_every": 4, "eval_n": 4},
}
SFT_ATOL = 1e-6


def _env() -> dict:
    import nlakit

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    return {**env, "PYTHONPATH": str(Path(nlakit.__file__).parents[1]), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def nlakit_cmd(nproc: int, *args: str, restarts: int = 0) -> list[str]:
    """`python -m nlakit ARGS` as one process, or under torchrun with `nproc` gloo processes."""
    if nproc == 1:
        return [sys.executable, "-m", "nlakit", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            f"--max-restarts={restarts}", "-m", "nlakit", *args]


def start(nproc: int, *args: str, restarts: int = 0) -> subprocess.Popen:
    env = _env()
    if restarts:  # restarted workers can read the dead round's addresses from torchrun's shared store (pytorch#135712)
        env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
    return subprocess.Popen(nlakit_cmd(nproc, *args, restarts=restarts), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 240) -> None:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its workers: a hung collective must not outlive the test
        out, _ = proc.communicate()
        pytest.fail(f"no exit after {timeout} s: {out[-3000:]}")
    assert proc.returncode == 0, out[-3000:]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dist")
    (root / "train.jsonl").write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    (root / "held.jsonl").write_text("".join(json.dumps({**d, "id": "h" + d["id"]}) + "\n" for d in DOCS[:6]))
    (root / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in long_docs(12)))
    (root / "tiny.yaml").write_text(yaml.safe_dump({**CONFIG, "data": str(root / "train.jsonl"), "eval_data": str(root / "held.jsonl")}))
    return root


@pytest.fixture(scope="module")
def runs(corpus) -> tuple[Path, Path]:
    """`train all` on the tiny config as one process and as two (run side by side)."""
    one, two = corpus / "one", corpus / "two"
    procs = [start(1, "train", "all", "--config", str(corpus / "tiny.yaml"), "--out", str(one)),
             start(2, "train", "all", "--config", str(corpus / "tiny.yaml"), "--out", str(two))]
    for p in procs:
        finish(p)
    return one, two


def files(run: Path) -> set[str]:
    return {str(f.relative_to(run)) for f in run.rglob("*") if f.is_file()}


WEIGHTS = ("lora", "head", "av_lora", "ar_lora", "ar_head")  # the parts of a stage checkpoint that hold weights


def tensors(path: Path) -> dict[str, torch.Tensor]:
    st = torch.load(path, map_location="cpu", weights_only=False)
    return {f"{part}:{k}": v.float() for part in WEIGHTS if part in st for k, v in st[part].items()}


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys() and a
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_train_all_on_two_ranks_equals_one(runs):
    one, two = runs
    assert files(one) == files(two)  # the same files, merged by rank 0 (no per-rank leftovers)
    for name in ("data/pairs.jsonl", "data/pairs.safetensors", "data/reference.safetensors", "data/eval/pairs.jsonl",
                 "data/eval/pairs.safetensors"):
        assert (one / name).read_bytes() == (two / name).read_bytes(), f"{name} differs"
    d1, d2 = json.loads((one / "data/datagen.done.json").read_text()), json.loads((two / "data/datagen.done.json").read_text())
    assert {k: v for k, v in d1.items() if k != "config"} == {k: v for k, v in d2.items() if k != "config"}
    for ckpt in ("ar_sft.pt", "av_sft.pt"):
        assert max_diff(tensors(one / ckpt), tensors(two / ckpt)) <= SFT_ATOL, ckpt
    for stage in ("ar_sft", "av_sft"):
        s1, s2 = (json.loads((r / f"{stage}.done.json").read_text()) for r in (one, two))
        assert s2["steps"] == s1["steps"] and s2["final_loss"] == pytest.approx(s1["final_loss"], abs=SFT_ATOL)
    r1, r2 = (json.loads((r / "results.json").read_text()) for r in (one, two))
    assert r2["finished"] and [h["step"] for h in r2["rl_history"]] == list(range(1, 9))
    for h1, h2 in zip(r1["rl_history"], r2["rl_history"]):
        for key in ("reward", "kl", "ok_rate", "length", "copy_rate_4gram"):
            assert h2[key] == pytest.approx(h1[key], abs=1e-5), key
    assert r2["final_eval"]["fve_nrm"]["mean"] == pytest.approx(r1["final_eval"]["fve_nrm"]["mean"], abs=1e-4)
    log = [json.loads(line) for line in (two / "log.jsonl").read_text().splitlines()]
    assert sum(r["stage"] == "rl" for r in log) == 8  # one log, written by rank 0 alone


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rl_update(out: str | None = None) -> dict:
    """One RL update (two PPO passes) and one online AR step, with SGD, on a fixed rollout of 3 prompts x 2 samples, taking this
    rank's share of the prompts; returns the stats and the updated adapters (also saved to `out` on rank 0)."""
    from nlakit import distributed
    from nlakit.testing import tiny_nla
    from nlakit.train.ar_sft import new_ar
    from nlakit.train.av_sft import new_av
    from nlakit.train.common import MergedAV, lora_state, seed_everything
    from nlakit.train.rl import RLConfig, Rollout, ar_step, group_advantages, policy_step
    from nlakit.targets import tiny_target

    target = tiny_target("llama")
    nla = tiny_nla("llama", 2, target=target)
    seed_everything(0)
    av, ar = new_av(target, nla.meta, rank=2), new_ar(target, nla.meta, rank=2)
    with torch.no_grad():  # a non-trivial adapter: PEFT starts lora_B at zero
        for n, p in av.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    ref = MergedAV(av).verbalizer
    g = torch.Generator().manual_seed(0)
    P, G = 3, 2
    vectors = torch.randn(P, nla.d_model, generator=g).repeat_interleave(G, 0)
    responses = [torch.randint(5, 60, (int(n),), generator=g).tolist() for n in torch.randint(2, 7, (P * G,), generator=g)]
    texts = [f"a text about topic {i}" for i in range(P * G)]
    ok = torch.tensor([True, False, True, True, False, True])
    rewards = torch.randn(P * G, generator=g)
    lo, hi = (lambda r: (r.start * G, r.stop * G))(distributed.shard(range(P)))
    ro = Rollout(vectors[lo:hi], responses[lo:hi], texts[lo:hi], ok[lo:hi], -rewards[lo:hi], rewards[lo:hi],
                 group_advantages(rewards, G)[lo:hi], torch.ones(hi - lo))
    cfg = RLConfig(group=G, micro_batch=2, ppo_epochs=2, kl_coef=0.1, clip=0.05)
    # plain SGD: the weights move by lr x gradient, so they compare the gradients themselves (AdamW's first step,
    # g / (|g| + eps), turns the rounding noise of near-zero gradient entries into differences of order lr)
    sgd = lambda params: torch.optim.SGD(params, lr=0.1)  # noqa: E731
    stats = policy_step(av, ref, ro, sgd([p for p in av.model.parameters() if p.requires_grad]), cfg)
    ar_l, _ = ar_step(ar, sgd([p for p in ar.parameters() if p.requires_grad]), ro)
    res = {"stats": stats, "ar_loss": ar_l, "av": lora_state(av.model), "ar": lora_state(ar.backbone),
           "head": ar.value_head.state_dict()}
    if out is not None and distributed.is_main():
        torch.save(res, out)
    return res


def _rl_update_rank(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from nlakit import distributed

    distributed.init()
    try:
        rl_update(out)
    finally:
        distributed.shutdown()


def test_rl_update_two_ranks_equals_one(tmp_path):
    import torch.multiprocessing as mp

    one = rl_update()
    mp.spawn(_rl_update_rank, args=(2, _free_port(), str(tmp_path / "two.pt")), nprocs=2, join=True)
    two = torch.load(tmp_path / "two.pt", weights_only=False)
    assert one["stats"]["clip_frac"] > 0  # the second pass clipped something: the ratio path ran
    for key in ("kl", "loss", "clip_frac"):
        assert two["stats"][key] == pytest.approx(one["stats"][key], abs=1e-6), key
    assert two["ar_loss"] == pytest.approx(one["ar_loss"], abs=1e-6)
    for part in ("av", "ar", "head"):
        assert max_diff({k: v.float() for k, v in one[part].items()}, {k: v.float() for k, v in two[part].items()}) <= 1e-6, part


def test_extract_on_two_ranks_writes_the_same_shards(corpus, tmp_path):
    args = ["extract", str(corpus / "docs.jsonl"), "--layer", "2", "--target", "tiny:llama", "--shard-docs", "5", "--batch-size", "2"]
    procs = [start(1, *args, "--out", str(tmp_path / "one" / "acts.safetensors")),
             start(2, *args, "--out", str(tmp_path / "two" / "acts.safetensors"))]
    for p in procs:
        finish(p)
    names = sorted(f.name for f in (tmp_path / "one").iterdir())
    assert len(names) == 3 and names == sorted(f.name for f in (tmp_path / "two").iterdir())
    from nlakit.activations import load_shard

    for name in names:  # the same tensors, bit for bit, and metadata (safetensors orders its header per process)
        a, b = load_shard(tmp_path / "one" / name), load_shard(tmp_path / "two" / name)
        assert a["meta"] == b["meta"] and a["texts"] == b["texts"]
        for key in ("vectors", "doc", "position", "token_id"):
            assert torch.equal(a[key], b[key]), (name, key)


def test_eval_on_two_ranks_equals_one(corpus, tmp_path, tiny_bundle):
    args = ["eval", "--nla", str(tiny_bundle), "--target", "tiny:llama", "--data", str(corpus / "docs.jsonl"),
            "--train-data", str(corpus / "docs.jsonl"), "--n-positions", "10", "--n-train-positions", "20", "--min-position", "4",
            "--explain-batch-size", "3", "--max-new-tokens", "6", "--temperature", "1.0"]
    procs = [start(1, *args, "--out", str(tmp_path / "one.json")), start(2, *args, "--out", str(tmp_path / "two.json"))]
    for p in procs:
        finish(p)
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    one.pop("timing_s"), two.pop("timing_s")
    assert one == two
    assert sorted(f.name for f in tmp_path.iterdir()) == ["one.json", "two.json"]  # rank 0 wrote it, no per-rank files


def _worker_pid(agent: int, rank: int) -> int | None:
    """The pid of the torchrun worker of `rank` under the agent process `agent` (read from /proc)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) != agent:
                continue
            env = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if f"RANK={rank}".encode() in env:
            return int(stat.parent.name)
    return None


def rl_checkpoint_step(run: Path) -> int:
    path = run / "rl_state.pt"
    try:
        return torch.load(path, map_location="cpu", weights_only=False)["step"] if path.exists() else 0
    except Exception:  # replaced while we read it
        return 0


def test_a_killed_rank_restarts_both_from_the_last_checkpoint(corpus, runs):
    _, straight = runs
    run = corpus / "killed"
    proc = start(2, "train", "all", "--config", str(corpus / "tiny.yaml"), "--out", str(run), restarts=1)
    t0, killed_at = time.monotonic(), None
    while killed_at is None:
        assert proc.poll() is None, f"the run ended before the kill point: {proc.stdout.read()[-3000:]}"
        assert time.monotonic() - t0 < 180, "kill point never reached"
        step = rl_checkpoint_step(run)
        pid = _worker_pid(proc.pid, 1) if 2 <= step < 8 else None
        if pid is not None:
            os.kill(pid, signal.SIGKILL)  # rank 1 dies mid-RL; torchrun stops rank 0 and restarts both
            killed_at = step
        time.sleep(0.005)
    finish(proc)
    res = json.loads((run / "results.json").read_text())
    assert res["finished"] and [h["step"] for h in res["rl_history"]] == list(range(1, 9))  # no step lost or repeated
    rl_steps = [r["step"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["stage"] == "rl"]
    restarts = [b for a, b in zip(rl_steps, rl_steps[1:]) if b <= a]
    assert all(b - 1 >= killed_at and (b - 1) % CONFIG["rl"]["save_every"] == 0 for b in restarts)  # from a checkpoint
    ref = json.loads((straight / "results.json").read_text())
    for a, b in zip(ref["rl_history"], res["rl_history"]):
        assert b["reward"] == pytest.approx(a["reward"], abs=1e-5)
    assert max_diff(tensors(straight / "rl_state.pt"), tensors(run / "rl_state.pt")) <= 1e-5
    assert not list(run.rglob(".*.rank*")), "per-rank part files left behind"


def test_shares_cover_the_list_in_order(monkeypatch):
    from nlakit import distributed

    items = list(range(11))
    for world in (1, 2, 3, 4):
        monkeypatch.setattr(distributed, "world", lambda w=world: w)
        shards, dealt = [], []
        for r in range(world):
            monkeypatch.setattr(distributed, "rank", lambda r=r: r)
            shards.append(list(distributed.shard(items)))
            dealt.append(list(distributed.deal(items)))
        assert sum(shards, []) == items  # contiguous shares, in rank order
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
        assert sorted(sum(dealt, [])) == items and max(map(len, dealt)) - min(map(len, dealt)) <= 1


def test_batches_too_small_to_share_are_named_at_once(monkeypatch):
    from nlakit import distributed
    from nlakit.errors import NlakitError

    monkeypatch.setattr(distributed, "world", lambda: 4)
    with pytest.raises(NlakitError, match=r"ar.batch_size = 3, rl.n_prompts = 2 .* 4 processes.*set ar.batch_size and rl.n_prompts"):
        distributed.require_shares({"ar.batch_size": 3, "av.batch_size": 8, "rl.n_prompts": 2})
    distributed.require_shares({"av.batch_size": 4})


def test_one_process_starts_no_group(monkeypatch):
    import torch.distributed as dist

    from nlakit import distributed
    from nlakit.errors import NlakitError

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init() == 1 and not dist.is_initialized()
    assert distributed.world() == 1 and distributed.is_main() and distributed.all_gather("x") == ["x"]
    with pytest.raises(NlakitError, match="torchrun"):
        distributed.init(required=True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    for var in ("RANK", "MASTER_ADDR"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(NlakitError, match="RANK"):
        distributed.init()


def test_verbs_that_do_not_split_refuse_torchrun(monkeypatch):
    from typer.testing import CliRunner

    from nlakit.cli import app
    from nlakit.errors import NlakitError

    monkeypatch.setenv("WORLD_SIZE", "2")
    res = CliRunner().invoke(app, ["info"])
    assert isinstance(res.exception, NlakitError) and "does not run distributed" in str(res.exception)


def test_a_slice_of_a_sampled_batch_decodes_its_rows_with_first_row(make_nla):
    from nlakit import engine

    av = make_nla("llama", 2).av
    v = torch.randn(7, av.meta.d_model, generator=torch.Generator().manual_seed(3))
    whole = engine.generate(av, v, max_new_tokens=6, temperature=1.0, seed=11)
    assert engine.generate(av, v[2:5], max_new_tokens=6, temperature=1.0, seed=11, first_row=2) == whole[2:5]
    assert engine.generate(av, v[2:5], max_new_tokens=6, temperature=1.0, seed=11) != whole[2:5]  # the offset matters
