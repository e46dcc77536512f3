"""SinKD on text: the BERT wrappers as networks, the SinKD loss on a text batch, real runs of both presets."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from divergence_lab import divergences
from divergence_lab.data import instantiate_datamodule
from divergence_lab.data.glue import write_glue
from divergence_lab.data.text_classification import local_tokenizer
from divergence_lab.ground.errors import ConfigError
from divergence_lab.methods.sinkd import SinkhornDistillation
from divergence_lab.models import build_network
from divergence_lab.models.text_classifier import BertClassifier, PretrainedClassifier
from tests.conftest import compose_config, run_training
from tests.methods.test_pld_sinkd import OPTIMIZER, official_sinkd_loss

BIN = Path(sys.executable).parent
SMALL_TASK = ["data.train_size=96", "data.val_size=32", "data.test_size=32"]


@pytest.fixture(scope="module")
def text_data():
    return instantiate_datamodule(compose_config(["experiment=sinkd_text", *SMALL_TASK]).data, seed=0)


def _batch(datamodule, size=12):
    x, y = datamodule.splits["train"].tensors
    return x[:size], y[:size]


@pytest.mark.parametrize("key", ["model", "method.teacher.model"])
def test_the_preset_networks_give_logits_for_every_class(text_data, key):
    model_cfg = OmegaConf.select(compose_config(["experiment=sinkd_text"]), key)
    torch.manual_seed(0)
    net = build_network(model_cfg, text_data).eval()
    x, _ = _batch(text_data)
    logits = net(x)
    assert logits.shape == (12, 4) and logits.dtype == torch.float32 and torch.isfinite(logits).all()


def test_padding_is_trimmed_without_changing_the_logits(text_data):
    torch.manual_seed(0)
    net = BertClassifier(text_data.input_shape, 4, **text_data.network_arguments()).eval()
    x, _ = _batch(text_data)
    lengths = x[:, 1].sum(1)
    assert lengths.min() < lengths.max() < x.shape[-1]  # examples of several lengths, padding everywhere
    with torch.no_grad():
        together = net(x)
        alone = torch.cat([net(row[None]) for row in x])  # each example trimmed to its own length
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


def test_text_and_vision_networks_refuse_each_others_data_in_one_line(text_data):
    digits = instantiate_datamodule(compose_config(["data=digits"]).data, seed=0)
    with pytest.raises(
        ConfigError, match=r"^model: a text classifier needs token rows from a text data config"
    ):
        build_network(compose_config(["model=bert_tiny"]).model, digits)
    with pytest.raises(ConfigError, match=r"^model: divergence_lab.models.mlp.MLP does not take token rows"):
        build_network(compose_config(["model=mlp"]).model, text_data)


def test_a_model_saved_in_a_local_folder_is_read_with_a_head_for_the_data(tmp_path, text_data):
    from transformers import AutoModelForSequenceClassification, BertConfig

    sizes = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    for classes in (4, 2):
        saved = BertConfig(
            vocab_size=len(text_data.tokenizer), max_position_embeddings=32, num_labels=classes, **sizes
        )
        AutoModelForSequenceClassification.from_config(saved).save_pretrained(tmp_path / f"bert{classes}")
    cfg = compose_config(["model=bert_local", f"model.path={tmp_path / 'bert4'}"])
    net = build_network(cfg.model, text_data).eval()
    assert isinstance(net, PretrainedClassifier) and net.model.config.num_labels == 4
    assert net(_batch(text_data)[0]).shape == (12, 4)
    assert f"path={tmp_path / 'bert4'}, files=" in repr(net)  # the weights' files are in the teacher's key

    other_head = compose_config(["model=bert_local", f"model.path={tmp_path / 'bert2'}"])
    with pytest.raises(
        ConfigError, match=r"bert2 holds no readable sequence classifier: its classification head"
    ):
        build_network(other_head.model, text_data)

    missing = compose_config(["model=bert_local", f"model.path={tmp_path / 'nowhere'}"])
    with pytest.raises(
        ConfigError, match=r"^model.path: no model at .*nowhere \(a folder written by save_pretrained"
    ):
        build_network(missing.model, text_data)
    small = BertConfig(vocab_size=5, max_position_embeddings=32, num_labels=4, **sizes)
    AutoModelForSequenceClassification.from_config(small).save_pretrained(tmp_path / "small_vocab")
    with pytest.raises(ConfigError, match=r"embeds 5 tokens but the data's tokenizer has \d+"):
        PretrainedClassifier(text_data.input_shape, 4, str(tmp_path / "small_vocab"), vocab_size=70)


def test_sinkd_loss_on_a_text_batch_is_the_official_formula_in_float64(text_data):
    """``experiment=sinkd_text`` as configured, on a batch of sentences: our total equals the official one
    minus α·H(p_t) (a constant in the student), with identical gradients."""
    cfg = compose_config(["experiment=sinkd_text", "method.sinkhorn.solver=multiplicative"])
    assert cfg.divergence.t_squared is False and cfg.divergence.temperature == 2.0
    torch.manual_seed(0)
    student = build_network(cfg.model, text_data).double().eval()
    teacher = build_network(cfg.method.teacher.model, text_data).double().eval()
    method = cfg.method
    module = SinkhornDistillation(
        student, teacher, divergences.build(**cfg.divergence), method.alpha, 4, OPTIMIZER, 3,
        batch_transport=divergences.build("sinkhorn_batch", **method.sinkhorn),
        transport_weight=method.sinkhorn_weight * method.sinkhorn_scale,
        transport_reduction=method.sinkhorn_reduction,
    )  # fmt: skip
    x, y = _batch(text_data, size=16)
    ours = module.losses(x, y)["loss"]
    teacher_logits = teacher(x).detach()
    official = official_sinkd_loss(student(x), teacher_logits, y, 0.9, 2.0, 0.8 * 0.001)
    p_t = F.softmax(teacher_logits / 2.0, dim=-1)
    teacher_entropy = -(p_t * p_t.log()).sum(-1).mean()
    torch.testing.assert_close(ours + 0.9 * teacher_entropy, official, rtol=1e-12, atol=1e-12)
    ours_grads = torch.autograd.grad(ours, list(student.parameters()), allow_unused=True)
    official_grads = torch.autograd.grad(
        official_sinkd_loss(student(x), teacher_logits, y, 0.9, 2.0, 0.8 * 0.001),
        list(student.parameters()),
        allow_unused=True,
    )
    for a, b in zip(ours_grads, official_grads, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_the_text_preset_runs_through_the_cli(tmp_path):
    result = subprocess.run(
        [
            BIN / "dlab",
            "experiment=sinkd_text",
            "trainer.max_epochs=1",
            "method.teacher.max_epochs=1",
            *SMALL_TASK,
            f"paths.output_root={tmp_path}",
            f"paths.teacher_cache={tmp_path / 'teachers'}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (metrics_file,) = (tmp_path / "runs" / "sinkd_text").glob("*/metrics.json")
    record = json.loads(metrics_file.read_text())
    assert record["method"] == "sinkd" and record["data"] == "text_synthetic"
    assert 0.0 <= record["metrics"]["test/acc"] <= 1.0
    assert len(list((tmp_path / "teachers").glob("*/teacher.pt"))) == 1
    (teacher,) = json.loads((metrics_file.parent / "teacher.json").read_text()).values()
    assert teacher["model"] == "BertClassifier" and "test/acc" in teacher["test_metrics"]


@pytest.mark.slow
def test_the_glue_preset_runs_on_rte_files_with_models_from_local_folders(tmp_path):
    from transformers import AutoModelForSequenceClassification, BertConfig

    tokenizer = write_glue(tmp_path / "glue", "rte", train_rows=24, dev_rows=8)
    vocabulary = len(local_tokenizer(tokenizer))
    for name, layers in (("teacher", 2), ("student", 1)):
        config = BertConfig(
            vocab_size=vocabulary, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=32, num_labels=2,
        )  # fmt: skip
        AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path / name)
    record, run_dir = run_training(
        tmp_path,
        [
            "experiment=sinkd_glue",
            "trainer=cpu",
            f"data.data_dir={tmp_path / 'glue'}",
            f"data.tokenizer={tokenizer}",
            "data.max_length=24",
            "data.val_fraction=0.25",
            f"model.path={tmp_path / 'student'}",
            f"method.teacher.model.path={tmp_path / 'teacher'}",
            "method.teacher.max_epochs=1",
            "trainer.max_epochs=1",
        ],
    )
    assert record["method"] == "sinkd" and record["data"] == "glue"
    assert {"test/acc", "test/ece", "test/nll"} <= set(record["metrics"])
    (teacher,) = json.loads((run_dir / "teacher.json").read_text()).values()
    assert teacher["model"] == "PretrainedClassifier"
