"""Koala: batch colorization of grayscale photographs at archive scale.

This package holds what every stage shares: typed settings, fsspec storage helpers and the
``koala`` command line. The work itself lives in ``tasks/``, orchestration in ``flows/``.
"""

__version__ = "0.1.0"
