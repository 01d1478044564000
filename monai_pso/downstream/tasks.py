"""The task abstraction shared by the classification, denoising and super-resolution bundles and the study.

A :class:`DownstreamTask` knows, for one task: the preprocessing of a monai-pso datalist entry (load,
intensity preset, optional resize, then the task's own input/target construction), the network, the
loss, how an engine batch becomes ``(input, target)``, the per-case outputs used for evaluation, and
how to compare the networks trained on real and on synthetic data (:meth:`DownstreamTask.compare`).

Examples
--------
>>> task = make_task("denoising", spatial_dims=2, dose=0.25)
>>> task.input_key, task.target_key, task.name
('degraded', 'image', 'denoising')
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import PSNRMetric, RMSEMetric, SSIMMetric
from monai.transforms import Compose, EnsureTyped, Lambdad, MapTransform, Resized, SelectItemsd
from torch import nn

from monai_pso.data import IntensityPresetd, LoadRecordImaged
from monai_pso.data.degrade import Downsampled, SimulateLowDosed
from monai_pso.downstream import statistics
from monai_pso.downstream.networks import ResidualUNet, densenet
from monai_pso.errors import ConfigurationError, DataSourceError

#: Task names accepted by :func:`make_task` and ``monai-pso study --task``.
TASKS = ("classification", "denoising", "super_resolution")
#: Classification modes.
MODES = ("binary", "multiclass", "multilabel")


class DownstreamTask(ABC):
    """One downstream task: data pipeline, network, loss and evaluation.

    Parameters
    ----------
    spatial_dims
        2 or 3.
    image_size
        Resize every image to this spatial size (``None`` keeps the source size; one size is needed
        when real and synthetic images differ).
    """

    name: str = "task"
    input_key: str = "image"
    target_key: str = "label"

    def __init__(self, spatial_dims: int = 2, image_size: int | Sequence[int] | None = None) -> None:
        if spatial_dims not in (2, 3):
            raise ConfigurationError(f"spatial_dims={spatial_dims!r}: must be 2 or 3")
        self.spatial_dims = spatial_dims
        self.image_size = image_size

    # data
    def load_transforms(self) -> list[MapTransform]:
        """Record entry -> float ``image`` in ``[0, 1]`` (deterministic, cacheable)."""
        steps: list[MapTransform] = [LoadRecordImaged("image"), IntensityPresetd("image")]
        if self.image_size is not None:
            size = (self.image_size,) * self.spatial_dims if isinstance(self.image_size, int) else tuple(self.image_size)
            steps.append(Resized("image", spatial_size=size, mode="area"))
        return steps

    def load_images(self, datalist: list[dict[str, Any]]) -> np.ndarray:
        """The images of ``datalist`` as :meth:`load_transforms` loads them, stacked into one float32 array ``(N, 1, *spatial)``.

        This is what the network sees before the task's degradation or label handling: the study uses
        it to compare synthetic and training images, and the report to show examples.
        """
        load = Compose(self.load_transforms())
        return np.stack([np.asarray(load(dict(entry))["image"], dtype=np.float32) for entry in datalist])

    def check_test_cases(self, cases: Sequence[dict[str, Any]], location: str) -> None:
        """Raise :class:`~monai_pso.errors.DataSourceError` naming ``location`` when ``cases`` (preprocessed
        test entries, see :func:`~monai_pso.downstream.training.materialize`) cannot evaluate the task;
        every test set can by default."""
        return None

    @abstractmethod
    def target_transforms(self) -> list[MapTransform]:
        """Builds ``input_key`` and ``target_key`` from the loaded image and the entry."""

    def transforms(self) -> Compose:
        """The full preprocessing of a datalist entry (used by the bundles and the study): only the input and
        target are kept, so that real and synthetic entries with different metadata batch together."""
        keys = [self.input_key, self.target_key]
        return Compose(self.load_transforms() + self.target_transforms() + [EnsureTyped(keys, track_meta=False), SelectItemsd(keys)])

    def prepare_batch(self, batchdata: dict, device: torch.device | str | None = None, non_blocking: bool = False, **kwargs: Any):
        """``prepare_batch`` of :class:`monai.engines.SupervisedTrainer`: ``(input, target)`` on ``device``."""
        return (
            batchdata[self.input_key].to(device=device, non_blocking=non_blocking),
            batchdata[self.target_key].to(device=device, non_blocking=non_blocking),
        )

    # model
    @abstractmethod
    def network(self) -> nn.Module:
        """A freshly initialised network."""

    @abstractmethod
    def loss(self) -> nn.Module:
        """The training loss, called as ``loss(network_output, target)``."""

    def outputs(self, pred: torch.Tensor) -> torch.Tensor:
        """Network output -> what is evaluated (probabilities, clipped images)."""
        return pred

    # evaluation
    @abstractmethod
    def summarize(self, outputs: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
        """Metrics of one network on the test set (with intervals)."""

    @abstractmethod
    def compare(self, candidate: tuple[np.ndarray, np.ndarray], reference: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
        """Paired comparison of two networks' ``(outputs, targets)`` on the same test cases."""


