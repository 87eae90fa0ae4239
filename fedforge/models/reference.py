"""Reference models: linear, logistic, MLP, McMahan's CNN and LEAF's char-LSTM.

- CNN: McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks
  from Decentralized Data", section 3: two 5x5 conv layers (32, 64 channels),
  each followed by 2x2 max pooling, a 512-unit dense layer and a softmax layer.
- char-LSTM: the same paper's Shakespeare model as LEAF ships it (Caldas et al.
  2018): an 8-dimensional character embedding, two LSTM layers of 256 units,
  and a dense layer over the 80-character vocabulary.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from fedforge.components import ConfigError, Declaration, register


def linear_regression(in_features: int, out_features: int = 1) -> nn.Module:
    return nn.Linear(in_features, out_features)


def logistic_regression(in_features: int, num_classes: int) -> nn.Module:
    """Multinomial logistic regression: a linear layer whose logits go to cross-entropy."""
    return nn.Linear(in_features, num_classes)


def mlp(in_features: int, hidden: tuple[int, ...], num_classes: int) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


class _CNN(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, image_size: int) -> None:
        super().__init__()
        # padding 2 keeps 28x28 -> 28x28 before each pooling, as in the paper's TF code.
        self.conv1 = nn.Conv2d(in_channels, 32, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=5, padding=2)
        side = image_size // 4
        self.fc1 = nn.Linear(64 * side * side, 512)
        self.fc2 = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:  # (batch, channels, H, W) -> (batch, classes)
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def cnn(in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> nn.Module:
    if image_size % 4:
        raise ValueError(f"image_size must be divisible by 4 (two 2x2 poolings), got {image_size}")
    return _CNN(in_channels, num_classes, image_size)


class _CharLSTM(nn.Module):
    def __init__(self, vocab_size: int, embed_dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, x: Tensor) -> Tensor:  # (batch, seq) int64 -> (batch, vocab) logits
        out, _ = self.lstm(self.embed(x))  # (batch, seq, hidden)
        return self.head(out[:, -1])  # predict the character after the sequence


def char_lstm(vocab_size: int, embed_dim: int, hidden: int, layers: int) -> nn.Module:
    return _CharLSTM(vocab_size, embed_dim, hidden, layers)


# --- the declared models (``[model]``; fedforge.components) -------------------------------
# ``build(input_shape, num_classes)``: the shape of one example and the number of classes
# (None for a regression), as the data source reports them.

Shape = tuple[int, ...]


def _classes(name: str, num_classes: int | None) -> int:
    if num_classes is None:
        raise ConfigError(f"model.name: {name!r} is a classifier but the dataset is regression")
    return num_classes


@register("model", "linear")
class LinearModel(Declaration):
    """``linear``: least squares on the flattened input (one output per class, or one)."""

    name: Literal["linear"] = "linear"

    def build(self, input_shape: Shape, num_classes: int | None) -> nn.Module:
        return linear_regression(math.prod(input_shape), num_classes or 1)


@register("model", "logistic")
class LogisticModel(Declaration):
    """``logistic``: multinomial logistic regression on the flattened input."""

    name: Literal["logistic"] = "logistic"

    def build(self, input_shape: Shape, num_classes: int | None) -> nn.Module:
        classes = _classes(self.name, num_classes)
        return nn.Sequential(nn.Flatten(), logistic_regression(math.prod(input_shape), classes))


@register("model", "mlp")
class MLPModel(Declaration):
    """``mlp``: ReLU layers of ``hidden`` widths (McMahan et al. 2017's 2NN by default)."""

    name: Literal["mlp"] = "mlp"
    hidden: tuple[int, ...] = (200, 200)

    def build(self, input_shape: Shape, num_classes: int | None) -> nn.Module:
        return mlp(math.prod(input_shape), self.hidden, _classes(self.name, num_classes))


@register("model", "cnn")
class CNNModel(Declaration):
    """``cnn``: McMahan et al. 2017's CNN for (C, H, W) images."""

    name: Literal["cnn"] = "cnn"

    def build(self, input_shape: Shape, num_classes: int | None) -> nn.Module:
        if len(input_shape) != 3:
            raise ConfigError(f"model.name: 'cnn' needs image inputs (C, H, W), got {input_shape}")
        c, h, _ = input_shape
        return cnn(c, _classes(self.name, num_classes), h)


@register("model", "char_lstm")
class CharLSTMModel(Declaration):
    """``char_lstm``: the LEAF Shakespeare next-character LSTM."""

    name: Literal["char_lstm"] = "char_lstm"
    embed_dim: int = Field(8, ge=1)
    hidden: int = Field(256, ge=1)
    layers: int = Field(2, ge=1)

    def build(self, input_shape: Shape, num_classes: int | None) -> nn.Module:
        classes = _classes(self.name, num_classes)
        return char_lstm(classes, self.embed_dim, self.hidden, self.layers)
