"""Helpers shared by the experiments: an experiment may import this module, never another experiment.

An experiment is a library function: it takes a config and an optional `Progress` callback and returns its
results dict (JSON-ready). It prints nothing and never imports `nlakit.commands`; the command module
(`nlakit.commands.experiment.<name>`, `nlakit.commands.cost`) builds the Rich progress bar, passes its
callback in, and renders the results (tables, ``<name>.json``, ``<name>.html`` through `nlakit.report`).
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, int, int | None], None]
"""``progress(stage, done, total)``: one call per step of a named stage (``total`` None when unknown)."""
