"""The TensorBoard sink as the worker uses it: in a fresh process, without importing torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tensorboard_events import read_events

SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from spectral_callbacks.sinks.tensorboard import TensorBoardSink
    from spectral_callbacks.spectra import analyze_matrix

    sink = TensorBoardSink(sys.argv[1])
    sink.write_layout(["fc"])
    weights = np.random.default_rng(0).standard_normal((64, 32))
    sink.write_snapshot(0, [analyze_matrix(weights, name="fc")])
    sink.close()
    assert "torch" not in sys.modules, "the sink imported torch"
    import torch  # still importable afterwards

    print("ok", torch.__name__)
    """
)


def test_the_sink_writes_events_without_importing_torch(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", "torch"]
    (events,) = tmp_path.glob("events.out.tfevents.*")
    accumulator = read_events(events)
    assert "esd/fc" in accumulator.Tags()["histograms"]
    assert "alpha/fc" in accumulator.Tags()["scalars"]
