"""`nlakit serve`: the interactive NLA viewer at http://127.0.0.1:8000 (loopback unless --host says otherwise).

Wraps `nlakit.serve.create_app` over the loaded NLA(s). `--compare-nla DIR` adds a second NLA, `--compare-target
SPEC` a second target (the same NLA over a variant, or the second NLA's target); the page then shows both side by
side. The JSON API is documented at /docs.
"""

from __future__ import annotations

import typer

from nlakit.commands._common import DeviceOpt, DtypeOpt, NlaOpt, TargetOpt, err_console, open_nla


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        nla: str = NlaOpt,
        target: str | None = TargetOpt,
        compare_nla: str | None = typer.Option(None, "--compare-nla", help="A second NLA to show side by side."),
        compare_target: str | None = typer.Option(None, "--compare-target",
                                                  help="A second target (e.g. a fine-tuned variant) for the comparison."),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
        port: int = typer.Option(8000, "--port", min=0, max=65535),
        max_new_tokens: int = typer.Option(150, "--max-new-tokens", min=1),
        max_chars: int = typer.Option(4000, "--max-chars", min=1, help="Longest text accepted (HTTP 413 above)."),
        max_positions: int = typer.Option(256, "--max-positions", min=1, help="Most tokens in one heatmap or export."),
        queue: int = typer.Option(8, "--queue", min=0, help="Requests that may wait per model before HTTP 503."),
        device: str = DeviceOpt,
        dtype: str = DtypeOpt,
    ):
        """Serve the interactive viewer: type a text, click any token, read and check its explanation."""
        from nlakit.serve import Limits, Model, create_app, is_loopback, run

        nla_a, tgt_a = open_nla(nla, target, device, dtype)
        models = {"a": Model(nla_a, tgt_a, label=f"{_short(nla)} on {tgt_a.name}")}
        if compare_nla or compare_target:
            nla_b, tgt_b = open_nla(compare_nla or nla, compare_target, device, dtype)
            models["b"] = Model(nla_b, tgt_b, label=f"{_short(compare_nla or nla)} on {tgt_b.name}")
        limits = Limits(max_chars=max_chars, max_positions=max_positions, queue=queue, max_new_tokens=max_new_tokens)
        if not is_loopback(host):
            err_console.print(f"[yellow]note:[/] binding {host}: anyone who can reach this address can use the viewer")
        err_console.print(f"nlakit viewer on http://{host}:{port}  (API docs at /docs; Ctrl-C stops)")
        run(create_app(models, limits), host=host, port=port)


def _short(nla: str) -> str:
    return "default NLA" if nla == "default" else nla.rstrip("/").rsplit("/", 1)[-1]
