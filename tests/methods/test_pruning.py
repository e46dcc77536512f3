"""Pruning: exact tickets, GRADBALANCE, the saliency scores against independent computations, sparse
training that keeps pruned weights at zero, and the sanity checks."""

import json

import pytest
import torch
import torch.nn.functional as F

from divergence_lab import divergences
from divergence_lab.data.cifar import write_cifar
from divergence_lab.models.mlp import MLP
from divergence_lab.pruning import saliency
from divergence_lab.pruning.concrete import concrete_search
from divergence_lab.pruning.masks import (
    density,
    global_top_k,
    kept_count,
    layer_densities,
    prunable_weights,
    shuffle_within_layers,
)
from tests.conftest import run_training


@pytest.fixture
def toy():
    """A 10-class Gaussian mixture in 16 dimensions and a small MLP (16-64-32-10, 3 392 prunable weights)."""
    generator = torch.Generator().manual_seed(0)
    means = 3 * torch.randn(10, 16, generator=generator)
    y = torch.arange(10).repeat(40)
    x = means[y] + torch.randn(len(y), 16, generator=generator)
    torch.manual_seed(0)
    net = MLP((16,), 10, hidden=[64, 32])

    def batches(epoch):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        return [(x[b], y[b]) for b in order.split(50)]

    return net, batches, x, y


@pytest.mark.parametrize("kappa", [0.3, 0.05, 0.0037])
def test_global_top_k_keeps_exactly_round_kappa_d(kappa):
    scores = [torch.randn(30, 20), torch.randn(7, 3, 3), torch.randn(11)]
    mask = global_top_k(scores, kappa)
    total = 600 + 63 + 11
    assert sum(int(m.sum()) for m in mask) == round(kappa * total)
    kept = torch.cat([s.flatten() for s in scores])[torch.cat([m.flatten() for m in mask])]
    dropped = torch.cat([s.flatten() for s in scores])[~torch.cat([m.flatten() for m in mask])]
    assert kept.min() >= dropped.max()  # the kept scores are the largest


def test_density_must_be_in_the_unit_interval():
    with pytest.raises(ValueError, match=r"method.density must be in \(0, 1\]"):
        kept_count(100, 0.0)


def test_gradbalance_holds_the_expected_density_at_its_slackened_target_without_tuning(toy):
    """GRADBALANCE aims at 1.1 κ d active weights (10 % slack): the expected density settles there, within
    10 % of κ up to its own oscillation, and the hard ticket then keeps exactly round(κ d) weights."""
    net, batches, _, _ = toy
    weights_before = [w.clone() for w in prunable_weights(net)]
    total = sum(w.numel() for w in weights_before)
    rkl = divergences.build("rkl")
    for kappa in (0.1, 0.02):
        result = concrete_search(net, batches, kappa, lambda s, d, y: rkl(s, d).mean(), epochs=250)
        trajectory = result.expected_density
        assert trajectory[0] == pytest.approx(kappa, rel=0.05)  # starts at κ
        settled = sum(trajectory[-500:]) / 500  # the last quarter of the search
        assert settled == pytest.approx(1.1 * kappa, rel=0.03), (kappa, settled / kappa)
        assert sum(int(m.sum()) for m in result.mask) == round(kappa * total)
    for before, after in zip(weights_before, prunable_weights(net), strict=True):
        assert torch.equal(before, after)  # the search never touches the weights


def test_search_objective_comes_from_the_registry(toy):
    net, batches, _, _ = toy
    masks = {}
    for name in ("rkl", "kl"):
        torch.manual_seed(1)
        divergence = divergences.build(name)
        objective = lambda s, d, y, div=divergence: div(s, d).mean()  # noqa: E731
        result = concrete_search(net, batches, 0.05, objective, epochs=3)
        masks[name] = torch.cat([m.flatten() for m in result.mask])
    assert not torch.equal(masks["rkl"], masks["kl"])  # a different objective, a different ticket


def test_shuffle_keeps_every_layers_count():
    mask = global_top_k([torch.randn(50, 40), torch.randn(10, 50)], 0.1)
    shuffled = shuffle_within_layers(mask, torch.Generator().manual_seed(0))
    assert [int(m.sum()) for m in shuffled] == [int(m.sum()) for m in mask]
    assert layer_densities(shuffled) == layer_densities(mask)
    assert not all(torch.equal(a, b) for a, b in zip(mask, shuffled, strict=True))


def test_snip_scores_are_weight_times_gradient(toy):
    net, batches, x, y = toy
    batch = batches(0)[:2]
    scores = saliency.snip_scores(net, batch)
    weights = prunable_weights(net)
    grads = torch.autograd.grad(sum(F.cross_entropy(net(bx), by) for bx, by in batch), weights)
    for score, w, g in zip(scores, weights, grads, strict=True):
        assert torch.allclose(score, (w * g).abs(), atol=1e-7)


