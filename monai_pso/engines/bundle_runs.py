"""A guarded generator from a SOURCE, end to end: train an ``ldm_2d`` / ``ldm_3d`` bundle, build its guard, release.

What ``monai-pso demo`` and the study's synthetic arm run, step by step::

    bundle = prepare_bundle("ldm_2d", MODEL_DIR, {"dataset_source": SOURCE, ...})   # copy + write settings
    train_bundle(MODEL_DIR)                                                     # autoencoder, then diffusion UNet
    build_guard(SOURCE, MODEL_DIR / 'privacy')                                  # monai_pso.guard: the guard folder
    run_bundle_generation(MODEL_DIR, {"n": 16, "output_dir": RELEASE_DIR})      # guarded release

leaving::

    MODEL_DIR/configs/   the bundle's configs with the run's settings written in (later runs rebuild the same networks)
    MODEL_DIR/models/    autoencoder.pt, model.pt (the diffusion UNet, ``network_def``)
    MODEL_DIR/privacy/   the guard folder: guard.json, pixel/{index,threshold.json}, pixel-tiles/{index,threshold.json}

Settings that cannot be written to JSON (an in-memory :class:`~monai_pso.data.DataSource`) are passed to
each run as ``runtime`` overrides instead.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from monai_pso.errors import MonaiPsoError

#: Config files of a bundle's guarded generation, merged in this order (model-zoo style).
GENERATION_CONFIGS = ("train_autoencoder.json", "train_diffusion.json", "inference.json")

#: The overlay of the diversity-aware scheme, merged last (training and generation).
DIVERSITY_CONFIG = "diversity.json"

#: What training and guarded generation leave in a bundle folder (and a shipped bundle holds for its own
#: settings): the weights, the guard folder and the default release folder.
TRAINED_OUTPUTS = ("models", "privacy", "release")

#: Small networks for 2D images of 28-64 pixels (or 3D volumes of 28-32 voxels) on 2 CPU cores. The
#: diffusion UNet needs about 1500 optimisation steps to draw phantom-like images; fewer give noise.
SMALL_NETWORKS: dict[str, Any] = {
    "batch_size": 16,
    "ae_channels": [16, 32],
    "latent_channels": 2,
    "ae_num_res_blocks": 1,
    "norm_num_groups": 8,
    "disc_channels": 16,
    "disc_layers": 2,
    "lr": 1e-3,
    "diffusion_lr": 1e-3,
    "unet_channels": [32, 64],
    "unet_attention_levels": [False, True],
    "unet_num_head_channels": [0, 32],
    "unet_num_res_blocks": 1,
    "ema_decay": 0.99,
}


def bundles_folder() -> Path:
    """The folder holding the shipped bundles: ``monai_pso/bundles`` of an installed wheel, else ``bundles/`` of
    the source checkout (an editable install, or the package run from the checkout).

    The wheel gets the checkout's ``bundles/`` as package data at build time (``setup.py``).

    Examples
    --------
    >>> (bundles_folder() / "ldm_2d" / "configs" / "metadata.json").is_file()
    True
    """
    package = Path(__file__).resolve().parents[1]
    for folder in (package / "bundles", package.parent / "bundles"):
        if folder.is_dir():
            return folder
    raise MonaiPsoError(f"{package}: no bundles next to the package (reinstall monai-pso from a wheel or a source checkout)")


def bundle_names() -> list[str]:
    """The names of the shipped bundles, sorted.

    Examples
    --------
    >>> bundle_names()
    ['classification', 'denoising', 'ldm_2d', 'ldm_3d', 'super_resolution']
    """
    return sorted(path.parent.parent.name for path in bundles_folder().glob("*/configs/metadata.json"))


def bundle_template(name: str = "ldm_2d") -> Path:
    """The shipped bundle ``name`` (``bundles/NAME`` of the checkout, ``monai_pso/bundles/NAME`` of a wheel).

    Examples
    --------
    >>> bundle_template("ldm_3d").name
    'ldm_3d'
    """
    path = bundles_folder() / name
    if not (path / "configs").is_dir():
        raise MonaiPsoError(f"{name}: no such bundle (shipped bundles: {', '.join(bundle_names())})")
    return path


def configure_bundle(bundle: str | Path, settings: dict[str, Any]) -> None:
    """Write ``settings`` into a bundle's own config files, so that every later run of it (training,
    ``monai-pso generate``, ``python -m monai.bundle run``) builds the same networks.

    Each key is set in every generation config that defines it (``inference.json`` repeats the networks'
    settings of the training configs, so that it also runs alone); a new key goes into
    ``train_autoencoder.json`` and ``inference.json``.

    Examples
    --------
    >>> import tempfile
    >>> bundle = Path(tempfile.mkdtemp()) / "ldm_2d"; _ = shutil.copytree(bundle_template(), bundle)
    >>> configure_bundle(bundle, {"ae_channels": [8, 8], "num_inference_steps": 10})
    >>> json.loads((bundle / "configs" / "inference.json").read_text())["num_inference_steps"]
    10
    """
    files = [Path(bundle) / "configs" / name for name in GENERATION_CONFIGS]
    configs = {path: json.loads(path.read_text()) for path in files}
    for key, value in settings.items():
        targets = [path for path in files if key in configs[path]] or [files[0], files[-1]]
        for path in targets:
            configs[path][key] = value
    for path, config in configs.items():
        path.write_text(json.dumps(config, indent=4) + "\n")


def prepare_bundle(template: str, bundle: str | Path, settings: dict[str, Any]) -> Path:
    """Copy the ``template`` bundle to ``bundle`` and write ``settings`` into its configs.

    The template's shipped weights, guard and release (:data:`TRAINED_OUTPUTS`) are left behind: they
    belong to the template's own settings, and the new bundle is trained and guarded on its own data.

    Examples
    --------
    >>> import tempfile
    >>> root = prepare_bundle("ldm_2d", Path(tempfile.mkdtemp()) / "model", {"max_epochs": 3})
    >>> json.loads((root / "configs" / "train_autoencoder.json").read_text())["max_epochs"]
    3
    >>> (root / "models").exists()
    False
    """
    root = Path(bundle).expanduser().resolve()
    if (root / "models").exists():
        raise MonaiPsoError(f"{root}: holds a trained model already; choose another folder")
    source = bundle_template(template)
    shutil.copytree(source, root, dirs_exist_ok=True, ignore=lambda folder, names: TRAINED_OUTPUTS if Path(folder) == source else ())
    configure_bundle(root, settings)
    return root


def image_size_of(source: Any) -> list[int]:
    """The spatial size of the first training image of ``source``: the model generates at the size the guard indexes.

    Examples
    --------
    >>> image_size_of("phantom:2d?patients=4&size=24")
    [24, 24]
    """
    from monai_pso.data import load_image, load_source

    records = load_source(source).split("train")
    if not len(records):
        raise MonaiPsoError(f"{source}: no training images")
    return [int(s) for s in load_image(records[0]).shape[1:]]


def epochs_for(steps: int, n_images: int, batch_size: int) -> int:
    """Epochs that make at least ``steps`` optimisation steps over ``n_images`` in batches of ``batch_size``.

    Examples
    --------
    >>> epochs_for(1500, 44, 16)
    500
    """
    return max(1, math.ceil(steps / max(1, math.ceil(n_images / batch_size))))


@contextmanager
def _quiet_config_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="parsing config_file", category=UserWarning)  # our own bundle's configs
        yield


def run_bundle_configs(bundle: str | Path, config_names: Sequence[str], runtime: dict[str, Any] | None = None, quiet: bool = False) -> None:
    """Run a bundle's merged configs as a ``monai.bundle.ConfigWorkflow`` (initialize, run, finalize).

    ``quiet`` keeps ignite's per-epoch INFO lines ("Epoch[n] Complete", "Saved checkpoint") off the console,
    for runs that show progress bars (``progress_bar: true``); warnings still show.

    Examples
    --------
    >>> run_bundle_configs("no/such/bundle", ["train_autoencoder.json"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    monai_pso.errors.MonaiPsoError: no/such/bundle: not a bundle (no configs/train_autoencoder.json)
    """
    from monai.bundle import ConfigWorkflow

    files = _config_files(bundle, config_names)
    with _quiet_config_warnings():
        workflow = ConfigWorkflow(config_file=[str(f) for f in files], workflow_type="train", **(runtime or {}))
        with _ignite_warnings_only(quiet):  # after the bundle's logging.conf is applied
            workflow.initialize()
            workflow.run()
            workflow.finalize()


@contextmanager
def _ignite_warnings_only(quiet: bool) -> Iterator[None]:
    """While the block runs, ignite's engines log warnings only (when ``quiet``)."""
    ignite_logger = logging.getLogger("ignite")
    level = ignite_logger.level
    if quiet:
        ignite_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        ignite_logger.setLevel(level)


def _config_files(bundle: str | Path, config_names: Sequence[str]) -> list[Path]:
    files = [Path(bundle) / "configs" / name for name in config_names]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise MonaiPsoError(f"{bundle}: not a bundle (no configs/{', configs/'.join(f.name for f in missing)})")
    return files


def train_bundle(bundle: str | Path, runtime: dict[str, Any] | None = None, extra_configs: Sequence[str] = (), quiet: bool = False) -> None:
    """Train both stages of an ``ldm`` bundle: the autoencoder, then the latent diffusion UNet.

    Parameters
    ----------
    bundle
        Bundle folder (configs with the run's settings written in; ``models/`` receives the checkpoints).
    runtime
        Overrides for this run only (e.g. an in-memory ``dataset_source``).
    extra_configs
        More config files merged last (e.g. :data:`DIVERSITY_CONFIG`).
    quiet
        No per-epoch log lines (see :func:`run_bundle_configs`).
    """
    run_bundle_configs(bundle, ["train_autoencoder.json", *extra_configs], runtime, quiet)
    run_bundle_configs(bundle, ["train_autoencoder.json", "train_diffusion.json", *extra_configs], runtime, quiet)


def _user_error(error: BaseException, bundle: Path) -> MonaiPsoError | None:
    """The user error behind a config-evaluation error, if any, to show as one line: a
    :class:`MonaiPsoError`, or checkpoints that do not fit the networks the bundle's configs build.

    Examples
    --------
    >>> _user_error(RuntimeError("Error(s) in loading state_dict for DiffusionModelUNet: ..."), Path("b"))
    MonaiPsoError('b/models: the checkpoints do not fit the networks the configs build (trained with other settings, or with or without --diversity?)')
    """
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, MonaiPsoError):
            return cause
        if isinstance(cause, RuntimeError) and "Error(s) in loading state_dict" in str(cause):
            return MonaiPsoError(
                f"{bundle / 'models'}: the checkpoints do not fit the networks the configs build "
                "(trained with other settings, or with or without --diversity?)"
            )
        cause = cause.__cause__
    return None


def generation_parser(bundle: str | Path, overrides: dict[str, Any], extra_configs: Sequence[str] = ()) -> Any:
    """The ``monai.bundle.ConfigParser`` of a trained bundle's guarded generation, with ``overrides`` (nothing parsed yet).

    ``generation_parser(B, {}).get_parsed_content("workflow")`` is the run's
    :class:`~monai_pso.engines.GenerationWorkflow` alone, without the guard or a release (to draw a request again).
    """
    from monai.bundle import ConfigParser

    root = Path(bundle)
    files = _config_files(root, (*GENERATION_CONFIGS, *extra_configs))
    for checkpoint in ("autoencoder.pt", "model.pt"):
        if not (root / "models" / checkpoint).is_file():
            raise MonaiPsoError(f"{root / 'models' / checkpoint}: not found; train the bundle first (see its docs/README.md)")
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    parser.update({"bundle_root": str(root.resolve()), **overrides})
    return parser


def run_bundle_generation(bundle: str | Path, overrides: dict[str, Any], extra_configs: Sequence[str] = (), quiet: bool = False) -> Path:
    """Run a bundle's ``inference.json`` (guarded generation) with ``overrides``; returns the release folder.

    Parameters
    ----------
    bundle
        Trained bundle folder (configs, models, privacy).
    overrides
        Config values (``n``, ``output_dir``, ``format``...).
    extra_configs
        More config files of the bundle merged last (e.g. :data:`DIVERSITY_CONFIG`).
    quiet
        No per-epoch log lines (see :func:`run_bundle_configs`).

    Examples
    --------
    >>> run_bundle_generation("no/such/bundle", {})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    monai_pso.errors.MonaiPsoError: no/such/bundle: not a bundle (no configs/train_autoencoder.json, ...)
    """
    root = Path(bundle)
    parser = generation_parser(root, overrides, extra_configs)
    try:
        with _quiet_config_warnings(), _ignite_warnings_only(quiet):
            for index in range(len(parser["run"])):
                parser.get_parsed_content(f"run#{index}")
    except RuntimeError as error:  # ConfigExpression wraps user errors; show them as one line
        cause = _user_error(error, root)
        if cause is None:
            raise
        raise cause from None
    return Path(parser.get_parsed_content("output_dir")).expanduser().resolve()
