"""Honest federated-learning client simulation (FedSGD, FedAvg, DP-SGD) in torch.

Independent of the attack: it only produces what a client would send.
"""
from .client import PROTOCOLS, ClientConfig, client_update, minibatch_schedule
from .layers import attackable_layer, check_followed_by_relu, layer_input, linear_layers
from .models import feature_extractor, make_fcnn, make_vgg
from .payload import LayerPayload, layer_payload
from .training import TrainConfig, train_classifier

__all__ = [
    "PROTOCOLS",
    "ClientConfig",
    "TrainConfig",
    "LayerPayload",
    "attackable_layer",
    "check_followed_by_relu",
    "client_update",
    "layer_input",
    "layer_payload",
    "linear_layers",
    "feature_extractor",
    "make_fcnn",
    "make_vgg",
    "minibatch_schedule",
    "train_classifier",
]
