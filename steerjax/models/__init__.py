"""Encoders and heads."""

from steerjax.models.heads import MLPHead
from steerjax.models.resnet import ResNet, get_encoder
