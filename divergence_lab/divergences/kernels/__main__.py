"""``python -m divergence_lab.divergences.kernels``: build the compiled row kernels now (``make install``
runs it), print one line with where they are and how long it took; exit 0 either way, since the fused path
falls back to its eager blocks where they cannot be built."""

from __future__ import annotations

import time

from divergence_lab.divergences.kernels import _build_folder, build


def main() -> None:
    started = time.perf_counter()
    try:
        build()
    except Exception as error:  # reported in one line; the eager blocks stay in use
        lines = str(error).strip().splitlines() or [type(error).__name__]
        print(f"row kernels: not built ({lines[-1]}); the fused path will run its eager blocks")
        return
    print(f"row kernels: ready in {_build_folder()} ({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
