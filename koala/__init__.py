"""Koala: batch colorization of grayscale photographs at archive scale.

This package is the ground floor, which imports nothing of the project: typed settings, fsspec
storage helpers, errors, the version, stop signals, colour science, image decoding, input
sources and fetching, output encoding and metrics. Every other folder stands on it (see the
layers in docs/architecture.md); the ``koala`` command lives in ``cli/``.
"""

from koala.version import __version__

__all__ = ["__version__"]
