"""A conv layer as the linear map it applies to a whole feature map (anonymous, 2019), and its exact spectrum.

A 2-D convolution with zero bias on a ``C_in x H x W`` input is a linear map
``A: R^(C_in*H*W) -> R^(C_out*H'*W')``, vectors being feature maps flattened in C order (torch's
layout). ``A`` is never formed: ``A x`` is the layer's forward pass (a cross-correlation, as
``torch.nn.functional.conv2d``) and ``A^T y`` its transpose (``conv_transpose2d``). Both are done in
numpy as one GEMM per chunk of output positions on the stacked, shifted input views (im2col in
cache-sized chunks), for a block of probe vectors at once (one larger GEMM instead of one per
vector); they need no framework (docs/performance.md compares them with torch's float64
convolutions).

With circular padding and stride 1 the map is block circulant: its singular values are those of the
``C_out x C_in`` matrices of the kernel's 2-D DFT, one per frequency (H. Sedghi, V. Gupta and
P. M. Long, "The singular values of convolutional layers", ICLR 2019, Theorem 6), which
:func:`exact_circular_conv_svals` computes as the reference for tests and small layers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.sparse.linalg import LinearOperator

from ._conv import Phase, correlate, outside, pad_index, paddings, pair, stride_phases

__all__ = ["PADDING_MODES", "ConvOperator", "OperatorSpec", "exact_circular_conv_svals"]

PADDING_MODES = ("zeros", "circular", "reflect", "replicate")


class ConvOperator(LinearOperator):
    """A 2-D conv layer (zero bias) on a fixed input size, as a scipy ``LinearOperator``.

    ``matvec``/``matmat`` apply the forward convolution to flattened ``(C_in, H, W)`` feature maps
    (one per column), ``rmatvec``/``rmatmat`` the transpose convolution; :meth:`gram` gives
    ``A^T A`` (or ``A A^T``) whose eigenvalues are the squared singular values of ``A``.

    Args:
        weight: the kernel in torch layout ``(C_out, C_in / groups, kh, kw)``.
        input_hw: the input's ``(H, W)``.
        stride, dilation: an int or an ``(h, w)`` pair, as in ``torch.nn.Conv2d``.
        padding: an int, an ``(h, w)`` pair, ``"valid"`` or ``"same"`` (stride 1; an odd total
            puts the extra row/column at the end, as torch does).
        padding_mode: one of :data:`PADDING_MODES`, as in ``torch.nn.Conv2d``.
        groups: grouped convolution, as in ``torch.nn.Conv2d``.
        dtype: float64 (default) or float32 arithmetic.

    Raises:
        TypeError: the weight is not a 4-D real array (e.g. a Conv1d/Conv3d kernel).
        ValueError: an invalid option, or an input too small for the layer.
    """

    def __init__(
        self,
        weight: np.ndarray,
        *,
        input_hw: tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        padding_mode: str = "zeros",
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        dtype: npt.DTypeLike = np.float64,
    ) -> None:
        weight = np.asarray(weight)
        if weight.ndim != 4 or not np.issubdtype(weight.dtype, np.floating):
            raise TypeError(
                "ConvOperator needs a 2-D conv kernel: a real array (C_out, C_in/groups, kh, kw); "
                f"received shape {weight.shape} and dtype {weight.dtype}."
            )
        if not np.all(np.isfinite(weight)):
            raise ValueError("The conv weight contains NaN or Inf values.")
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise ValueError(f"Invalid dtype={np.dtype(dtype)}; expected float32 or float64.")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"Invalid padding_mode={padding_mode!r}; expected one of {PADDING_MODES}.")
        height, width = pair("input_hw", input_hw)
        self.stride = pair("stride", stride)
        self.dilation = pair("dilation", dilation)
        c_out, c_in_group, kh, kw = weight.shape
        if not isinstance(groups, int | np.integer) or groups < 1 or c_out % groups:
            raise ValueError(f"Invalid groups={groups}: must be >= 1 and divide C_out={c_out}.")
        self.groups = int(groups)
        self.padding_mode = padding_mode
        self.weight = weight.astype(dtype)
        self.pads = paddings(padding, (kh, kw), self.dilation, self.stride)
        span_h, span_w = (self.dilation[0] * (kh - 1), self.dilation[1] * (kw - 1))
        padded = (height + self.pads[0] + self.pads[1], width + self.pads[2] + self.pads[3])
        if padded[0] <= span_h or padded[1] <= span_w:
            raise ValueError(
                f"input_hw={(height, width)} is too small for this layer: padded it is {padded}, "
                f"smaller than the dilated kernel {(span_h + 1, span_w + 1)}."
            )
        self._index = (
            pad_index(height, *self.pads[:2], padding_mode, "H"),
            pad_index(width, *self.pads[2:], padding_mode, "W"),
        )
        out_h = (padded[0] - span_h - 1) // self.stride[0] + 1
        out_w = (padded[1] - span_w - 1) // self.stride[1] + 1
        self.in_shape = (c_in_group * self.groups, height, width)
        self.out_shape = (c_out, out_h, out_w)
        self._padded = padded
        # Polyphase split for strides (see _conv.Phase); with stride 1 the one phase is the padded input.
        self._phase_hw = (out_h + span_h // self.stride[0], out_w + span_w // self.stride[1])
        self._phases = stride_phases(self.weight, self.dilation, self.stride, self.groups, self._phase_hw[1])
        super().__init__(np.dtype(dtype), (int(np.prod(self.out_shape)), int(np.prod(self.in_shape))))

    @classmethod
    def from_torch(
        cls, module: Any, input_hw: tuple[int, int], *, dtype: npt.DTypeLike = np.float64
    ) -> ConvOperator:
        """The operator of a ``torch.nn.Conv2d`` on ``input_hw`` (duck-typed: torch is not imported).

        Raises:
            TypeError: a transposed convolution, a Conv1d/Conv3d, an unmaterialized lazy layer or
                no convolution at all.
        """
        name = type(module).__name__
        if getattr(module, "transposed", False):
            raise TypeError(
                f"{name} is a transposed convolution, which ConvOperator does not support; only forward "
                "2-D convolutions (torch.nn.Conv2d) are."
            )
        weight = getattr(module, "weight", None)
        if weight is None or not all(hasattr(module, a) for a in ("stride", "padding", "dilation", "groups")):
            raise TypeError(f"{name} is not a torch convolution; expected a torch.nn.Conv2d.")
        if type(weight).__name__ == "UninitializedParameter":
            raise TypeError(f"{name} has an unmaterialized lazy weight; run a forward pass first.")
        if weight.ndim != 4:
            raise TypeError(
                f"{name} has a {weight.ndim}-D kernel {tuple(weight.shape)}; only 2-D convolutions "
                "(torch.nn.Conv2d) are supported."
            )
        return cls(
            weight.detach().cpu().double().numpy(),
            input_hw=input_hw,
            stride=tuple(module.stride),
            padding=module.padding if isinstance(module.padding, str) else tuple(module.padding),
            padding_mode=getattr(module, "padding_mode", "zeros"),
            dilation=tuple(module.dilation),
            groups=module.groups,
            dtype=dtype,
        )

    # --- scipy LinearOperator interface --------------------------------------------------------

    def matvec(self, x: Any) -> np.ndarray:
        return super().matvec(self._checked(x, self.in_shape, "matvec"))

    def rmatvec(self, x: Any) -> np.ndarray:
        return super().rmatvec(self._checked(x, self.out_shape, "rmatvec"))

    def matmat(self, X: Any) -> np.ndarray:  # noqa: N803 - scipy's argument name
        return super().matmat(self._checked(X, self.in_shape, "matmat"))

    def rmatmat(self, X: Any) -> np.ndarray:  # noqa: N803 - scipy's argument name
        return super().rmatmat(self._checked(X, self.out_shape, "rmatmat"))

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        return self._matmat(x.reshape(-1, 1)).reshape(-1)

    def _rmatvec(self, x: np.ndarray) -> np.ndarray:
        return self._rmatmat(x.reshape(-1, 1)).reshape(-1)

    def _matmat(self, X: np.ndarray) -> np.ndarray:  # noqa: N803 - scipy's argument name
        """Forward convolution of each column (a flattened input feature map)."""
        batch = X.shape[1]
        c_in, c_out = self.in_shape[0], self.out_shape[0]
        (out_h, out_w), (rows, cols) = self.out_shape[1:], self._phase_hw
        x = np.asarray(X, dtype=self.dtype).reshape(*self.in_shape, batch)
        # Position p of the output grid (out_h x cols, the columns past out_w unused) reads phase
        # position p + offset of each tap: one contiguous column window per tap.
        out = np.empty((c_out, out_h * cols * batch), dtype=self.dtype)
        padded = self._pad(x, extra_row=self.stride == (1, 1))
        for index, phase in enumerate(self._phases):
            if self.stride == (1, 1):
                source = padded
            else:  # one more row: the last tap's window runs past the grid's end
                source = np.zeros((c_in, rows + 1, cols, batch), dtype=self.dtype)
                grid = padded[:, phase.row :: self.stride[0], phase.col :: self.stride[1]][:, :rows, :cols]
                source[:, : grid.shape[1], : grid.shape[2]] = grid
            offsets = [offset * batch for offset in phase.offsets]
            correlate(source.reshape(c_in, -1), phase.forward, offsets, out, accumulate=index > 0)
        out = out.reshape(c_out, out_h, cols, batch)[:, :, :out_w]
        return out.reshape(self.shape[0], batch)

    def _rmatmat(self, X: np.ndarray) -> np.ndarray:  # noqa: N803 - scipy's argument name
        """Transpose convolution of each column (a flattened output feature map)."""
        batch = X.shape[1]
        c_in, c_out = self.in_shape[0], self.out_shape[0]
        (out_h, out_w), (rows, cols) = self.out_shape[1:], self._phase_hw
        # Gather form of the adjoint: phase position q collects W_t^T y[q - offset_t]. The output
        # grid is placed after `lead` zero positions, so every window is contiguous and in range.
        lead = max(max(phase.offsets) for phase in self._phases)
        y = np.zeros((c_out, lead + rows * cols, batch), dtype=self.dtype)
        grid = y[:, lead : lead + out_h * cols].reshape(c_out, out_h, cols, batch)
        grid[:, :, :out_w] = np.asarray(X, dtype=self.dtype).reshape(*self.out_shape, batch)
        y = y.reshape(c_out, -1)

        def phase_gradient(phase: Phase) -> np.ndarray:
            result = np.empty((c_in, rows * cols * batch), dtype=self.dtype)
            offsets = [(lead - offset) * batch for offset in phase.offsets]
            correlate(y, phase.transpose, offsets, result, accumulate=False)
            return result.reshape(c_in, rows, cols, batch)

        if self.stride == (1, 1):  # the one phase is the padded input
            grad = phase_gradient(self._phases[0])
        else:  # the phases interleave; positions no tap reads keep a zero gradient
            grad = np.zeros((c_in, *self._padded, batch), dtype=self.dtype)
            for phase in self._phases:
                target = grad[:, phase.row :: self.stride[0], phase.col :: self.stride[1]][:, :rows, :cols]
                target[...] = phase_gradient(phase)[:, : target.shape[1], : target.shape[2]]
        return self._unpad(grad).reshape(self.shape[1], batch)

    # --- spectra -------------------------------------------------------------------------------

    def gram(self, side: str = "auto") -> LinearOperator:
        """The symmetric operator ``A^T A`` (``side="in"``) or ``A A^T`` (``side="out"``).

        Both have the squared singular values of ``A`` as nonzero eigenvalues; the larger one adds
        ``|n_in - n_out|`` zeros. ``"auto"`` takes the smaller (``"in"`` on a tie), so that its
        spectrum is exactly the squared singular values, as the ESD of ``W^T W`` is for a matrix.
        """
        if side not in ("auto", "in", "out"):
            raise ValueError(f"Invalid side={side!r}; expected 'auto', 'in' or 'out'.")
        if side == "auto":
            side = "in" if self.shape[1] <= self.shape[0] else "out"
        first, second = (self._matmat, self._rmatmat) if side == "in" else (self._rmatmat, self._matmat)
        size = self.shape[1] if side == "in" else self.shape[0]

        def apply(X: np.ndarray) -> np.ndarray:  # noqa: N803 - scipy's argument name
            return second(first(np.asarray(X).reshape(size, -1)))

        def apply_vector(x: np.ndarray) -> np.ndarray:
            return apply(x).reshape(np.shape(x))

        return LinearOperator(
            (size, size),
            matvec=apply_vector,
            rmatvec=apply_vector,
            matmat=apply,
            rmatmat=apply,
            dtype=self.dtype,
        )

    def norm_bound(self) -> float:
        """A guaranteed upper bound on the spectral norm ``||A||_2`` (largest singular value).

        ``A`` = (stride subsampling) o (valid correlation on the padded input) o (padding). The
        valid correlation restricts the circular one on the padded ``Hp x Wp`` torus, whose norm
        is exact by the FFT; restrictions have norm <= 1 and padding has norm ``sqrt(m)``, ``m``
        the largest number of padded positions copying one input position (1 for zero padding).
        With circular padding, ``A`` restricts (or repeats rows of) the circular conv on the input's
        own torus instead: the bound is exact for a stride-1 "same" circular conv.
        """
        if self.padding_mode == "circular":  # a restriction of the circular conv on the input's torus
            torus = self.in_shape[1:]
            copies = [
                np.bincount((step * np.arange(size)) % length).max()
                for step, size, length in zip(self.stride, self.out_shape[1:], torus, strict=True)
            ]
        else:
            torus = self._padded
            copies = [np.bincount(index[index >= 0]).max() for index in self._index]
        svals = exact_circular_conv_svals(self.weight, torus, dilation=self.dilation, groups=self.groups)
        return float(np.sqrt(copies[0] * copies[1]) * svals[0])

    # --- helpers -------------------------------------------------------------------------------

    def _checked(self, x: Any, shape: tuple[int, int, int], method: str) -> np.ndarray:
        x = np.asarray(x)
        size = int(np.prod(shape))
        if x.ndim not in (1, 2) or x.shape[0] != size:
            raise ValueError(
                f"{method} expects feature maps of shape (C, H, W) = {shape} flattened to {size} rows "
                f"(a vector or one column each); received shape {x.shape}."
            )
        if np.iscomplexobj(x):
            raise TypeError(f"{method} expects real vectors; received dtype {x.dtype}.")
        return x

    def _pad(self, x: np.ndarray, *, extra_row: bool) -> np.ndarray:
        """``(C, H, W, B) -> (C, Hp [+1], Wp, B)``; the extra zero row absorbs the last tap's overrun."""
        top, _, left, _ = self.pads
        (height, width), (rows, cols) = self.in_shape[1:], self._index
        padded = np.zeros((x.shape[0], rows.size + extra_row, cols.size, x.shape[3]), dtype=self.dtype)
        padded[:, top : top + height, left : left + width] = x
        if self.padding_mode != "zeros":
            for r in outside(rows.size, top, height):
                padded[:, r, left : left + width] = x[:, rows[r]]
            for c in outside(cols.size, left, width):
                padded[:, : rows.size, c] = padded[:, : rows.size, left + cols[c]]
        return padded

    def _unpad(self, grad: np.ndarray) -> np.ndarray:
        """Adjoint of :meth:`_pad` (in place): sum each padded position onto the input it copies."""
        top, _, left, _ = self.pads
        (height, width), (rows, cols) = self.in_shape[1:], self._index
        if self.padding_mode != "zeros":
            for c in outside(cols.size, left, width):
                grad[:, :, left + cols[c]] += grad[:, :, c]
            for r in outside(rows.size, top, height):
                grad[:, top + rows[r], left : left + width] += grad[:, r, left : left + width]
        return grad[:, top : top + height, left : left + width]


