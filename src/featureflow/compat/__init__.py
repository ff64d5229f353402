"""Compatibility with other projects' checkpoints.

* :mod:`featureflow.compat.vfmf` — the paper's released VFMF checkpoints
  (``convert_vfmf``, ``forecast_released``, CLI ``featureflow convert-vfmf``).

Example:
    >>> from featureflow import compat
    >>> compat.vfmf.ReleasedRecipe().solver
    'euler'
"""

from featureflow.compat import vfmf

__all__ = ["vfmf"]
