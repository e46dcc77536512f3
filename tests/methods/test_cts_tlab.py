"""CTS as TLAB trains it (the authors' code at commit 68c9740), re-derived in float64 from its source:

* ``models/resnet.py``: ``InBlock`` = conv3x3 -> BN -> ReLU; ``ResBlock`` = conv3x3(stride) -> BN -> ReLU
  -> conv3x3 -> BN, plus a conv3x3(stride 2, padding 1) -> BN shortcut where it downsamples, then ReLU;
  ``OutBlock`` = global average pool -> Linear. ``BatchNorm2d(track_running_stats=False)``: batch
  statistics in training *and* evaluation mode. Init: ``kaiming_normal_`` (fan-in, gain √2) on convolutions
  and the classifier's weight, BN γ ~ U(0, 1), β = 0.
* ``training/base.py``: ``CrossEntropyLoss(reduction="sum")``, ``clip_grad_norm_(max_norm=2)`` on every
  step, SGD with momentum and weight decay; ``LotteryConv2D`` multiplies the weights by the mask before each
  training forward.

The re-derivations below use only ``torch.nn.functional`` on the network's tensors, walking TLAB's layer
order, not the module's ``forward``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from divergence_lab.methods import pruning
from divergence_lab.models.resnet_cifar import BasicBlock, CifarResNet
from divergence_lab.pruning.masks import apply_mask, prunable_weights
from tests.conftest import compose_config

EPS = 1e-5  # nn.BatchNorm2d's default, as TLAB builds it


def _batch_norm(x: torch.Tensor, bn: nn.BatchNorm2d, use_batch: bool) -> torch.Tensor:
    """BN by hand: the batch's mean and biased variance (or the running ones), then γ, β."""
    if use_batch:
        mean = x.mean(dim=(0, 2, 3))
        var = ((x - mean[None, :, None, None]) ** 2).mean(dim=(0, 2, 3))
    else:
        mean, var = bn.running_mean, bn.running_var
    normalised = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + EPS)
    return normalised * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]


def _tlab_forward(net: CifarResNet, x: torch.Tensor, use_batch: bool) -> torch.Tensor:
    """TLAB's ResNetCifar forward, by hand on ``net``'s tensors."""
    stem_conv, stem_bn = net.features[0], net.features[1]
    h = F.relu(_batch_norm(F.conv2d(x, stem_conv.weight, padding=1), stem_bn, use_batch))
    for block in net.features[3:]:
        assert isinstance(block, BasicBlock)
        conv1, bn1, _, conv2, bn2 = block.body
        out = F.relu(_batch_norm(F.conv2d(h, conv1.weight, stride=conv1.stride, padding=1), bn1, use_batch))
        out = _batch_norm(F.conv2d(out, conv2.weight, padding=1), bn2, use_batch)
        if isinstance(block.shortcut, nn.Sequential):
            conv3, bn3 = block.shortcut
            h = _batch_norm(F.conv2d(h, conv3.weight, stride=2, padding=1), bn3, use_batch)
        h = F.relu(out + h)
    linear = net.head[2]
    return F.linear(h.mean(dim=(2, 3)), linear.weight, linear.bias)


