"""``python -m tests.faults.driver <phase> <SIGNAL> <dlab overrides...>``: a ``dlab`` process that sends
itself ``SIGNAL`` at ``phase`` (see :mod:`tests.faults.hooks`); used for SIGKILL, which no handler sees."""

from __future__ import annotations

import signal
import sys

from tests.faults.hooks import install


def main() -> None:
    phase, signal_name, *overrides = sys.argv[1:]
    install(phase, getattr(signal, signal_name), setattr)
    sys.argv = ["dlab", *overrides]
    from divergence_lab.entry.cli import main as dlab

    dlab()


if __name__ == "__main__":
    main()