def exact_circular_conv_svals(
    weight: np.ndarray,
    input_hw: tuple[int, int],
    *,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
) -> np.ndarray:
    """Exact singular values of a stride-1 circular convolution on an ``H x W`` torus, descending.

    The map is block circulant, so the 2-D DFT block-diagonalizes it: its singular values are the
    union over frequencies ``(u, v)`` of those of ``K_hat(u, v) = sum_ij w[:, :, i, j]
    exp(-2 pi i (u i / H + v j / W))`` (Sedghi, Gupta and Long 2019, Theorem 6). Taps beyond the
    torus wrap around. Real kernels give ``K_hat(-u, -v) = conj(K_hat(u, v))`` with the same
    singular values, so only the ``rfft2`` half is decomposed. Cross-correlation (torch) instead
    of convolution conjugates ``K_hat``, which leaves the singular values unchanged.

    Args:
        weight: kernel ``(C_out, C_in / groups, kh, kw)``.
        input_hw: the torus ``(H, W)``; padding must make the output ``H x W`` (e.g. 1 for 3x3).
        dilation, groups: as in ``torch.nn.Conv2d``.

    Returns:
        ``H * W * min(C_out, C_in)`` singular values, float64, descending.
    """
    weight = np.asarray(weight, dtype=np.float64)
    if weight.ndim != 4:
        raise TypeError(f"Expected a kernel (C_out, C_in/groups, kh, kw); received shape {weight.shape}.")
    height, width = pair("input_hw", input_hw)
    dil_h, dil_w = pair("dilation", dilation)
    c_out, c_in_group, kh, kw = weight.shape
    if groups < 1 or c_out % groups:
        raise ValueError(f"Invalid groups={groups}: must be >= 1 and divide C_out={c_out}.")
    taps = np.zeros((c_out, c_in_group, height, width))
    for i in range(kh):
        for j in range(kw):
            taps[:, :, (dil_h * i) % height, (dil_w * j) % width] += weight[:, :, i, j]
    spectrum = np.fft.rfft2(taps, axes=(2, 3))  # (C_out, C_in/g, H, W//2 + 1)
    blocks = spectrum.reshape(groups, c_out // groups, c_in_group, height, -1).transpose(3, 4, 0, 1, 2)
    svals = np.linalg.svd(blocks, compute_uv=False)  # (H, W//2 + 1, groups, min)
    copies = np.full(svals.shape[1], 2)
    copies[0] = 1
    if width % 2 == 0:
        copies[-1] = 1
    svals = np.repeat(svals, copies, axis=1)
    return np.sort(svals.ravel())[::-1]


@dataclass(frozen=True)
class OperatorSpec:
    """A 2-D conv layer as an operator on a fixed input size: everything but the kernel.

    Attributes:
        name: the layer's name, also the name of its kernel in a snapshot (torch layout).
        input_hw: the ``(H, W)`` of the feature maps the layer receives.
        stride, padding, padding_mode, dilation, groups: as ``torch.nn.Conv2d``'s (padding an
            ``(h, w)`` pair, ``"same"`` or ``"valid"``).
        in_shape, out_shape: ``(C, H, W)`` of the operator's input and output feature maps.
    """

    name: str
    input_hw: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] | str
    padding_mode: str
    dilation: tuple[int, int]
    groups: int
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]

    @classmethod
    def of(cls, name: str, operator: ConvOperator, padding: tuple[int, int] | str) -> OperatorSpec:
        """The spec of a built operator (``padding`` as the layer gave it)."""
        return cls(
            name=name,
            input_hw=(int(operator.in_shape[1]), int(operator.in_shape[2])),
            stride=operator.stride,
            padding=padding if isinstance(padding, str) else (int(padding[0]), int(padding[1])),
            padding_mode=operator.padding_mode,
            dilation=operator.dilation,
            groups=operator.groups,
            in_shape=tuple(int(v) for v in operator.in_shape),
            out_shape=tuple(int(v) for v in operator.out_shape),
        )

    @property
    def dimension(self) -> int:
        """Size of the Gram operator analyzed: the smaller of ``C_in*H*W`` and ``C_out*H'*W'``."""
        return min(math.prod(self.in_shape), math.prod(self.out_shape))

    def build(self, weight: np.ndarray) -> ConvOperator:
        """The operator of a kernel ``(C_out, C_in / groups, kh, kw)``, or of a grouped one captured
        as ``(groups, C_out / groups, C_in / groups, kh, kw)`` (float64 arithmetic)."""
        kernel = np.asarray(weight, dtype=np.float64)
        if kernel.ndim == 5:
            kernel = kernel.reshape(-1, *kernel.shape[2:])
        return ConvOperator(
            kernel,
            input_hw=self.input_hw,
            stride=self.stride,
            padding=self.padding,
            padding_mode=self.padding_mode,
            dilation=self.dilation,
            groups=self.groups,
        )

    def attributes(self) -> dict[str, Any]:
        """The spec as HDF5-storable attributes (tuples as int arrays), with ``dimension``."""
        return {**asdict(self), "dimension": self.dimension}
