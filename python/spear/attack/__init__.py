"""The attack core. It sees only what a server sees: gradients (or updates), the layer's
weight and bias, and settings; it never imports the client simulation, data or reports."""
from .backend import cuda_available
from .certify import Certificate, verify
from .kernel import Directions, sample_directions
from .reconstruct import Reconstruction, reconstruct

__all__ = ["Certificate", "Directions", "Reconstruction", "cuda_available", "reconstruct", "sample_directions", "verify"]
