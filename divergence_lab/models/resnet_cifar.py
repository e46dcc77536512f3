"""CIFAR ResNets (He et al. 2016, section 4.2): depth = 6n + 2, three stages of n basic blocks.

Stages have ``16·width``, ``32·width``, ``64·width`` channels at 32, 16 and 8 pixels. ``depth`` 20, 32, 44,
56, 110 give the usual ResNet-20 ... ResNet-110 (ResNet-56 -> ResNet-20 is the classic CIFAR-100
distillation pair). A block is ``relu(BN(conv(relu(BN(conv(x))))) + shortcut(x))``; the head is global
average pooling and one linear layer.

Two variants (``variant``):

* ``he``: a 1x1 stride-2 convolution + BN projects the shortcut where the shape changes; convolutions
  drawn from ``N(0, 2 / fan_out)``, BN ``γ = 1, β = 0``, the classifier as ``nn.Linear`` draws it;
* ``tlab``: the ResNet-20 of TLAB, the Concrete Ticket Search authors' code (``models/resnet.py`` at
  commit 68c9740): a **3x3** stride-2 convolution (padding 1) + BN on the shortcut; convolutions and the
  classifier's weight drawn from ``N(0, 2 / fan_in)`` (``kaiming_normal_``'s default), the classifier's bias
  as ``nn.Linear`` draws it (``U(±1/√fan_in)``), BN ``γ ~ U(0, 1)``, ``β = 0``.

``norm_running_stats: false`` builds every BatchNorm with ``track_running_stats=False`` (TLAB's default):
it keeps no running mean or variance and normalises with the statistics of the batch it is given in
training *and* in evaluation mode, so a network in ``eval()`` (the CTS search, the test) normalises a
sparse network with the sparse network's own activations.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from divergence_lab.ground.errors import ConfigError

SMALLEST_SIDE = 32  # the first stage works at the CIFAR resolution; smaller images vanish in the last stage
VARIANTS = ("he", "tlab")


class BasicBlock(nn.Module):
    def __init__(
        self,
        channels_in: int,
        channels_out: int,
        stride: int,
        shortcut_kernel: int = 1,
        running_stats: bool = True,
    ) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False),
            nn.BatchNorm2d(channels_out, track_running_stats=running_stats),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels_out, channels_out, 3, 1, 1, bias=False),
            nn.BatchNorm2d(channels_out, track_running_stats=running_stats),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or channels_in != channels_out:
            padding = shortcut_kernel // 2
            self.shortcut = nn.Sequential(
                nn.Conv2d(channels_in, channels_out, shortcut_kernel, stride, padding, bias=False),
                nn.BatchNorm2d(channels_out, track_running_stats=running_stats),
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-``depth`` for ``in_shape`` = (C, H, W) images; ``variant`` and ``norm_running_stats`` as in
    the module docstring."""

    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int,
        depth: int = 20,
        width: int = 1,
        variant: str = "he",
        norm_running_stats: bool = True,
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ConfigError(f"model.depth must be 6n + 2 with n >= 1, e.g. 20, 32, 56, 110 (got {depth})")
        if variant not in VARIANTS:
            raise ConfigError(f"model.variant must be one of {', '.join(VARIANTS)} (got {variant!r})")
        if not isinstance(norm_running_stats, bool):
            raise ConfigError(f"model.norm_running_stats must be true or false (got {norm_running_stats!r})")
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
        shortcut_kernel = 3 if variant == "tlab" else 1
        layers: list[nn.Module] = [
            nn.Conv2d(in_shape[0], widths[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(widths[0], track_running_stats=norm_running_stats),
            nn.ReLU(inplace=True),
        ]
        channels = widths[0]
        for stage, stage_width in enumerate(widths):
            for block in range(blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(channels, stage_width, stride, shortcut_kernel, norm_running_stats))
                channels = stage_width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))
        if variant == "tlab":
            _tlab_init(self)
        else:
            _he_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def _he_init(net: nn.Module) -> None:
    """Convolutions from ``N(0, 2 / fan_out)``; BN and the classifier as constructed."""
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")


def _tlab_init(net: nn.Module) -> None:
    """TLAB's: convolution and classifier weights from ``N(0, 2 / fan_in)``, BN ``γ ~ U(0, 1)``, ``β = 0``
    (the classifier's bias keeps ``nn.Linear``'s draw)."""
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight)
            nn.init.zeros_(module.bias)
