"""Layer names as users know them: without what compiling or wrapping a model adds (no framework)."""

from __future__ import annotations

__all__ = ["clean_name"]


def clean_name(name: str, unwrap: bool = False) -> str:
    """A module or parameter name without ``torch.compile``'s ``_orig_mod`` parts, and without the
    leading ``module`` of a ``DataParallel``/``DistributedDataParallel`` wrapper when ``unwrap``.

    Example:
        >>> clean_name("module.encoder._orig_mod.layers.0", unwrap=True)
        'encoder.layers.0'
    """
    parts = [part for part in name.split(".") if part and part != "_orig_mod"]
    if unwrap and parts and parts[0] == "module":
        parts = parts[1:]
    return ".".join(parts)
