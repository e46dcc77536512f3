"""The teacher cache: where it lives, what its key depends on, and what it logs."""

import json
import logging
import os
import re

import torch
from omegaconf import OmegaConf

from divergence_lab.config.resolvers import user_cache
from divergence_lab.data import instantiate_datamodule
from divergence_lab.data.cifar import CIFARDataModule, write_cifar
from divergence_lab.data.digits import DigitsDataModule
from divergence_lab.models.mlp import MLP
from divergence_lab.run import teacher_cache as teachers
from tests.conftest import compose_config

CPU = {"accelerator": "cpu", "devices": 1}
TOY_NETWORK = """
import math

from torch import nn


class ToyNet(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.layer = nn.Linear(math.prod(in_shape), num_classes)

    def forward(self, x):
        return self.layer({features})
"""


def _teacher_config(*overrides: str):
    cfg = compose_config(["method.teacher.max_epochs=1", "method.teacher.model.hidden=[16]", *overrides])
    return cfg.method.teacher, cfg.data


def _cache_path(monkeypatch, environment: dict[str, str], overrides: tuple[str, ...] = ()) -> str:
    for name in ("DLAB_TEACHER_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return compose_config(list(overrides)).paths.teacher_cache


def test_default_location_is_the_per_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    home_cache = str(tmp_path / "home" / ".cache" / "divergence_lab" / "teachers")
    assert _cache_path(monkeypatch, {}) == home_cache
    assert user_cache("teachers") == home_cache
    xdg = str(tmp_path / "xdg")
    assert _cache_path(monkeypatch, {"XDG_CACHE_HOME": xdg}) == f"{xdg}/divergence_lab/teachers"
    assert _cache_path(monkeypatch, {"XDG_CACHE_HOME": "relative/cache"}) == home_cache  # XDG: ignored
    explicit = {"XDG_CACHE_HOME": xdg, "DLAB_TEACHER_CACHE": str(tmp_path / "shared")}
    assert _cache_path(monkeypatch, explicit) == str(tmp_path / "shared")
    assert _cache_path(monkeypatch, explicit, ("paths.teacher_cache=/data/teachers",)) == "/data/teachers"


def test_the_session_has_its_own_teacher_cache():
    """conftest sets DLAB_TEACHER_CACHE (unless the caller did): tests never fill the user's cache."""
    assert compose_config().paths.teacher_cache == os.environ["DLAB_TEACHER_CACHE"]


def test_same_config_gives_the_same_key_whatever_the_random_state():
    torch.manual_seed(1)
    key = teachers.teacher_key(*_teacher_config())
    torch.manual_seed(2)  # another initialisation of the network: its definition is what is hashed
    assert teachers.teacher_key(*_teacher_config()) == key
    assert re.fullmatch(r"[0-9a-f]{16}", key)


def test_other_training_data_changes_the_key(monkeypatch):
    teacher, data = _teacher_config()
    key = teachers.teacher_key(teacher, data)
    assert teachers.teacher_key(*_teacher_config("data.split_seed=1")) != key
    assert teachers.teacher_key(*_teacher_config("data.label_noise=0.1")) != key
    loader = DigitsDataModule.load_splits

    def one_pixel_brighter(self):
        splits = loader(self)
        splits["train"][0][0, 0, 0, 0] += 0.5
        return splits

    monkeypatch.setattr(DigitsDataModule, "load_splits", one_pixel_brighter)  # same config, other tensors
    brighter = teachers.teacher_key(teacher, data)
    assert brighter != key
    monkeypatch.setattr(DigitsDataModule, "data_fingerprint", lambda self: "other data")
    assert teachers.teacher_key(teacher, data) not in (key, brighter)


def test_network_code_and_architecture_change_the_key(monkeypatch, tmp_path):
    module = tmp_path / "toy_teacher_network.py"
    module.write_text(TOY_NETWORK.format(features="x.flatten(1)"))
    monkeypatch.syspath_prepend(str(tmp_path))
    teacher, data = _teacher_config()
    toy = {"_target_": "toy_teacher_network.ToyNet"}
    teacher = OmegaConf.create({**OmegaConf.to_container(teacher), "model": toy})
    key = teachers.teacher_key(teacher, data)
    module.write_text(TOY_NETWORK.format(features="x.flatten(1).tanh()"))  # same layers, other forward
    assert teachers.teacher_key(teacher, data) != key
    mlp_key = teachers.teacher_key(*_teacher_config())
    monkeypatch.setattr(
        teachers, "build_network", lambda model, dm: MLP(dm.input_shape, dm.num_classes, hidden=[17])
    )
    assert teachers.teacher_key(*_teacher_config()) != mlp_key  # same config and code, other layers


def test_cifar_fingerprint_reads_file_sizes_and_times_not_contents(tmp_path):
    write_cifar(tmp_path, "cifar10")
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    module = CIFARDataModule(data_dir=str(tmp_path))  # never set up: nothing is read
    fingerprint = module.data_fingerprint()
    assert CIFARDataModule(data_dir=str(tmp_path)).data_fingerprint() == fingerprint
    assert CIFARDataModule(data_dir=str(tmp_path), split_seed=1).data_fingerprint() != fingerprint
    stat = batch.stat()
    os.utime(batch, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert module.data_fingerprint() != fingerprint


def test_gcd_fingerprint_follows_its_base_and_its_split():
    def fingerprint(*overrides: str) -> str:
        data = compose_config(["data=gcd_digits", *overrides]).data
        return instantiate_datamodule(data, seed=0).data_fingerprint()

    reference = fingerprint()
    assert fingerprint() == reference
    assert fingerprint("data.split_seed=1") != reference
    assert fingerprint("data.base.split_seed=1") != reference


def _messages(caplog, pattern: str) -> list[str]:
    return [record.getMessage() for record in caplog.records if re.fullmatch(pattern, record.getMessage())]


def test_accuracy_line_on_train_and_on_load_and_a_progress_line_per_epoch(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="divergence_lab")
    teacher, data = _teacher_config("method.teacher.max_epochs=2")
    teachers.load_or_train_teacher(teacher, data, tmp_path, CPU)
    progress = _messages(caplog, r"\[teacher\] .*")
    assert [line.split("  ")[0] for line in progress] == ["[teacher] epoch 1/2", "[teacher] epoch 2/2"]
    assert all(" loss " in line and " val acc " in line for line in progress)
    (weights,) = tmp_path.glob("*/teacher.pt")
    entry = weights.parent
    summary = rf"teacher {entry.name} \(MLP, [\d,]+ parameters, 2 epochs\): test acc (0\.\d{{4}}), "
    (trained,) = _messages(caplog, summary + rf"trained in .+, cached at {re.escape(str(entry))}")

    caplog.clear()
    teachers.load_or_train_teacher(teacher, data, tmp_path, CPU)
    assert not _messages(caplog, r"\[teacher\] .*")
    (loaded,) = _messages(caplog, summary + f"loaded from {re.escape(str(entry))}")
    assert re.match(summary, loaded).group(1) == re.match(summary, trained).group(1)

    meta = json.loads((entry / "meta.json").read_text())
    fingerprints = {"data", "data_code", "network_code", "architecture", "parameter_shapes"}
    assert set(meta["fingerprints"]) == fingerprints
    assert "divergence_lab.models.mlp" in meta["fingerprints"]["network_code"]
    assert entry.name == teachers.teacher_key(teacher, teachers.teacher_data_config(teacher, data))
