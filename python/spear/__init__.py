"""spear: exact gradient inversion of a linear+ReLU layer (SPEAR, NeurIPS 2024) and beyond.

>>> rec = spear.reconstruct(grad_weight, grad_bias, weight=W, bias=b)
>>> rec.inputs, rec.complete, rec.certified
"""
from .attack import (Certificate, Directions, Reconstruction, cuda_available, reconstruct,
                     sample_directions, verify)

__version__ = "0.1.0"
__all__ = ["Certificate", "Directions", "Reconstruction", "__version__", "cuda_available",
           "reconstruct", "sample_directions", "verify"]
