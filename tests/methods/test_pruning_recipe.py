"""The pruning runs' training recipe against TLAB (the CTS authors' code): one step schedule over the whole
run that the sparse training resumes at the rewind epoch, a rewind trained like the main training (weight
decay, schedule, gradient clipping), and the CTS search's learning-rate drop one epoch before int(0.88 E)."""

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from divergence_lab import divergences
from divergence_lab.methods import pruning
from divergence_lab.methods.stages import StageContext, build_in_memory
from divergence_lab.models.mlp import MLP
from divergence_lab.pruning.concrete import concrete_search, lr_drop_epoch
from divergence_lab.pruning.masks import global_top_k, prunable_weights
from divergence_lab.run.pipeline import build_datamodule
from tests.conftest import compose_config


def tlab_rates(epochs: int, lr: float, reduce_epochs: list[int], start: int = 0) -> list[float]:
    """TLAB's trainer loop (training/base.py ``_loop`` + ``post_epoch_hook``), one rate per 0-based epoch of
    ``range(start, epochs)``: after epoch ``e`` the rate is scaled by 0.1 when ``e + 2`` is in
    ``reduce_epochs``."""
    rates = []
    for epoch in range(start, epochs):
        rates.append(lr)
        if epoch + 1 + 1 in reduce_epochs:
            lr *= 0.1
    return rates


def tlab_search_rates(epochs: int, lr: float) -> list[float]:
    """TLAB's ``optimize_mask`` loop (search/concrete.py) with ``reduce_epochs = [int(0.88 * epochs)]``."""
    reduce_epochs, rates, epoch = [int(0.88 * epochs)], [], 0
    while True:
        rates.append(lr)
        epoch += 1
        done = epoch >= epochs
        if (epoch + 1) in reduce_epochs:
            lr *= 0.1
        if done:
            return rates


def scheduled_rates(optimizer, scheduler, epochs: int) -> list[float]:
    rates = []
    for _ in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return rates


def test_the_resnet20_preset_reproduces_tlabs_160_epoch_step_schedule_across_the_rewind():
    cfg = compose_config(["experiment=cts_resnet20_cifar10"])
    rewind, sparse_epochs = cfg.method.rewind_epochs, cfg.trainer.max_epochs
    assert (rewind, sparse_epochs) == (9, 151)  # TLAB: rewind epoch 9, then fit(..., 160, start=9)
    net = MLP((4,), 3, hidden=[5])
    optimizer, scheduler = pruning.scheduled_optimizer(
        net.parameters(), cfg.method.optimizer, pruning.schedule_epochs(cfg), 0
    )
    rewind_rates = scheduled_rates(optimizer, scheduler, rewind)
    module = pruning.SparseModule(
        net,
        [torch.ones_like(w, dtype=torch.bool) for w in prunable_weights(net)],
        0.0,
        start_epoch=rewind,
        num_classes=3,
        optimizer=dict(cfg.method.optimizer),
        max_epochs=sparse_epochs,
    )
    built = module.configure_optimizers()
    assert built["lr_scheduler"]["interval"] == "epoch"
    sparse_rates = scheduled_rates(built["optimizer"], built["lr_scheduler"]["scheduler"], sparse_epochs)

    assert rewind_rates == pytest.approx([0.1] * 9)
    # the sparse run's epoch k is the run's epoch 9 + k: 0.1 up to run epoch 78, 0.01 from 79, 0.001 from 119
    assert sparse_rates == pytest.approx([0.1] * 70 + [0.01] * 40 + [0.001] * 41)
    assert rewind_rates + sparse_rates == pytest.approx(tlab_rates(160, 0.1, [80, 120]))
    assert sparse_rates == pytest.approx(tlab_rates(160, 0.1, [80, 120], start=9))


