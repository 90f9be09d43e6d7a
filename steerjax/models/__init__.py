"""Encoders and heads."""

from steerjax.models.heads import MLPHead
from steerjax.models.resnet import ResNet, get_encoder
from steerjax.models.torch_weights import from_torch_state_dict, to_torch_state_dict
