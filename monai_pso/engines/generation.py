"""The generation engine: a ``monai.engines.Workflow`` that turns generation requests into images.

A request is a dictionary: ``item_id``, ``seed``, ``guidance_scale`` and, when conditional,
``condition`` (a class label, a covariate vector or a feature vector). Each iteration samples one
batch of requests; ``engine.state.output`` is a list of the requests with ``"pred"`` (the image
``(1, *spatial)`` in ``[0, 1]``) added, the shape of MONAI's decollated evaluator output, so that
handlers such as the privacy guard (:class:`monai_pso.handlers.PrivacyGuard`) and the release writer
(:class:`monai_pso.release.ReleaseWriter`) attach to ``Events.ITERATION_COMPLETED``. Under ``torchrun`` each
rank samples every ``world``-th request, and the release writer joins them into one release.
A rejected image is redrawn with :meth:`GenerationWorkflow.regenerate`: another seed, and, after
``attempts_per_level`` failures, a lower guidance scale (:class:`GuidanceSchedule`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.engines import Workflow
from monai.engines.utils import IterationEvents
from monai.utils.enums import CommonKeys as Keys

from monai_pso.engines.sampler import LatentDiffusionSampler


def derive_seed(seed: int, attempt: int) -> int:
    """The seed of the ``attempt``-th redraw of a sample (attempt 0 is ``seed`` itself).

    Examples
    --------
    >>> derive_seed(5, 0), derive_seed(5, 1) == derive_seed(5, 1) != derive_seed(6, 1)
    (5, True)
    """
    if attempt == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(attempt)]).generate_state(1, dtype=np.uint32)[0])


@dataclass(frozen=True)
class GuidanceSchedule:
    """Guidance scale per attempt: ``attempts_per_level`` seeds at ``start``, then ``step`` lower, down to ``floor``.

    Examples
    --------
    >>> s = GuidanceSchedule(start=3.0, floor=1.0, step=1.0, attempts_per_level=2)
    >>> [s.scale_at(a) for a in range(s.total_attempts)]
    [3.0, 3.0, 2.0, 2.0, 1.0, 1.0]
    """

    start: float = 1.0
    floor: float | None = None
    step: float = 0.5
    attempts_per_level: int = 4

    @property
    def levels(self) -> int:
        if self.floor is None or self.floor >= self.start or self.step <= 0:
            return 1
        return int(np.floor((self.start - self.floor) / self.step + 1e-9)) + 1

    @property
    def total_attempts(self) -> int:
        """Draws per item, the first included."""
        return self.levels * self.attempts_per_level

    def scale_at(self, attempt: int, start: float | None = None) -> float:
        """Guidance scale of draw number ``attempt`` (0-based) of a request that began at ``start`` (default: :attr:`start`).

        Examples
        --------
        >>> GuidanceSchedule(start=3.0, floor=1.0, step=1.0, attempts_per_level=1).scale_at(5, start=2.0)
        1.0
        """
        start = self.start if start is None else float(start)
        if self.floor is None or self.step <= 0 or self.floor >= start:
            return start
        return float(max(start - (attempt // self.attempts_per_level) * self.step, self.floor))


def generation_requests(
    n: int, seed: int = 0, guidance_scale: float = 1.0, condition: Any = None, prefix: str = "synthetic"
) -> list[dict[str, Any]]:
    """``n`` requests with consecutive seeds from ``seed``, all with the same condition.

    Examples
    --------
    >>> [r["item_id"] for r in generation_requests(2, condition=1, prefix="c1")]
    ['c1-00000', 'c1-00001']
    """
    requests = []
    for i in range(n):
        request = {"item_id": f"{prefix}-{i:05d}", "seed": int(seed) + i, "guidance_scale": float(guidance_scale), "attempt": 0}
        if condition is not None:
            request["condition"] = condition
        requests.append(request)
    return requests


def diversity_requests(
    datalist: Sequence[dict[str, Any]],
    feature_key: str = "features",
    seed: int = 0,
    guidance_scale: float = 1.0,
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    limit: int | None = None,
    candidates: int = 1,
) -> list[dict[str, Any]]:
    """One request per training item, conditioned on its feature vector (the PSO diversity-aware scheme).

    Each request records ``source_item`` (the training image it is conditioned on); the guard still checks
    the result against every training image, and a rejected draw is redrawn at lower guidance
    (:class:`GuidanceSchedule`) before it is dropped.

    Parameters
    ----------
    datalist
        Training items holding ``feature_key`` (or turned into such items by ``transform``).
    feature_key
        Where the feature vector is (:class:`~monai_pso.engines.PooledFeatured` writes ``"features"``).
    seed, guidance_scale
        Seed of the first request (then consecutive), and the starting guidance.
    transform
        Applied to each item first (e.g. loading the image and computing ``PooledFeatured``).
    limit
        Only the first ``limit`` items.
    candidates
        Requests per item (candidate selection keeps one of the released ones): item ids
        ``synthetic-ITEM-cK`` for ``K = 0..candidates-1``, each with its own seed; one keeps ``synthetic-ITEM``.

    Examples
    --------
    >>> requests = diversity_requests([{"item_id": "p0-a0", "features": [0.5, 0.1]}], guidance_scale=3.0)
    >>> requests[0]["item_id"], requests[0]["source_item"], requests[0]["condition"]
    ('synthetic-p0-a0', 'p0-a0', [0.5, 0.1])
    >>> [(r["item_id"], r["seed"]) for r in diversity_requests([{"item_id": "a", "label": 1}, {"item_id": "b", "label": 0}], "label", candidates=2)]
    [('synthetic-a-c0', 0), ('synthetic-a-c1', 1), ('synthetic-b-c0', 2), ('synthetic-b-c1', 3)]
    """
    entries = list(datalist)[:limit] if limit else list(datalist)
    requests = []
    for i, entry in enumerate(entries):
        entry = transform(entry) if transform is not None else entry
        for k in range(candidates):
            requests.append(
                {
                    "item_id": f"synthetic-{entry['item_id']}" + (f"-c{k}" if candidates > 1 else ""),
                    "source_item": entry["item_id"],
                    "seed": int(seed) + i * candidates + k,
                    "guidance_scale": float(guidance_scale),
                    "condition": entry[feature_key],
                    "attempt": 0,
                }
            )
    return requests


class GenerationWorkflow(Workflow):
    """Sample images for a list of requests, batch by batch, as an ignite engine.

    Parameters
    ----------
    sampler
        A :class:`~monai_pso.engines.LatentDiffusionSampler`.
    requests
        Generation requests (:func:`generation_requests`, :func:`diversity_requests`).
    batch_size
        Requests sampled together (results do not depend on it).
    schedule
        Guidance per redraw; its ``start`` is ignored in favour of each request's ``guidance_scale``.
    handlers
        Handlers to attach, in order (the guard before the writer).
    split_across_ranks
        With an initialised ``torch.distributed`` process group, sample only this rank's share of the
        requests (every ``world``-th, from its rank).

    Examples
    --------
    >>> from monai.networks.nets import AutoencoderKL, DiffusionModelUNet
    >>> from monai.networks.schedulers import DDIMScheduler
    >>> ae = AutoencoderKL(2, 1, 1, channels=(8, 8), latent_channels=2, num_res_blocks=1, norm_num_groups=4,
    ...                    attention_levels=(False, False), with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False)
    >>> unet = DiffusionModelUNet(2, 2, 2, channels=(8, 8), attention_levels=(False, False), num_res_blocks=1, norm_num_groups=4)
    >>> sampler = LatentDiffusionSampler(ae, unet, DDIMScheduler(100), 1.0, (2, 8, 8), num_inference_steps=2)
    >>> engine = GenerationWorkflow(sampler, generation_requests(3), batch_size=2)
    >>> engine.run(); len(engine.state.output), tuple(engine.state.output[0]["pred"].shape)
    (1, (1, 16, 16))
    """

    def __init__(
        self,
        sampler: LatentDiffusionSampler,
        requests: Sequence[dict[str, Any]],
        batch_size: int = 8,
        schedule: GuidanceSchedule | None = None,
        handlers: Sequence | None = None,
        split_across_ranks: bool = True,
    ) -> None:
        if split_across_ranks and torch.distributed.is_available() and torch.distributed.is_initialized():
            requests = list(requests)[torch.distributed.get_rank() :: torch.distributed.get_world_size()]
        batches = [list(requests[i : i + batch_size]) for i in range(0, len(requests), batch_size)]
        super().__init__(
            device=sampler.device, max_epochs=1, data_loader=batches, epoch_length=len(batches), decollate=False, handlers=handlers
        )
        self.sampler = sampler
        self.schedule = schedule or GuidanceSchedule()
        self.requests = list(requests)

    @property
    def total_attempts(self) -> int:
        """Draws allowed per request (for the guard's attempt budget)."""
        return self.schedule.total_attempts

    def sample(self, requests: Sequence[dict[str, Any]]) -> list[torch.Tensor]:
        """Images of ``requests`` (grouped by guidance scale), in request order."""
        images: list[torch.Tensor | None] = [None] * len(requests)
        for scale in sorted({r["guidance_scale"] for r in requests}):
            rows = [i for i, r in enumerate(requests) if r["guidance_scale"] == scale]
            group = [requests[i] for i in rows]
            condition = None
            if "condition" in group[0]:
                condition = torch.stack([torch.as_tensor(r["condition"]) for r in group])
            drawn = self.sampler([r["seed"] for r in group], condition, scale)
            for i, image in zip(rows, drawn):
                images[i] = image.cpu()
        return images  # type: ignore[return-value]

    def redraw_request(self, item: dict[str, Any], attempt: int) -> dict[str, Any]:
        """The request of redraw ``attempt`` (>= 1) of ``item``: a derived seed, the scheduled guidance."""
        base_seed = item.get("base_seed", item["seed"])
        base_scale = item.get("base_guidance_scale", item["guidance_scale"])
        request = {key: value for key, value in item.items() if key != Keys.PRED}
        request.update(
            seed=derive_seed(base_seed, attempt), guidance_scale=self.schedule.scale_at(attempt, base_scale), attempt=attempt, base_seed=base_seed, base_guidance_scale=base_scale
        )
        return request

    def regenerate(self, item: dict[str, Any], attempt: int) -> dict[str, Any]:
        """Redraw ``item`` (attempt >= 1): the new request with its ``"pred"``."""
        request = self.redraw_request(item, attempt)
        request[Keys.PRED] = self.sample([request])[0]
        return request

    def _iteration(self, engine: GenerationWorkflow, batchdata: list[dict[str, Any]]) -> list[dict[str, Any]]:
        images = engine.sample(batchdata)
        engine.state.output = [dict(request, **{Keys.PRED: image}) for request, image in zip(batchdata, images)]
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