@pytest.mark.parametrize("rewind", [0, 3, 79, 100])
def test_the_sparse_training_resumes_the_schedule_at_the_rewind_epoch(rewind):
    """Milestones are run epochs: those the rewind passed are already in the starting rate.

    TLAB's fresh trainer restarts at the base rate and only drops at milestones it passes, which is the same
    whenever the rewind ends before the first drop (its rewind epochs 9, 15, 18 all do); past a milestone
    (rewind 79, 100) it would restart at 0.1, and here the sparse run keeps the schedule's rate instead."""
    config = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "scheduler": "step", "milestones": [79, 119]}
    net = MLP((4,), 3, hidden=[5])
    optimizer, scheduler = pruning.scheduled_optimizer(net.parameters(), config, 160, rewind)
    rates = scheduled_rates(optimizer, scheduler, 160 - rewind)
    expected = [0.1 * 0.1 ** sum(m <= rewind + k for m in (79, 119)) for k in range(160 - rewind)]
    assert rates == pytest.approx(expected)
    if rewind < 79:
        assert rates == pytest.approx(tlab_rates(160, 0.1, [80, 120], start=rewind))


def test_a_built_sparse_module_starts_at_the_rewind_epoch_of_the_schedule():
    cfg = compose_config(
        [
            "experiment=cts_digits",
            "method=prune",
            "method.pruner=magnitude",
            "method.rewind_epochs=3",
            "method.optimizer.scheduler=step",
            "method.optimizer.milestones=[2,5]",
            "trainer.max_epochs=6",
        ]
    )
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    module = build_in_memory(cfg, datamodule)
    assert module.start_epoch == 3
    built = module.configure_optimizers()
    rates = scheduled_rates(built["optimizer"], built["lr_scheduler"]["scheduler"], 6)
    # run epochs 3 .. 8: milestone 2 passed during the rewind, milestone 5 at the sparse run's third epoch
    assert rates == pytest.approx([0.01, 0.01, 0.001, 0.001, 0.001, 0.001])


@pytest.fixture
def tiny():
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(48, 6, generator=generator), torch.arange(48) % 3
    torch.manual_seed(0)
    net = MLP((6,), 3, hidden=[8])

    def batches(epoch):
        order = torch.randperm(48, generator=torch.Generator().manual_seed(epoch))
        return [(x[b], y[b]) for b in order.split(16)]

    return net, batches


def hand_written_sgd(net, batches, lr_of_epoch, epochs, momentum, weight_decay, clip):
    """SGD with coupled weight decay and momentum, gradients clipped to global norm ``clip`` first."""
    parameters = list(net.parameters())
    buffers = [None] * len(parameters)
    clipped = 0
    for epoch in range(epochs):
        for x, y in batches(epoch):
            grads = torch.autograd.grad(F.cross_entropy(net(x), y), parameters)
            norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads))
            scale = min(1.0, clip / (norm + 1e-6))
            clipped += scale < 1.0
            with torch.no_grad():
                for i, (p, g) in enumerate(zip(parameters, grads, strict=True)):
                    d = g * scale + weight_decay * p
                    buffers[i] = d.clone() if buffers[i] is None else momentum * buffers[i] + d
                    p -= lr_of_epoch(epoch) * buffers[i]
    return clipped


def test_the_rewind_is_sgd_with_weight_decay_schedule_and_clipping_as_written_by_hand(tiny):
    net, batches = tiny
    start = {k: v.clone() for k, v in net.state_dict().items()}
    config = OmegaConf.create(
        {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}
        | {"scheduler": "step", "milestones": [1], "gamma": 0.1}
    )
    pruning.train_plain(net, batches, config, epochs=range(2), total_epochs=4, clip=0.5)
    trained = [p.detach().clone() for p in net.parameters()]

    net.load_state_dict(start)
    clipped = hand_written_sgd(net, batches, lambda e: 0.1 if e < 1 else 0.01, 2, 0.9, 0.01, clip=0.5)
    assert clipped > 0  # the clipping is exercised
    for ours, reference in zip(trained, net.parameters(), strict=True):
        assert torch.allclose(ours, reference, atol=1e-6)

    net.load_state_dict(start)
    config.weight_decay = 0.0
    pruning.train_plain(net, batches, config, epochs=range(2), total_epochs=4, clip=0.5)
    assert any(not torch.allclose(a, b, atol=1e-5) for a, b in zip(trained, net.parameters(), strict=True))


