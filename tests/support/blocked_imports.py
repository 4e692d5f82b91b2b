"""Python code that runs with some packages made unimportable, in a fresh interpreter.

A role's extra (``pip install 'fedrelay[worker]'``) leaves out the other roles' packages; these
helpers check that what a role imports works without them, and that a missing one is reported
as the extra to install. The packages are blocked by a meta-path finder installed before the
code runs, so ``import sqlalchemy`` (or any of its submodules) fails as if it were not
installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path

_REPO = Path(__file__).resolve().parents[2]

_BLOCKER = """
import importlib.abc
import sys

BLOCKED = {blocked!r}


class _Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None


sys.meta_path.insert(0, _Blocked())
"""


def run_without(
    blocked: Iterable[str], code: str, *, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new interpreter where the top-level packages ``blocked`` cannot load.

    Args:
        blocked: Top-level import names (``"sqlalchemy"``, ``"aiokafka"``); their submodules
            are blocked too.
        code: The Python source to run after the blocker is installed.
        timeout: Seconds before the interpreter is killed.

    Returns:
        The finished process, with its output as text.
    """
    source = _BLOCKER.format(blocked=sorted(set(blocked))) + textwrap.dedent(code)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", source],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=_REPO,
        check=False,
    )