def _tlab_net(depth: int = 20, running_stats: bool = False) -> CifarResNet:
    torch.manual_seed(0)
    net = CifarResNet([3, 32, 32], 10, depth=depth, variant="tlab", norm_running_stats=running_stats)
    return net.double()


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_tlab_resnet20_without_running_statistics_is_tlabs_forward_in_float64(mode):
    net = _tlab_net()
    x = torch.randn(6, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    getattr(net, mode)()
    with torch.no_grad():
        torch.testing.assert_close(net(x), _tlab_forward(net, x, use_batch=True), rtol=1e-10, atol=1e-10)
    # no running statistics kept: evaluation normalises with the batch it is given, as training does
    assert not any(isinstance(b, torch.Tensor) and "running" in n for n, b in net.named_buffers())


def test_tlab_resnet20_with_running_statistics_normalises_with_them_in_eval_mode():
    net = _tlab_net(running_stats=True)
    x = torch.randn(8, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    net.train()
    with torch.no_grad():
        torch.testing.assert_close(net(x), _tlab_forward(net, x, use_batch=True), rtol=1e-10, atol=1e-10)
    net.eval()  # the running statistics the training forward just updated
    with torch.no_grad():
        expected = _tlab_forward(net, x, use_batch=False)
        torch.testing.assert_close(net(x), expected, rtol=1e-10, atol=1e-10)
        assert not torch.allclose(expected, _tlab_forward(net, x, use_batch=True))


def test_tlab_resnet20_has_3x3_projection_shortcuts_and_tlabs_initial_distributions():
    net = CifarResNet([3, 32, 32], 10, depth=20, variant="tlab", norm_running_stats=False)
    shortcuts = [b.shortcut[0] for b in net.features[3:] if isinstance(b.shortcut, nn.Sequential)]
    assert [(c.kernel_size, c.stride, c.padding) for c in shortcuts] == [((3, 3), (2, 2), (1, 1))] * 2
    # ResNet-20: 19 convolutions + 2 shortcut convolutions + the classifier, every one prunable
    assert len(prunable_weights(net)) == 22
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert module.track_running_stats is False
            assert torch.all((module.weight >= 0) & (module.weight <= 1)) and module.weight.std() > 0.1
            assert torch.count_nonzero(module.bias) == 0
    widest = net.features[-1].body[3].weight  # 64 x 64 x 3 x 3 = 36 864 draws of N(0, 2 / 576)
    assert widest.std().item() == pytest.approx(math.sqrt(2 / 576), rel=0.03)
    assert widest.mean().item() == pytest.approx(0.0, abs=0.03 * math.sqrt(2 / 576))
    classifier = net.head[2]  # N(0, 2 / 64), bias U(±1/8)
    assert classifier.weight.std().item() == pytest.approx(math.sqrt(2 / 64), rel=0.15)
    assert classifier.bias.abs().max().item() <= 1 / 8


def test_the_he_variant_keeps_its_1x1_shortcuts_and_running_statistics():
    net = CifarResNet([3, 32, 32], 10, depth=20)
    shortcuts = [b.shortcut[0] for b in net.features[3:] if isinstance(b.shortcut, nn.Sequential)]
    assert [c.kernel_size for c in shortcuts] == [(1, 1)] * 2
    assert all(
        m.track_running_stats and torch.all(m.weight == 1)
        for m in net.modules()
        if isinstance(m, nn.BatchNorm2d)
    )


def _tlab_steps(net: nn.Module, mask, batches, lr: float, momentum: float, decay: float, clip: float):
    """TLAB's training steps by hand: weights masked before the forward, the summed cross-entropy, its
    gradient (autograd) clipped to norm ``clip`` over every parameter, SGD with momentum and weight decay
    (``d = g + λθ``, ``b = μ b + d`` (``b = d`` at first), ``θ -= η b``). Returns each step's gradient
    norm."""
    parameters = list(net.parameters())
    buffers: list[torch.Tensor | None] = [None] * len(parameters)
    norms = []
    for x, y in batches:
        with torch.no_grad():
            for weight, keep in zip(prunable_weights(net), mask, strict=True):
                weight.mul_(keep)
        logits = net(x)
        log_probs = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        loss = -log_probs[torch.arange(len(y)), y].sum()
        grads = torch.autograd.grad(loss, parameters)
        norm = torch.sqrt(sum((g**2).sum() for g in grads))
        norms.append(norm.item())
        scale = min(1.0, clip / (norm.item() + 1e-6))
        with torch.no_grad():
            for i, (p, g) in enumerate(zip(parameters, grads, strict=True)):
                d = g * scale + decay * p
                buffers[i] = d.clone() if buffers[i] is None else momentum * buffers[i] + d
                p -= lr * buffers[i]
    with torch.no_grad():  # the weights the next forward uses
        for weight, keep in zip(prunable_weights(net), mask, strict=True):
            weight.mul_(keep)
    return norms


def test_the_summed_loss_clipped_masked_step_is_tlabs_in_float64():
    net = _tlab_net(depth=8)
    mask = [
        torch.rand(w.shape, generator=torch.Generator().manual_seed(i)) < 0.3
        for i, w in enumerate(prunable_weights(net))
    ]
    apply_mask(net, mask)
    reference = _tlab_net(depth=8)
    reference.load_state_dict(net.state_dict())
    generator = torch.Generator().manual_seed(3)
    batches = [
        (
            torch.randn(5, 3, 32, 32, dtype=torch.float64, generator=generator),
            torch.randint(0, 10, (5,), generator=generator),
        )
        for _ in range(3)
    ]
    optimizer = OmegaConf.create(
        {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3, "scheduler": "none"}
    )
    pruning.train_plain(
        net,
        lambda epoch: iter(batches),
        optimizer,
        range(1),
        total_epochs=1,
        clip=2.0,
        loss_reduction="sum",
        mask=mask,
    )
    norms = _tlab_steps(reference, mask, batches, lr=0.1, momentum=0.9, decay=1e-3, clip=2.0)
    assert min(norms) > 2.0  # the summed loss: the clip acts on every one of these steps
    for ours, theirs in zip(net.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)


def test_the_sparse_training_module_sums_the_cross_entropy_when_asked():
    net = _tlab_net(depth=8)
    mask = [torch.ones_like(w, dtype=torch.bool) for w in prunable_weights(net)]
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3])
    optimizer = {"name": "sgd", "lr": 0.1}
    summed = pruning.SparseModule(
        net, mask, 0.0, num_classes=10, optimizer=optimizer, max_epochs=1, loss_reduction="sum"
    )
    averaged = pruning.SparseModule(net, mask, 0.0, num_classes=10, optimizer=optimizer, max_epochs=1)
    net.train()
    with torch.no_grad():
        expected = F.cross_entropy(net(x), y, reduction="sum")
        losses_sum, losses_mean = summed.losses(x, y), averaged.losses(x, y)
    torch.testing.assert_close(losses_sum["loss"], expected)
    torch.testing.assert_close(losses_mean["loss"], expected / 4)
    torch.testing.assert_close(losses_sum["ce"], expected / 4)  # the logged term: per example either way


