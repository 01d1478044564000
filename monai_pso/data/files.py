"""Reading one image file (NIfTI, PNG/JPEG, DICOM file or DICOM series) into raw values.

Arrays come back channel first, ``(1, *spatial)``, with the raw values of the file (DICOM with its
rescale slope and intercept applied, see :mod:`monai_pso.data.dicom`). Axes keep each format's own
order: NIfTI voxel axes ``(i, j, k)`` as nibabel and MONAI's ``LoadImage`` give them; PNG/JPEG and
DICOM in display order ``(rows, columns)``, slices first for DICOM volumes. Colour pictures are
converted to grey (ITU-R 601 luma, as Pillow's ``convert("L")``).

:func:`read_image_header` tells the shape and spacing from the file header alone, without decoding
the pixels, so that a folder of thousands of files can be checked cheaply.

Examples
--------
>>> import tempfile, numpy as np, nibabel as nib
>>> path = tempfile.mkdtemp() + "/scan.nii.gz"
>>> nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.int16), np.diag([2.0, 2.0, 3.0, 1.0])), path)
>>> read_image_file(path).shape, read_image_header(path).spacing
((1, 4, 5, 6), (2.0, 2.0, 3.0))
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monai_pso.errors import DataSourceError, ImageValueError

#: File kinds a folder may hold (one kind per folder).
NIFTI, PICTURE, DICOM = "nifti", "picture", "dicom"
_PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
#: ITU-R 601 luma weights (what Pillow's ``convert("L")`` uses).
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class ImageHeader:
    """What a file header tells without decoding the pixels.

    Parameters
    ----------
    shape
        Spatial shape, in the axis order :func:`read_image_file` returns.
    spacing
        Voxel spacing in mm for the same axes, or ``None`` when the file does not say.
    dtype
        NumPy dtype name of the raw values when the header tells it (``"uint8"`` for 8-bit pictures).
    """

    shape: tuple[int, ...]
    spacing: tuple[float, ...] | None = None
    dtype: str | None = None


def file_kind(path: str | Path) -> str | None:
    """``"nifti"``, ``"picture"`` (PNG/JPEG), ``"dicom"`` or ``None`` for anything else.

    DICOM files are recognised by suffix (``.dcm``, ``.dicom``, ``.ima``) or, without one, by the
    ``DICM`` marker at byte 128.

    Examples
    --------
    >>> file_kind("a/b.nii.gz"), file_kind("x.PNG"), file_kind("notes.txt")
    ('nifti', 'picture', None)
    """
    name = Path(path).name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return NIFTI
    if name.endswith(_PICTURE_SUFFIXES):
        return PICTURE
    if name.endswith(_DICOM_SUFFIXES):
        return DICOM
    try:
        with open(path, "rb") as handle:
            preamble = handle.read(132)
    except OSError:
        return None
    return DICOM if preamble[128:132] == b"DICM" else None


def strip_suffix(name: str) -> str:
    """A file name or relative path without its image suffix (``.nii.gz`` counts as one).

    Examples
    --------
    >>> strip_suffix("t1/IXI012_T1.nii.gz"), strip_suffix("ct/slice.dcm"), strip_suffix("IM0001")
    ('t1/IXI012_T1', 'ct/slice', 'IM0001')
    """
    lower = name.lower()
    for suffix in (".nii.gz", ".nii", *_PICTURE_SUFFIXES, *_DICOM_SUFFIXES):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def rgb_to_grey(rgb: np.ndarray) -> np.ndarray:
    """Grey values (float32) of an array whose last axis holds R, G, B; frame by frame to save memory.

    Examples
    --------
    >>> rgb_to_grey(np.array([[[255, 255, 255], [255, 0, 0]]], np.uint8)).round(1)
    array([[255. ,  76.2]], dtype=float32)
    """
    if rgb.shape[-1] != 3:
        raise ImageValueError(f"expected 3 colour channels in the last axis, got shape {rgb.shape}")
    if rgb.ndim <= 3:
        return rgb.astype(np.float32) @ LUMA_WEIGHTS
    grey = np.empty(rgb.shape[:-1], dtype=np.float32)
    for index, frame in enumerate(rgb):
        grey[index] = rgb_to_grey(frame)
    return grey


def read_image_file(image: str | Path | tuple[str, ...]) -> np.ndarray:
    """Raw values of an image file or DICOM series, channel first ``(1, *spatial)``.

    Parameters
    ----------
    image
        A NIfTI, PNG/JPEG or DICOM file, or a tuple of DICOM slice files forming one series.

    Raises
    ------
    DataSourceError
        Naming the file when it is absent, of an unknown kind, corrupt or undecodable.
    """
    if isinstance(image, tuple):
        from monai_pso.data.dicom import read_dicom_series

        return read_dicom_series(image)
    kind = _existing_file_kind(image)
    if kind == NIFTI:
        return _read_nifti(image)
    if kind == PICTURE:
        return _read_picture(image)
    from monai_pso.data.dicom import read_dicom_file

    return read_dicom_file(image)


def read_image_header(image: str | Path | tuple[str, ...]) -> ImageHeader:
    """Shape, spacing and raw dtype of an image file or DICOM series, from its header(s) only.

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> path = tempfile.mkdtemp() + "/xray.png"
    >>> Image.new("L", (40, 30)).save(path)
    >>> read_image_header(path)
    ImageHeader(shape=(30, 40), spacing=None, dtype='uint8')
    """
    from monai_pso.data import dicom

    if isinstance(image, tuple):
        return dicom.series_image_header(image)
    kind = _existing_file_kind(image)
    if kind == NIFTI:
        with as_source_error(image, "cannot read the NIfTI header"):
            nifti = _nifti(image)
            shape = _nifti_spatial_shape(image, nifti.header.get_data_shape())
            zooms = tuple(float(z) for z in nifti.header.get_zooms()[: len(shape)])
            dtype = "float32" if _nifti_scaled(nifti) else nifti.header.get_data_dtype().name
            return ImageHeader(shape, zooms if all(z > 0 for z in zooms) else None, dtype)
    if kind == PICTURE:
        from PIL import Image

        with as_source_error(image, "cannot read as PNG/JPEG"), Image.open(image) as picture:
            return ImageHeader((picture.height, picture.width), None, "uint8" if picture.mode in _EIGHT_BIT_MODES else None)
    return dicom.file_image_header(image)


def _existing_file_kind(path: str | Path) -> str:
    if not Path(path).is_file():
        raise DataSourceError(path, "no such file")
    kind = file_kind(path)
    if kind is None:
        raise DataSourceError(path, "not a NIfTI (.nii, .nii.gz), DICOM, PNG or JPEG file")
    return kind


def native(values: np.ndarray) -> np.ndarray:
    """A C-contiguous array in the machine's byte order (torch refuses big-endian arrays).

    Examples
    --------
    >>> native(np.arange(3, dtype=">u2")).dtype.byteorder in ("=", "<", "|")
    True
    """
    return np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("="))


@contextmanager
def as_source_error(path: str | Path, what: str) -> Iterator[None]:
    """Turn any failure of a third-party reader inside the block into a :class:`DataSourceError`.

    Examples
    --------
    >>> with as_source_error("a.png", "cannot read as PNG"):
    ...     raise OSError("truncated")
    Traceback (most recent call last):
    monai_pso.errors.DataSourceError: a.png: cannot read as PNG: truncated
    """
    try:
        yield
    except DataSourceError:
        raise
    except Exception as error:  # third-party readers raise anything on a corrupt file
        lines = str(error).strip().splitlines()
        raise DataSourceError(path, f"{what}: {lines[0] if lines else type(error).__name__}") from error


def _nifti(path: str | Path):
    import nibabel as nib

    return nib.load(str(path))


def _nifti_spatial_shape(path: str | Path, shape: tuple[int, ...]) -> tuple[int, ...]:
    """2D or 3D shape with trailing singleton axes dropped; 4D data is refused."""
    spatial = tuple(int(s) for s in shape)
    while len(spatial) > 2 and spatial[-1] == 1:
        spatial = spatial[:-1]
    if len(spatial) not in (2, 3):
        raise DataSourceError(path, f"NIfTI data of shape {tuple(shape)} is not a 2D or 3D image")
    return spatial


def _read_nifti(path: str | Path) -> np.ndarray:
    with as_source_error(path, "cannot read as NIfTI"):
        image = _nifti(path)
        shape = _nifti_spatial_shape(path, image.shape)
        values = image.get_fdata(dtype=np.float32) if _nifti_scaled(image) else np.asanyarray(image.dataobj)
        return native(values.reshape((1,) + shape))


def _nifti_scaled(image) -> bool:
    """Whether the file scales its stored values (``scl_slope``/``scl_inter``), making them float."""
    return float(getattr(image.dataobj, "slope", 1.0)) != 1.0 or float(getattr(image.dataobj, "inter", 0.0)) != 0.0


#: Pillow modes holding 8-bit values (after conversion to grey).
_EIGHT_BIT_MODES = ("1", "L", "P", "LA", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")


def _read_picture(path: str | Path) -> np.ndarray:
    from PIL import Image

    with as_source_error(path, "cannot read as PNG/JPEG"), Image.open(path) as picture:
        values = np.asarray(picture.convert("L") if picture.mode in _EIGHT_BIT_MODES else picture)
    if values.ndim != 2:
        raise DataSourceError(path, f"picture of shape {values.shape} is not a 2D grey or colour image")
    return native(values[None])
