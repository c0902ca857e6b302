"""The attack core. It sees only what a server sees: gradients (or updates), the layer's
weight and bias, and settings; it never imports the client simulation, data or reports.

Stages: ``prepare`` (problem.py, tolerance.py) -> ``search`` (sources.py, search.py,
budget.py) -> ``finish`` (finish.py); ``reconstruct`` runs all three.
"""
from .backend import cuda_available
from .budget import Budget
from .certify import Certificate, verify
from .finish import Reconstruction
from .kernel import Directions, sample_directions
from .problem import Factor, Problem, prepare
from .reconstruct import reconstruct
from .sources import Dictionary, DirectionSource, Proposal, Sampler
from .neighbours import Neighbours
from .screened import Screened

__all__ = ["Budget", "Certificate", "Dictionary", "DirectionSource", "Directions", "Factor",
           "Neighbours", "Problem", "Proposal", "Reconstruction", "Sampler", "Screened",
           "cuda_available", "prepare", "reconstruct", "sample_directions", "verify"]