def test_the_cts_gpu_preset_composes_to_tlabs_settings():
    cfg = compose_config(["experiment=cts_resnet20_cifar10"])
    assert OmegaConf.to_container(cfg.model) == {
        "_target_": "divergence_lab.models.resnet_cifar.CifarResNet",
        "depth": 20,
        "width": 1,
        "variant": "tlab",
        "norm_running_stats": False,
    }
    method = cfg.method
    assert (method.name, method.pruner, cfg.divergence.name, method.search.objective) == (
        "cts",
        "cts",
        "rkl",
        "divergence",
    )
    assert (method.loss_reduction, cfg.trainer.gradient_clip_val, cfg.data.batch_size) == ("sum", 2.0, 512)
    assert OmegaConf.to_container(method.optimizer) == {
        "name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3,
        "scheduler": "step", "milestones": [79, 119], "gamma": 0.1,
    }  # fmt: skip
    # 160 epochs in all: the rewind trains 0..8, the sparse training 9..159; every LTR round 9..159 too
    assert method.rewind_epochs + cfg.trainer.max_epochs == 160 and method.rewind_epochs == 9
    assert method.ltr.epochs_per_round == cfg.trainer.max_epochs
    # the search: TLAB's default long duration, 1.0 * 160 epochs; the short one, int(0.125 * 160), a variant
    search = method.search
    assert (search.epochs, search.lr, search.tau, search.slack, search.loss_scale) == (
        160,
        0.1,
        2 / 3,
        1.1,
        100.0,
    )
    assert compose_config(["experiment=cts_resnet20_cifar10", "cts_search=short"]).method.search.epochs == 20
    # TLAB's protocol: every training image, the last epoch tested
    assert cfg.data.val_fraction == 0.0 and method.checkpoint_selection == "last"
    heldout = compose_config(["experiment=cts_resnet20_cifar10", "protocol=heldout"])
    assert heldout.data.val_fraction == 0.1 and heldout.method.get("checkpoint_selection", "best") == "best"


def _exact_copies(batch: torch.Tensor, stored: torch.Tensor) -> int:
    """How many images of ``batch`` equal some stored training image bit for bit."""
    flat, table = batch.flatten(1), stored.flatten(1)
    return sum(bool((table == row).all(dim=1).any()) for row in flat)


@pytest.mark.parametrize(("stage", "pruner"), [("rewind", "magnitude"), ("ltr", "ltr"), ("search", "cts")])
def test_stage_training_batches_are_augmented_as_the_main_trainings_on_cifar(
    tmp_path, monkeypatch, stage, pruner
):
    from divergence_lab.data import instantiate_datamodule
    from divergence_lab.data.cifar import write_cifar
    from divergence_lab.methods.stages import StageContext

    write_cifar(tmp_path, "cifar10", per_class=6)
    cfg = compose_config(
        [
            "method=prune" if pruner != "cts" else "method=cts",
            *([f"method.pruner={pruner}"] if pruner != "cts" else []),
            "data=cifar10",
            f"data.data_dir={tmp_path}",
            "data.batch_size=24",
            "model=mlp",
            "method.rewind_epochs=1",
            "method.search.epochs=1",
        ]
    )
    datamodule = instantiate_datamodule(cfg.data, seed=0)
    seen: list[torch.Tensor] = []
    if stage == "search":  # the search sees the stored images, as TLAB feeds it the evaluation transforms
        original = pruning.concrete_search

        def spy_search(net, batches, *args, **kwargs):
            seen.extend(x for x, _ in batches(0))
            return original(net, batches, *args, **kwargs)

        monkeypatch.setattr(pruning, "concrete_search", spy_search)
    else:

        def spy_training(net, batches, *args, **kwargs):
            seen.extend(x for x, _ in batches(kwargs["epochs"].start))

        monkeypatch.setattr(pruning, "train_plain", spy_training)
    torch.manual_seed(0)
    context = StageContext()
    context.outputs["rewind"] = pruning.rewind_point(cfg, datamodule, context)
    if stage != "rewind":
        seen.clear()
        pruning.search(cfg, datamodule, context)
    images = torch.cat(seen)
    assert len(images) >= 48
    copies = _exact_copies(images, datamodule.train_inputs())
    if stage == "search":
        assert copies == len(images)
    else:  # a crop at offset (4, 4) without a flip leaves an image as stored: 1 in 162
        assert copies <= len(images) // 10
