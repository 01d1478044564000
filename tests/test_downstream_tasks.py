"""Classification tasks end to end: binary, multi-class and multi-label, 2D and 3D.

``make_task`` -> ``make_trainer`` -> ``evaluate`` -> ``summarize`` -> ``compare``, checked against
sklearn and against a network that reads the answer off the image (AUROC exactly 1). Also the macro-mean
DeLong statistics the multi-class and multi-label summaries use.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score
from torch import nn

from monai_pso.data import DataSource, ImageRecord
from monai_pso.downstream import statistics
from monai_pso.downstream.tasks import make_task
from monai_pso.downstream.training import evaluate, make_dataset, make_trainer, materialize
from monai_pso.errors import ConfigurationError, DataSourceError

pytestmark = pytest.mark.usefixtures("one_thread")


def striped_source(mode: str, num_classes: int, spatial_dims: int, size: int = 16, n: int = 24, seed: int = 0) -> DataSource:
    """Images of ``num_classes`` stripes along the first spatial axis; stripe ``k`` is bright (0.75) when label ``k`` is on.

    Multi-class and binary: one stripe on (the class, cycling so that every class appears in both
    splits); multi-label: a random 0/1 vector, stored as a tuple like MedMNIST's multi-label files.
    Even cases are train, odd cases test.
    """
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        if mode == "multilabel":
            on = rng.integers(0, 2, num_classes)
            on[(i // 2) % num_classes], on[(i // 2 + 1) % num_classes] = 1, 0  # every label on and off in both splits
            label = tuple(int(v) for v in on)
        else:
            on = np.eye(num_classes, dtype=int)[(i // 2) % num_classes]
            label = (i // 2) % num_classes
        image = np.empty((1,) + (size,) * spatial_dims, np.float32)
        for k, rows in enumerate(np.array_split(np.arange(size), num_classes)):
            image[0, rows] = 0.25 + 0.5 * on[k]
        image += rng.normal(0, 0.03, image.shape).astype(np.float32)
        records.append(ImageRecord(f"case-{i:02d}", f"p{i:02d}", np.clip(image, 0, 1), label=label, split="train" if i % 2 == 0 else "test", normalize="none"))
    return DataSource(records, f"striped {mode} {spatial_dims}D")


class StripeReader(nn.Module):
    """A perfect classifier of :func:`striped_source` images: logit ``k`` grows with stripe ``k``'s mean."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.scale = nn.Parameter(torch.tensor(40.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stripes = torch.tensor_split(x, self.num_classes, dim=2)
        return torch.stack([self.scale * (s.mean(dim=tuple(range(1, x.ndim))) - 0.5) for s in stripes], dim=1)


CASES = [("binary", 2, 2), ("multiclass", 3, 2), ("multilabel", 4, 2), ("multiclass", 3, 3), ("multilabel", 3, 3)]


@pytest.mark.parametrize("mode, num_classes, dims", CASES)
def test_perfect_network_scores_one_per_class(mode, num_classes, dims):
    task = make_task("classification", spatial_dims=dims, num_classes=num_classes, mode=mode)
    source = striped_source(mode, num_classes, dims)
    cases = materialize(task, source.datalist("test"))
    outputs, targets = evaluate(task, StripeReader(num_classes), cases, batch_size=5)  # batches of uneven size
    n = len(cases)
    assert outputs.shape == (n, num_classes) and outputs.dtype == np.float32
    assert targets.shape == ((n, num_classes) if mode == "multilabel" else (n,))
    expected = np.array([r.label for r in source.split("test")])
    np.testing.assert_array_equal(targets, expected)  # in case order, tuples become label vectors
    if mode == "multilabel":
        assert ((0 <= outputs) & (outputs <= 1)).all()  # sigmoid per label
    else:
        np.testing.assert_allclose(outputs.sum(axis=1), 1.0, atol=1e-5)  # softmax over classes

    summary = task.summarize(outputs, targets)
    assert summary["n"] == n and summary["accuracy"] == 1.0
    if mode == "binary":
        assert summary["auroc"]["auroc"] == 1.0 and summary["auroc"]["ci_high"] == 1.0
    else:
        assert set(summary["auroc_per_class"]) == {str(k) for k in range(num_classes)}
        assert all(est["auroc"] == 1.0 for est in summary["auroc_per_class"].values())
        assert summary["auroc"]["mean_auroc"] == 1.0 and summary["auroc"]["classes"] == list(range(num_classes))
    if mode == "multilabel":
        assert summary["exact_match"] == 1.0 and set(summary["accuracy_per_label"].values()) == {1.0}

    # a network that ranks the test cases at random is significantly worse than the perfect one
    shuffled = outputs[np.random.default_rng(0).permutation(n)]
    comparison = task.compare((outputs, targets), (shuffled, targets))
    assert comparison["auroc_difference"]["difference"] > 0 and comparison["auroc_difference"]["auroc_a"] == 1.0
    same = task.compare((outputs, targets), (outputs, targets))["auroc_difference"]
    assert same["difference"] == 0.0 and same["p_value"] == 1.0