def test_the_rewind_and_ltr_rounds_train_with_the_runs_recipe(monkeypatch):
    cfg = compose_config(
        [
            "experiment=cts_digits",
            "method=prune",
            "method.pruner=ltr",
            "method.density=0.5",
            "method.ltr.prune_fraction=0.5",
            "method.ltr.epochs_per_round=2",
            "method.rewind_epochs=3",
            "trainer.gradient_clip_val=1.5",
        ]
    )
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    calls = []
    monkeypatch.setattr(pruning, "train_plain", lambda net, batches, **kwargs: calls.append(kwargs))
    outputs = {"rewind": pruning.rewind_point(cfg, datamodule, StageContext())}
    pruning.search(cfg, datamodule, StageContext(outputs=outputs))
    assert [call["epochs"] for call in calls] == [range(0, 3), range(3, 5)]  # rewind, then one LTR round
    for call in calls:
        assert call["total_epochs"] == 3 + cfg.trainer.max_epochs
        assert call["clip"] == 1.5 and call["clip_algorithm"] == "norm"
        assert call["optimizer_cfg"].weight_decay == 1e-3 and call["optimizer_cfg"].momentum == 0.9


def test_search_drops_its_rate_one_epoch_before_int_088_e_as_tlab(tiny, monkeypatch):
    assert [lr_drop_epoch(e, 0.88) for e in (1, 2, 3, 10, 20, 100)] == [None, None, 1, 7, 16, 87]
    for epochs in (1, 2, 3, 10, 20, 25, 100):
        drop = lr_drop_epoch(epochs, 0.88)
        ours = [1.0 if drop is None or e < drop else 0.1 for e in range(epochs)]
        assert ours == pytest.approx(tlab_search_rates(epochs, 1.0)), epochs

    net, batches = tiny
    rates = []

    class RecordingAdam(torch.optim.Adam):
        def step(self, closure=None):
            rates.append(self.param_groups[0]["lr"])
            return super().step(closure)

    monkeypatch.setattr(torch.optim, "Adam", RecordingAdam)
    rkl = divergences.build("rkl")
    concrete_search(net, batches, 0.2, lambda s, d, y: rkl(s, d).mean(), epochs=10, lr=0.1)
    per_epoch = rates[::3]  # 3 batches per epoch
    assert len(rates) == 30 and all(rates[i] == rates[i - i % 3] for i in range(30))
    assert per_epoch == pytest.approx([0.1] * 7 + [0.01] * 3)  # epochs 0..6 at lr, 7..9 at lr / 10
    assert per_epoch == pytest.approx(tlab_search_rates(10, 0.1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_search_and_ltr_pruning_stay_on_the_gpu(tiny):
    net, batches = tiny
    device = torch.device("cuda")
    net.to(device)

    def on_device(epoch):
        return [(x.to(device), y.to(device)) for x, y in batches(epoch)]

    rkl = divergences.build("rkl")
    result = concrete_search(net, on_device, 0.2, lambda s, d, y: rkl(s, d).mean(), epochs=2)
    assert all(m.device.type == "cuda" for m in [*result.mask, *result.logits])
    mask = [torch.ones_like(w, dtype=torch.bool) for w in prunable_weights(net)]
    pruned = pruning._prune_by_magnitude(net, mask, 0.5)
    assert all(m.device.type == "cuda" for m in pruned)
    expected = global_top_k([w.detach().abs().cpu() for w in prunable_weights(net)], 0.5)
    assert all(torch.equal(p.cpu(), e) for p, e in zip(pruned, expected, strict=True))
