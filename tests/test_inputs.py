"""Every input path fails safe (issue 13): truncated files, file-or-text arguments, hints, parser edges, own corpora.

Each bad input must give one NlakitError line naming the problem and the fix; the texts are asserted.
"""

from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pytest

from nlakit.bundle import export_released, load_nla, load_released
from nlakit.errors import NlakitError


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and "Fix: " in msg
    return msg


def cut_in_half(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# ---- 1. truncated files ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lora_bundle(tmp_path_factory):
    """A tiny bundle saved the way training saves one: LoRA adapters for AV and AR (PEFT reads them)."""
    from nlakit.testing import tiny_nla
    from nlakit.train.common import add_lora

    nla = tiny_nla("llama", 2)
    nla.av.model = add_lora(nla.av.model, 2)
    nla.ar.backbone = add_lora(nla.ar.backbone, 2)
    return nla.save(tmp_path_factory.mktemp("lora") / "nla")


@pytest.mark.parametrize("part", ["av/adapter_model.safetensors", "ar/adapter_model.safetensors", "av/adapter_config.json",
                                  "ar/value_head.safetensors", "reference.safetensors", "nla_meta.yaml"])
def test_truncated_bundle_file(tmp_path, lora_bundle, tiny_llama, part):
    dst = shutil.copytree(lora_bundle, tmp_path / "nla")
    cut_in_half(dst / part)
    with pytest.raises(NlakitError, match="corrupt or incomplete") as e:
        load_nla(dst, target=tiny_llama)
    msg = one_line(e)
    assert str(dst / part) in msg
    assert ("restore the file from the checkpoint" if part.endswith(".yaml") else "re-save or re-download the NLA bundle") in msg


@pytest.fixture(scope="module")
def released(tmp_path_factory, make_nla):
    return export_released(make_nla("llama", 2), tmp_path_factory.mktemp("rel"), dtype="float32")


@pytest.mark.parametrize("part", ["av/model.safetensors", "ar/model.safetensors", "ar/value_head.safetensors", "av/config.json",
                                  "av/tokenizer.json", "ar/tokenizer_config.json", "av/chat_template.jinja"])
def test_truncated_released_file(tmp_path, released, part):
    dst = shutil.copytree(released[0].parent, tmp_path / "rel")
    cut_in_half(dst / part)
    with pytest.raises(NlakitError, match="corrupt or incomplete") as e:
        load_released(dst / "av", dst / "ar")
    msg = one_line(e)
    assert str(dst / part) in msg and "re-download or re-export the checkpoint" in msg


def test_truncated_model_dir_shard_json_jsonl_and_gguf(tmp_path, tiny_llama):
    from gguf import GGUFWriter

    from nlakit.activations import extract, load_shard, save_shard
    from nlakit.io import read_json, read_jsonl, write_json
    from nlakit.targets import load_target

    tiny_llama.model.save_pretrained(tmp_path / "hf")
    tiny_llama.tokenizer.save_pretrained(tmp_path / "hf")
    save_shard(tmp_path / "a.safetensors", extract(tiny_llama, ["hello world"], 1), {})
    write_json(tmp_path / "r.json", {"kind": "eval", "rows": [1, 2, 3]})
    with gzip.open(tmp_path / "d.jsonl.gz", "wt") as f:
        f.writelines('{"text": "hello %d"}\n' % i for i in range(3000))
    with gzip.open(tmp_path / "r.json.gz", "wt") as f:
        f.write('{"kind": "eval", "rows": [%s]}' % ", ".join(str(i) for i in range(3000)))
    w = GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    w.add_block_count(2)
    w.add_tensor("token_embd.weight", np.zeros((800, 64), dtype=np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    cases = [("hf/model.safetensors", lambda: load_target(str(tmp_path / "hf")), "re-download or re-save the model directory"),
             ("a.safetensors", lambda: load_shard(tmp_path / "a.safetensors"), "re-run `nlakit extract`"),
             ("r.json", lambda: read_json(tmp_path / "r.json"), "re-run the stage that writes it"),
             ("r.json.gz", lambda: read_json(tmp_path / "r.json.gz"), "re-run the stage that writes it"),
             ("d.jsonl.gz", lambda: read_jsonl(tmp_path / "d.jsonl.gz"), "re-create or re-download the file"),
             ("m.gguf", lambda: load_target(str(tmp_path / "m.gguf")), "pass a complete .gguf file")]
    for part, load, fix in cases:
        cut_in_half(tmp_path / part)
        with pytest.raises(NlakitError, match="corrupt or incomplete") as e:
            load()
        msg = one_line(e)
        assert str(tmp_path / part) in msg and fix in msg, part


# ---- 2. TEXT-or-FILE arguments ---------------------------------------------------------------------------------
@pytest.fixture()
def runner():
    from typer.testing import CliRunner

    return CliRunner()


def invoke(runner, args):
    from nlakit.cli import app

    return runner.invoke(app, [str(a) for a in args])


def test_extract_reads_a_named_file_never_its_name(runner, tmp_path, monkeypatch):
    from nlakit.activations import load_shard

    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("The cat sat on the mat.\nA second line about dogs.\n")
    common = ["--layer", 1, "--target", "tiny:llama"]
    assert invoke(runner, ["extract", "notes.txt", "--out", "a.safetensors", *common]).exit_code == 0
    assert load_shard(tmp_path / "a.safetensors")["texts"] == ["The cat sat on the mat.\nA second line about dogs.\n"]
    assert invoke(runner, ["extract", "notes.txt", "--per-line", "--out", "b.safetensors", *common]).exit_code == 0
    assert load_shard(tmp_path / "b.safetensors")["texts"] == ["The cat sat on the mat.", "A second line about dogs."]
    assert invoke(runner, ["extract", "notes.txt", "--literal", "--out", "c.safetensors", *common]).exit_code == 0
    assert load_shard(tmp_path / "c.safetensors")["texts"] == ["notes.txt"]
    with gzip.open(tmp_path / "d.jsonl.gz", "wt") as f:
        f.write('{"text": "one"}\n{"text": "two"}\n')
    assert invoke(runner, ["extract", "d.jsonl.gz", "--out", "d.safetensors", *common]).exit_code == 0
    assert load_shard(tmp_path / "d.safetensors")["texts"] == ["one", "two"]
    r = invoke(runner, ["extract", "nots.txt", "--out", "e.safetensors", *common])  # a typo is refused, not extracted
    assert isinstance(r.exception, NlakitError)
    assert str(r.exception) == ("'nots.txt' looks like a file name, but no such file or folder exists. Fix: check the path (a .jsonl / "
                                ".jsonl.gz file, a .parquet file, a UTF-8 text file, or a folder of those), or pass --literal to "
                                "read these words as the text")
    (tmp_path / "blob.txt").write_bytes(b"\x00\x01\x02binary")
    r = invoke(runner, ["extract", "blob.txt", "--out", "f.safetensors", *common])
    assert "blob.txt is a binary file, not text, JSONL or Parquet" in str(r.exception)


def test_explain_and_reconstruct_read_a_named_file(runner, tiny_bundle, tmp_path):
    (tmp_path / "one.txt").write_text("hello world, this is a file")
    r = invoke(runner, ["explain", tmp_path / "one.txt", "--nla", tiny_bundle, "--json", "--max-new-tokens", 2])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["text"] == "hello world, this is a file"
    (tmp_path / "many.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n')
    for verb in ("explain", "reconstruct"):
        r = invoke(runner, [verb, tmp_path / "many.jsonl", "--nla", tiny_bundle])
        assert f"holds 2 documents, but nlakit {verb} reads one text" in str(r.exception)
    r = invoke(runner, ["explain", "./missing.md", "--nla", tiny_bundle])
    assert "looks like a file name" in str(r.exception)
    r = invoke(runner, ["explain", "The cat sat", "--train-data", tmp_path / "none.jsonl", "--nla", tiny_bundle])
    assert "--train-data" in str(r.exception) and "none.jsonl does not exist" in str(r.exception)


# ---- 6. training on your own corpus -----------------------------------------------------------------------------
def test_corpus_formats(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nlakit.corpus import read_rows

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("first document")
    (tmp_path / "docs" / "b.jsonl").write_text('{"text": "second", "lang": "fr"}\n')
    pq.write_table(pa.table({"body": ["third", "fourth"]}), tmp_path / "docs" / "c.parquet")
    (tmp_path / "docs" / ".hidden.txt").write_text("skipped")
    with pytest.raises(NlakitError) as e:
        read_rows(tmp_path / "docs")
    assert "c.parquet has no column 'text' (columns: body). Fix: pass --text-key NAME" in one_line(e)
    pq.write_table(pa.table({"text": ["third", "fourth"]}), tmp_path / "docs" / "c.parquet")
    rows = read_rows(tmp_path / "docs")
    assert [r["text"] for r in rows] == ["first document", "second", "third", "fourth"] and rows[1]["lang"] == "fr"
    assert len(read_rows(tmp_path / "docs", limit=2)) == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(NlakitError, match="holds no .jsonl, .jsonl.gz, .parquet, .txt or .md files") as e:
        read_rows(tmp_path / "empty")
    one_line(e)


def test_train_all_without_a_corpus_says_what_is_missing(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NLAKIT_CORPUS", raising=False)
    r = invoke(runner, ["train", "all", "--target", "tiny:llama", "--layer", 1, "--out", tmp_path / "run"])
    assert isinstance(r.exception, NlakitError)
    msg = str(r.exception)
    assert msg.startswith("no training documents given, and no corpus file train.jsonl.gz found")
    assert "Fix: pass --data FILE_OR_FOLDER (.jsonl, .jsonl.gz, .parquet or plain text; docs/INPUTS.md)" in msg


def test_datagen_from_a_folder_of_text_files_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nlakit.targets import tiny_target
    from nlakit.train.common import load_pairs
    from nlakit.train.datagen import DatagenConfig, datagen

    from conftest import long_docs

    (tmp_path / "mine").mkdir()
    for i, d in enumerate(long_docs(8)):
        (tmp_path / "mine" / f"{i}.txt").write_text(d * 2)
    pq.write_table(pa.table({"text": [d * 2 for d in long_docs(6)]}), tmp_path / "held.parquet")
    cfg = DatagenConfig(data=str(tmp_path / "mine"), out=str(tmp_path / "data"), layer=1, n_docs=8, positions_per_doc=2,
                        batch_size=4, describe=False, eval_data=str(tmp_path / "held.parquet"), eval_positions=4)
    datagen(cfg, tiny_target("llama"))
    pairs = load_pairs(tmp_path / "data")
    assert len({r["doc"] for r in pairs.rows}) >= 6  # documents from the text files, one per file


# ---- 3. every --option a hint names exists on the command that raised it ---------------------------------------
def cli_options() -> dict[str, set[str]]:
    """{'explain': {'--nla', ...}, 'train all': {...}, ...}: every leaf command's option names."""
    import typer.main

    from nlakit.cli import app

    out: dict[str, set[str]] = {}

    def walk(cmd, path):
        if hasattr(cmd, "commands"):  # a group (typer vendors its own click)
            if not path:  # the app's own options (--verbose, --distributed), given before the verb
                out[""] = {o for p in cmd.params for o in (*p.opts, *getattr(p, 'secondary_opts', ())) if o.startswith("--")}
            for name, sub in cmd.commands.items():
                walk(sub, path + [name])
        else:
            out[" ".join(path)] = {o for p in cmd.params for o in (*p.opts, *getattr(p, 'secondary_opts', ())) if o.startswith("--")}

    walk(typer.main.get_command(app), [])
    return out


def hint_options(text: str) -> set[str]:
    """The nlakit options a message names (pip's and torchrun's own flags in a `pip install ...` or `torchrun ...`
    hint are not ours)."""
    import re

    text = re.sub(r"(pip install|torchrun)[^,;)]*", "", text)
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text)) - {"--help"}


def test_every_option_in_a_hint_exists():
    """Static: every --option written in any NlakitError (or problem list) in the sources is an option of some command,
    and a hint raised in a command module names an option of that module's own commands."""
    import ast
    from pathlib import Path

    import nlakit

    opts = cli_options()
    every = set().union(*opts.values())
    root = Path(nlakit.__file__).parent
    bad = []
    for f in sorted(root.rglob("*.py")):
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in ("NlakitError", "append")):
                continue
            text = " ".join(c.value for a in node.args for c in ast.walk(a) if isinstance(c, ast.Constant) and isinstance(c.value, str))
            for o in hint_options(text):
                own = set()
                if f.parent.name in ("commands", "experiment"):
                    name = f.stem if f.parent.name == "commands" else f"experiment {f.stem}"
                    own = set().union(*(v for k, v in opts.items() if k == name or k.startswith(name + " "))) if any(
                        k == name or k.startswith(name + " ") for k in opts) else every
                if o not in (own or every):
                    bad.append(f"{f.relative_to(root)}:{node.lineno} names {o}")
    assert not bad, bad


def test_hints_raised_by_commands_name_their_own_options(runner, tiny_bundle, tmp_path, released):
    """Dynamic: bad invocations of each verb; every --option in the error line is an option of that verb."""
    opts = cli_options()
    rel = shutil.copytree(released[0].parent, tmp_path / "rel")
    (rel / "av").rename(rel / "verbalizer")
    cases = [
        ["explain", "hi there", "--nla", rel / "verbalizer"],
        ["eval", "--nla", rel / "verbalizer", "--data", tmp_path / "x.jsonl", "--out", tmp_path / "r.json"],
        ["reconstruct", "a cat", "--nla", rel / "verbalizer"],
        ["demo", "--nla", rel / "verbalizer", "--out", tmp_path / "r.html"],
        ["explain", "hi", "--nla", tiny_bundle, "--ar", rel / "ar"],
        ["explain", "notes.txt", "--nla", tiny_bundle],
        ["extract", "hello", "--layer", 9, "--out", tmp_path / "x.safetensors", "--target", "tiny:llama"],
        ["eval", "--nla", tiny_bundle, "--data", tmp_path / "none.jsonl", "--out", tmp_path / "r.json"],
        ["train", "all", "--target", "tiny:llama", "--out", tmp_path / "run", "--data", tmp_path / "none"],
        ["report", tmp_path / "none.json", "--out", tmp_path / "r.html"],
        ["cost", "--model", "no-such-model"],
        ["bench", "--batch-sizes", "x", "--target", "tiny:llama"],
        ["explain", tmp_path / "body.jsonl", "--nla", tiny_bundle],  # no 'text' field: explain has no --text-key
        ["explain", "hi there", "--train-data", tmp_path / "body.jsonl", "--nla", tiny_bundle],
        ["extract", tmp_path / "body.jsonl", "--layer", 1, "--out", tmp_path / "x.safetensors", "--target", "tiny:llama"],
        ["datagen", "--out", tmp_path / "dg", "--target", "tiny:llama", "--layer", 1, "--data", tmp_path / "body.parquet",
         "--eval-data", tmp_path / "body.parquet"],
    ]
    (tmp_path / "body.jsonl").write_text('{"body": "x"}\n')
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "body.parquet")
    for args in cases:
        r = invoke(runner, args)
        assert isinstance(r.exception, NlakitError), (args, r.output)
        verb = " ".join(str(a) for a in args[:2]) if args[0] in ("train", "experiment") else args[0]
        named = hint_options(str(r.exception))
        assert named <= opts[verb], (args, str(r.exception), named - opts[verb])


# ---- 4. released format: precision, export fields, other directory names ---------------------------------------
def test_released_pair_with_other_names_loads_with_ar(runner, released, tmp_path):
    rel = shutil.copytree(released[0].parent, tmp_path / "rel")
    (rel / "av").rename(rel / "my-verbalizer")
    (rel / "ar").rename(rel / "my-reconstructor")
    with pytest.raises(NlakitError) as e:
        load_nla(rel / "my-verbalizer")
    assert one_line(e).endswith("no AR directory was found next to it (…-av → …-ar, av → ar). Fix: pass --ar DIR (the AR "
                                "directory released with it); in Python, load_released(av_dir, ar_dir)")
    nla = load_nla(rel / "my-verbalizer", ar=rel / "my-reconstructor")
    assert nla.layer == 2
    r = invoke(runner, ["reconstruct", "a cat", "--nla", rel / "my-verbalizer", "--ar", rel / "my-reconstructor", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["layer"] == 2  # the target came from the exported sidecar (nlakit.target)


def test_bf16_released_keeps_rotary_and_head_in_fp32(released):
    import torch

    av_dir, ar_dir = released
    full = load_released(av_dir, ar_dir, dtype="float32")
    half = load_released(av_dir, ar_dir, dtype="bfloat16")
    freqs = {n: b for n, b in half.ar.backbone.named_buffers() if n.endswith("inv_freq")}
    assert freqs and all(b.dtype == torch.float32 for b in freqs.values())
    ref = dict(full.ar.backbone.named_buffers())
    assert all(torch.equal(b, ref[n]) for n, b in freqs.items())
    assert half.ar.value_head.weight.dtype == torch.float32
    texts = ["a story about a cat", "French text about the weather in Paris"]
    a, b = full.reconstruct(texts), half.reconstruct(texts)
    assert torch.nn.functional.cosine_similarity(a, b).min() > 0.999  # bf16 backbone rounding only


def test_export_writes_torch_dtype_and_hub_id(make_nla, tmp_path):
    import dataclasses

    from nlakit.meta import NLAMeta
    from nlakit.targets import builtin_gguf

    nla = make_nla("llama", 2)
    smol_like = dataclasses.replace(nla, meta=nla.meta.with_(base_checkpoint="smol.gguf", nlakit={"target": "smollm2"}))
    av_dir, ar_dir = export_released(smol_like, tmp_path)  # bf16 by default
    for d in (av_dir, ar_dir):
        assert json.loads((d / "config.json").read_text())["torch_dtype"] == "bfloat16"
        meta = NLAMeta.load(d)
        assert meta.base_checkpoint == "HuggingFaceTB/SmolLM2-135M-Instruct"
        assert meta.nlakit["target"] == "smollm2" and meta.nlakit["base_gguf"] == builtin_gguf("smollm2").name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


# ---- 11. no third-party noise on the CLI ------------------------------------------------------------------------
def run_cli(*args, timeout=120):
    import os
    import subprocess
    import sys
    from pathlib import Path

    import nlakit

    env = {**os.environ, "PYTHONPATH": str(Path(nlakit.__file__).parents[1]), "NLAKIT_TEST_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "nlakit.cli", *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_a_failing_command_prints_one_line_and_verbose_shows_the_rest(lora_bundle, tiny_llama, tmp_path):
    hf = tmp_path / "hf"  # an HF directory target: loading it draws transformers' "Loading weights" bar
    tiny_llama.model.save_pretrained(hf)
    tiny_llama.tokenizer.save_pretrained(hf)
    args = ["explain", "hello world", "--at", 40, "--nla", lora_bundle, "--target", hf]  # PEFT adapters, then a bad position
    quiet = run_cli(*args)
    assert quiet.returncode == 2 and quiet.stdout == ""
    lines = quiet.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: position 40 is out of range for a text of "), quiet.stderr
    loud = run_cli("--verbose", *args)
    assert loud.returncode == 2 and "Loading weights" in loud.stderr and loud.stderr.rstrip().endswith(lines[0])


def test_peft_loads_without_the_deprecation_warning(lora_bundle, tiny_llama):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        load_nla(lora_bundle, target=tiny_llama)


# ---- more inputs tried (docs/INPUTS.md) -------------------------------------------------------------------------
def test_outputs_that_cannot_be_written(runner, tmp_path, tiny_bundle):
    (tmp_path / "outdir").mkdir()
    r = invoke(runner, ["extract", "hello", "--layer", 1, "--target", "tiny:llama", "--out", tmp_path / "outdir"])
    assert str(r.exception).startswith(f"cannot write {tmp_path / 'outdir'}: it is a directory. Fix: pass a file name")
    (tmp_path / "file").write_text("x")
    r = invoke(runner, ["reconstruct", "a cat", "--nla", tiny_bundle, "--out", tmp_path / "file" / "v.safetensors"])
    assert isinstance(r.exception, NlakitError), r.output
    assert str(r.exception).startswith(f"cannot write {tmp_path / 'file' / 'v.safetensors'} ({tmp_path / 'file'} is a file, not a folder)")
    assert str(r.exception).endswith("Fix: pass an output path in a folder you can write to")


def test_unknown_tiny_model_report_of_an_incomplete_json_and_too_short_training_text(runner, tmp_path):
    r = invoke(runner, ["extract", "hello", "--layer", 1, "--target", "tiny:nope", "--out", tmp_path / "x.safetensors"])
    assert str(r.exception) == "unknown tiny model 'tiny:nope'. Fix: use tiny:llama or tiny:gemma3"
    (tmp_path / "r.json").write_text('{"kind": "eval"}')
    r = invoke(runner, ["report", tmp_path / "r.json", "--out", tmp_path / "r.html"])
    assert str(r.exception).startswith("the results JSON does not hold what the 'eval' report needs (")
    assert not (tmp_path / "r.html").exists()
    (tmp_path / "short.txt").write_text("hi there")
    r = invoke(runner, ["datagen", "--out", tmp_path / "dg", "--target", "tiny:llama", "--layer", 1, "--data", tmp_path / "short.txt",
                        "--eval-data", tmp_path / "short.txt", "--no-describe"])
    assert "is longer than 16 tokens, so no training position was sampled. Fix: pass longer documents" in str(r.exception)
