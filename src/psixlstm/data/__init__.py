"""Waveform datasets with units: the container, save/load, CSV in/out and the measured perovskite data."""

from .csv_loader import load_csv, save_csv
from .dataset import (
    UNITS,
    Dataset,
    DataValidationError,
    Scales,
    Sequence,
    split_sequences,
)
from .perovskite import (
    PEROVSKITE_ATTRIBUTION,
    ImpedanceSpectrum,
    default_perovskite_dir,
    load_impedance_spectra,
    load_iv_sweeps,
    reconstruct_sweep_time,
)

__all__ = [
    "PEROVSKITE_ATTRIBUTION",
    "UNITS",
    "DataValidationError",
    "Dataset",
    "ImpedanceSpectrum",
    "Scales",
    "Sequence",
    "default_perovskite_dir",
    "load_csv",
    "load_impedance_spectra",
    "load_iv_sweeps",
    "reconstruct_sweep_time",
    "save_csv",
    "split_sequences",
]
