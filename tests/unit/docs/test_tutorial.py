"""docs/tutorial.md runs as written.

Every fenced block of the tutorial is preceded by a marker, ``<!-- tutorial: file PATH -->`` (the
block is written to PATH) or ``<!-- tutorial: run -->`` (each command of the block runs, in
order, in one empty folder). ``python SCRIPT ...`` runs the script; ``fedrelay ...`` runs the
command line in-process: ``worker bundle-hash`` must print what its ``# prints`` comment says,
``job post`` must pass every check before the chain (no chain is configured here, so it stops
exactly where it would reach it), and ``worker run`` and ``coordinator run`` must reach the point
where they would start their node or service, which are replaced by recorders of what they were
given. Then the job is checked as the tutorial describes it: the configuration ``job post``
builds, the bundle refused where it is not trusted (nothing imported) and loaded where it is, the
worker's file loaded against the job's schema, and the job's recipe trained on it by the real
trainer, lowering the loss on the poster's evaluation set.
"""

from __future__ import annotations

import json
import re
import runpy
import shlex
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from fedrelay.cli import app
from fedrelay.commands import worker as worker_commands
from fedrelay.commands.coordinator import (
    _evaluation_blob,
    _load_config,
    _private_data,
    _with_bundle,
    _with_evaluation,
    _with_zoo_model,
)
from fedrelay.protocol.job_config import JobConfig
from fedrelay.protocol.model_spec import BundleSpec, MlpSpec
from fedrelay.training.bundles import bundle_hash, loader_for_model, package_name
from fedrelay.training.datasets import FileSource, dataset_from_blob, evaluation_schema
from fedrelay.training.models import build_factory, initial_tensors
from fedrelay.training.torch_trainer import TorchTrainer, evaluate
from fedrelay.training.trust import TrustPolicy, UntrustedBundle
from fedrelay.worker.sdk.shards import own_examples

DOC = Path(__file__).resolve().parents[3] / "docs" / "tutorial.md"
MARKED = re.compile(r"<!-- tutorial: (?P<what>[^>]*?) -->\n```(?P<lang>\w*)\n(?P<body>.*?)^```$",
                    re.DOTALL | re.MULTILINE)  # fmt: skip
FENCE = re.compile(r"^```", re.MULTILINE)
PRINTS = re.compile(r"\s#\s*prints\s+(\S+)\s*$")
# What `source .fedrelay/devnet/devnet.env` and the devnet's files would give the shell.
VARIABLES = {
    "WORKER_RPC": "http://127.0.0.1:9",
    "HUB": "0x" + "11" * 20,
    "PAYOUT": "0x" + "22" * 20,
}
POSTER_KEY = "0x" + "4c" * 32
NO_CHAIN = "say where the coordinator chain is"

runner = CliRunner()


@dataclass
class Ran:
    """What the tutorial's commands did."""

    printed_hashes: list[str] = field(default_factory=list)
    posts: list[list[str]] = field(default_factory=list)
    worker_trust: list[TrustPolicy] = field(default_factory=list)
    worker_data: list[object] = field(default_factory=list)
    coordinator_trust: list[TrustPolicy] = field(default_factory=list)


def _blocks() -> list[tuple[str, str]]:
    text = DOC.read_text()
    blocks = [(m["what"].strip(), m["body"]) for m in MARKED.finditer(text)]
    fences = len(FENCE.findall(text))
    assert fences == 2 * len(blocks), "every code block of the tutorial needs a tutorial marker"
    return blocks


def _commands(body: str) -> Iterator[tuple[list[str], str | None]]:
    """Each command of a shell block (continuation lines joined), with its ``# prints`` text."""
    for line in body.replace("\\\n", " ").splitlines():
        if not line.strip():
            continue
        printed = PRINTS.search(line)
        for name, value in VARIABLES.items():
            line = line.replace(f"${name}", value)
        yield shlex.split(line, comments=True), printed.group(1) if printed else None


