"""`nlakit info [--target T] [--nla DIR]`: facts about the install, a target model, or an NLA (its sidecar only)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from nlakit.commands._common import DeviceOpt, DtypeOpt, console, open_target


def install_facts() -> dict:
    import importlib.util

    import torch

    from nlakit import __version__
    from nlakit.bundle import DEFAULT_BUNDLE
    from nlakit.meta import META_FILE
    from nlakit.targets import BUILTIN_TARGETS, cache_dir

    return {
        "nlakit": __version__,
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
        "cache_dir": str(cache_dir()),
        "default_nla": (DEFAULT_BUNDLE / META_FILE).exists(),
        "builtin_targets": {name: {"package": pkg, "installed": importlib.util.find_spec(module) is not None}
                            for name, (pkg, module, *_rest) in BUILTIN_TARGETS.items()},
    }


def target_facts(target) -> dict:
    tok = target.tokenizer
    return {
        "name": target.name, "spec": target.spec, "d_model": target.d_model, "n_layers": target.n_layers,
        "layers": f"0..{target.n_layers - 1} (layer K = output of block K = HF hidden_states[K+1])",
        "context_window": target.max_length, "vocab_size": len(tok), "model_type": target.config.model_type,
        "dtype": str(next(target.model.parameters()).dtype).removeprefix("torch."), "device": target.device,
        "parameters": sum(p.numel() for p in target.model.parameters()),
        "bos_token": tok.bos_token, "eos_token": tok.eos_token, "chat_template": bool(getattr(tok, "chat_template", None)),
    }


def nla_facts(path: Path) -> dict:
    from nlakit.meta import NLAMeta

    meta = NLAMeta.load(path)
    files = {str(p.relative_to(path)): p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file()}
    return {
        "path": str(path), "role": meta.role, "stage": meta.stage, "format": meta.nlakit.get("format", "released"),
        "target": meta.nlakit.get("target") or meta.base_checkpoint, "d_model": meta.d_model, "layer": meta.layer,
        "injection_scale": meta.injection_scale, "mse_scale": meta.mse_scale, "injection_char": meta.injection_char,
        "injection_token_id": meta.injection_token_id, "av_template": meta.av_template, "ar_template": meta.ar_template,
        "files": files,
    }


def _show(title: str, facts: dict) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for k, v in facts.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}: {b}" for a, b in v.items())
        table.add_row(k, str(v))
    console.print(table)


def register(app: typer.Typer) -> None:
    @app.command()
    def info(
        target: str | None = typer.Option(None, "--target", help="Load this target and show its facts (smollm2, tiny:llama, a path …)."),
        nla: str | None = typer.Option(None, "--nla", help="Show an NLA's sidecar facts ('default' for the bundled one)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
        device: str = DeviceOpt,
        dtype: str = DtypeOpt,
    ):
        """Facts about this install, a target model (--target) or an NLA (--nla)."""
        from nlakit.commands._common import nla_dir

        out: dict = {"install": install_facts()}
        if target:
            out["target"] = target_facts(open_target(target, device, dtype))
        if nla:
            out["nla"] = nla_facts(nla_dir(nla))
        if as_json:
            typer.echo(json.dumps(out, indent=2, default=str))
            return
        for key, facts in out.items():
            _show(key, facts)
