"""Encoders and heads."""

from steerjax.models.heads import MLPHead
from steerjax.models.encoders import ENCODERS, get_encoder
from steerjax.models.mixer import Mixer
from steerjax.models.resnet import ResNet
from steerjax.models.vit import ViT
from steerjax.models.torch_weights import from_torch_state_dict, to_torch_state_dict
