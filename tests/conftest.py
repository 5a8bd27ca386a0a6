"""Set-up for the whole suite that must happen before any test module is imported."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# helpers shared by test modules in several directories (``from run_files import ...``); their
# asserts are rewritten as the tests' own are, so that a failing check shows its values
_HELPERS = Path(__file__).parent / "helpers"
sys.path.insert(0, str(_HELPERS))
pytest.register_assert_rewrite(*sorted(path.stem for path in _HELPERS.glob("*.py")))

# Keras reads its backend once, at its first import: the in-process Keras tests run on torch (the
# backend CI always has); tests/callbacks/test_keras_backends.py runs jax in a subprocess.
os.environ.setdefault("KERAS_BACKEND", "torch")
