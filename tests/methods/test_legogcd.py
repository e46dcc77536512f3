"""LegoGCD / SimGCD: the GCD split, Hungarian accuracy, the loss pieces, and short real runs."""

import itertools
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from divergence_lab import divergences
from divergence_lab.data.cifar import write_cifar
from divergence_lab.data.gcd import GCDDataModule, gcd_split, shift_noise_erase
from divergence_lab.ground.errors import ConfigError
from divergence_lab.methods.legogcd import (
    dual_view_kl,
    info_nce,
    ler_loss,
    ler_selection,
    mean_entropy_gap,
    teacher_temperature,
)
from divergence_lab.metrics.gcd import cluster_accuracy
from tests.conftest import compose_config, run_training


@pytest.fixture(scope="module")
def gcd_digits():
    from divergence_lab.data import instantiate_datamodule

    return instantiate_datamodule(compose_config(["data=gcd_digits"]).data, seed=0)


def test_split_partitions_the_training_set_with_the_right_classes(gcd_digits):
    y = gcd_digits.base.splits["train"].tensors[1]
    labelled, unlabelled = gcd_digits.labelled, gcd_digits.unlabelled
    assert not (labelled & unlabelled).any() and (labelled | unlabelled).all()
    assert (y[labelled] < 5).all()  # only known classes are labelled
    for label in range(10):
        members = y == label
        if label < 5:  # half of each known class labelled, the rest unlabelled
            assert labelled[members].sum() == round(0.5 * members.sum().item())
        else:  # every novel image is unlabelled
            assert unlabelled[members].all()
    x_u, y_u = gcd_digits.unlabelled_set.tensors
    assert torch.equal(y_u, y[unlabelled]) and len(x_u) == unlabelled.sum()
    visible = gcd_digits.train_set.tensors[1]
    assert (visible[unlabelled] == -1).all() and torch.equal(visible[labelled], y[labelled])


def test_split_is_fixed_by_its_seed():
    y = torch.arange(10).repeat(20)
    assert torch.equal(gcd_split(y, 5, 0.5, 3)[0], gcd_split(y, 5, 0.5, 3)[0])
    assert not torch.equal(gcd_split(y, 5, 0.5, 3)[0], gcd_split(y, 5, 0.5, 4)[0])


def test_training_batches_hold_two_different_views(gcd_digits):
    torch.manual_seed(0)
    view1, view2, y, labelled = next(iter(gcd_digits.train_dataloader()))
    assert view1.shape == view2.shape == (128, 1, 8, 8)
    assert not torch.equal(view1, view2)
    assert ((y >= 0) == labelled).all()


def test_balanced_sampler_draws_labelled_and_unlabelled_images_half_and_half(gcd_digits):
    """The official sampler: weights 1 (labelled) and n_l / n_u (unlabelled), n draws with replacement."""
    labelled = gcd_digits.labelled
    loader = gcd_digits.train_dataloader()
    assert loader.drop_last and len(loader.sampler) == len(labelled)
    loader.sampler.set_epoch(0)
    draws = torch.tensor(list(loader.sampler))
    share = labelled[draws].float().mean().item()
    assert abs(share - 0.5) < 4 * (0.25 / len(draws)) ** 0.5  # binomial(n, 1/2): within 4 std
    assert labelled.float().mean().item() < 0.3  # uniform batches would hold far fewer labelled images
    loader.sampler.set_epoch(1)
    again = torch.tensor(list(loader.sampler))
    loader.sampler.set_epoch(0)
    assert torch.equal(draws, torch.tensor(list(loader.sampler))) and not torch.equal(draws, again)


def test_uniform_sampling_is_one_permutation_per_epoch(gcd_digits):
    from divergence_lab.data.digits import DigitsDataModule

    dm = GCDDataModule(DigitsDataModule(), balanced_sampling=False)
    dm.setup()
    order = list(dm.train_dataloader().sampler)
    assert sorted(order) == list(range(len(dm.train_set)))


def test_digit_augmentation_shifts_by_at_most_one_pixel():
    image = torch.zeros(1, 1, 8, 8)
    image[0, 0, 4, 4] = 1.0
    torch.manual_seed(1)
    out = shift_noise_erase(image.repeat(200, 1, 1, 1), noise=0.0)
    peaks = out.flatten(1).argmax(1)
    rows, cols = peaks // 8, peaks % 8
    kept = out.flatten(1).max(1).values > 0  # the pixel was not erased
    assert ((rows[kept] - 4).abs() <= 1).all() and ((cols[kept] - 4).abs() <= 1).all()
    assert len(set(zip(rows[kept].tolist(), cols[kept].tolist(), strict=True))) == 9


