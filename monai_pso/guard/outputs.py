"""A generation engine's ``engine.state.output`` seen as a list of per-sample items, and packed back.

Three layouts are understood (``image_key`` names the images, default ``"pred"``):

- ``list``: a list of per-sample dicts (MONAI's decollated output); items are those dicts;
- ``dict``: one dict of batched values; items are built from every value with one entry per sample;
- ``tensor``: a bare batch ``(B, 1, *spatial)``; items are ``{image_key: image}``.

:meth:`GeneratedBatch.pack` rebuilds the same layout from the items at some positions only.

Examples
--------
>>> batch = GeneratedBatch.unpack({"pred": torch.zeros(3, 1, 4, 4), "label": torch.tensor([0, 1, 2]), "note": "x"}, "pred")
>>> batch.layout, len(batch), sorted(batch.items[1])
('dict', 3, ['label', 'pred'])
>>> packed = batch.pack([0, 2])
>>> packed["pred"].shape[0], packed["label"].tolist(), packed["privacy_released_mask"].tolist(), packed["note"]
(2, [0, 2], [True, False, True], 'x')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from monai_pso.errors import ImageValueError


def _per_sample(value: Any, n: int) -> bool:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value.ndim > 0 and value.shape[0] == n
    return isinstance(value, (list, tuple)) and len(value) == n


def _stack(values: list[Any], like: Any) -> Any:
    """Per-sample values gathered back into the container type of ``like``."""
    if isinstance(like, torch.Tensor):
        return torch.stack([torch.as_tensor(v) for v in values]) if values else like[:0]
    if isinstance(like, np.ndarray):
        return np.stack(values) if values else like[:0]
    return type(like)(values)


@dataclass
class GeneratedBatch:
    """Per-sample items of one iteration's output, with the layout to pack them back into."""

    layout: str
    items: list[dict[str, Any]]
    image_key: str
    original: Any = None
    ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    @classmethod
    def unpack(cls, output: Any, image_key: str) -> GeneratedBatch:
        """Split ``engine.state.output`` into items; raises :class:`ImageValueError` on an unknown layout."""
        if isinstance(output, (list, tuple)) and all(isinstance(o, dict) for o in output):
            if any(image_key not in o for o in output):
                raise ImageValueError(f"engine output items must hold generated images under {image_key!r}")
            return cls("list", [dict(o) for o in output], image_key, output)
        if isinstance(output, dict):
            if image_key not in output:
                raise ImageValueError(f"engine output holds no generated images under {image_key!r} (keys: {', '.join(map(str, output))})")
            n = len(output[image_key])
            items = [{k: v[i] for k, v in output.items() if _per_sample(v, n)} for i in range(n)]
            return cls("dict", items, image_key, output)
        if isinstance(output, (torch.Tensor, np.ndarray)):
            return cls("tensor", [{image_key: image} for image in output], image_key, output)
        raise ImageValueError(f"engine output of type {type(output).__name__} holds no generated images (expected a list of dicts, a dict or a tensor)")

    def image(self, position: int) -> torch.Tensor:
        """The image at ``position`` as a float32 CPU tensor ``(1, *spatial)``."""
        return torch.as_tensor(self.items[position][self.image_key]).detach().cpu().float()

    def set_image(self, position: int, image: torch.Tensor) -> None:
        self.items[position][self.image_key] = image

    def replace(self, position: int, regenerated: Any) -> None:
        """Put a redraw in place: a dict replaces the item, anything else is the new image."""
        if isinstance(regenerated, dict):
            if self.image_key not in regenerated:
                raise ImageValueError(f"regenerate returned a dict without {self.image_key!r}")
            self.items[position] = dict(regenerated)
        else:
            self.set_image(position, torch.as_tensor(regenerated))

    def annotate(self, position: int, values: dict[str, Any]) -> None:
        self.items[position].update(values)

    def merge_conditions(self, conditions: Sequence[dict[str, Any]]) -> None:
        """Add per-sample values (e.g. the conditions a ``batch_transform`` took from the batch)."""
        for item, extra in zip(self.items, conditions):
            for key, value in extra.items():
                item.setdefault(key, value)

    def mask(self, positions: Sequence[int]) -> np.ndarray:
        """``(B,)`` bool: which original positions are in ``positions``."""
        mask = np.zeros(len(self.items), bool)
        mask[list(positions)] = True
        return mask

    def pack(self, positions: Sequence[int]) -> Any:
        """The output layout holding only the items at ``positions`` (in order)."""
        kept = [self.items[p] for p in positions]
        if self.layout == "list":
            return kept
        if self.layout == "tensor":
            return _stack([item[self.image_key] for item in kept], self.original)
        packed = dict(self.original)
        n = len(self.items)
        for key, value in self.original.items():
            if _per_sample(value, n):
                packed[key] = _stack([item[key] for item in kept], value)
        for key in sorted({k for item in kept for k in item if str(k).startswith("privacy_")}):
            packed[key] = [item.get(key) for item in kept]
        packed["privacy_released_mask"] = torch.as_tensor(self.mask(positions))
        packed["privacy_sample_ids"] = [self.ids[p] for p in positions] if self.ids else list(positions)
        return packed