def test_grasp_hessian_gradient_product_matches_finite_differences(toy):
    net, batches, _, _ = toy
    net = net.double()
    batch = [(bx.double(), by) for bx, by in batches(0)[:1]]
    weights = prunable_weights(net)
    scores = saliency.grasp_scores(net, batch)
    (bx, by) = batch[0]
    g = [t.detach() for t in torch.autograd.grad(F.cross_entropy(net(bx), by), weights)]
    eps = 1e-5

    def grad_at(sign):
        with torch.no_grad():
            for w, d in zip(weights, g, strict=True):
                w.add_(sign * eps * d)
        out = torch.autograd.grad(F.cross_entropy(net(bx), by), weights)
        with torch.no_grad():
            for w, d in zip(weights, g, strict=True):
                w.sub_(sign * eps * d)
        return out

    plus, minus = grad_at(1.0), grad_at(-1.0)
    for score, w, gp, gm in zip(scores, weights, plus, minus, strict=True):
        hg = (gp - gm) / (2 * eps)
        assert torch.allclose(score, w.detach() * hg, rtol=1e-4, atol=1e-8)


def test_synflow_keeps_the_target_count_and_needs_no_data(toy):
    net, _, _, _ = toy
    mask = saliency.synflow_mask(net, (16,), 0.02, rounds=20)
    assert sum(int(m.sum()) for m in mask) == round(0.02 * sum(m.numel() for m in mask))
    assert all(m.any() for m in mask)  # SynFlow avoids layer collapse


@pytest.mark.slow
@pytest.mark.parametrize("pruner", ["ltr", "synflow"])
def test_sparse_training_keeps_pruned_weights_exactly_zero(tmp_path, pruner):
    overrides = [
        "experiment=cts_digits",
        "method=prune",
        f"method.pruner={pruner}",
        "method.density=0.05",
        # each pruner's own schedule, shortened (a key the pruner does not read would be refused)
        {"ltr": "method.ltr.epochs_per_round=1", "synflow": "method.synflow_rounds=10"}[pruner],
        "trainer.max_epochs=2",
    ]
    record, run_dir = run_training(tmp_path, overrides)
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    weights = [value for key, value in state.items() if key.startswith("net.") and key.endswith("weight")]
    masks = [state[f"mask_{i}"] for i in range(len(weights))]
    for weight, keep in zip(weights, masks, strict=True):
        assert (weight[~keep] == 0).all()  # after every optimizer step, momentum and weight decay included
    total = sum(m.numel() for m in masks)
    assert sum(int(m.sum()) for m in masks) == round(0.05 * total)  # exactly κ d
    # the trained weights are zero exactly where the mask is (the logged value is float32)
    assert record["metrics"]["test/density"] == pytest.approx(density(masks), abs=1e-7)


@pytest.mark.slow
def test_cts_run_writes_its_density_trajectory_and_search_time(tmp_path):
    overrides = [
        "experiment=cts_digits",
        "method.density=0.02",
        "method.search.epochs=2",
        "trainer.max_epochs=1",
    ]
    record, run_dir = run_training(tmp_path, overrides)
    trajectory = json.loads((run_dir / "density_trajectory.json").read_text())
    steps_per_epoch = -(-1259 // 64)  # digits training split, batch 64
    assert len(trajectory) == 2 * steps_per_epoch and trajectory[0] == pytest.approx(0.02, rel=0.05)
    assert record["metrics"]["test/search_time_s"] > 0
    assert record["divergence"] == "rkl"  # CTS-KL by default


def test_bad_pruning_settings_are_refused(tmp_path):
    from divergence_lab.ground.errors import ConfigError

    with pytest.raises(ConfigError, match="method.pruner must be one of"):
        run_training(tmp_path, ["experiment=cts_digits", "method=prune", "method.pruner=optimal"], "a")
    with pytest.raises(ConfigError, match="method.sanity=invert needs a score-based pruner"):
        overrides = ["experiment=cts_digits", "method=prune", "method.pruner=synflow", "method.sanity=invert"]
        run_training(tmp_path, [*overrides, "method.synflow_rounds=2"], "b")


@pytest.mark.slow
def test_cts_resnet20_cifar10_preset_runs_a_couple_of_steps(tmp_path):
    write_cifar(tmp_path / "data", "cifar10", per_class=4)
    record, _ = run_training(
        tmp_path,
        [
            "experiment=cts_resnet20_cifar10",
            "trainer=cpu",
            f"data.data_dir={tmp_path / 'data'}",
            "data.val_fraction=0.25",
            "data.batch_size=8",
            "method.rewind_epochs=1",
            "method.search.epochs=1",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=2",
        ],
    )
    assert record["data"] == "cifar10" and record["method"] == "cts"
    assert record["metrics"]["test/density"] == pytest.approx(0.007, abs=1e-5)  # round(κ d) / d
