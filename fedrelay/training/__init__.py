"""Training: the Trainer protocol, the torch trainer and model zoo, blobs, transcripts, replay.

Import the torch trainer from :mod:`fedrelay.training.torch_trainer` and the models from
:mod:`fedrelay.training.models`; this package's top level does not import torch, so blobs,
transcripts and Merkle proofs are usable without it.
"""

from fedrelay.protocol.blobs import decode_blob, encode_blob
from fedrelay.protocol.hashing import blob_hash, blob_name, keccak256
from fedrelay.protocol.merkle import MerkleProof, merkle_proof, merkle_root, verify_proof
from fedrelay.protocol.training_config import TrainingConfig
from fedrelay.training.errors import BlobError, TrainingError
from fedrelay.training.trainer import (
    Checkpoint,
    ModelTensors,
    Trainer,
    model_of,
    step_of,
    trainable_tensors,
)
from fedrelay.training.transcript import (
    SegmentOpening,
    TrainingRun,
    Transcript,
    TranscriptBuilder,
    open_segment,
    train_with_transcript,
)
from fedrelay.training.verify import Verdict, verify_segment

__all__ = [
    "BlobError",
    "Checkpoint",
    "MerkleProof",
    "ModelTensors",
    "SegmentOpening",
    "Trainer",
    "TrainingConfig",
    "TrainingError",
    "TrainingRun",
    "Transcript",
    "TranscriptBuilder",
    "Verdict",
    "blob_hash",
    "blob_name",
    "decode_blob",
    "encode_blob",
    "keccak256",
    "merkle_proof",
    "merkle_root",
    "model_of",
    "open_segment",
    "step_of",
    "train_with_transcript",
    "trainable_tensors",
    "verify_proof",
    "verify_segment",
]
