"""A role's command without the role's extra says which extra to install, in one line."""

from __future__ import annotations

from support.blocked_imports import run_without


def _fedrelay(*args: str) -> str:
    argv = ["fedrelay", *args]
    return f"import sys\nsys.argv = {argv!r}\nfrom fedrelay.cli import app\napp()\n"


def test_the_relayer_without_its_extra_names_the_extra() -> None:
    done = run_without(("aiokafka",), _fedrelay("relayer", "run", "--stage", "watch"))
    assert done.returncode == 2, done.stderr
    assert "the relayer needs `pip install 'fedrelay[relayer]'`" in done.stderr
    assert "aiokafka" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_the_other_commands_work_without_the_relayers_extra() -> None:
    done = run_without(("aiokafka",), _fedrelay("--help"))
    assert done.returncode == 0, done.stderr
    assert "relayer" in done.stdout
    assert "worker" in done.stdout


def test_the_coordinator_without_its_extra_names_the_extra() -> None:
    done = run_without(("sqlalchemy",), _fedrelay("coordinator", "run"))
    assert done.returncode == 2, done.stderr
    assert "the coordinator needs `pip install 'fedrelay[coordinator]'`" in done.stderr


def test_the_worker_without_torch_names_the_extra() -> None:
    done = run_without(
        ("torch",),
        _fedrelay(
            "worker", "run", "--chain", "evm", "--key-file", "worker.key",
            "--coordinator-url", "http://127.0.0.1:1", "--rpc-url", "http://127.0.0.1:1",
        ),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "the worker needs `pip install 'fedrelay[worker]'`" in done.stderr
    assert "torch" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_missing_module_of_no_extra_is_not_hidden() -> None:
    done = run_without(("typer",), _fedrelay("--help"))
    assert done.returncode == 1
    assert "ModuleNotFoundError" in done.stderr
