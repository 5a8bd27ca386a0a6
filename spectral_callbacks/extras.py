"""Optional dependencies, imported on use with an error that says which extra installs them."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["import_extra"]


def import_extra(module: str, extra: str, user: str) -> ModuleType:
    """Import ``module`` for ``user`` (what needs it, e.g. ``"CompareTable.to_pandas()"``).

    Raises:
        ModuleNotFoundError: the module cannot be imported; the message names ``user``, the import
            error and the ``pip install "spectral-callbacks[<extra>]"`` line that installs it.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ModuleNotFoundError(
            f"{user} needs {module}, which could not be imported ({error}): "
            f'pip install "spectral-callbacks[{extra}]"',
            name=module,
        ) from error
