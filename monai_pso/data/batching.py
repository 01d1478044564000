"""Images of records loaded in batches of one shape, for the embedders and the guard.

Examples
--------
>>> from monai_pso.data import load_source
>>> source = load_source("phantom:2d?patients=3&acquisitions=2&size=16")
>>> [images.shape for _, images in record_batches(source.records, 4)]
[(4, 1, 16, 16), (2, 1, 16, 16)]
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from monai_pso.data.loading import load_image
from monai_pso.data.records import ImageRecord
from monai_pso.errors import ImageValueError


def record_batches(records: Sequence[ImageRecord], batch_size: int) -> Iterator[tuple[list[ImageRecord], np.ndarray]]:
    """Records loaded in batches ``(B, 1, *spatial)``; a batch ends early where the image shape changes."""
    chunk: list[ImageRecord] = []
    images: list[np.ndarray] = []
    for record in records:
        try:
            image = load_image(record)
        except ImageValueError as error:
            raise ImageValueError(f"{record.item_id}: {error}") from None
        if images and (len(images) == batch_size or image.shape != images[0].shape):
            yield chunk, np.stack(images)
            chunk, images = [], []
        chunk.append(record)
        images.append(image)
    if images:
        yield chunk, np.stack(images)
