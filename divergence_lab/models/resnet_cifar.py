"""CIFAR ResNets (He et al. 2016, section 4.2): depth = 6n + 2, three stages of n basic blocks.

Stages have ``16·width``, ``32·width``, ``64·width`` channels at 32, 16 and 8 pixels; a 1x1 convolution
projects the shortcut where the shape changes. ``depth`` 20, 32, 44, 56, 110 give the usual ResNet-20 ...
ResNet-110 (ResNet-56 -> ResNet-20 is the classic CIFAR-100 distillation pair).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from divergence_lab.config.errors import ConfigError

SMALLEST_SIDE = 32  # the first stage works at the CIFAR resolution; smaller images vanish in the last stage


class BasicBlock(nn.Module):
    def __init__(self, channels_in: int, channels_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False),
            nn.BatchNorm2d(channels_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels_out, channels_out, 3, 1, 1, bias=False),
            nn.BatchNorm2d(channels_out),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or channels_in != channels_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(channels_in, channels_out, 1, stride, bias=False), nn.BatchNorm2d(channels_out)
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-``depth`` for ``in_shape`` = (C, H, W) images."""

    def __init__(self, in_shape: Sequence[int], num_classes: int, depth: int = 20, width: int = 1) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ConfigError(f"model.depth must be 6n + 2 with n >= 1, e.g. 20, 32, 56, 110 (got {depth})")
        if len(in_shape) != 3:
            raise ConfigError(f"model.resnet_cifar needs image input (C, H, W); got shape {tuple(in_shape)}")
        if min(in_shape[1:]) < SMALLEST_SIDE:
            raise ConfigError(
                f"model.resnet_cifar needs images of at least {SMALLEST_SIDE}x{SMALLEST_SIDE} pixels "
                f"(its stages run at 32, 16 and 8); the data has {in_shape[1]}x{in_shape[2]}: "
                "use model=cnn or model=mlp"
            )
        blocks = (depth - 2) // 6
        widths = [16 * width, 32 * width, 64 * width]
        layers: list[nn.Module] = [
            nn.Conv2d(in_shape[0], widths[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        ]
        channels = widths[0]
        for stage, stage_width in enumerate(widths):
            for block in range(blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(channels, stage_width, stride))
                channels = stage_width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
