"""Data layer: records, SOURCE strings, readers, the phantom dataset, splits and intensity presets."""

from monai_pso.data.batching import record_batches
from monai_pso.data.loading import LoadRecordImaged, load_image, read_image
from monai_pso.data.normalize import PRESETS, IntensityPreset, IntensityPresetd
from monai_pso.data.phantom import PhantomSpec, generate_phantom
from monai_pso.data.records import DataSource, ImageRecord
from monai_pso.data.sources import load_source, parse_source
from monai_pso.data.splits import assign_patient_splits

__all__ = [
    "DataSource",
    "ImageRecord",
    "IntensityPreset",
    "IntensityPresetd",
    "LoadRecordImaged",
    "PRESETS",
    "PhantomSpec",
    "assign_patient_splits",
    "generate_phantom",
    "load_image",
    "record_batches",
    "load_source",
    "parse_source",
    "read_image",
]