def test_hungarian_accuracy_of_a_permuted_perfect_prediction_is_one():
    y = np.repeat(np.arange(6), 5)
    permutation = np.array([3, 5, 0, 1, 4, 2])
    result = cluster_accuracy(y, permutation[y], num_known=3)
    assert result == {"acc_all": 1.0, "acc_old": 1.0, "acc_new": 1.0}


def test_hungarian_accuracy_matches_a_hand_computed_case():
    # best matching maps cluster c -> class c; one class-1 sample sits in cluster 2
    result = cluster_accuracy(np.array([0, 0, 1, 1, 2, 2]), np.array([0, 0, 1, 2, 2, 2]), num_known=2)
    assert result == pytest.approx({"acc_all": 5 / 6, "acc_old": 3 / 4, "acc_new": 1.0})


def test_hungarian_accuracy_equals_brute_force_over_all_matchings():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y, pred = rng.integers(0, 4, 30), rng.integers(0, 4, 30)
        best = max(np.mean(np.array(perm)[pred] == y) for perm in itertools.permutations(range(4)))
        assert cluster_accuracy(y, pred, 2)["acc_all"] == pytest.approx(best)


def test_hungarian_accuracy_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="equal-length 1-d arrays"):
        cluster_accuracy(np.array([0, 1]), np.array([0]), 1)


def test_ler_selects_only_confident_unlabelled_known_predictions():
    probs = torch.tensor(
        [
            [0.90, 0.05, 0.05],  # unlabelled, known class 0, confident -> selected
            [0.90, 0.05, 0.05],  # labelled -> not selected
            [0.60, 0.20, 0.20],  # unlabelled, known, not confident -> not selected
            [0.05, 0.05, 0.90],  # unlabelled, confident, but a novel class -> not selected
            [0.05, 0.85, 0.10],  # unlabelled, known class 1, confident -> selected
        ]
    )
    labelled = torch.tensor([False, True, False, False, False])
    selected = ler_selection(probs, labelled, num_known=2, threshold=0.8)
    assert selected.tolist() == [True, False, False, False, True]


def test_ler_loss_matches_its_formula_in_float64():
    logits = torch.randn(6, 4, dtype=torch.float64)
    prior = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    selected = torch.tensor([True, False, True, True, False, False])
    expected = 0.0
    for row in range(6):
        if selected[row]:
            target = torch.softmax(logits[row] / 0.05, 0)
            log_pred = torch.log_softmax(logits[row] / 0.05 + 0.4 * torch.log(prior), 0)
            expected += -(target * log_pred).sum().item()
    assert ler_loss(logits, selected, prior, 0.05, 0.4).item() == pytest.approx(expected / 6)


def official_dkl_float64(view1: torch.Tensor, view2: torch.Tensor, temperature: float) -> float:
    """The official ``DistillLoss.forward`` DKL term re-derived by hand in float64: P = exp(s/τ) / Σ exp(s/τ)
    per view, then Σ_k P1_k (log softmax(P1)_k − log softmax(P2)_k), averaged over rows."""
    total = 0.0
    for a, b in zip(view1.double().tolist(), view2.double().tolist(), strict=True):
        p1 = np.exp(np.array(a) / temperature) / np.exp(np.array(a) / temperature).sum()
        p2 = np.exp(np.array(b) / temperature) / np.exp(np.array(b) / temperature).sum()
        log_softmax_p1 = p1 - np.log(np.exp(p1).sum())  # log_softmax applied to the probabilities
        log_softmax_p2 = p2 - np.log(np.exp(p2).sum())
        total += float((p1 * (log_softmax_p1 - log_softmax_p2)).sum())
    return total / len(view1)


