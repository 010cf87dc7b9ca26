"""Koala: batch colorization of grayscale photographs at archive scale.

This package is the ground floor: typed settings, fsspec storage helpers and errors, which every
other folder shares. The ``koala`` command lives in ``cli/``, the work in ``tasks/``,
orchestration in ``flows/``.
"""

from koala.version import __version__

__all__ = ["__version__"]
