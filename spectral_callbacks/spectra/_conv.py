"""The numerics under :class:`~spectral_callbacks.spectra.operators.ConvOperator`: torch's padding
options, padding index maps, the stride's polyphase split and chunked im2col GEMMs."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

_CHUNK_BYTES = 1 << 22  # the im2col block of one GEMM: 4 MiB stays in L2/L3 cache


def pair(name: str, value: Any) -> tuple[int, int]:
    """An ``(h, w)`` pair of positive ints from an int or a pair (torch's convention)."""
    values = (value, value) if isinstance(value, int | np.integer) else tuple(value)
    if len(values) != 2 or not all(isinstance(v, int | np.integer) and v >= 1 for v in values):
        raise ValueError(f"Invalid {name}={value!r}; expected a positive int or a pair of them.")
    return int(values[0]), int(values[1])


def paddings(
    padding: Any, kernel: tuple[int, int], dilation: tuple[int, int], stride: tuple[int, int]
) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` from torch's ``padding`` argument."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding != "same":
            raise ValueError(f"Invalid padding={padding!r}; expected an int, a pair, 'valid' or 'same'.")
        if stride != (1, 1):
            raise ValueError(f"padding='same' needs stride 1 (as in torch); received stride={stride}.")
        totals = [d * (k - 1) for d, k in zip(dilation, kernel, strict=True)]
        return (totals[0] // 2, totals[0] - totals[0] // 2, totals[1] // 2, totals[1] - totals[1] // 2)
    sizes = (padding, padding) if isinstance(padding, int | np.integer) else tuple(padding)
    if len(sizes) != 2 or not all(isinstance(p, int | np.integer) and p >= 0 for p in sizes):
        raise ValueError(f"Invalid padding={padding!r}; expected an int >= 0, a pair, 'valid' or 'same'.")
    return (int(sizes[0]), int(sizes[0]), int(sizes[1]), int(sizes[1]))


def pad_index(size: int, before: int, after: int, mode: str, axis: str) -> np.ndarray:
    """For each padded position along one axis, the input position it copies (-1: a zero)."""
    limit = {"circular": size, "reflect": size - 1}.get(mode)
    if limit is not None and max(before, after) > limit:
        raise ValueError(
            f"padding_mode={mode!r} needs padding <= {limit} along {axis} (input size {size}, as in "
            f"torch); received {max(before, after)}."
        )
    t = np.arange(-before, size + after)
    if mode == "zeros":
        return np.where((t >= 0) & (t < size), t, -1)
    if mode == "circular":
        return t % size
    if mode == "reflect":
        return np.abs(np.where(t >= size, 2 * (size - 1) - t, t))
    return np.clip(t, 0, size - 1)


class Phase(NamedTuple):
    """The taps of one stride phase: tap ``(i, j)`` with ``d * (i, j) = s * (q_h, q_w) + (row, col)``
    reads the phase grid ``padded[row::s_h, col::s_w]`` at offset ``q_h * cols + q_w``."""

    row: int
    col: int
    offsets: list[int]
    forward: np.ndarray  # (groups, C_out/g, taps * C_in/g), taps outermost
    transpose: np.ndarray  # (groups, C_in/g, taps * C_out/g)


def stride_phases(
    weight: np.ndarray, dilation: tuple[int, int], stride: tuple[int, int], groups: int, phase_width: int
) -> list[Phase]:
    """The taps grouped by stride phase (one phase for stride 1), with their GEMM operands."""
    c_out, c_in_group, kh, kw = weight.shape
    taps: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
    for i in range(kh):
        for j in range(kw):
            (q_h, row), (q_w, col) = divmod(dilation[0] * i, stride[0]), divmod(dilation[1] * j, stride[1])
            taps.setdefault((row, col), []).append((i, j, q_h * phase_width + q_w))
    phases = []
    for (row, col), members in sorted(taps.items()):
        stacked = np.stack([weight[:, :, i, j] for i, j, _ in members], axis=1)  # (C_out, T, C_in/g)
        stacked = stacked.reshape(groups, c_out // groups, len(members), c_in_group)
        forward = np.ascontiguousarray(stacked.reshape(groups, c_out // groups, -1))
        transpose = np.ascontiguousarray(stacked.transpose(0, 3, 2, 1).reshape(groups, c_in_group, -1))
        phases.append(Phase(row, col, [offset for _, _, offset in members], forward, transpose))
    return phases


def outside(padded: int, before: int, size: int) -> np.ndarray:
    """The padded positions along an axis that are padding, not the input itself."""
    positions = np.arange(padded)
    return np.flatnonzero((positions < before) | (positions >= before + size))


def correlate(
    flat: np.ndarray, wmats: np.ndarray, offsets: list[int], out: np.ndarray, *, accumulate: bool
) -> None:
    """``out[:, p] (+)= sum_t W_t @ flat[:, p + offsets[t]]`` per group: im2col GEMMs in chunks."""
    groups, group_out, depth = wmats.shape
    group_in = depth // len(offsets)
    columns = out.shape[1]
    step = max(1, min(columns, _CHUNK_BYTES // (depth * out.itemsize)))
    stacked = np.empty((depth, step), dtype=out.dtype)
    for start in range(0, columns, step):
        stop = min(start + step, columns)
        block = stacked[:, : stop - start]
        for g in range(groups):
            source = flat[g * group_in : (g + 1) * group_in]
            for t, offset in enumerate(offsets):
                block[t * group_in : (t + 1) * group_in] = source[:, offset + start : offset + stop]
            target = out[g * group_out : (g + 1) * group_out, start:stop]
            if accumulate:
                target += wmats[g] @ block
            else:
                np.matmul(wmats[g], block, out=target)
