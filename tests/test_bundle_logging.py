"""Console progress and experiment tracking in the bundles' training configs: ``progress_bar``,
``tensorboard_dir`` and ``mlflow_tracking_uri``, on tiny CPU runs."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from monai.bundle import BundleWorkflow, ConfigParser, create_workflow, run

from test_bundles import NETWORKS, TINY  # the ldm bundles' tiny overrides

pytestmark = pytest.mark.usefixtures("one_thread")

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
LDM_2D_AUTOENCODER = str(BUNDLES / "ldm_2d" / "configs" / "train_autoencoder.json")
TINY_AUTOENCODER = {**TINY["ldm_2d"], **NETWORKS, "max_epochs": 1}
STATS_LINE = "Iter: "  # StatsHandler's per-iteration line: "Epoch: 1/1, Iter: 1/2 -- train_loss: 0.4"


def train_autoencoder(tmp_path: Path, **overrides) -> BundleWorkflow:
    """One tiny epoch (2 iterations) of the ldm_2d autoencoder; returns the finished workflow."""
    workflow = create_workflow(config_file=LDM_2D_AUTOENCODER, ckpt_dir=str(tmp_path / "models"), **TINY_AUTOENCODER, **overrides)
    workflow.run()
    workflow.finalize()
    return workflow


@pytest.fixture
def stats_lines() -> Iterator[list[str]]:
    """The messages StatsHandler logs during the test, whatever logging configuration the bundle applies."""
    lines: list[str] = []
    collect = logging.Handler()
    collect.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("monai.handlers.StatsHandler")
    logger.addHandler(collect)
    yield lines
    logger.removeHandler(collect)


def handlers_of(parser: ConfigParser, kind: type) -> list:
    """The instances of ``kind`` among ``train#handlers`` (as built, when the parser has built them)."""
    return [h for h in parser.get_parsed_content("train#handlers") if isinstance(h, kind)]


@pytest.mark.parametrize("progress_bar", [False, True])
def test_progress_bar_replaces_per_iteration_log_lines(progress_bar, tmp_path, capsys, stats_lines):
    train_autoencoder(tmp_path, progress_bar=progress_bar)
    assert len([line for line in stats_lines if STATS_LINE in line]) == (0 if progress_bar else 2)
    err = capsys.readouterr().err
    assert ("loss=" in err and "[2/2]" in err) == progress_bar  # tqdm's bar on stderr, at 2 of 2 iterations


def test_classification_progress_bar(tmp_path, capsys, stats_lines):
    run(config_file=str(BUNDLES / "classification" / "configs" / "train.json"), num_steps=10, batch_size=2, output_dir=str(tmp_path), progress_bar=True)
    assert "loss=" in capsys.readouterr().err and not stats_lines  # StatsHandler would log step 10
    assert (tmp_path / "model.pt").is_file()


def test_tensorboard_dir_writes_the_training_loss(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (the TensorBoard handler needs it)")
    from monai.handlers import TensorBoardStatsHandler
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    workflow = train_autoencoder(tmp_path, tensorboard_dir=str(tmp_path / "runs"))
    (writer,) = handlers_of(workflow.parser, TensorBoardStatsHandler)
    writer.close()  # flushes what the writer's thread holds back (a finished process flushes on exit)
    events = EventAccumulator(str(tmp_path / "runs"))
    events.Reload()
    assert [s.step for s in events.Scalars("train_loss")] == [1, 2]


def test_mlflow_tracking_uri_records_a_finished_run_with_the_loss(tmp_path):
    mlflow = pytest.importorskip("mlflow", reason="mlflow is not installed")
    pytest.importorskip("sqlalchemy", reason="MONAI's MLFlowHandler refuses file:// stores; a sqlite:// store needs sqlalchemy (full mlflow)")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    train_autoencoder(tmp_path, mlflow_tracking_uri=uri)
    client = mlflow.MlflowClient(uri)
    (found,) = client.search_runs([client.get_experiment_by_name("ldm_2d").experiment_id])
    assert found.info.run_name == "autoencoder" and found.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(found.info.run_id, "train_loss")] == [1, 2]


def test_mlflow_handler_names_the_bundle_stage_and_loss():
    pytest.importorskip("mlflow", reason="mlflow is not installed")
    from monai.handlers import MLFlowHandler

    parser = ConfigParser()
    parser.read_config(LDM_2D_AUTOENCODER)
    parser.update({"mlflow_tracking_uri": "http://127.0.0.1:9"})  # never contacted: nothing runs here
    (handler,) = handlers_of(parser, MLFlowHandler)
    assert (handler.experiment_name, handler.run_name, handler.tag_name, handler.close_on_complete) == ("ldm_2d", "autoencoder", "train_loss", True)
    assert handler.output_transform({"loss": 0.5}) == 0.5


@pytest.mark.parametrize("rank", [0, 1])
def test_trackers_are_built_on_rank_zero_only(rank, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (the TensorBoard handler needs it)")
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda group=None: rank)
    parser = ConfigParser()
    parser.read_config(LDM_2D_AUTOENCODER)
    parser.update({"tensorboard_dir": str(tmp_path / "runs")})
    names = [type(h).__name__ for h in parser.get_parsed_content("train#handlers")]
    assert names == ["StatsHandler"] + ["TensorBoardStatsHandler"] * (rank == 0)
    assert (tmp_path / "runs").is_dir() == (rank == 0)  # no stray event files from the other ranks


@pytest.mark.parametrize("rank", [0, 1])
def test_downstream_multi_gpu_attaches_training_handlers_on_rank_zero_only(rank, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.distributed, "get_rank", lambda group=None: rank)
    configs = BUNDLES / "classification" / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "train.json"), str(configs / "multi_gpu_train.json")])
    parser.update({"device": "$torch.device('cpu')", "network": "$@network_def", "output_dir": str(tmp_path), "progress_bar": True})  # no DDP here
    names = [type(h).__name__ for h in parser.get_parsed_content("train#trainer#train_handlers")]
    assert names == (["TrainingProgressBar", "CheckpointSaver"] if rank == 0 else [])
