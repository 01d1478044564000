"""The classification bundle beyond binary 2D: multi-class, multi-label and 3D through ``train.json`` overrides.

Each case trains 2 steps, writes ``metrics_val.json``, then ``inference.json`` predicts the same
validation split from the saved checkpoint; the metrics must be those of the predictions (sklearn).
One case uses real MedMNIST images (the shared data has binary files only: a breast ultrasound and a
chest X-ray file are joined into a 4-class / 2-label problem).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from monai.bundle import run
from sklearn.metrics import roc_auc_score

from monai_pso.data import load_source

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = Path(__file__).resolve().parents[1] / "bundles" / "classification" / "configs"


def write_medmnist(path: Path, images: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> str:
    """A MedMNIST-format ``.npz`` (``{split}_images`` uint8, ``{split}_labels`` ``(N, 1)`` or ``(N, K)``)."""
    np.savez(path, **{f"{s}_images": images[s] for s in images}, **{f"{s}_labels": labels[s] for s in labels})
    return str(path)


def striped_npz(path: Path, mode: str, num_classes: int, spatial_dims: int, size: int = 16, per_split: int = 8) -> str:
    """Stripe ``k`` of an image is bright when class / label ``k`` is on (every class in every split)."""
    rng = np.random.default_rng(0)
    images, labels = {}, {}
    for split in ("train", "val", "test"):
        if mode == "multilabel":
            on = rng.integers(0, 2, (per_split, num_classes))
            for i in range(per_split):
                on[i, i % num_classes], on[i, (i + 1) % num_classes] = 1, 0
            labels[split] = on.astype(np.uint8)
        else:
            classes = np.arange(per_split) % num_classes
            on = np.eye(num_classes, dtype=int)[classes]
            labels[split] = classes[:, None].astype(np.uint8)
        stack = np.empty((per_split,) + (size,) * spatial_dims, np.float32)
        for k, rows in enumerate(np.array_split(np.arange(size), num_classes)):
            stack[:, rows] = (64 + 128 * on[:, k]).reshape((per_split, 1) + (1,) * (spatial_dims - 1))
        images[split] = np.clip(stack + rng.normal(0, 8, stack.shape), 0, 255).astype(np.uint8)
    return write_medmnist(path, images, labels)


def run_bundle(tmp_path: Path, monkeypatch, **overrides) -> tuple[dict, np.ndarray]:
    """Train 2 steps, then infer the validation split; returns the written metrics and the predictions."""
    monkeypatch.chdir(tmp_path)
    common = {"meta_file": str(CONFIGS / "metadata.json"), "logging_file": str(CONFIGS / "logging.conf"), "output_dir": str(tmp_path / "out")}
    run(config_file=str(CONFIGS / "train.json"), num_steps=2, batch_size=4, **common, **overrides)
    metrics = json.loads((tmp_path / "out" / "metrics_val.json").read_text())
    inference = {k: v for k, v in overrides.items() if k != "learning_rate"}
    run(config_file=str(CONFIGS / "inference.json"), inference_split="val", **common, **inference)
    return metrics, np.load(tmp_path / "out" / "predictions.npz")["pred"]


def check_against_predictions(metrics: dict, pred: np.ndarray, labels: list, mode: str, num_classes: int) -> None:
    """The bundle's metrics are those of the inference predictions of the same split (same checkpoint)."""
    assert pred.shape == (len(labels), num_classes) and metrics["n"] == len(labels)
    if mode == "multilabel":
        y = np.array(labels, dtype=int)
        assert ((0 <= pred) & (pred <= 1)).all()  # sigmoid: labels are not exclusive
        assert metrics["accuracy"] == pytest.approx(((pred >= 0.5) == y).mean())
        assert metrics["exact_match"] == pytest.approx(((pred >= 0.5) == y).all(axis=1).mean())
    else:
        y = np.eye(num_classes, dtype=int)[np.array(labels)]
        np.testing.assert_allclose(pred.sum(axis=1), 1.0, atol=1e-5)  # softmax over classes
        assert metrics["accuracy"] == pytest.approx((pred.argmax(axis=1) == np.array(labels)).mean())
    aurocs = []
    for k in range(num_classes):
        if 0 < y[:, k].sum() < len(y):
            aurocs.append(roc_auc_score(y[:, k], pred[:, k]))
            est = metrics["auroc_per_class"][str(k)]
            assert est["auroc"] == pytest.approx(aurocs[-1], abs=1e-6)
            assert 0 <= est["ci_low"] <= est["auroc"] <= est["ci_high"] <= 1
    assert metrics["auroc"]["mean_auroc"] == pytest.approx(np.mean(aurocs), abs=1e-6)
    assert 0 <= metrics["auroc"]["ci_low"] <= metrics["auroc"]["mean_auroc"] <= metrics["auroc"]["ci_high"] <= 1


