"""The data's content identity (:mod:`divergence_lab.data.content`): hashing a data file the first time
against finding its digest in the cache (same size and modification time), for a small table, a medium file
and a file the size of the CIFAR-100 training batch, side by side in one process.

python -m benchmarks.content_hash_case [repeats]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.measure import emit, median_time
from divergence_lab.data.content import RACY_WINDOW_S, DigestCache

SIZES_BYTES = {
    "20 KB table": 20 * 1024,
    "10 MB file": 10 * 1024**2,
    "150 MB (CIFAR-100 train)": 150 * 1024**2,
}


def measure(folder: Path, size: int, repeats: int) -> dict[str, float]:
    """Median seconds of a first hash (empty cache) and of a cached lookup (a new cache object reading the
    saved cache file, as each ``dlab`` process does)."""
    path = folder / f"data-{size}.bin"
    path.write_bytes(os.urandom(size))
    old = time.time() - 2 * RACY_WINDOW_S  # a file modified just now is never cached
    os.utime(path, (old, old))
    cache_file = folder / f"cache-{size}.json"

    def first() -> None:
        cache_file.unlink(missing_ok=True)
        cache = DigestCache(cache_file)
        cache.file_digest(path)
        cache.save()

    def cached() -> None:
        DigestCache(cache_file).file_digest(path)

    first_s = median_time(first, repeats)
    first()  # leaves the cache filled
    return {"first_s": first_s, "cached_s": median_time(cached, repeats)}


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    with tempfile.TemporaryDirectory() as folder:
        emit({name: measure(Path(folder), size, repeats) for name, size in SIZES_BYTES.items()})


if __name__ == "__main__":
    main()
