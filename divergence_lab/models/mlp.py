"""Multi-layer perceptron: flatten, ``Linear -> ReLU (-> Dropout)`` per hidden width, a linear head."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from divergence_lab.ground.errors import ConfigError


class MLP(nn.Module):
    """``in_shape`` is the shape of one example (flattened); ``hidden`` lists the hidden widths."""

    def __init__(
        self, in_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (128,), dropout: float = 0.0
    ) -> None:
        super().__init__()
        if any(int(width) < 1 for width in hidden):
            raise ConfigError(f"model.hidden widths must be >= 1 (got {list(hidden)})")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1) (got {dropout})")
        layers: list[nn.Module] = [nn.Flatten()]
        width_in = math.prod(in_shape)
        for width in hidden:
            layers += [nn.Linear(width_in, int(width)), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width_in = int(width)
        layers.append(nn.Linear(width_in, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