@pytest.mark.parametrize("mode, num_classes, dims", [("multiclass", 3, 2), ("multilabel", 3, 2), ("multiclass", 3, 3)])
def test_bundle_multiclass_multilabel_and_3d(mode, num_classes, dims, tmp_path, monkeypatch):
    source = striped_npz(tmp_path / f"striped{dims}d.npz", mode, num_classes, dims)
    metrics, pred = run_bundle(tmp_path, monkeypatch, dataset_source=source, spatial_dims=dims, num_classes=num_classes, mode=mode)
    labels = [entry["label"] for entry in load_source(source).datalist("val")]
    check_against_predictions(metrics, pred, labels, mode, num_classes)


def test_bundle_binary_3d_phantom(tmp_path, monkeypatch):
    metrics, pred = run_bundle(tmp_path, monkeypatch, dataset_source="phantom:3d?patients=8&acquisitions=2&size=16", spatial_dims=3)
    assert pred.shape == (metrics["n"], 2) and "accuracy" in metrics and "auroc" in metrics


@pytest.mark.shared_data
@pytest.mark.parametrize("mode", ["multiclass", "multilabel"])
def test_bundle_on_real_medmnist_images(mode, shared_data, tmp_path, monkeypatch):
    """4 classes (ultrasound benign / malignant, X-ray normal / pneumonia) or 2 labels (finding, X-ray)."""
    images, labels = {}, {}
    for split, n in (("train", 16), ("val", 16), ("test", 4)):
        parts = []
        for offset, name in enumerate(("breastmnist.npz", "pneumoniamnist_balanced_subset.npz")):
            with np.load(shared_data / "medmnist" / name) as f:
                finding = f[f"{split}_labels"].ravel()
                pick = np.concatenate([np.flatnonzero(finding == c)[: n // 4] for c in (0, 1)])  # both findings
                parts.append((f[f"{split}_images"][pick], finding[pick], offset))
        images[split] = np.concatenate([p[0] for p in parts])
        if mode == "multiclass":
            labels[split] = np.concatenate([2 * offset + finding for _, finding, offset in parts])[:, None].astype(np.uint8)
        else:
            labels[split] = np.concatenate([np.stack([finding, np.full_like(finding, offset)], axis=1) for _, finding, offset in parts]).astype(np.uint8)
    source = write_medmnist(tmp_path / "us_and_xray.npz", images, labels)
    num_classes = 4 if mode == "multiclass" else 2
    metrics, pred = run_bundle(tmp_path, monkeypatch, dataset_source=source, num_classes=num_classes, mode=mode)
    val = load_source(source).datalist("val")
    assert all(isinstance(e["label"], tuple if mode == "multilabel" else int) for e in val)  # how MedMNIST gives them
    check_against_predictions(metrics, pred, [e["label"] for e in val], mode, num_classes)
    assert set(metrics["auroc_per_class"]) == {str(k) for k in range(num_classes)}
