"""What the report refuses or skips, and the one-line form every message takes.

A :class:`ReportError` is careless input, refused as ``dlab-report: error: <message>`` (exit code 2); an
:class:`UnreadableFile` is a job file that cannot be read: that job is skipped and listed, not refused.
"""

from __future__ import annotations

from pathlib import Path


class ReportError(Exception):
    """A careless input the report refuses, shown as one line: ``dlab-report: error: <message>``."""


class UnreadableFile(Exception):
    """A job file (``metrics.json``, ``.hydra/overrides.yaml``) that cannot be read; the job is skipped."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path} ({reason})")
        self.path = path
        self.reason = reason

    def describe(self) -> str:
        return f"unreadable: {self.path} ({self.reason})"


def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(text).split())


def error_reason(error: Exception) -> str:
    """``<exception type>: <message>`` on one line."""
    return f"{type(error).__name__}: {one_line(error)}"
