"""Console progress of a training run: one tqdm bar per run (a training stage) over all its iterations, showing
the loss, instead of per-iteration log lines or one bar per epoch."""

from __future__ import annotations

import re
from collections.abc import Callable
from operator import itemgetter
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.utils.enums import CommonKeys as Keys
from tqdm import tqdm

#: ``autoencoder epoch 2/10: [48/320]  15%|█▌        , loss=0.123 [00:04<00:22]``
BAR_FORMAT = "{desc}: [{n_fmt}/{total_fmt}] {percentage:3.0f}%|{bar}{postfix} [{elapsed}<{remaining}]"


def stage_name(kind: type) -> str:
    """What a bar calls a run of an engine of class ``kind``: the class name without ``Trainer``, in lower-case words.

    Examples
    --------
    >>> from monai.engines import SupervisedTrainer
    >>> from monai_pso.engines import AutoencoderTrainer, LatentDiffusionTrainer
    >>> [stage_name(kind) for kind in (AutoencoderTrainer, LatentDiffusionTrainer, SupervisedTrainer, Engine)]
    ['autoencoder', 'latent diffusion', 'supervised', 'training']
    """
    words = re.findall(r"[A-Z][a-z0-9]*|[a-z0-9]+", kind.__name__.removesuffix("Trainer"))
    return " ".join(words).lower() if words and kind is not Engine else "training"


class TrainingProgressBar:
    """MONAI-style handler: one tqdm bar for a whole training run, ``max_epochs * epoch_length`` iterations,
    advanced every iteration with the loss in its postfix, its description naming the stage and the epoch.

    ``autoencoder epoch 3/80: [130/3520]   4%|▎         , loss=0.0731 [00:21<09:04]``. The bar opens when the
    engine starts (at the iteration it resumes from), and closes when the run completes or is terminated.
    Bundle configs list it among ``train#handlers`` in place of ``monai.handlers.StatsHandler`` (see
    ``progress_bar`` in the training configs), so that each training stage (the autoencoder, then the
    diffusion UNet) shows one bar.

    Parameters
    ----------
    output_transform
        Turns ``engine.state.output`` into the value shown (a number or a 0-d tensor). The default takes
        its ``"loss"`` item, which both :class:`~monai_pso.engines.base.GenerativeTrainer` subclasses and
        ``monai.engines.SupervisedTrainer(decollate=False)`` provide.
    name
        Label of the value in the bar.
    persist
        Keep the finished bar on the console.
    desc
        The stage the bar names; ``None``: :func:`stage_name` of the engine's class (``autoencoder``, ``latent diffusion``).
    tqdm_kwargs
        Passed to ``tqdm`` (e.g. ``file``, ``ncols``, ``mininterval``).

    Examples
    --------
    >>> import io
    >>> engine = Engine(lambda engine, batch: {"loss": batch / 4})
    >>> console = io.StringIO()
    >>> TrainingProgressBar(file=console, desc="toy").attach(engine)
    >>> _ = engine.run([1.0, 2.0], max_epochs=3)
    >>> last = console.getvalue().split("\\r")[-1]
    >>> "toy epoch 3/3: [6/6] 100%" in last and "loss=0.5" in last
    True
    """

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = itemgetter(Keys.LOSS),
        name: str = "loss",
        persist: bool = True,
        desc: str | None = None,
        **tqdm_kwargs: Any,
    ) -> None:
        self.output_transform = output_transform
        self.name = name
        self.persist = persist
        self.desc = desc
        self.tqdm_kwargs = tqdm_kwargs
        self.bar: tqdm | None = None

    def attach(self, engine: Engine) -> None:
        """Open the bar when ``engine`` starts, advance it every iteration, close it when the run ends."""
        engine.add_event_handler(Events.STARTED, self._open)
        engine.add_event_handler(Events.EPOCH_STARTED, self._describe)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._advance)
        engine.add_event_handler(Events.COMPLETED | Events.TERMINATE, self._close)

    def _open(self, engine: Engine) -> None:
        self._close(engine)
        state = engine.state
        self.bar = tqdm(total=_total(engine), initial=state.iteration, leave=self.persist, bar_format=BAR_FORMAT, **self.tqdm_kwargs)
        self._describe(engine)

    def _describe(self, engine: Engine) -> None:
        if self.bar is not None:
            state = engine.state
            self.bar.set_description_str(f"{self.desc or stage_name(type(engine))} epoch {max(state.epoch, 1)}/{state.max_epochs}", refresh=False)

    def _advance(self, engine: Engine) -> None:
        if self.bar is None:
            return
        if self.bar.total is None:  # an epoch length known only once the first epoch has ended
            self.bar.total = _total(engine)
        self.bar.set_postfix({self.name: self._value(engine.state.output)}, refresh=False)
        self.bar.update(engine.state.iteration - self.bar.n)

    def _close(self, engine: Engine) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _value(self, output: Any) -> float:
        """The number shown for one iteration's output (tensors read without their graph)."""
        return torch.as_tensor(self.output_transform(output)).item()


def _total(engine: Engine) -> int | None:
    """The iterations of the whole run: ``max_iters``, or ``max_epochs * epoch_length`` (``None`` while unknown)."""
    state = engine.state
    if getattr(state, "max_iters", None):
        return int(state.max_iters)
    if state.epoch_length and state.max_epochs:
        return int(state.max_epochs * state.epoch_length)
    return None
