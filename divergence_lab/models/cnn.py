"""Small CNN for tiny images such as 8x8 digits.

Each stage is ``[Conv3x3 -> BN -> ReLU] x 2 -> MaxPool``; global average pooling and a linear head follow.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from divergence_lab.ground.errors import ConfigError


class SmallCNN(nn.Module):
    """``channels`` gives the width of each stage; every stage halves the spatial size.

    ``in_shape`` is ``(channels, height, width)``; a flat input of a square number of features is reshaped
    to one channel.
    """

    def __init__(self, in_shape: Sequence[int], num_classes: int, channels: Sequence[int] = (16, 32)) -> None:
        super().__init__()
        if len(in_shape) == 1:
            side = round(in_shape[0] ** 0.5)
            if side * side != in_shape[0]:
                raise ConfigError(
                    f"SmallCNN needs image input (C, H, W); got flat inputs of size {in_shape[0]}"
                )
            in_shape = (1, side, side)
        if len(in_shape) != 3:
            raise ConfigError(f"SmallCNN needs image input (C, H, W); got shape {tuple(in_shape)}")
        self.in_shape = tuple(in_shape)
        stages: list[nn.Module] = []
        width_in = in_shape[0]
        for width in channels:
            stages += [
                nn.Conv2d(width_in, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.Conv2d(width, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            width_in = width
        self.features = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width_in, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x.view(-1, *self.in_shape)))
