"""`nlakit serve`: an interactive NLA viewer in the browser (FastAPI + uvicorn, a static page, no build step, no CDN).

`create_app` takes already-loaded models, so tests pass tiny ones; `run` serves an app, on loopback by default.
The computations live in `nlakit.serve.viewer` and know nothing of HTTP.
"""

from __future__ import annotations

from nlakit.serve.app import create_app
from nlakit.serve.viewer import Limits, Model, Viewer, check_quotes, split_lines

LOOPBACK = "127.0.0.1"

__all__ = ["LOOPBACK", "Limits", "Model", "Viewer", "check_quotes", "create_app", "is_loopback", "run", "split_lines"]


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(app, host: str = LOOPBACK, port: int = 8000, *, log_level: str = "warning") -> None:
    """Serve `app` with uvicorn (blocking)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level)