class ClassificationTask(DownstreamTask):
    """Binary, multi-class or multi-label classification of 2D or 3D images with a MONAI DenseNet.

    Parameters
    ----------
    num_classes
        Number of classes (2 for binary) or labels (multi-label).
    mode
        ``"binary"``, ``"multiclass"`` or ``"multilabel"``.
    network_size
        ``"small"`` (CPU) or ``"121"`` (DenseNet121).

    Examples
    --------
    >>> task = ClassificationTask(spatial_dims=2, num_classes=2)
    >>> task.network()(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 2])
    """

    name = "classification"

    def __init__(self, spatial_dims: int = 2, num_classes: int = 2, mode: str = "binary", network_size: str = "small", image_size=None) -> None:
        super().__init__(spatial_dims, image_size)
        if mode not in MODES:
            raise ConfigurationError(f"mode={mode!r}: unknown classification mode, choose from {', '.join(MODES)}")
        if mode == "binary" and num_classes != 2:
            raise ConfigurationError(f"num_classes={num_classes!r}: binary classification has num_classes=2")
        self.num_classes, self.mode, self.network_size = num_classes, mode, network_size

    def _label(self, value) -> torch.Tensor:
        """A datalist label -> a class index (``long``) or, for multi-label, a ``(num_classes,)`` 0/1 float vector."""
        values = np.asarray(value)
        if self.mode == "multilabel":
            if values.size != self.num_classes or not np.isin(values, (0, 1)).all():
                raise ConfigurationError(f"mode='multilabel': needs a 0/1 vector of {self.num_classes} labels per image, got {value!r}")
            return torch.as_tensor(values.astype(np.float32).reshape(self.num_classes))
        if values.size != 1:
            raise ConfigurationError(f"mode={self.mode!r}: needs one class index per image, got {value!r} (a multi-label vector? use mode='multilabel')")
        index = int(values.ravel()[0])
        if not 0 <= index < self.num_classes:
            raise ConfigurationError(f"num_classes={self.num_classes}: class label {index} is outside 0..{self.num_classes - 1}")
        return torch.as_tensor(index, dtype=torch.long)

    def check_test_cases(self, cases: Sequence[dict[str, Any]], location: str) -> None:
        """Refuse a test set on which no AUROC is defined (no class with both a positive and a negative case).

        Examples
        --------
        >>> ClassificationTask().check_test_cases([{"label": torch.tensor(1)}] * 3, "test split")
        Traceback (most recent call last):
        ...
        monai_pso.errors.DataSourceError: test split: no class has both a positive and a negative test case, so the AUROC is undefined; use more test patients
        """
        y = self.indicators(np.stack([np.asarray(case[self.target_key]) for case in cases]))
        defined = 0 < y[:, 1].sum() < len(y) if self.mode == "binary" else bool(statistics.defined_classes(y))
        if not defined:
            raise DataSourceError(location, "no class has both a positive and a negative test case, so the AUROC is undefined; use more test patients")

    def target_transforms(self) -> list[MapTransform]:
        return [Lambdad("label", self._label)]

    def network(self) -> nn.Module:
        return densenet(self.spatial_dims, 1, self.num_classes, self.network_size)

    def loss(self) -> nn.Module:
        return nn.BCEWithLogitsLoss() if self.mode == "multilabel" else nn.CrossEntropyLoss()

    def outputs(self, pred: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(pred) if self.mode == "multilabel" else torch.softmax(pred, dim=1)

    def indicators(self, targets: np.ndarray) -> np.ndarray:
        """Targets as an ``(n, K)`` 0/1 matrix."""
        return targets.astype(int) if self.mode == "multilabel" else np.eye(self.num_classes, dtype=int)[targets.astype(int)]

    def summarize(self, outputs: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
        """Accuracy and AUROC with DeLong 95% intervals.

        Binary: ``auroc`` of class 1. Multi-class (one-vs-rest) and multi-label (per label):
        ``auroc_per_class`` and their macro mean ``auroc`` (``mean_auroc``, with the DeLong interval of
        :func:`~monai_pso.downstream.statistics.delong_mean_auroc`); classes without both a positive and a
        negative test case have no AUROC and are left out of the mean. Multi-label ``accuracy`` is the
        mean over labels at threshold 0.5, with ``accuracy_per_label`` and ``exact_match`` (every label right).
        """
        y = self.indicators(targets)
        result: dict[str, Any] = {"n": int(len(targets))}
        if self.mode == "multilabel":
            correct = (outputs >= 0.5) == y.astype(bool)
            result["accuracy"] = float(correct.mean())
            result["accuracy_per_label"] = {str(k): float(v) for k, v in enumerate(correct.mean(axis=0))}
            result["exact_match"] = float(correct.all(axis=1).mean())
        else:
            result["accuracy"] = float((outputs.argmax(axis=1) == targets.astype(int)).mean())
        if self.mode == "binary":
            defined = 0 < y[:, 1].sum() < len(y)
            result["auroc"] = statistics.delong_auroc(y[:, 1], outputs[:, 1]).to_dict() if defined else None  # one class only: undefined
            return result
        classes = statistics.defined_classes(y)
        result["auroc_per_class"] = {str(k): statistics.delong_auroc(y[:, k], outputs[:, k]).to_dict() for k in classes}
        result["auroc"] = statistics.delong_mean_auroc(y, outputs) if classes else None
        return result

    def compare(self, candidate, reference) -> dict[str, Any]:
        """Paired DeLong tests of ``candidate - reference`` AUROC on the same test cases (per class and for the macro mean)."""
        (out_c, targets), (out_r, targets_r) = candidate, reference
        if np.shape(targets) != np.shape(targets_r) or not np.array_equal(targets, targets_r):
            raise ValueError("a paired comparison needs both networks' outputs on the same test cases in the same order")
        y = self.indicators(targets)
        if self.mode == "binary":
            return {"auroc_difference": statistics.delong_test(y[:, 1], out_c[:, 1], out_r[:, 1]).to_dict(), "method": "paired DeLong test"}
        classes = statistics.defined_classes(y)
        return {
            "auroc_difference_per_class": {str(k): statistics.delong_test(y[:, k], out_c[:, k], out_r[:, k]).to_dict() for k in classes},
            "auroc_difference": statistics.delong_mean_test(y, out_c, out_r).to_dict(),
            "method": "paired DeLong test per class and for the macro-mean AUROC",
        }


class RestorationTask(DownstreamTask):
    """Image-to-image restoration: the network sees ``degraded`` and predicts the clean ``image``.

    Parameters
    ----------
    degradation
        ``"low_dose"`` (:class:`monai_pso.data.degrade.SimulateLowDosed`) or ``"downsample"``
        (:class:`monai_pso.data.degrade.Downsampled`, interpolated back to the original size).
    channels
        UNet feature channels per level.
    degradation_params
        Passed to the degradation (``dose``, ``kind``, ``counts``; ``factor``).
    """

    name = "restoration"
    input_key = "degraded"
    target_key = "image"
    metrics = ("psnr", "ssim", "rmse")
    #: Metrics compared with paired tests (higher is better).
    compared = ("psnr", "ssim")

    def __init__(self, spatial_dims: int = 2, degradation: str = "low_dose", channels: Sequence[int] = (16, 32, 64), image_size=None, **degradation_params) -> None:
        super().__init__(spatial_dims, image_size)
        if degradation not in ("low_dose", "downsample"):
            raise ConfigurationError(f"degradation={degradation!r}: unknown, choose low_dose or downsample")
        self.degradation, self.channels, self.degradation_params = degradation, tuple(channels), degradation_params

    def target_transforms(self) -> list[MapTransform]:
        if self.degradation == "low_dose":
            return [SimulateLowDosed("image", output_key=self.input_key, **self.degradation_params)]
        return [Downsampled("image", output_key=self.input_key, resize_back=True, mode="linear", **self.degradation_params)]

    def network(self) -> nn.Module:
        return ResidualUNet(self.spatial_dims, 1, self.channels)

    def loss(self) -> nn.Module:
        return nn.MSELoss()

    def outputs(self, pred: torch.Tensor) -> torch.Tensor:
        return pred.clamp(0.0, 1.0)

    def per_case(self, outputs: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
        """PSNR, SSIM and RMSE of every test image (data range 1)."""
        pred, target = torch.as_tensor(outputs, dtype=torch.float32), torch.as_tensor(targets, dtype=torch.float32)
        window = min(11, min(pred.shape[2:]) // 2 * 2 - 1)
        measures = {
            "psnr": PSNRMetric(max_val=1.0, reduction="none"),
            "ssim": SSIMMetric(spatial_dims=self.spatial_dims, data_range=1.0, win_size=window, reduction="none"),
            "rmse": RMSEMetric(reduction="none"),
        }
        return {name: metric(pred, target).reshape(len(pred), -1).mean(dim=1).numpy().astype(np.float64) for name, metric in measures.items()}

    def summarize(self, outputs: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
        return {name: {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0} for name, v in self.per_case(outputs, targets).items()} | {"n": int(len(targets))}

    def compare(self, candidate, reference) -> dict[str, Any]:
        cand, ref = self.per_case(*candidate), self.per_case(*reference)
        return {name: statistics.paired_tests(cand[name], ref[name]) for name in self.compared} | {"method": "paired t-test and Wilcoxon signed-rank per test image"}


class DenoisingTask(RestorationTask):
    """Low-dose denoising: noise of dose fraction ``dose`` (``noise`` ``"poisson"`` or ``"gaussian"``,
    ``counts`` quanta for the value 1.0 at full dose; see :mod:`monai_pso.data.degrade`).

    Examples
    --------
    >>> DenoisingTask(2, dose=0.25).degradation
    'low_dose'
    """

    name = "denoising"

    def __init__(self, spatial_dims: int = 2, dose: float = 0.25, noise: str = "poisson", counts: float = 1e4, channels=(16, 32, 64), image_size=None) -> None:
        super().__init__(spatial_dims, "low_dose", channels, image_size, dose=dose, kind=noise, counts=counts)


class SuperResolutionTask(RestorationTask):
    """2x or 4x super-resolution: a residual UNet on the interpolated low-resolution image.

    Examples
    --------
    >>> SuperResolutionTask(2, factor=4).degradation_params
    {'factor': 4}
    """

    name = "super_resolution"

    def __init__(self, spatial_dims: int = 2, factor: int = 2, channels=(16, 32, 64), image_size=None) -> None:
        if factor not in (2, 4):
            raise ConfigurationError(f"factor={factor!r}: super-resolution factor must be 2 or 4")
        super().__init__(spatial_dims, "downsample", channels, image_size, factor=factor)


def make_task(name: str, **options: Any) -> DownstreamTask:
    """The task called ``name`` (one of :data:`TASKS`) with its options.

    Examples
    --------
    >>> make_task("super_resolution", spatial_dims=3, factor=2).spatial_dims
    3
    """
    classes = {"classification": ClassificationTask, "denoising": DenoisingTask, "super_resolution": SuperResolutionTask}
    if name not in classes:
        raise ConfigurationError(f"task={name!r}: unknown, choose from {', '.join(TASKS)}")
    try:
        inspect.signature(classes[name]).bind(**options)
    except TypeError as error:
        raise ConfigurationError(f"task={name!r} options {sorted(options)}: {error}") from None
    return classes[name](**options)
