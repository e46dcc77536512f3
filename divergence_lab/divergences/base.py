"""The ``Divergence`` base class, the name registry, and parameter validation helpers.

Calling convention
------------------
Every registry member is a configured, stateless object that is called as::

    d(student_logits, teacher_logits, mask=None, **extra) -> Tensor[N]

``student_logits`` and ``teacher_logits`` are (N, C) floating tensors of the same shape; ``p =
softmax(teacher / T)`` is the target and ``q = softmax(student / T)`` the distribution being trained.
The result holds one value per row (no reduction; the caller takes the mean). Computation happens in
``torch.promote_types(input_dtype, float32)`` (bf16/fp16 are upcast) and the result has that dtype.
``mask`` is an optional bool tensor of shape (N,): rows where it is False get value 0 and zero gradient.
The teacher side is not detached: callers that want a frozen target pass detached teacher logits.

Kinds
-----
``kind`` says what a member needs besides one pair of rows:

* ``"pointwise"``: row i depends only on student row i and teacher row i. Members subclass
  :class:`PointwiseDivergence` and implement ``_pointwise(log_p, log_q) -> Tensor[N]``, the definition of
  the member; the base class does validation, temperature, log-softmax, masking and the T² factor. How a
  call reaches ``_pointwise``, or one of its optimisations (the fused path, the compiled row kernels), is
  written out in :mod:`divergence_lab.divergences.named`.
* ``"batch"`` (``sinkhorn_batch``, ``dist``): row values may depend on the whole batch, e.g. SinKD's
  sample-level OT between the rows of a batch. Such members subclass :class:`Divergence` directly and
  override ``_compute(student, teacher, mask, **extra)``; they must exclude masked rows themselves (the
  base class only zeroes their output).
* ``"ranking"`` (``pld``): needs extra per-row inputs such as integer labels, e.g.
  a Plackett-Luce ranking loss. Such members list the extra keyword inputs in ``requires`` (for example
  ``requires = ("labels",)``) and receive them in ``_compute`` as keyword arguments.

* ``"labelled"``: row i depends on rows i and on its label (``requires = ("labels",)``), e.g. DKD's
  target / non-target decomposition.

``__call__`` accepts ``**extra`` keyword inputs only if their names are exactly the member's ``requires``
tuple (empty for pointwise members), so a training loop can pass ``labels=y`` to members whose
``requires`` contains ``"labels"`` and nothing to the others.

Registry
--------
``@register("name")`` adds a class under a unique name; ``build(name, **params)`` returns a configured
instance; ``names()`` lists the registered names. Every error is a one-line ``ValueError``.

Parameters
----------
Each class declares ``param_specs: dict[str, Param]`` (its own parameters); the common parameters
``temperature`` (float > 0, default 1.0) and ``t_squared`` (bool, default True: multiply the value by T²,
Hinton's gradient-scale convention) are added to every member. Validated values are available as
attributes (``d.temperature``) and as the dict ``d.params``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from divergence_lab.divergences.fused import fused_call

__all__ = [
    "Divergence",
    "Param",
    "PointwiseDivergence",
    "build",
    "names",
    "register",
]

KINDS = ("pointwise", "batch", "ranking", "labelled")
MODES = ("mass-covering", "mode-seeking", "neither")

_REGISTRY: dict[str, type[Divergence]] = {}


# ----------------------------------------------------------------------------------------------------
# Parameter validation helpers. A checker takes (parameter name, raw value) and returns the normalised
# value, or raises a one-line ValueError naming the parameter and its valid range.
# ----------------------------------------------------------------------------------------------------

Checker = Callable[[str, Any], Any]


@dataclass(frozen=True)
class Param:
    """Specification of one constructor parameter: its default, its checker and a one-line doc."""

    default: Any
    check: Checker
    doc: str = ""


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def number_in(
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> Checker:
    """A checker for a finite real number in the interval between ``low`` and ``high``."""
    if math.isinf(low) and math.isinf(high):
        desc = "a finite number"
    elif math.isinf(high):
        desc = f"a number {'>' if low_open else '>='} {low:g}"
    elif math.isinf(low):
        desc = f"a number {'<' if high_open else '<='} {high:g}"
    else:
        desc = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def check(name: str, value: Any) -> float:
        ok = _is_real(value) and math.isfinite(float(value))
        if ok:
            v = float(value)
            ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
        if not ok:
            raise ValueError(f"{name} must be {desc} (got {value!r})")
        return float(value)

    return check


def positive_number() -> Checker:
    """A checker for a finite real number > 0."""
    return number_in(0.0, low_open=True)


def integer_at_least(low: int) -> Checker:
    """A checker for an integer >= ``low`` (bools and floats are refused)."""

    def check(name: str, value: Any) -> int:
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or int(value) < low:
            raise ValueError(f"{name} must be an integer >= {low} (got {value!r})")
        return int(value)

    return check


def boolean() -> Checker:
    """A checker for a bool (``True``/``False`` only; 0/1 and strings are refused)."""

    def check(name: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be a bool, true or false (got {value!r})")
        return value

    return check


def one_of(*choices: str) -> Checker:
    """A checker for a string among ``choices``."""

    def check(name: str, value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(choices)} (got {value!r})")
        return value

    return check


COMMON_PARAMS: dict[str, Param] = {
    "temperature": Param(1.0, positive_number(), "softmax temperature T applied to both logits"),
    "t_squared": Param(True, boolean(), "multiply the value by T² (Hinton's gradient-scale convention)"),
}


# ----------------------------------------------------------------------------------------------------
# Base classes
# ----------------------------------------------------------------------------------------------------


class Divergence:
    """Base of all registry members; see the module docstring for the calling convention and kinds.

    Class-level properties every member declares (an instance may refine them from its parameters, e.g.
    ``alpha`` derives ``mode`` from α and ``sinkhorn`` derives ``symmetric`` from its cost matrix):

    * ``name``: registry name (set by :func:`register`).
    * ``symmetric``: D(p, q) == D(q, p).
    * ``mode``: behaviour when minimised over q: ``"mass-covering"``, ``"mode-seeking"`` or ``"neither"``.
    * ``bounded``: the value (before the T² factor) has a finite upper bound.
    * ``kind``: ``"pointwise"``, ``"batch"`` or ``"ranking"``.
    * ``requires``: names of extra keyword inputs of ``__call__`` (empty for pointwise members).
    """

    name: ClassVar[str] = ""
    symmetric: bool = False
    mode: str = "neither"
    bounded: bool = False
    kind: ClassVar[str] = "pointwise"
    requires: ClassVar[tuple[str, ...]] = ()
    param_specs: ClassVar[dict[str, Param]] = {}

    temperature: float
    t_squared: bool

    def __init__(self, **params: Any) -> None:
        specs = self.accepted_params()
        unknown = sorted(set(params) - set(specs))
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {', '.join(unknown)} for divergence '{self.name}'; "
                f"accepted parameters: {', '.join(sorted(specs))}"
            )
        values: dict[str, Any] = {}
        for key, spec in specs.items():
            values[key] = spec.check(key, params.get(key, spec.default))
        self.params: dict[str, Any] = values
        for key, value in values.items():
            setattr(self, key, value)
        self._setup()

    @classmethod
    def accepted_params(cls) -> dict[str, Param]:
        """All constructor parameters of this member (common ones first)."""
        return {**COMMON_PARAMS, **cls.param_specs}

    def _setup(self) -> None:
        """Hook run after parameter validation (derive constants, refine mode/symmetric/bounded)."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={_short_repr(v)}" for k, v in self.params.items())
        return f"{type(self).__name__}<{self.name}>({args})"

    # -- calling -------------------------------------------------------------------------------------

    def __call__(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        mask: Tensor | None = None,
        **extra: Any,
    ) -> Tensor:
        """Per-row divergence between ``softmax(teacher/T)`` (target) and ``softmax(student/T)``, computed in
        at least float32 whatever the autocast state."""
        dtype = _check_inputs(student_logits, teacher_logits, mask)
        if set(extra) != set(self.requires):
            raise ValueError(
                f"divergence '{self.name}' takes extra inputs ({', '.join(self.requires) or 'none'}), "
                f"got ({', '.join(sorted(extra)) or 'none'})"
            )
        student = student_logits.to(dtype)
        teacher = teacher_logits.to(dtype)
        # in the compute dtype even inside a mixed-precision region: autocast would run the matrix products
        # (Sinkhorn's kernels, the fused blocks) in bf16/fp16 and lose ~1e-2 of every value
        with torch.autocast(student.device.type, enabled=False):
            value = self._compute(student, teacher, mask, **extra)
        if self.t_squared and self.temperature != 1.0:
            value = value * (self.temperature**2)
        if mask is not None:
            value = torch.where(mask, value, torch.zeros_like(value))
        return value

    def _compute(self, student: Tensor, teacher: Tensor, mask: Tensor | None, **extra: Any) -> Tensor:
        """Per-row values before the T² factor; inputs are validated and already in compute dtype."""
        raise NotImplementedError