def _record(monkeypatch: pytest.MonkeyPatch) -> Ran:
    """`worker run` and `coordinator run` up to their node and service, recorded, not run."""
    ran = Ran()
    signer = SimpleNamespace(worker=SimpleNamespace(key=b"\x07" * 32))

    @asynccontextmanager
    async def connected(*args: object) -> AsyncIterator[Any]:
        yield SimpleNamespace(signer=signer)

    @asynccontextmanager
    async def node(
        connected: object, url: str, data: object, *args: object, trust: TrustPolicy, **kw: object
    ) -> AsyncIterator[Any]:
        ran.worker_trust.append(trust)
        ran.worker_data.append(data)

        async def nothing(*args: object) -> None:
            return None

        yield SimpleNamespace(request_stop=lambda: None, run=nothing, register=nothing)

    async def serve(settings: object, target: object, key: str, trust: TrustPolicy) -> None:
        ran.coordinator_trust.append(trust)

    monkeypatch.setattr(worker_commands, "_connected", connected)
    monkeypatch.setattr("fedrelay.worker.process.worker_node", node)
    monkeypatch.setattr("fedrelay.coordinator.process.serve", serve)
    return ran


def _fedrelay(argv: list[str], printed: str | None, ran: Ran) -> None:
    command = tuple(argv[:2])
    if command == ("worker", "bundle-hash"):
        result = runner.invoke(app, argv)
        assert result.exit_code == 0, result.output
        assert printed is not None, "show what bundle-hash prints: # prints HASH"
        assert result.output.strip() == printed, (
            f"the tutorial says the bundle hashes to {printed}; it hashes to "
            f"{result.output.strip()} (update docs/tutorial.md)"
        )
        ran.printed_hashes.append(printed)
    elif command == ("job", "post"):
        result = runner.invoke(app, argv)
        assert result.exit_code == 2
        assert NO_CHAIN in " ".join(result.output.split()), result.output
        ran.posts.append(argv)
    elif command in {("worker", "run"), ("coordinator", "run")}:
        chain = {"FEDRELAY_COORDINATOR_RPC_URL": "http://127.0.0.1:9",  # devnet.env's chain
                 "FEDRELAY_COORDINATOR_JOB_MARKET": "0x" + "33" * 20}  # fmt: skip
        result = runner.invoke(app, argv, env=chain)
        assert result.exit_code == 0, result.output
    else:
        raise AssertionError(f"the tutorial runs `fedrelay {' '.join(command)}`, not checked here")


def _run(argv: list[str], printed: str | None, ran: Ran, folder: Path) -> None:
    if argv[0] == "python":
        saved = sys.argv
        sys.argv = argv[1:]
        try:
            runpy.run_path(str(folder / argv[1]), run_name="__main__")
        finally:
            sys.argv = saved
    elif argv[0] == "fedrelay":
        _fedrelay(argv[1:], printed, ran)
    else:
        raise AssertionError(f"the tutorial runs {argv[0]!r}, which this test does not know")


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ran]:
    """Every block of the tutorial, in order, in an empty folder (the devnet's keys in place);
    the tests of this module then work in that folder."""
    folder = tmp_path_factory.mktemp("tutorial")
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name in ("FEDRELAY_CHAINS_FILE", "FEDRELAY_COORDINATOR_RPC_URL",
                     "FEDRELAY_COORDINATOR_JOB_MARKET", "FEDRELAY_TRUST_MODELS",
                     "FEDRELAY_TRUST_SIGNERS", "FEDRELAY_TRUST_FILE"):  # fmt: skip
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("FEDRELAY_COORDINATOR_ADMIN_TOKEN", "a-tutorial-admin-token")
        monkeypatch.chdir(folder)
        ran = _record(monkeypatch)
        keys = folder / ".fedrelay" / "devnet" / "keys"
        keys.mkdir(parents=True)
        for role, key in (("owner", POSTER_KEY), ("aggregator", "0x" + "5f" * 32),
                          ("worker-0-evm", "cd" * 32)):  # fmt: skip
            (keys / f"{role}.key").write_text(key)
        for what, body in _blocks():
            if what.startswith("file "):
                path = folder / what.removeprefix("file ").strip()
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(body)
            else:
                assert what == "run", f"unknown tutorial marker {what!r}"
                for argv, printed in _commands(body):
                    _run(argv, printed, ran, folder)
        yield ran


