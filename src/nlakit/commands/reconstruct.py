"""`nlakit reconstruct TEXT`: the AR's predicted activation direction for an explanation text.

Wraps `NLA.reconstruct` (`nlakit.reconstructor.Reconstructor.reconstruct`). `--out` saves the vector as safetensors.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from nlakit.commands._common import (
    ArOpt,
    DeviceOpt,
    DtypeOpt,
    LiteralOpt,
    NlaOpt,
    TargetOpt,
    console,
    open_nla,
    read_one_text,
)


def vector_summary(vector, reference=None, top: int = 8) -> dict:
    """Norm, leading values, largest coordinates and (with a Reference) the cosine to the training mean direction."""
    import torch

    from nlakit.metrics import cosine

    v = vector.float()
    idx = v.abs().argsort(descending=True)[:top].tolist()
    out = {"d_model": int(v.shape[0]), "norm": float(v.norm()), "first": [round(float(x), 4) for x in v[:top]],
           "largest": [{"dim": i, "value": round(float(v[i]), 4)} for i in idx]}
    if reference is not None:
        out["cos_to_reference_mean"] = float(cosine(v[None], reference.mu_nrm[None])[0])
        out["rescaled_norm"] = reference.norm_mean  # the AR gives a direction; fve_raw rescales it to this norm
    assert torch.isfinite(v).all(), "the AR produced a non-finite vector"
    return out


def register(app: typer.Typer) -> None:
    @app.command()
    def reconstruct(
        text: str = typer.Argument(..., help="An explanation text (what the AV would write), or a file holding it."),
        literal: bool = LiteralOpt,
        nla: str = NlaOpt,
        ar: str | None = ArOpt,
        target: str | None = TargetOpt,
        as_json: bool = typer.Option(False, "--json", help="Print JSON (summary and the full vector)."),
        out: Path | None = typer.Option(None, "--out", help="Save the vector as a safetensors file (key 'vector')."),
        device: str = DeviceOpt,
        dtype: str = DtypeOpt,
    ):
        """Reconstruct an activation direction from an explanation with the NLA's AR."""
        from nlakit.errors import NlakitError

        text = read_one_text(text, "nlakit reconstruct", literal=literal)
        if not text.strip():
            raise NlakitError("the explanation text is empty", "pass the explanation to reconstruct from")
        model, _tgt = open_nla(nla, target, device, dtype, ar)
        vector = model.reconstruct([text])[0]  # (d_model,)
        summary = vector_summary(vector, model.reference)
        if out is not None:
            from safetensors.torch import save_file

            from nlakit.io import atomic_path

            with atomic_path(out) as tmp:
                save_file({"vector": vector.contiguous()}, str(tmp), metadata={"text": text, "layer": str(model.layer)})
        if as_json:
            typer.echo(json.dumps({**summary, "layer": model.layer, "vector": vector.tolist()}))
            return
        console.print(f"AR output at layer {model.layer}: d_model {summary['d_model']}, norm {summary['norm']:.3f} "
                      "(a direction: its norm means nothing)")
        if "cos_to_reference_mean" in summary:
            console.print(f"cosine to the training mean direction: {summary['cos_to_reference_mean']:.3f}")
        console.print("largest coordinates: " + ", ".join(f"{d['dim']}: {d['value']:+.3f}" for d in summary["largest"]))
        if out is not None:
            console.print(f"saved to {out}")
