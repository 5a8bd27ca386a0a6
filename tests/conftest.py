"""Set-up for the whole suite that must happen before any test module is imported."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# helpers shared by test modules in several directories (``from run_files import ...``)
sys.path.insert(0, str(Path(__file__).parent / "helpers"))

# Keras reads its backend once, at its first import: the in-process Keras tests run on torch (the
# backend CI always has); tests/callbacks/test_keras_backends.py runs jax in a subprocess.
os.environ.setdefault("KERAS_BACKEND", "torch")
