"""Attacks to compare SPEAR with, and what SPEAR needs on convolutional networks.

* :func:`inverting_gradients`: the optimization-based attack of Geiping et al. (2020).
* :func:`infer_labels`, :func:`feature_inversion`: a CNN's batch from the features SPEAR
  recovers at its first linear layer (labels from the gradient, images by inversion).
* :func:`span_inverting_gradients`: Inverting Gradients, then held to the span of the
  first layer's gradient and the directions SPEAR found before its budget ran out.
Like the attack core, these see only what a server sees (model, update, labels); they
never import the client simulation, datasets, metrics or reports.
"""
from .feature_inversion import FEATURE_DEFAULTS, feature_inversion, infer_labels
from .inverting_gradients import IGConfig, InversionResult, inverting_gradients, total_variation
from .warm_start import span_inverting_gradients

__all__ = ["FEATURE_DEFAULTS", "IGConfig", "InversionResult", "feature_inversion", "infer_labels",
           "inverting_gradients", "span_inverting_gradients", "total_variation"]
