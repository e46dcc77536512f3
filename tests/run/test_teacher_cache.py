"""The teacher cache: where it lives, what its key depends on, what it logs, that loading only reads
(a read-only cache serves its teachers), that entries appear whole, and that training resumes."""

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from divergence_lab.data import instantiate_datamodule
from divergence_lab.data.cifar import CIFARDataModule, write_cifar
from divergence_lab.data.digits import DigitsDataModule
from divergence_lab.ground.errors import ConfigError
from divergence_lab.ground.paths import user_cache
from divergence_lab.ground.progress import StageProgress
from divergence_lab.methods import recipes
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


@contextmanager
def _threads(count: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def test_teachers_trained_under_other_numerics_never_share_an_entry(tmp_path):
    """Threads, device type and precision change a teacher's bits, so each has its own entry, and the
    entry and the run's teacher.json say which it was trained under."""
    teacher, data = _teacher_config()
    cpu = {"accelerator": "cpu", "devices": 1}
    record = tmp_path / "teacher.json"
    for count in (1, 2):
        with _threads(count):
            teachers.load_or_train_teacher(teacher, data, tmp_path / "cache", cpu, record)
    entries = sorted(p for p in (tmp_path / "cache").iterdir() if p.is_dir())
    assert len(entries) == 2
    recorded = {json.loads((e / teachers.META).read_text())["numerics"]["threads"] for e in entries}
    assert recorded == {1, 2}
    written = json.loads(record.read_text())
    assert sorted(entry["numerics"]["threads"] for entry in written.values()) == [1, 2]
    assert all(entry["numerics"]["torch"] == torch.__version__ for entry in written.values())
    with _threads(1):
        key = teachers.teacher_key(teacher, data)
        assert key == teachers.teacher_key(teacher, data, cpu)
        assert key != teachers.teacher_key(teacher, data, {**cpu, "precision": "bf16-mixed"})
        assert key != teachers.teacher_key(teacher, data, {"accelerator": "gpu"})
    automatic = teachers.numerics({"accelerator": "auto"})["device"]
    assert automatic == ("cuda" if torch.cuda.is_available() else "cpu")


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
        recipes, "build_network", lambda model, dm: MLP(dm.input_shape, dm.num_classes, hidden=[17])
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


REPO = Path(__file__).parents[2]


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``folder`` (and the folder) with its modification time and size."""
    paths = [folder, *sorted(folder.rglob("*"))]
    return {str(path.relative_to(folder)): (path.stat().st_mtime_ns, path.stat().st_size) for path in paths}


def _weights(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in net.state_dict().items()}


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def _cannot_write(folder: Path) -> bool:
    try:
        (folder / ".probe").write_text("x")
    except OSError:
        return True
    (folder / ".probe").unlink()
    return False


@contextmanager
def _read_only(folder: Path):
    """``folder`` and everything in it made unwritable for this process, whoever runs it.

    ``chmod`` does not stop root, so as root the folders are made immutable (``chattr +i``, which binds
    root too) where the filesystem and the privileges allow it; the test is skipped where neither works.
    """
    folders = [folder, *(path for path in folder.rglob("*") if path.is_dir())]
    if os.geteuid() != 0:
        for path in folders:
            path.chmod(0o555)
        undo = lambda: [path.chmod(0o755) for path in folders]  # noqa: E731
    elif shutil.which("chattr") and subprocess.run(["chattr", "+i", *map(str, folders)]).returncode == 0:
        undo = lambda: subprocess.run(["chattr", "-i", *map(str, folders)], check=True)  # noqa: E731
    else:
        pytest.skip("cannot make a folder read-only for root here (no chattr +i)")
    try:
        if not _cannot_write(folder):
            pytest.skip(f"{folder} is still writable")
        yield
    finally:
        undo()


def test_loading_a_cached_teacher_writes_nothing(tmp_path):
    teacher, data = _teacher_config()
    trained = _weights(teachers.load_or_train_teacher(teacher, data, tmp_path, CPU))
    for lock in tmp_path.glob("*.lock"):
        lock.unlink()  # the training's lock: loading must not make one
    before = _snapshot(tmp_path)
    loaded = teachers.load_or_train_teacher(teacher, data, tmp_path, CPU)
    assert _snapshot(tmp_path) == before
    assert _same_weights(_weights(loaded), trained)


def test_a_read_only_cache_serves_the_teachers_it_holds(tmp_path, caplog):
    teacher, data = _teacher_config()
    trained = _weights(teachers.load_or_train_teacher(teacher, data, tmp_path, CPU))
    caplog.set_level(logging.INFO, logger="divergence_lab")
    with _read_only(tmp_path):
        loaded = teachers.load_or_train_teacher(teacher, data, tmp_path, CPU)
    assert _same_weights(_weights(loaded), trained)
    assert _messages(caplog, r"teacher \w+ .*: test acc .*, loaded from .*")


def _assert_refused_before_training(cache: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="divergence_lab")
    teacher, data = _teacher_config()
    with pytest.raises(ConfigError) as refused:
        teachers.load_or_train_teacher(teacher, data, cache, CPU)
    message = str(refused.value)
    assert "\n" not in message
    assert f"the teacher cache {cache} cannot be written" in message
    assert "paths.teacher_cache=" in message
    assert not _messages(caplog, r"(\[teacher\] .*|Training teacher .*)")  # refused before any training


def test_a_teacher_to_train_in_a_cache_that_cannot_be_written_is_refused_in_one_line(tmp_path, caplog):
    """The cache's parent is a file: no process, root included, can create the folder."""
    (tmp_path / "not_a_folder").write_text("")
    _assert_refused_before_training(tmp_path / "not_a_folder" / "teachers", caplog)


def test_a_teacher_to_train_in_a_read_only_cache_is_refused_in_one_line(tmp_path, caplog):
    cache = tmp_path / "teachers"
    cache.mkdir()
    with _read_only(cache):
        _assert_refused_before_training(cache, caplog)


def test_dlab_refuses_an_unwritable_teacher_cache_with_one_line_and_no_traceback(tmp_path):
    (tmp_path / "not_a_folder").write_text("")
    cache = tmp_path / "not_a_folder" / "teachers"
    overrides = ["trainer.max_epochs=1", "method.teacher.max_epochs=1", f"paths.teacher_cache={cache}"]
    result = subprocess.run(
        [sys.executable, "-m", "divergence_lab.entry.cli", *overrides, f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        env={**os.environ, "DLAB_OUTPUT_ROOT": str(tmp_path / "outputs")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith(f"dlab: error: the teacher cache {cache} cannot be written")
    assert "paths.teacher_cache=" in line


def test_an_entry_appears_whole_and_one_saved_meanwhile_by_another_process_is_kept(tmp_path):
    teacher, data = _teacher_config()
    net = teachers.load_or_train_teacher(teacher, data, tmp_path, CPU)
    (entry,) = [path.parent for path in tmp_path.glob("*/teacher.pt")]
    first = _snapshot(entry)
    other = MLP((64,), 10, hidden=[16])
    teachers._save(other, entry, {"test_metrics": {}})  # a second process finishing the same teacher
    assert _snapshot(entry) == first
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([entry.name, f"{entry.name}.lock"])

    shutil.rmtree(entry)
    entry.mkdir()
    (entry / "meta.json").write_text("{}")  # what an older version left when stopped between its writes
    teachers._save(net, entry, {"test_metrics": {"test/acc": 1.0}})
    assert _same_weights(torch.load(entry / "teacher.pt", weights_only=True), _weights(net))
    assert json.loads((entry / "meta.json").read_text()) == {"test_metrics": {"test/acc": 1.0}}


TRAIN_ONE_TEACHER = """
import logging
import sys
from tests.conftest import compose_config
from divergence_lab.run import teacher_cache as teachers
logging.basicConfig(level=logging.INFO, format="%(message)s")
cfg = compose_config(["method.teacher.max_epochs=1", "method.teacher.model.hidden=[16]"])
cpu = {"accelerator": "cpu", "devices": 1}
teachers.load_or_train_teacher(cfg.method.teacher, cfg.data, sys.argv[1], cpu)
"""


def test_two_processes_wanting_the_same_teacher_train_it_once_and_leave_one_whole_entry(tmp_path):
    command = [sys.executable, "-c", TRAIN_ONE_TEACHER, str(tmp_path)]
    jobs = [
        subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [job.communicate(timeout=600)[0] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], outputs
    assert sum("trained in" in output for output in outputs) == 1  # the other one waited and loaded it
    assert sum("loaded from" in output for output in outputs) == 1
    (entry,) = [path for path in tmp_path.iterdir() if path.is_dir()]  # no staging or partial folder left
    assert sorted(path.name for path in entry.iterdir()) == ["meta.json", "teacher.pt"]
    torch.load(entry / "teacher.pt", weights_only=True)


class Stop(BaseException):
    """Stands for a signal that ends the process during the teacher's training."""


def _stopped_after_first_epoch(monkeypatch, cache: Path, teacher, data) -> None:
    original_step = StageProgress.step

    def step(self, done, values=None):
        line = original_step(self, done, values)
        if self.stage == "teacher" and done == 1:
            raise Stop
        return line

    with monkeypatch.context() as patched:
        patched.setattr(StageProgress, "step", step)
        with pytest.raises(Stop):
            teachers.load_or_train_teacher(teacher, data, cache, CPU)


def test_an_interrupted_teacher_training_resumes_after_its_last_epoch(tmp_path, monkeypatch, caplog):
    teacher, data = _teacher_config("method.teacher.max_epochs=3", "method.teacher.model.dropout=0.3")
    reference = _weights(teachers.load_or_train_teacher(teacher, data, tmp_path / "reference", CPU))

    cache = tmp_path / "cache"
    _stopped_after_first_epoch(monkeypatch, cache, teacher, data)
    (partial,) = cache.glob("*.partial")
    assert (partial / "last.ckpt").is_file() and not list(cache.glob("*/teacher.pt"))
    caplog.set_level(logging.INFO, logger="divergence_lab")
    resumed = teachers.load_or_train_teacher(teacher, data, cache, CPU)
    progress = [line.split("  ")[0] for line in _messages(caplog, r"\[teacher\] .*")]
    assert progress == [
        "[teacher] resuming teacher at epoch 2/3 (1 done before)",
        "[teacher] epoch 2/3",
        "[teacher] epoch 3/3",
    ]
    assert _same_weights(_weights(resumed), reference)
    assert not partial.exists()
    meta = {path.parent.parent.name: json.loads(path.read_text()) for path in tmp_path.glob("*/*/meta.json")}
    assert meta["cache"]["test_metrics"] == meta["reference"]["test_metrics"]


def test_a_teacher_checkpoint_of_other_trainer_settings_is_not_continued(tmp_path, monkeypatch, caplog):
    teacher, data = _teacher_config("method.teacher.max_epochs=2")
    _stopped_after_first_epoch(monkeypatch, tmp_path, teacher, data)
    (partial,) = tmp_path.glob("*.partial")
    (partial / "trainer.json").write_text(json.dumps({"accelerator": "gpu", "devices": "1"}))
    caplog.set_level(logging.INFO, logger="divergence_lab")
    teachers.load_or_train_teacher(teacher, data, tmp_path, CPU)
    progress = [line.split("  ")[0] for line in _messages(caplog, r"\[teacher\] .*")]
    assert progress[0].startswith(f"[teacher] {partial} was trained with other settings")
    assert progress[1:] == ["[teacher] epoch 1/2", "[teacher] epoch 2/2"]
