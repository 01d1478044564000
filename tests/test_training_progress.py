"""TrainingProgressBar: one tqdm bar over every iteration of a training run, with the loss, on tiny ignite engines."""

from __future__ import annotations

import io

import pytest
import torch
from ignite.engine import Engine, Events

from monai_pso.engines import TrainingProgressBar

BATCHES = [1.0, 2.0, 3.0, 4.0, 5.0]


def loss_engine() -> Engine:
    """An engine whose output's loss is the batch over 10, as a tensor with a graph."""
    return Engine(lambda engine, batch: {"loss": torch.tensor(batch / 10, requires_grad=True) * 1})


def watched(engine: Engine, progress: TrainingProgressBar) -> list[tuple]:
    """After each iteration: (bar, total, position, postfix, description, iteration)."""
    seen: list[tuple] = []

    @engine.on(Events.ITERATION_COMPLETED)
    def look(engine: Engine) -> None:
        bar = progress.bar
        seen.append((bar, bar.total, bar.n, bar.postfix, bar.desc, engine.state.iteration))

    return seen


def test_one_bar_over_every_iteration_of_every_epoch():
    engine, console = loss_engine(), io.StringIO()
    progress = TrainingProgressBar(file=console, desc="autoencoder")
    progress.attach(engine)
    seen = watched(engine, progress)
    engine.run(BATCHES, max_epochs=4)
    bars = {id(bar) for bar, *_ in seen}
    assert len(bars) == 1 and len(seen) == 20
    assert all(total == 20 and position == iteration for _, total, position, _, _, iteration in seen)
    assert [postfix for *_, postfix, _, _ in seen[:3]] == ["loss=0.1", "loss=0.2", "loss=0.3"]
    assert seen[7][4] == "autoencoder epoch 2/4" and seen[-1][4] == "autoencoder epoch 4/4"
    last = console.getvalue().split("\r")[-1]
    assert "autoencoder epoch 4/4: [20/20] 100%" in last and "loss=0.5" in last
    assert console.getvalue().count("[20/20]") >= 1 and "[5/5]" not in console.getvalue()  # no bar per epoch


def test_the_bar_closes_when_the_run_completes_or_is_terminated():
    for stop_at in (None, 7):
        engine = loss_engine()
        progress = TrainingProgressBar(file=io.StringIO())
        progress.attach(engine)
        seen = watched(engine, progress)
        if stop_at:
            engine.add_event_handler(Events.ITERATION_COMPLETED(once=stop_at), lambda engine: engine.terminate())
        engine.run(BATCHES, max_epochs=3)
        (bar,) = {bar for bar, *_ in seen}
        assert progress.bar is None and bar.disable  # tqdm marks a closed bar disabled
        assert len(seen) == (stop_at or 15)


def test_a_resumed_run_starts_where_it_stopped():
    engine = loss_engine()
    progress = TrainingProgressBar(file=io.StringIO())
    progress.attach(engine)
    seen = watched(engine, progress)
    engine.run(BATCHES, max_epochs=2)
    engine.run(BATCHES, max_epochs=3)  # resumes: iterations 11 to 15 of 15
    second = [entry for entry in seen if entry[0] is not seen[0][0]]
    assert [(total, position) for _, total, position, *_ in second] == [(15, n) for n in range(11, 16)]


def test_data_without_a_length_gets_its_total_after_the_first_epoch():
    class Batches:
        def __iter__(self):
            return iter(BATCHES)

    engine = loss_engine()
    progress = TrainingProgressBar(file=io.StringIO())
    progress.attach(engine)
    seen = watched(engine, progress)
    engine.run(Batches(), max_epochs=2)
    assert [total for _, total, *_ in seen] == [None] * 5 + [10] * 5


def test_stage_is_named_after_the_trainer_and_the_value_after_the_option():
    class LatentDiffusionTrainer(Engine):
        pass

    engine, console = LatentDiffusionTrainer(lambda engine, batch: {"loss": batch, "g": batch * 2}), io.StringIO()
    TrainingProgressBar(output_transform=lambda output: output["g"], name="g_loss", file=console).attach(engine)
    engine.run([1.5], max_epochs=1)
    assert "latent diffusion epoch 1/1: [1/1]" in console.getvalue() and "g_loss=3" in console.getvalue()


@pytest.mark.parametrize("persist", [True, False])
def test_persist_keeps_or_clears_the_finished_bar(persist):
    engine, console = loss_engine(), io.StringIO()
    TrainingProgressBar(file=console, persist=persist).attach(engine)
    engine.run(BATCHES, max_epochs=1)
    assert console.getvalue().endswith("\n") == persist
