import pytest
import torch

from divergence_lab.models.cnn import SmallCNN
from divergence_lab.models.mlp import MLP


def test_mlp_shapes_and_widths():
    net = MLP([1, 8, 8], num_classes=10, hidden=[32, 16], dropout=0.1)
    assert net(torch.randn(5, 1, 8, 8)).shape == (5, 10)
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 32), (32, 16), (16, 10)]


def test_cnn_accepts_images_and_square_flat_inputs():
    assert SmallCNN([1, 8, 8], 10)(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    assert SmallCNN([64], 10, channels=[4])(torch.randn(3, 64)).shape == (3, 10)


@pytest.mark.parametrize("in_shape", [[10], [2, 3]])
def test_cnn_refuses_non_image_input(in_shape):
    with pytest.raises(ValueError, match="image input"):
        SmallCNN(in_shape, 10)


def test_mlp_refuses_bad_widths():
    with pytest.raises(ValueError, match="model.hidden"):
        MLP([4], 2, hidden=[0])