def _posted(argv: list[str]) -> tuple[JobConfig, bytes | None, bytes]:
    """The configuration `job post` builds from ``argv``, its bundle blob and evaluation blob."""
    config = _private_data(
        _load_config(Path(_option(argv, "--config")), evaluation=True), unverified=True
    )
    bundle = None
    if "--model-bundle" in argv:
        config, bundle, _ = _with_bundle(
            config, Path(_option(argv, "--model-bundle")), _option(argv, "--bundle-args"), None,
            POSTER_KEY,
        )  # fmt: skip
    else:
        params = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--model-param"]
        config = _with_zoo_model(config, None, _option(argv, "--model-zoo"), params)
    evaluation = _evaluation_blob(Path(_option(argv, "--eval-data")), config, None)
    return _with_evaluation(config, evaluation), bundle, evaluation


def test_every_command_of_the_tutorial_runs_and_names_one_bundle(tutorial: Ran) -> None:
    bundled, zoo = tutorial.posts
    assert "--model-bundle" in bundled
    assert "--model-zoo" in zoo
    [printed] = set(tutorial.printed_hashes)
    assert len(tutorial.printed_hashes) == 2  # the poster's and the worker's check
    assert tutorial.coordinator_trust == [TrustPolicy.of(models=[printed])]
    assert tutorial.worker_trust == [TrustPolicy.of(models=[printed])]
    assert tutorial.worker_data == [FileSource(Path("mine.csv"))]


def test_the_zoo_variant_posts_a_perceptron_sized_by_the_schema(tutorial: Ran) -> None:
    config, bundle, _ = _posted(tutorial.posts[1])
    assert bundle is None
    assert config.model == MlpSpec(inputs=13, hidden=32, classes=3)


def test_the_workers_file_trains_the_posters_bundle_as_a_worker_does(tutorial: Ran) -> None:
    config, bundle, evaluation = _posted(tutorial.posts[0])
    assert bundle is not None
    spec = config.model
    assert isinstance(spec, BundleSpec)
    [trust] = tutorial.worker_trust
    assert spec.bundle == bundle_hash(bundle) == tutorial.printed_hashes[0]
    assert json.loads(config.to_bytes())["data"]["replay"] == "none"
    blobs = {spec.bundle: bundle}

    # Where it is not trusted, nothing of it is fetched or imported.
    fetched: list[str] = []

    def fetch(name: str) -> bytes:
        fetched.append(name)
        return blobs[name]

    with pytest.raises(UntrustedBundle, match=f"--trust-model {spec.bundle}"):
        build_factory(spec, bundle_loader=loader_for_model(spec, TrustPolicy(), fetch))
    assert fetched == []
    assert not [m for m in sys.modules if m.startswith(package_name(spec.bundle))]

    # The worker: its file against the job's schema, the bundle through its trust, the recipe.
    worker_data = config.worker_data
    assert worker_data is not None
    [source] = tutorial.worker_data
    examples = own_examples(source, worker_data.schema_, None)  # type: ignore[arg-type]
    assert len(examples) == 70
    factory = build_factory(spec, bundle_loader=loader_for_model(spec, trust, blobs.__getitem__))
    start = initial_tensors(spec, factory, blobs.__getitem__)
    trainer = TorchTrainer(factory, spec.objective, examples, trainable=spec.trainable)
    trained = trainer.train(start, config.training_config(len(examples)))
    assert package_name(spec.bundle) in sys.modules

    # The poster's evaluation set, as the coordinator scores it.
    held_out = dataset_from_blob(evaluation, evaluation_schema(config))
    assert len(held_out) == 40
    before = evaluate(factory, start, held_out, objective=spec.objective)
    after = evaluate(factory, trained, held_out, objective=spec.objective)
    assert after.loss < before.loss
    assert before.accuracy is not None
    assert after.accuracy is not None
    assert after.accuracy > before.accuracy
