"""Exception types raised by monai-pso.

Every error a user can cause derives from :class:`MonaiPsoError`; the CLI turns these into one line
on stderr and a non-zero exit, without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class MonaiPsoError(Exception):
    """Base class of every error a user can cause (bad input, bad configuration).

    Examples
    --------
    >>> str(IndexIntegrityError.at("index/manifest.json", "missing"))
    'index/manifest.json: missing'
    """

    @classmethod
    def at(cls, location: str | Path, problem: str) -> MonaiPsoError:
        """This error about ``location`` (a file, folder or argument): the message ``"location: problem"``."""
        return cls(f"{location}: {problem}")


class DataSourceError(MonaiPsoError):
    """A dataset, file or SOURCE string cannot be read.

    Parameters
    ----------
    location
        The file, folder or SOURCE string at fault.
    problem
        What is wrong with it, in plain words.

    Examples
    --------
    >>> str(DataSourceError("scans/a.nii.gz", "not a NIfTI file"))
    'scans/a.nii.gz: not a NIfTI file'
    """

    def __init__(self, location: str | Path, problem: str):
        self.location = str(location)
        self.problem = problem
        super().__init__(f"{self.location}: {problem}")

    @classmethod
    def at(cls, location: str | Path, problem: str) -> DataSourceError:
        """See :meth:`MonaiPsoError.at`; keeps ``location`` and ``problem`` as attributes."""
        return cls(location, problem)


class ConfigurationError(MonaiPsoError, ValueError):
    """A setting or option has a value that cannot be used (the message names the option and the problem).

    Also a :class:`ValueError`, so that callers that caught ``ValueError`` from bad settings keep working.

    Examples
    --------
    >>> str(ConfigurationError.at("confidence", "must lie strictly between 0 and 1, got 1.5"))
    'confidence: must lie strictly between 0 and 1, got 1.5'
    >>> isinstance(ConfigurationError("x"), ValueError)
    True
    """


class UnknownSourceError(DataSourceError):
    """A SOURCE string names no known kind of dataset."""


class ImageValueError(MonaiPsoError):
    """An image holds values that cannot be processed (NaN, Inf, wrong shape or dimensionality)."""


#: What to do about a folder of images of several shapes where one is needed: no SOURCE option resamples them.
RESAMPLE_HINT = "no SOURCE option resamples a folder's images: list images of one shape with datalist=, or resample the files first"

#: The end of every error about images of several shapes where one is needed (folder readers, index
#: building, calibration).
MIXED_SHAPES_HINT = f"{RESAMPLE_HINT}; mixed_shapes=1 reads them as they are (`monai-pso data summary SOURCE` counts the shapes)"


class IndexIntegrityError(MonaiPsoError):
    """A reference index on disk is missing, empty, corrupted or incomplete."""


class IntegrityError(MonaiPsoError):
    """A saved threshold file or guard description was edited after it was written (its integrity hash
    does not match its content) or carries no integrity hash (written by an older version)."""


class LedgerIntegrityError(IndexIntegrityError):
    """The release ledger beside an index was edited, truncated, reordered or cannot be read."""


class EmbedderSettingsError(MonaiPsoError):
    """An embedder's name, settings or saved files are not usable (message names the setting or file)."""


class FingerprintMismatchError(MonaiPsoError):
    """Two artefacts were made with different embedders (or settings) and must not be combined."""


class PrivacyViolationError(MonaiPsoError):
    """An image lies closer than the threshold to a training image (raised by the gate in ``raise`` mode)."""


class DicomWriteError(MonaiPsoError):
    """A synthetic image cannot be written as DICOM (shape, modality, spacing or certificate is wrong)."""


class PacsError(MonaiPsoError):
    """A PACS cannot be reached, refuses the association, or a release cannot be sent or fetched."""