@pytest.mark.parametrize("mode, num_classes, dims", CASES[1:])
def test_two_steps_of_training_then_statistics_match_sklearn_and_delong(mode, num_classes, dims):
    torch.manual_seed(0)
    task = make_task("classification", spatial_dims=dims, num_classes=num_classes, mode=mode)
    assert isinstance(task.loss(), nn.BCEWithLogitsLoss if mode == "multilabel" else nn.CrossEntropyLoss)
    source = striped_source(mode, num_classes, dims)
    network = task.network()
    trainer = make_trainer(task, network, make_dataset(task, source.datalist("train")), steps=2, batch_size=4)
    trainer.run()
    assert trainer.state.iteration == 2 and np.isfinite(trainer.state.output["loss"].item())
    cases = materialize(task, source.datalist("test"))
    outputs, targets = evaluate(task, network, cases)
    summary = task.summarize(outputs, targets)

    y = task.indicators(targets)
    assert y.shape == outputs.shape == (len(cases), num_classes)
    aurocs = []
    for k in range(num_classes):
        est = summary["auroc_per_class"][str(k)]
        assert est["auroc"] == pytest.approx(roc_auc_score(y[:, k], outputs[:, k]), abs=1e-12)
        assert 0.0 <= est["ci_low"] <= est["auroc"] <= est["ci_high"] <= 1.0
        assert est["n_positive"] == y[:, k].sum() and est["n_positive"] + est["n_negative"] == len(y)
        aurocs.append(est["auroc"])
    mean = summary["auroc"]
    assert mean["mean_auroc"] == pytest.approx(np.mean(aurocs)) and mean["se"] > 0
    assert 0.0 <= mean["ci_low"] <= mean["mean_auroc"] <= mean["ci_high"] <= 1.0
    if mode == "multilabel":
        expected = ((outputs >= 0.5) == y).mean(axis=0)
        assert [summary["accuracy_per_label"][str(k)] for k in range(num_classes)] == pytest.approx(expected)
        assert summary["accuracy"] == pytest.approx(expected.mean())
        assert summary["exact_match"] == pytest.approx(((outputs >= 0.5) == y).all(axis=1).mean())
    else:
        assert summary["accuracy"] == pytest.approx((outputs.argmax(axis=1) == targets).mean())

    # the paired comparison with a second arm: per class the paired DeLong test, and one for the mean
    other = np.clip(outputs + np.random.default_rng(1).normal(0, 0.2, outputs.shape), 0, 1)
    comparison = task.compare((outputs, targets), (other, targets))
    for k in range(num_classes):
        d = comparison["auroc_difference_per_class"][str(k)]
        assert d == pytest.approx(statistics.delong_test(y[:, k], outputs[:, k], other[:, k]).to_dict())
        assert d["difference"] == pytest.approx(roc_auc_score(y[:, k], outputs[:, k]) - roc_auc_score(y[:, k], other[:, k]))
    d = comparison["auroc_difference"]
    other_mean = np.mean([roc_auc_score(y[:, k], other[:, k]) for k in range(num_classes)])
    assert (d["auroc_a"], d["auroc_b"]) == (pytest.approx(mean["mean_auroc"]), pytest.approx(other_mean))
    assert d["ci_low"] <= d["difference"] <= d["ci_high"] and 0.0 <= d["p_value"] <= 1.0
    with pytest.raises(ValueError, match="same test cases"):
        task.compare((outputs, targets), (other[::-1], targets[::-1]))


def test_absent_class_is_left_out_of_the_mean():
    task = make_task("classification", num_classes=4, mode="multiclass")
    targets = np.array([0, 1, 2, 0, 1, 2, 0, 1])  # class 3 never occurs
    outputs = np.eye(4, dtype=np.float32)[targets] * 0.7 + 0.075
    summary = task.summarize(outputs, targets)
    assert set(summary["auroc_per_class"]) == {"0", "1", "2"} and summary["auroc"]["classes"] == [0, 1, 2]
    assert summary["auroc"]["mean_auroc"] == 1.0 and summary["accuracy"] == 1.0


def test_labels_as_the_datalist_gives_them():
    multilabel = make_task("classification", num_classes=3, mode="multilabel")
    for value in ((1, 0, 1), [1, 0, 1], np.array([[1], [0], [1]], np.uint8), torch.tensor([1, 0, 1])):
        label = multilabel._label(value)
        assert label.dtype == torch.float32 and label.tolist() == [1.0, 0.0, 1.0]
    for bad in ((1, 0), 1, (1, 2, 0)):
        with pytest.raises(ConfigurationError, match="0/1 vector of 3"):
            multilabel._label(bad)
    multiclass = make_task("classification", num_classes=3, mode="multiclass")
    for value in (2, np.int64(2), np.array([2], np.uint8), [2]):
        label = multiclass._label(value)
        assert label.dtype == torch.long and label.item() == 2
    with pytest.raises(ConfigurationError, match="multi-label vector"):
        multiclass._label((0, 1, 0))  # used to take the first element silently
    with pytest.raises(ConfigurationError, match="outside 0..2"):
        multiclass._label(3)
    with pytest.raises(ConfigurationError, match="num_classes=2"):
        make_task("classification", num_classes=3, mode="binary")


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("segmentation", {}, "task='segmentation': unknown"),
        ("classification", {"num_class": 3}, "num_class"),
        ("classification", {"mode": "ordinal"}, "mode='ordinal'"),
        ("denoising", {"spatial_dims": 4}, "spatial_dims=4"),
        ("super_resolution", {"factor": 3}, "factor=3"),
        ("denoising", {"dose": 2.0}, "dose=2.0"),
    ],
)
def test_bad_task_options_name_the_option(name, options, message):
    with pytest.raises(ConfigurationError, match=message):
        task = make_task(name, **options)
        task.target_transforms()


