"""`nlakit serve`: an interactive NLA viewer in the browser (FastAPI + uvicorn, a static page, no build step, no CDN).

`create_app` takes already-loaded models, so tests pass tiny ones; `run` serves an app, on loopback by default.
The computations live in `nlakit.serve.viewer` and know nothing of HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from nlakit.serve.app import create_app
from nlakit.serve.viewer import Limits, Model, Viewer, check_quotes, split_lines

LOOPBACK = "127.0.0.1"

__all__ = ["LOOPBACK", "Limits", "Model", "Viewer", "background", "check_quotes", "create_app", "is_loopback", "run", "split_lines"]


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


@contextmanager
def background(app, host: str = LOOPBACK, port: int = 0, *, timeout: float = 20.0) -> Iterator[str]:
    """Serve `app` with uvicorn in a thread (port 0: a free one); yields the base URL, stops the server on exit."""
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="nlakit-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the viewer server did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
