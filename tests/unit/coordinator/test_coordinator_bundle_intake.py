"""The coordinator takes on a job of a model bundle only if it trusts the bundle.

Replaying and evaluating a bundle's model runs the poster's code on the coordinator, so intake
asks the trust policy first (before reading the bundle's blob), then checks that the blob is the
poster's upload and a well-formed bundle; an admitted job's bundle is published with its model
and configuration, so its workers can download it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
from support.bundles import modules_named, write_bundle

from fedrelay.adapters.blobstore import MemoryBlobStore
from fedrelay.coordinator.errors import JobUnusable
from fedrelay.coordinator.memory_store import MemoryCoordinatorStore
from fedrelay.coordinator.publishing import admit_bundle, publish_job
from fedrelay.ports.blobs import POSTER, worker_domain
from fedrelay.ports.coordinator_chain import ChainJob
from fedrelay.training.bundles import bundle_hash, pack_bundle, package_name
from fedrelay.training.trust import TrustPolicy, bundle_signer, sign_bundle

POSTER_KEY = "0x" + "3b" * 32


class CountingBlobStore(MemoryBlobStore):
    """A memory blob store that records every name read or asked about."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    async def get(self, name: str) -> bytes:
        self.asked.append(name)
        return await super().get(name)

    async def exists(self, name: str) -> bool:
        self.asked.append(name)
        return await super().exists(name)


@dataclass
class Intake:
    blobs: CountingBlobStore = field(default_factory=CountingBlobStore)
    store: MemoryCoordinatorStore = field(default_factory=MemoryCoordinatorStore)


def _config(name: str, signature: str = "") -> SimpleNamespace:
    """A job configuration whose model entry names bundle ``name``."""
    model = SimpleNamespace(kind="bundle", bundle=name, signature=signature, args={})
    return SimpleNamespace(model=model, worker_data=None)


def _blob(tmp_path: Path, tag: str) -> bytes:
    return pack_bundle(write_bundle(tmp_path / tag, tmp_path / f"{tag}.marker", tag))


async def test_an_untrusted_bundle_is_not_taken_on_and_its_blob_is_never_read(
    tmp_path: Path,
) -> None:
    intake = Intake()
    blob = _blob(tmp_path, "intake_refused")
    name = await intake.blobs.put(blob, domain=POSTER)
    signature = sign_bundle(name, POSTER_KEY)
    intake.blobs.asked.clear()
    with pytest.raises(JobUnusable) as refused:
        await admit_bundle(_config(name, signature), intake.blobs, intake.store, TrustPolicy())
    message = str(refused.value)
    assert f"model bundle {name} is not trusted on this machine" in message
    assert f"--trust-model {name}" in message
    assert f"signer {bundle_signer(name, signature)}" in message
    assert "FEDRELAY_TRUST_MODELS" in message
    assert intake.blobs.asked == []
    assert not await intake.store.is_published(name)
    assert modules_named("intake_refused") == []
    assert package_name(name) not in sys.modules
    assert not (tmp_path / "intake_refused.marker").exists()


async def test_a_trusted_bundle_is_admitted_checked_and_published_with_the_job(
    tmp_path: Path,
) -> None:
    intake = Intake()
    blob = _blob(tmp_path, "intake_trusted")
    name = await intake.blobs.put(blob, domain=POSTER)
    signature = sign_bundle(name, POSTER_KEY)
    signer = bundle_signer(name, signature)
    assert signer is not None
    config = _config(name, signature)
    kept = await admit_bundle(config, intake.blobs, intake.store, TrustPolicy.of(signers=[signer]))
    assert kept == blob
    assert not (tmp_path / "intake_trusted.marker").exists()  # checked, not run
    job = ChainJob(7, True, 1, 0, 1, 0, b"\x01" * 32, b"\x02" * 32, 1, (4,))
    await publish_job(job, intake.store, config)  # type: ignore[arg-type]
    for published in ("01" * 32, "02" * 32, name):
        assert await intake.store.is_published(published)


async def test_a_trusted_bundle_must_be_the_posters_upload(tmp_path: Path) -> None:
    intake = Intake()
    blob = _blob(tmp_path, "intake_worker")
    name = await intake.blobs.put(blob, domain=worker_domain(7, 0, b"\x44" * 32))
    with pytest.raises(JobUnusable, match="is a worker's upload"):
        await admit_bundle(_config(name), intake.blobs, intake.store, TrustPolicy.of(models=[name]))


async def test_a_trusted_hash_of_bytes_that_are_no_bundle_is_refused() -> None:
    intake = Intake()
    name = await intake.blobs.put(b"not a bundle", domain=POSTER)
    assert name == bundle_hash(b"not a bundle")
    with pytest.raises(JobUnusable, match=f"its model bundle {name}: not a model bundle"):
        await admit_bundle(_config(name), intake.blobs, intake.store, TrustPolicy.of(models=[name]))


async def test_a_built_in_model_needs_no_trust() -> None:
    intake = Intake()
    config = SimpleNamespace(model=SimpleNamespace(kind="mlp"), worker_data=None)
    assert await admit_bundle(config, intake.blobs, intake.store, TrustPolicy()) is None
    assert intake.blobs.asked == []