def cosine_logits(rows: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    prototypes = F.normalize(torch.randn(classes, 16, generator=generator), dim=1)
    features = F.normalize(torch.randn(rows, 16, generator=generator), dim=1)
    noisy = F.normalize(features + 0.3 * torch.randn(rows, 16, generator=generator), dim=1)
    return features @ prototypes.T, noisy @ prototypes.T


@pytest.mark.parametrize("classes", [10, 100])
def test_official_dkl_equals_a_float64_rederivation_of_the_code(classes):
    view1, view2 = cosine_logits(32, classes, seed=classes)
    value = dual_view_kl(view1.double(), view2.double(), "official_code", 0.1)
    assert value.item() == pytest.approx(official_dkl_float64(view1, view2, 0.1), rel=1e-12)
    assert dual_view_kl(view1, view2, "official_code").item() == pytest.approx(value.item(), rel=1e-4)


def test_paper_dkl_equals_kl_between_the_views_and_takes_any_registry_divergence():
    view1, view2 = cosine_logits(32, 10, seed=1)
    p1, p2 = F.softmax(view1.double() / 0.1, 1), F.softmax(view2.double() / 0.1, 1)
    expected = (p1 * (p1.log() - p2.log())).sum(1).mean().item()
    assert dual_view_kl(view1.double(), view2.double(), "paper", 0.1).item() == pytest.approx(
        expected, rel=1e-10
    )
    js = divergences.build("js", temperature=1.0, t_squared=False)
    m = (p1 + p2) / 2
    expected_js = (0.5 * (p1 * (p1 / m).log()).sum(1) + 0.5 * (p2 * (p2 / m).log()).sum(1)).mean().item()
    assert dual_view_kl(view1.double(), view2.double(), "paper", 0.1, js).item() == pytest.approx(
        expected_js, rel=1e-8
    )


def test_the_official_dkl_is_far_weaker_than_the_true_kl():
    """The double softmax squeezes probabilities in [0, 1] into logits of a softmax: the term is several
    times smaller than KL(P1 || P2) on cosine logits (the reason the two forms are both offered)."""
    view1, view2 = cosine_logits(64, 10, seed=2)
    official = dual_view_kl(view1, view2, "official_code").item()
    paper = dual_view_kl(view1, view2, "paper").item()
    assert 0 < official < paper / 3


@pytest.mark.parametrize("form", ["official_code", "paper"])
def test_dkl_gradients_reach_both_views(form):
    view1, view2 = (t.requires_grad_(True) for t in cosine_logits(8, 5, seed=3))
    dual_view_kl(view1, view2, form).backward()
    assert view1.grad.abs().sum() > 0 and view2.grad.abs().sum() > 0


def test_an_unknown_dkl_form_is_refused():
    view1, view2 = cosine_logits(4, 5, seed=4)
    with pytest.raises(ConfigError, match="method.dkl_form must be one of official_code, paper"):
        dual_view_kl(view1, view2, "true_kl")


def test_teacher_temperature_warms_up_linearly_then_stays():
    assert teacher_temperature(0) == pytest.approx(0.07)
    assert teacher_temperature(29) == pytest.approx(0.04)
    assert teacher_temperature(100) == pytest.approx(0.04)
    assert teacher_temperature(0) > teacher_temperature(10) > teacher_temperature(20)


def test_mean_entropy_gap_is_zero_for_a_balanced_batch_and_log_k_for_a_collapsed_one():
    assert mean_entropy_gap(torch.eye(4)).item() == pytest.approx(0.0, abs=1e-6)
    assert mean_entropy_gap(torch.tensor([[1.0, 0, 0, 0]] * 3)).item() == pytest.approx(np.log(4), rel=1e-5)


def test_info_nce_matches_an_explicit_computation():
    z1, z2 = F.normalize(torch.randn(4, 3), dim=1), F.normalize(torch.randn(4, 3), dim=1)
    z = torch.cat([z1, z2])
    losses = []
    for i in range(8):
        positive = (i + 4) % 8
        others = [j for j in range(8) if j != i]
        logits = torch.stack([z[i] @ z[j] / 0.5 for j in others])
        losses.append(-(z[i] @ z[positive] / 0.5 - torch.logsumexp(logits, 0)))
    assert info_nce(z1, z2, 0.5).item() == pytest.approx(torch.stack(losses).mean().item(), rel=1e-5)


@pytest.mark.slow
def test_legogcd_run_records_old_new_accuracy_curves_and_a_distribution_prior(tmp_path):
    overrides = ["experiment=legogcd_digits", "trainer.max_epochs=3", "method.pretrain.epochs=1"]
    record, run_dir = run_training(tmp_path, overrides)
    for name in ("test/acc", "test/acc_old", "test/acc_new"):
        assert 0.0 <= record["metrics"][name] <= 1.0
    curve = json.loads((run_dir / "gcd_curve.json").read_text())
    assert [row["epoch"] for row in curve] == [0, 1, 2]
    assert curve[-1]["acc_all"] == pytest.approx(record["metrics"]["test/acc"])  # the last epoch is reported
    assert (run_dir / "gcd_curve.png").is_file()
    prior = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]["prior"]
    assert prior.min() > 0 and prior.sum().item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
