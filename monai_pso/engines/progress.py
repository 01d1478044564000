"""Console progress of a training run: one tqdm bar per epoch showing the loss, instead of per-iteration log lines."""

from __future__ import annotations

from collections.abc import Callable
from operator import itemgetter
from typing import Any

import torch
from ignite.engine import Engine
from ignite.handlers import ProgressBar
from monai.utils.enums import CommonKeys as Keys


class TrainingProgressBar:
    """MONAI-style handler wrapping :class:`ignite.handlers.ProgressBar`, with the loss in the bar's postfix.

    Each epoch gets its own bar (``Epoch [2/10]: [16/32]  50%|█████     , loss=0.123``), left on the
    console when the epoch ends. Bundle configs list it among ``train#handlers`` in place of
    ``monai.handlers.StatsHandler`` (see ``progress_bar`` in the training configs).

    Parameters
    ----------
    output_transform
        Turns ``engine.state.output`` into the value shown (a number or a 0-d tensor). The default takes
        its ``"loss"`` item, which both :class:`~monai_pso.engines.base.GenerativeTrainer` subclasses and
        ``monai.engines.SupervisedTrainer(decollate=False)`` provide.
    name
        Label of the value in the bar.
    persist
        Keep each finished epoch's bar on the console.
    tqdm_kwargs
        Passed to ``tqdm`` (e.g. ``file``, ``ncols``, ``mininterval``).

    Examples
    --------
    >>> import io
    >>> engine = Engine(lambda engine, batch: {"loss": batch / 4})
    >>> console = io.StringIO()
    >>> TrainingProgressBar(file=console).attach(engine)
    >>> _ = engine.run([1.0, 2.0], max_epochs=2)
    >>> "Epoch [2/2]" in console.getvalue() and "loss=0.5" in console.getvalue()
    True
    """

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = itemgetter(Keys.LOSS),
        name: str = "loss",
        persist: bool = True,
        **tqdm_kwargs: Any,
    ) -> None:
        self.output_transform = output_transform
        self.name = name
        self.bar = ProgressBar(persist=persist, **tqdm_kwargs)

    def attach(self, engine: Engine) -> None:
        """Show the bar while ``engine`` runs, updated every iteration, closed at the end of each epoch."""
        self.bar.attach(engine, output_transform=self._postfix)

    def _postfix(self, output: Any) -> dict[str, float]:
        """The bar's postfix ``{name: value}`` for one iteration's output (tensors read without their graph)."""
        return {self.name: torch.as_tensor(self.output_transform(output)).item()}