#: ``execution="auto"`` switches to the fused path from this many elements (N · C) on.
AUTO_FUSED_ELEMENTS = 1 << 22

EXECUTION_PARAMS: dict[str, Param] = {
    "execution": Param(
        "auto",
        one_of("auto", "fused", "plain"),
        "fused chunked path: auto (from 2^22 elements), always, never",
    ),
    "chunk_rows": Param(0, integer_at_least(0), "rows per block of the fused path (0: about 2^19 elements)"),
}


def zero_masked_rows(mask: Tensor | None, *tensors: Tensor) -> tuple[Tensor, ...]:
    """Replace the rows where ``mask`` is False by zeros, so nothing they hold (NaN, ±inf) reaches a value
    or a gradient; per-row members then zero those rows' outputs as well."""
    if mask is None:
        return tensors
    return tuple(torch.where(mask[:, None], t, torch.zeros_like(t)) for t in tensors)


class PointwiseDivergence(Divergence):
    """Base of ``kind="pointwise"`` members: implement ``_pointwise(log_p, log_q) -> Tensor[N]``.

    ``_pointwise`` is the definition of the member: its value is what the member means, and autograd
    through it is its gradient. ``log_p = log_softmax(teacher / T)`` and ``log_q = log_softmax(student / T)``
    are finite for finite logits. Masked rows are replaced by zero logits before the computation (a
    harmless uniform pair), so whatever they contain cannot leak NaN into values or gradients.

    Large inputs run through the chunked, fused path of :mod:`divergence_lab.divergences.fused`
    (``execution="auto"`` from :data:`AUTO_FUSED_ELEMENTS`, ``"fused"`` always, ``"plain"`` never), an
    optimisation of ``_pointwise``; members with a closed-form gradient also implement ``_fused``, another.
    The path a call takes is written out in :mod:`divergence_lab.divergences.named`.
    """

    kind: ClassVar[str] = "pointwise"
    execution: str
    chunk_rows: int

    @classmethod
    def accepted_params(cls) -> dict[str, Param]:
        return {**COMMON_PARAMS, **EXECUTION_PARAMS, **cls.param_specs}

    def uses_fused_path(self, student: Tensor) -> bool:
        """Whether a call on ``student`` takes the fused path (``execution``; auto: from the input's size)."""
        if self.execution == "auto":
            return student.numel() >= AUTO_FUSED_ELEMENTS
        return self.execution == "fused"

    def _compute(self, student: Tensor, teacher: Tensor, mask: Tensor | None, **extra: Any) -> Tensor:
        student, teacher = zero_masked_rows(mask, student, teacher)
        if self.uses_fused_path(student):
            return fused_call(self, student, teacher, self.chunk_rows)
        log_p = torch.log_softmax(teacher / self.temperature, dim=-1)
        log_q = torch.log_softmax(student / self.temperature, dim=-1)
        return self._pointwise(log_p, log_q)

    def _pointwise(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        """The member's per-row value from the log-probabilities of the teacher (p) and the student (q)."""
        raise NotImplementedError

    def _fused(self, a: Tensor, b: Tensor, need_a: bool, need_b: bool) -> tuple[Tensor, Any, Any]:
        """Optional closed form, an optimisation of ``_pointwise`` on one block of scaled logits a =
        student/T, b = teacher/T: ``(value, ∂value/∂a or None, ∂value/∂b or None)``, each gradient computed
        only when ``need_a`` / ``need_b``. A member without one is differentiated through ``_pointwise``."""
        raise NotImplementedError

    @classmethod
    def has_closed_form(cls) -> bool:
        """Whether the member implements ``_fused`` (otherwise the fused path runs ``_pointwise``)."""
        return cls._fused is not PointwiseDivergence._fused


# ----------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------


def register(name: str) -> Callable[[type[Divergence]], type[Divergence]]:
    """Class decorator adding a :class:`Divergence` subclass to the registry under ``name``."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"divergence name must be an identifier-like string (got {name!r})")

    def decorate(cls: type[Divergence]) -> type[Divergence]:
        if name in _REGISTRY:
            raise ValueError(f"divergence '{name}' is already registered (by {_REGISTRY[name].__qualname__})")
        if not (isinstance(cls, type) and issubclass(cls, Divergence)):
            raise ValueError(f"@register('{name}') needs a Divergence subclass (got {cls!r})")
        if cls.kind not in KINDS:
            raise ValueError(f"divergence '{name}': kind must be one of {', '.join(KINDS)}, got {cls.kind!r}")
        if cls.mode not in MODES:
            raise ValueError(f"divergence '{name}': mode must be one of {', '.join(MODES)}, got {cls.mode!r}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def names() -> list[str]:
    """Every registered divergence name, sorted."""
    return sorted(_REGISTRY)


def build(name: str, **params: Any) -> Divergence:
    """A configured instance of the divergence registered as ``name``."""
    cls = _REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown divergence {name!r}; valid names: {', '.join(names())}")
    return cls(**params)


# ----------------------------------------------------------------------------------------------------
# Input validation
# ----------------------------------------------------------------------------------------------------


def _shape(t: Tensor) -> str:
    return str(tuple(t.shape))


def _check_inputs(student: Any, teacher: Any, mask: Any) -> torch.dtype:
    """Validate the call inputs; return the compute dtype."""
    for label, t in (("student_logits", student), ("teacher_logits", teacher)):
        if not isinstance(t, Tensor):
            raise ValueError(f"{label} must be a torch.Tensor (got {type(t).__name__})")
        if t.ndim != 2:
            raise ValueError(f"{label} must be 2-D (N, C), got shape {_shape(t)}")
        if not t.is_floating_point():
            raise ValueError(f"{label} must have a floating dtype, got {t.dtype}")
    if student.shape != teacher.shape:
        raise ValueError(
            f"student_logits and teacher_logits must have the same shape, got {_shape(student)} "
            f"and {_shape(teacher)}"
        )
    if student.shape[1] < 1:
        raise ValueError(f"logits need at least one class, got shape {_shape(student)}")
    if student.device != teacher.device:
        raise ValueError(f"student_logits on {student.device} but teacher_logits on {teacher.device}")
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            what = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"mask must be a bool tensor of shape (N,), got {what}")
        if mask.shape != student.shape[:1]:
            raise ValueError(f"mask must have shape ({student.shape[0]},), got {_shape(mask)}")
        if mask.device != student.device:
            raise ValueError(f"mask on {mask.device} but logits on {student.device}")
    dtype = torch.promote_types(student.dtype, teacher.dtype)
    return torch.promote_types(dtype, torch.float32)


def _short_repr(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"<{'x'.join(str(s) for s in value.shape)} matrix>"
    if callable(value):
        return getattr(value, "__name__", type(value).__name__)
    return repr(value)