def test_dkl_divergence_comes_from_the_registry(tmp_path):
    base = ["experiment=legogcd_digits", "trainer.max_epochs=1", "method.pretrain.epochs=1"]
    base.append("method.dkl_form=paper")
    values = {}
    for name in ("kl", "js"):
        _, run_dir = run_training(tmp_path, [*base, f"divergence={name}"], name)
        rows = [line.split(",") for line in (run_dir / "csv" / "metrics.csv").read_text().splitlines()]
        column = rows[0].index("train/dkl")
        values[name] = next(float(row[column]) for row in rows[1:] if row[column])
    assert values["kl"] != values["js"] and values["js"] <= np.log(2)  # JS is bounded by log 2


@pytest.mark.slow
def test_simgcd_runs_on_gcd_vectors(tmp_path):
    overrides = ["data=gcd_synthetic", "method=simgcd", "trainer.max_epochs=2"]
    overrides.append("method.pretrain.epochs=1")
    record, _ = run_training(tmp_path, overrides)
    assert record["method"] == "simgcd" and record["data"] == "gcd_synthetic"
    assert 0.0 <= record["metrics"]["test/acc_new"] <= 1.0


def test_legogcd_needs_gcd_data(tmp_path):
    with pytest.raises(ConfigError, match="needs a GCD data config"):
        run_training(tmp_path, ["method=legogcd", "trainer.max_epochs=1"])


def test_gcd_data_refuses_bad_settings():
    from divergence_lab.data.digits import DigitsDataModule

    with pytest.raises(ValueError, match="data.labelled_fraction must be in"):
        GCDDataModule(DigitsDataModule(), labelled_fraction=1.5)
    with pytest.raises(ValueError, match="data.num_known must be in"):
        GCDDataModule(DigitsDataModule(), num_known=10).setup()
    with pytest.raises(ValueError, match="data.balanced_sampling must be true or false"):
        GCDDataModule(DigitsDataModule(), balanced_sampling="yes")


@pytest.mark.slow
def test_legogcd_cifar100_preset_runs_a_couple_of_steps(tmp_path):
    write_cifar(tmp_path / "data", "cifar100", per_class=3)
    record, run_dir = run_training(
        tmp_path,
        [
            "experiment=legogcd_cifar100",
            "trainer=cpu",
            f"data.base.data_dir={tmp_path / 'data'}",
            "data.base.val_fraction=0.34",
            "data.batch_size=16",
            "method.pretrain.epochs=1",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=2",
        ],
    )
    assert record["data"] == "gcd_cifar100" and record["method"] == "legogcd"
    assert {"test/acc", "test/acc_old", "test/acc_new"} <= set(record["metrics"])


def test_a_batch_without_labelled_images_gives_a_finite_loss():
    from divergence_lab.methods.legogcd import GCDNetwork, LegoGCDModule, build_backbone

    torch.manual_seed(0)
    backbone, width = build_backbone("mlp", (64,), [16], 20)
    settings = dict(
        use_dkl=True, dkl_form="official_code", use_ler=True, sup_weight=0.35, memax_weight=2.0,
        student_temperature=0.1,
        teacher_temperature=(0.07, 0.04, 30), infonce_temperature=1.0, supcon_temperature=0.07,
        ler_threshold=0.0, ler_tau=0.05, ler_margin=0.4, ler_weight=2.0, prior_momentum=0.9,
    )  # fmt: skip
    dkl = divergences.build("kl", temperature=1.0, t_squared=False)
    net = GCDNetwork(backbone, width, 8, 10)
    module = LegoGCDModule(net, 5, {"name": "sgd", "lr": 0.1}, 10, settings, dkl)
    module.log = lambda *args, **kwargs: None
    x = torch.randn(6, 64)
    for labelled in (torch.zeros(6, dtype=torch.bool), torch.tensor([True, False] * 3)):
        y = torch.where(labelled, torch.tensor([0, 1, 2, 3, 4, 0]), torch.tensor(-1))
        loss = module.training_step((x, x + 0.1, y, labelled), 0)
        assert torch.isfinite(loss)
        prior = module.prior  # q̂ stays a distribution
        assert prior.min() > 0 and prior.sum().item() == pytest.approx(1.0, abs=1e-6)
