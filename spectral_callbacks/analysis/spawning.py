"""Starting analysis processes with ``spawn`` from any user script."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

__all__ = ["main_module_hidden"]


@contextlib.contextmanager
def main_module_hidden() -> Iterator[None]:
    """Keep ``spawn`` from re-running the user's script (a training script without a main guard).

    A spawned child imports the parent's ``__main__`` from its file; with the file hidden it
    starts from the target function's own module instead.
    """
    main = sys.modules["__main__"]
    saved = {key: main.__dict__[key] for key in ("__file__", "__spec__") if key in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None  # spawn reads main.__spec__.name, so it must exist
    try:
        yield
    finally:
        for key, value in saved.items():
            setattr(main, key, value)
