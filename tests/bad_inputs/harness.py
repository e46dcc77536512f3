"""The contract every refused input must keep, checked the same way for the CLI, the report, the sweepers
and the data readers: the expected exit code, exactly one line on stderr (the error), no traceback
anywhere, and no file under the watched folders created, changed or removed."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class BadInput:
    """One careless input: the command after the program name, and what the refusal must mention."""

    name: str
    argv: list[str]
    mentions: str  # a fragment the one-line error must contain (the key, the file, the value ...)
    program: str = "dlab"
    exit_code: int = 2
    setup: str | None = None  # a name the test module maps to a function preparing files in the work folder
    env: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name


def snapshot(root: Path) -> dict[str, str]:
    """``relative path -> sha256`` of every file under ``root`` (empty when it does not exist)."""
    if not root.exists():
        return {}
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def run_program(program: str, argv: list[str], cwd: Path, env: dict[str, str] | None = None):
    """Run an installed console script (``dlab``, ``dlab-report``) in ``cwd``; return the CompletedProcess."""
    full_env = {**os.environ, "DLAB_OUTPUT_ROOT": str(cwd / "outputs"), **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [str(BIN / program), *argv], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300
    )


def run_dlab_in_process(argv: list[str], cwd: Path, monkeypatch, capsys) -> subprocess.CompletedProcess:
    """``dlab argv`` through its entry function in this process (no interpreter start-up, torch already
    imported: ~20× faster), for inputs refused before Hydra starts; returns what a subprocess would."""
    from divergence_lab.entry.cli import main

    monkeypatch.chdir(cwd)
    monkeypatch.setenv("DLAB_OUTPUT_ROOT", str(cwd / "outputs"))
    monkeypatch.setattr(sys, "argv", ["dlab", *argv])
    capsys.readouterr()
    code = 0
    try:
        main()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, captured.out, captured.err)


def assert_refused(case: BadInput, cwd: Path, watched: Path, run=None) -> None:
    """Run ``case`` in ``cwd`` and check the refusal contract, with ``watched`` left exactly as it was.

    ``run(case, cwd)`` replaces the subprocess (see :func:`run_dlab_in_process`)."""
    before = snapshot(watched)
    result = run(case, cwd) if run else run_program(case.program, case.argv, cwd, case.env)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    error_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1, f"not one line of error:\n{result.stderr}\nstdout:\n{result.stdout}"
    assert error_lines[0].startswith(f"{case.program}: error: "), error_lines[0]
    assert case.mentions in error_lines[0], error_lines[0]
    assert result.returncode == case.exit_code, (result.returncode, output)
    assert snapshot(watched) == before, "a refused input changed files on disk"
