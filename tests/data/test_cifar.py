"""CIFAR reader, augmentation and ResNets, on tiny files written in the real format."""

import pytest
import torch

from divergence_lab.config.checks import validate_settings
from divergence_lab.data.cifar import CIFARDataModule, random_crop_flip, read_cifar, write_cifar
from divergence_lab.ground.errors import ConfigError
from divergence_lab.models.resnet_cifar import CifarResNet
from tests.conftest import compose_config, run_training


@pytest.mark.parametrize("variant, classes", [("cifar10", 10), ("cifar100", 100)])
def test_reader_decodes_channel_planar_images_and_labels(tmp_path, variant, classes):
    raw_images = write_cifar(tmp_path, variant)
    splits = read_cifar(tmp_path, variant)
    images, labels = splits["train"]
    assert images.shape == (3 * classes, 3, 32, 32) and images.dtype == torch.uint8
    # pixel (row 2, column 5) of the green plane is byte 1024 + 2 * 32 + 5 of the row
    assert images[7, 1, 2, 5].item() == raw_images[7, 1024 + 2 * 32 + 5]
    assert labels.tolist() == [c for c in range(classes) for _ in range(3)]
    assert splits["test"][0].shape == (classes, 3, 32, 32)


def test_missing_files_give_one_clear_line(tmp_path):
    with pytest.raises(
        ValueError, match=r"data.data_dir: cifar100 not found, expected .*cifar-100-python/\{train, test\}"
    ):
        read_cifar(tmp_path, "cifar100")


def test_datamodule_normalises_and_holds_out_a_stratified_validation_split(tmp_path):
    write_cifar(tmp_path, "cifar10", per_class=10)
    dm = CIFARDataModule(str(tmp_path), "cifar10", val_fraction=0.2)
    dm.setup()
    assert len(dm.splits["train"]) == 80 and len(dm.splits["val"]) == 20 and len(dm.splits["test"]) == 10
    assert torch.bincount(dm.splits["val"].tensors[1]).tolist() == [2] * 10
    x = dm.splits["train"].tensors[0]
    torch.testing.assert_close(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-4, rtol=0)
    assert dm.input_shape == (3, 32, 32) and dm.num_classes == 10


def test_random_crop_flip_shifts_within_padding_and_flips():
    torch.manual_seed(0)
    images = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).view(2, 3, 32, 32) + 1
    out = random_crop_flip(images.repeat(50, 1, 1, 1))
    assert out.shape == (100, 3, 32, 32)
    # every output is a shifted (and maybe flipped) copy: its non-zero pixels come from the source image
    for k in range(0, 100, 7):
        source = images[k % 2]
        values = set(out[k][out[k] > 0].tolist())
        assert values <= set(source.flatten().tolist())
        assert (out[k] == 0).sum() <= 3 * (32 * 32 - 24 * 24)  # at most 4 rows + 4 columns padded
    assert not torch.equal(out[0], out[2])


@pytest.mark.parametrize("depth, blocks", [(20, 9), (56, 27)])
def test_resnet_depth_and_output(depth, blocks):
    net = CifarResNet([3, 32, 32], 100, depth=depth)
    assert sum(type(m).__name__ == "BasicBlock" for m in net.modules()) == blocks
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_resnet_refuses_a_bad_depth():
    with pytest.raises(ValueError, match="model.depth must be 6n"):
        CifarResNet([3, 32, 32], 10, depth=21)


@pytest.mark.slow
def test_bdkd_cifar100_preset_runs_a_couple_of_steps(tmp_path):
    write_cifar(tmp_path / "data", "cifar100", per_class=3)
    record, run_dir = run_training(
        tmp_path,
        [
            "experiment=bdkd_cifar100",
            "trainer=cpu",
            f"data.data_dir={tmp_path / 'data'}",
            "data.val_fraction=0.34",
            "data.batch_size=8",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=2",
            "+trainer.limit_val_batches=1",
            "+trainer.limit_test_batches=1",
        ],
    )
    assert record["data"] == "cifar100" and record["method"] == "bdkd"
    assert {"test/acc", "test/ece", "test/brier", "test/teacher_acc", "test/teacher_ece"} <= set(
        record["metrics"]
    )
    assert (run_dir / "reliability.png").is_file()


def test_gcd_cifar100_partitions_every_training_image_as_the_official_protocol(tmp_path):
    from divergence_lab.data.gcd import GCDDataModule

    write_cifar(tmp_path, "cifar100", per_class=4)
    base = CIFARDataModule(str(tmp_path), "cifar100", val_fraction=0.0, augment=False)
    gcd = GCDDataModule(base, num_known=80, labelled_fraction=0.5)
    gcd.setup()
    assert len(gcd.train_set) == 400  # no validation hold-out: D_l + D_u = the whole training set
    assert int(gcd.labelled.sum()) == 160 and len(gcd.unlabelled_set) == 240  # half of 80 x 4 labelled


def test_without_validation_images_the_run_must_test_its_last_epoch(tmp_path):
    write_cifar(tmp_path, "cifar10", per_class=2)
    dm = CIFARDataModule(str(tmp_path), "cifar10", val_fraction=0.0)
    dm.setup()
    assert not dm.has_validation_split and len(dm.splits["train"]) == 20
    cfg = compose_config(["data=cifar10", f"data.data_dir={tmp_path}", "data.val_fraction=0"])
    with pytest.raises(ConfigError, match="data.val_fraction=0 holds out no validation images") as refusal:
        validate_settings(cfg)
    assert "\n" not in str(refusal.value) and "protocol=full_train_last_epoch" in str(refusal.value)
    validate_settings(compose_config(["data=cifar10", "protocol=full_train_last_epoch"]))


def test_an_optuna_sweep_without_validation_images_is_refused_in_one_line():
    from divergence_lab.entry.sweep_checks import check_sweep_settings

    cfg = compose_config(["hparams_search=kd_optuna", "protocol=full_train_last_epoch"], with_hydra=True)
    with pytest.raises(ConfigError, match="no validation metric for the Optuna sweeper"):
        check_sweep_settings(cfg)


@pytest.mark.slow
def test_the_full_training_set_protocol_trains_on_every_image_and_tests_the_last_epoch(tmp_path):
    write_cifar(tmp_path / "data", "cifar10", per_class=3)
    record, run_dir = run_training(
        tmp_path,
        [
            "protocol=full_train_last_epoch",
            "method=teacher",
            "data=cifar10",
            f"data.data_dir={tmp_path / 'data'}",
            "data.batch_size=10",
            "trainer.max_epochs=2",
        ],
    )
    assert (record["n_train"], record["n_val"], record["selected_epoch"]) == (30, 0, 2)
    assert record["checkpoint_selection"].startswith("last epoch")
    assert "val/acc" not in record["metrics"] and "test/acc" in record["metrics"]
    header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "val/" not in header
