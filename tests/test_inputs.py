"""Every input path fails safe (issue 13): truncated files, file-or-text arguments, hints, parser edges, own corpora.

Each bad input must give one NlakitError line naming the problem and the fix; the texts are asserted.
"""

from __future__ import annotations

import gzip
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
    w = GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    w.add_block_count(2)
    w.add_tensor("token_embd.weight", np.zeros((800, 64), dtype=np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    cases = [("hf/model.safetensors", lambda: load_target(str(tmp_path / "hf")), "re-download or re-save the model directory"),
             ("a.safetensors", lambda: load_shard(tmp_path / "a.safetensors"), "re-run `nlakit extract`"),
             ("r.json", lambda: read_json(tmp_path / "r.json"), "re-run the stage that writes it"),
             ("d.jsonl.gz", lambda: read_jsonl(tmp_path / "d.jsonl.gz"), "re-create or re-download the file"),
             ("m.gguf", lambda: load_target(str(tmp_path / "m.gguf")), "pass a complete .gguf file")]
    for part, load, fix in cases:
        cut_in_half(tmp_path / part)
        with pytest.raises(NlakitError, match="corrupt or incomplete") as e:
            load()
        msg = one_line(e)
        assert str(tmp_path / part) in msg and fix in msg, part
