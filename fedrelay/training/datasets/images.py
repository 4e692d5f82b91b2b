"""Images from a folder with one subfolder per class, checked against an image schema.

The subfolders are the schema's class names (``0`` .. ``classes-1`` unless it names them); a
worker may hold only some classes, but a subfolder that is not a class, a file that is not an
image, an image of another size or with another number of channels is refused, naming the file
and what was expected. Images are not resized or recoloured: training on silently altered
pixels would hide a data problem. Pixels are scaled to 0..1, laid out ``(c, h, w)``; files are
read in label order, then by name, so the same folder always gives the same examples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedrelay.protocol.data_spec import ImageSchema
from fedrelay.training.data import Dataset
from fedrelay.training.datasets.schema import SchemaMismatch

__all__ = ["load_image_folder"]

# Colour channels of Pillow's modes (alpha not counted; palette images are colour).
_CHANNELS = {"1": 1, "L": 1, "LA": 1, "I": 1, "I;16": 1, "F": 1, "P": 3, "PA": 3,
             "RGB": 3, "RGBA": 3, "RGBX": 3, "CMYK": 3, "YCbCr": 3, "LAB": 3, "HSV": 3}  # fmt: skip


def _pixels(path: Path, schema: ImageSchema) -> npt.NDArray[np.float32]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            size, mode = image.size, image.mode
            channels = _CHANNELS.get(mode)
            if size != (schema.width, schema.height):
                raise SchemaMismatch(
                    f"{path}: image of {size[0]}x{size[1]} pixels, the job's schema says "
                    f"{schema.width}x{schema.height} (width x height)"
                )
            if channels != schema.channels:
                raise SchemaMismatch(
                    f"{path}: a {mode} image ({channels} channels), the job's schema says "
                    f"{schema.channels}"
                )
            converted = image.convert("L" if schema.channels == 1 else "RGB")
            array = np.asarray(converted, dtype=np.float32) / 255.0
    except UnidentifiedImageError:
        raise SchemaMismatch(f"{path}: not an image Pillow can read") from None
    if schema.channels == 1:
        return array[None, :, :]
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def load_image_folder(root: Path, schema: ImageSchema) -> Dataset:
    """The images under ``root``, labelled by the class subfolder each is in.

    Raises:
        SchemaMismatch: A subfolder is not a class of the schema, a file is not an image, an
            image's size or channels differ from the schema, or there is no image at all.
        OSError: The folder cannot be read.
    """
    if not root.is_dir():
        raise SchemaMismatch(
            f"{root}: image data is a folder with one subfolder per class, not a file"
        )
    names = schema.folder_names()
    labels_of = {name: label for label, name in enumerate(names)}
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    for entry in entries:
        if not entry.is_dir():
            raise SchemaMismatch(
                f"{entry}: a file beside the class folders; images go into one subfolder per "
                f"class ({_listing(names)})"
            )
        if entry.name not in labels_of:
            raise SchemaMismatch(
                f"{entry}: folder {entry.name!r} is not a class of the job ({_listing(names)})"
            )
    images: list[npt.NDArray[np.float32]] = []
    labels: list[int] = []
    for entry in sorted(entries, key=lambda e: labels_of[e.name]):
        for file in sorted(p for p in entry.rglob("*") if p.is_file()):
            if any(part.startswith(".") for part in file.relative_to(entry).parts):
                continue
            images.append(_pixels(file, schema))
            labels.append(labels_of[entry.name])
    if not images:
        raise SchemaMismatch(f"{root}: no image in any class folder ({_listing(names)})")
    return Dataset(np.stack(images).astype(np.float32), np.asarray(labels, dtype=np.int64))


def _listing(names: tuple[str, ...]) -> str:
    shown = ", ".join(names[:12])
    return f"classes: {shown}{', ...' if len(names) > 12 else ''}"
