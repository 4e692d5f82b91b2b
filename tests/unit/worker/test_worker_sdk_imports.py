"""The worker installs without the other roles' packages, so it must import without them.

``pip install 'fedrelay[worker]'`` brings neither the coordinator's web stack (FastAPI, uvicorn),
the relayer's ledger and bus (SQLAlchemy, Alembic, aiokafka) nor the demo's plots (matplotlib);
each test runs a fresh interpreter where those cannot be imported.
"""

from __future__ import annotations

from support.blocked_imports import run_without

#: Packages of other roles' extras that the worker's path must not need.
OTHER_ROLES = ("fastapi", "uvicorn", "sqlalchemy", "alembic", "aiokafka", "matplotlib")


def test_the_worker_sdk_process_and_cli_import_without_other_roles_packages() -> None:
    done = run_without(
        OTHER_ROLES,
        """
        import fedrelay.worker.sdk
        import fedrelay.worker.process
        import fedrelay.commands.worker
        from fedrelay.worker.sdk import WorkerNode, StepReport, StopRequested, TrainedUpdate
        print("imported")
        """,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "imported"


def test_the_blocker_blocks() -> None:
    done = run_without(OTHER_ROLES, "import sqlalchemy.ext.asyncio\n")
    assert done.returncode != 0
    assert "ModuleNotFoundError" in done.stderr


def test_importing_the_sdk_loads_neither_torch_nor_scikit_learn() -> None:
    done = run_without(
        (),
        """
        import sys
        import fedrelay.worker.sdk
        heavy = ("torch", "sklearn", "scipy", "web3", "solana")
        print(sorted(m for m in heavy if m in sys.modules))
        """,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
