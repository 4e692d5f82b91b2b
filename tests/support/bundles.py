"""Model bundles for tests: a small digits model whose import leaves a marker file behind.

The marker tells a test whether any of the bundle's code ran: a refused bundle must leave none.
Each bundle gets its own module name (from ``tag``) so a test can also look for it in
``sys.modules``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

MODEL = """\
from pathlib import Path

from torch import nn

from .layers import hidden_block

Path({marker!r}).write_text("imported")


def build(hidden: int = 16, classes: int = 10) -> nn.Module:
    return nn.Sequential(hidden_block(64, hidden), nn.Linear(hidden, classes))
"""

LAYERS = """\
from torch import nn


def hidden_block(inputs: int, outputs: int) -> nn.Module:
    return nn.Sequential(nn.Linear(inputs, outputs), nn.ReLU())
"""


def write_bundle(folder: Path, marker: Path, tag: str) -> Path:
    """A bundle in ``folder`` (module ``model_<tag>``) that writes ``marker`` when imported."""
    module = f"model_{tag}"
    (folder / "layers").mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"format": 1, "factory": f"{module}:build"}))
    (folder / f"{module}.py").write_text(MODEL.format(marker=str(marker)))
    (folder / "layers" / "__init__.py").write_text(LAYERS)
    return folder


def modules_named(tag: str) -> list[str]:
    """Every loaded module whose name mentions the test bundle ``tag``."""
    return [name for name in sys.modules if f"model_{tag}" in name]
