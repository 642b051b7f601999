"""PEFT calls that transformers 5 warns about.

PEFT (up to at least 0.18) reads `model.is_gradient_checkpointing`, which transformers 5 deprecates with a
FutureWarning on every adapter load. nlakit never reads it itself; these wrappers silence that one warning where
nlakit calls PEFT, so loading a bundle stays quiet for library users as well as on the CLI.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_peft() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def get_peft_model(module, config):
    from peft import get_peft_model as _get

    with quiet_peft():
        return _get(module, config)


def load_adapter(module, directory: str):
    """`PeftModel.from_pretrained(module, directory)` with the adapters merged in."""
    from peft import PeftModel

    with quiet_peft():
        return PeftModel.from_pretrained(module, directory).merge_and_unload()
