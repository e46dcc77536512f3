"""Registry, configuration files, metadata and input validation (one-line ValueErrors)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import divergence_lab
from divergence_lab import divergences
from divergence_lab.divergences import Divergence, register
from tests.divergences.helpers import call

EXPECTED = {
    "kl",
    "rkl",
    "js",
    "gjs",
    "skl",
    "srkl",
    "tv",
    "hellinger",
    "chi2",
    "neyman_chi2",
    "alpha",
    "fdiv",
    "cs",
    "sinkhorn",
    "sinkhorn_div",
}


def _conf_dir() -> Path:
    root = divergence_lab.__file__
    package = Path(root).parent if root else Path(next(iter(divergence_lab.__path__)))
    return package / "conf" / "divergence"


def _logits(n: int = 3, c: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, c, generator=gen), torch.randn(n, c, generator=gen)


def test_expected_members_registered() -> None:
    assert set(divergences.names()) >= EXPECTED
    assert divergences.names() == sorted(divergences.names())


def test_names_match_config_files() -> None:
    stems = {p.stem for p in _conf_dir().glob("*.yaml")}
    assert stems == set(divergences.names())


@pytest.mark.parametrize("path", sorted(_conf_dir().glob("*.yaml")), ids=lambda p: p.stem)
def test_config_file_builds(path: Path) -> None:
    cfg = OmegaConf.load(path)
    assert cfg.name == path.stem
    d = divergences.build(**cfg)
    assert d.name == path.stem
    # every member parameter appears in the file, with its default value
    assert set(cfg) - {"name"} == set(type(d).accepted_params())
    assert d.params == divergences.build(path.stem).params
    student, teacher = _logits()
    assert torch.isfinite(call(d, student, teacher)).all()


def test_metadata() -> None:
    for name in divergences.names():
        d = divergences.build(name)
        assert isinstance(d, Divergence) and d.name == name
        assert d.kind in ("pointwise", "batch", "ranking", "labelled")
        assert d.requires == (("labels",) if d.kind in ("ranking", "labelled") else ())
        assert d.mode in ("mass-covering", "mode-seeking", "neither")
        assert isinstance(d.symmetric, bool) and isinstance(d.bounded, bool)
        assert type(d).__doc__ and "Stability" in type(d).__doc__
        assert repr(d).startswith(f"{type(d).__name__}<{name}>(temperature=")
    assert divergences.build("kl").mode == "mass-covering"
    assert divergences.build("rkl").mode == "mode-seeking"
    assert divergences.build("alpha", alpha=-1.5).mode == "mass-covering"
    assert divergences.build("alpha", alpha=1.0).mode == "mode-seeking"
    assert divergences.build("fdiv", generator="neyman").mode == "mode-seeking"
    assert divergences.build("js").bounded and not divergences.build("kl").bounded


def test_params_are_stored() -> None:
    d = divergences.build("gjs", beta=0.25, temperature=2, t_squared=False)
    assert d.beta == 0.25 and d.temperature == 2.0 and isinstance(d.temperature, float)
    assert d.params == {
        "temperature": 2.0,
        "t_squared": False,
        "execution": "auto",
        "chunk_rows": 0,
        "beta": 0.25,
    }


def test_cost_matrix_from_omegaconf_list() -> None:
    cfg = OmegaConf.create({"name": "sinkhorn", "cost": [[0, 1, 2, 3]] * 4, "iters": 3})
    d = divergences.build(**cfg)
    assert torch.isfinite(d(*_logits())).all()


def test_register_duplicate_refused() -> None:
    with pytest.raises(ValueError, match="'kl' is already registered"):
        register("kl")(type("Dup", (divergences.PointwiseDivergence,), {}))
    assert divergences.build("kl").__class__.__name__ == "ForwardKL"


def _one_line(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


BUILD_ERRORS = [
    (("nope",), {}, "unknown divergence 'nope'; valid names: " + re.escape(", ".join(divergences.names()))),
    (
        ("kl",),
        {"foo": 1},
        r"unknown parameter\(s\) foo for divergence 'kl'; "
        r"accepted parameters: chunk_rows, execution, t_squared, temperature",
    ),
    (("gjs",), {"alpha": 0.1}, r"accepted parameters: beta, chunk_rows, execution, t_squared, temperature"),
    (("kl",), {"temperature": -1.0}, r"^temperature must be a number > 0 \(got -1.0\)$"),
    (("kl",), {"temperature": 0}, r"temperature must be a number > 0 \(got 0\)"),
    (("kl",), {"temperature": "2"}, r"temperature must be a number > 0"),
    (("kl",), {"temperature": float("nan")}, r"temperature must be a number > 0"),
    (("kl",), {"t_squared": 1}, r"t_squared must be a bool"),
    (("gjs",), {"beta": 1.5}, r"beta must be a number in \[0, 1\] \(got 1.5\)"),
    (("skl",), {"alpha": -0.1}, r"alpha must be a number in \[0, 1\] \(got -0.1\)"),
    (("srkl",), {"alpha": 2}, r"alpha must be a number in \[0, 1\]"),
    (("alpha",), {"alpha": float("inf")}, r"alpha must be a finite number"),
    (("chi2",), {"min_prob": 0.0}, r"min_prob must be a number in \(0, 1\)"),
    (
        ("fdiv",),
        {"generator": "bogus"},
        r"generator must be one of kl, rkl, tv, hellinger, pearson, neyman, js ",
    ),
    (("fdiv",), {"generator": lambda t: t}, r"generator must satisfy f\(1\) = 0"),
    (("sinkhorn",), {"epsilon": 0}, r"epsilon must be a number > 0 \(got 0\)"),
    (("sinkhorn",), {"iters": 0}, r"iters must be an integer >= 1 \(got 0\)"),
    (("sinkhorn",), {"iters": 2.5}, r"iters must be an integer >= 1"),
    (("sinkhorn_div",), {"cost": "euclid"}, r"cost must be one of zero_one, abs_diff or a C x C matrix"),
    (("sinkhorn",), {"cost": [[0, 1, 2]]}, r"cost matrix must be square C x C, got shape \(1, 3\)"),
    (("sinkhorn",), {"cost": [[0, -1], [1, 0]]}, r"finite and >= 0"),
    (("sinkhorn",), {"normalize_cost": "yes"}, r"normalize_cost must be a bool"),
]


@pytest.mark.parametrize(
    ("args", "kwargs", "pattern"), BUILD_ERRORS, ids=[f"build-{i}" for i in range(len(BUILD_ERRORS))]
)
def test_build_errors(args, kwargs, pattern) -> None:
    with pytest.raises(ValueError, match=pattern) as excinfo:
        divergences.build(*args, **kwargs)
    _one_line(excinfo)


s4, t4 = _logits(3, 4)
CALL_ERRORS = [
    ("kl", (s4, t4[:, :3]), {}, r"same shape, got \(3, 4\) and \(3, 3\)"),
    ("kl", (s4[0], t4[0]), {}, r"student_logits must be 2-D \(N, C\), got shape \(4,\)"),
    ("kl", (s4, t4[None]), {}, r"teacher_logits must be 2-D \(N, C\), got shape \(1, 3, 4\)"),
    ("kl", (s4.long(), t4), {}, r"student_logits must have a floating dtype, got torch.int64"),
    ("kl", (s4.numpy(), t4), {}, r"student_logits must be a torch.Tensor \(got ndarray\)"),
    ("kl", (s4, t4), {"mask": torch.ones(4, dtype=torch.bool)}, r"mask must have shape \(3,\), got \(4,\)"),
    (
        "kl",
        (s4, t4),
        {"mask": torch.ones(3)},
        r"mask must be a bool tensor of shape \(N,\), got torch.float32",
    ),
    ("kl", (s4, t4), {"labels": torch.zeros(3).long()}, r"takes extra inputs \(none\), got \(labels\)"),
    ("sinkhorn", (s4, t4), {}, r"cost matrix has shape \(3, 3\) but the logits have 4 classes"),
]


@pytest.mark.parametrize(
    ("name", "args", "kwargs", "pattern"), CALL_ERRORS, ids=[f"call-{i}" for i in range(len(CALL_ERRORS))]
)
def test_call_errors(name, args, kwargs, pattern) -> None:
    params = {"cost": [[0, 1, 1], [1, 0, 1], [1, 1, 0]]} if name == "sinkhorn" else {}
    d = divergences.build(name, **params)
    with pytest.raises(ValueError, match=pattern) as excinfo:
        d(*args, **kwargs)
    _one_line(excinfo)


def test_unknown_name_lists_every_name() -> None:
    with pytest.raises(ValueError) as excinfo:
        divergences.build("KL")
    message = _one_line(excinfo)
    listed = re.search(r"valid names: (.*)$", message).group(1).split(", ")
    assert listed == divergences.names()


def test_import_is_cheap() -> None:
    import subprocess
    import sys

    code = (
        "import sys, divergence_lab.divergences as d; d.build('sinkhorn'); "
        "print([m for m in ('scipy', 'ot', 'hypothesis') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_extra_inputs_reach_members_that_require_them() -> None:
    """The hook later ``ranking``/``batch`` members use: extra keyword inputs named in ``requires``."""

    class LabelPick(Divergence):  # deliberately not registered
        kind = "ranking"
        requires = ("labels",)

        def _compute(self, student, teacher, mask, *, labels):
            return -torch.log_softmax(student, -1).gather(1, labels[:, None])[:, 0]

    student, teacher = _logits()
    labels = torch.tensor([0, 1, 2])
    d = LabelPick(temperature=2.0)
    value = d(student, teacher, mask=torch.tensor([True, True, False]), labels=labels)
    assert value.shape == (3,) and value[2] == 0 and value[0] > 0
    with pytest.raises(ValueError, match=r"takes extra inputs \(labels\), got \(none\)"):
        d(student, teacher)
    assert "LabelPick" not in divergences.names()


@pytest.mark.parametrize("name", ["sinkhorn", "sinkhorn_batch", "kl"])
def test_values_inside_a_bf16_autocast_region_are_computed_in_float32(name):
    """Mixed-precision training runs the loss inside autocast; the registry must not drop to bf16 there."""
    torch.manual_seed(0)
    student, teacher = torch.randn(64, 10), torch.randn(64, 10)
    params = {"execution": "fused"} if name == "kl" else {}
    divergence = divergences.build(name, **params)
    reference = divergence(student, teacher)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = divergence(student, teacher)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, reference, rtol=1e-6, atol=1e-6)