def test_a_test_set_without_both_classes_is_refused_before_training():
    binary = make_task("classification")
    binary.check_test_cases([{"label": torch.tensor(k)} for k in (0, 1, 1)], "test split")
    with pytest.raises(DataSourceError, match="test split: no class has both"):
        binary.check_test_cases([{"label": torch.tensor(1)}] * 3, "test split")
    multiclass = make_task("classification", num_classes=3, mode="multiclass")
    multiclass.check_test_cases([{"label": torch.tensor(k)} for k in (0, 0, 2)], "test split")  # classes 0 and 2 defined
    with pytest.raises(DataSourceError):
        multiclass.check_test_cases([{"label": torch.tensor(2)}] * 2, "test split")
    make_task("denoising").check_test_cases([], "test split")  # restoration: any test set


def _correlated(rng, n, num_classes, noise):
    y = np.eye(num_classes, dtype=int)[rng.integers(0, num_classes, n)]
    common = rng.normal(0, 1, (n, num_classes))  # both models see the same hard cases
    return y, y + 0.7 * common + rng.normal(0, noise[0], y.shape), y + 0.7 * common + rng.normal(0, noise[1], y.shape)


def test_mean_delong_reduces_to_delong_for_one_class_and_matches_a_bootstrap():
    rng = np.random.default_rng(3)
    y, a, b = _correlated(rng, 120, 2, (0.8, 1.2))
    single = statistics.delong_mean_auroc(y[:, 1:], a[:, 1:])
    est = statistics.delong_auroc(y[:, 1], a[:, 1])
    assert (single["mean_auroc"], single["se"], single["ci_low"], single["ci_high"]) == pytest.approx((est.auroc, est.se, est.ci_low, est.ci_high))
    assert statistics.delong_mean_test(y[:, 1:], a[:, 1:], b[:, 1:]).to_dict() == pytest.approx(statistics.delong_test(y[:, 1], a[:, 1], b[:, 1]).to_dict())

    y, a, b = _correlated(rng, 240, 3, (0.8, 2.0))
    mean, diff = statistics.delong_mean_auroc(y, a), statistics.delong_mean_test(y, a, b)
    assert mean["mean_auroc"] == pytest.approx(np.mean([roc_auc_score(y[:, k], a[:, k]) for k in range(3)]))
    assert diff.auroc_b == pytest.approx(np.mean([roc_auc_score(y[:, k], b[:, k]) for k in range(3)]))

    def mean_auc(index, scores):  # Mann-Whitney AUROC per class from ranks (fast), averaged
        values = []
        for k in range(3):
            labels, ranks = y[index, k], rankdata(scores[index, k])
            m = labels.sum()
            values.append((ranks[labels == 1].sum() - m * (m + 1) / 2) / (m * (len(labels) - m)))
        return np.mean(values)

    draws = [np.random.default_rng(i).integers(0, len(y), len(y)) for i in range(400)]
    boot_a, boot_b = np.array([mean_auc(d, a) for d in draws]), np.array([mean_auc(d, b) for d in draws])
    assert mean["se"] == pytest.approx(boot_a.std(), rel=0.15) and diff.se == pytest.approx((boot_a - boot_b).std(), rel=0.15)
    assert diff.difference > 0 and diff.p_value < 0.05


def test_report_states_the_multiclass_comparison():
    from monai_pso.downstream.report import conclusions

    task = make_task("classification", num_classes=3, mode="multiclass")
    rng = np.random.default_rng(4)
    targets = np.arange(60) % 3
    arms = {arm: np.eye(3)[targets] * weight + rng.uniform(0, 1, (60, 3)) for arm, weight in (("real", 1.0), ("synthetic", 0.3))}
    report = {
        "task": "classification",
        "arms": {arm: task.summarize(out, targets) for arm, out in arms.items()},
        "comparisons": {"synthetic vs real": task.compare((arms["synthetic"], targets), (arms["real"], targets))},
        "guard": {"tau": 0.1, "violations": 0, "verification": {"n_synthetic": 5, "n_training": 9, "violations": 0}},
    }
    line = conclusions(report)[0]
    mean = report["comparisons"]["synthetic vs real"]["auroc_difference"]
    assert line.startswith(f"synthetic-trained AUROC {report['arms']['synthetic']['auroc']['mean_auroc']:.3f}")
    assert f"difference {mean['difference']:+.3f}" in line and "paired DeLong test per class and for the macro-mean AUROC" in line
    assert mean["difference"] < 0 and mean["p_value"] < 0.05
