"""Spectrum preprocessing: normalization, energy windows, resampling and standardization."""

from xastopo.preprocessing.preprocessor import ElementWindow, Preprocessor
from xastopo.preprocessing.spectrum import normalize_on_grid, resample_linear

__all__ = ["ElementWindow", "Preprocessor", "normalize_on_grid", "resample_linear"]
