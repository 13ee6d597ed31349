"""How fast do posters get into arrays? Reference: one worker decoding with Pillow.

    python benchmarks/bench_load.py [--data DIR] [-n N] [--size 350] [--json OUT]

Measures, in one process, on the first n posters of the dataset:
  1. cold decode + resize with one worker and with every core, taking turns chunk by chunk
     (posters/s and the speed-up);
  2. a cached reload: PosterDataset opening its .npy cache and reading every pixel, against
     decoding them. To check that the cache is current it stats every image file and hashes
     only those whose (size, mtime, ctime, inode) differs from its memo of file digests; also
     timed once without that memo, when it must hash every file;
  3. turning a batch of 33 uint8 posters into float32 in [0, 1]: nn.data.to_float into a
     preallocated buffer, against `batch.astype(np.float32) / 255` (batches/s).
The image files are read once before timing, so both decode runs measure decoding, not disk.
On 2 cores the speed-up stops near 1.8x: about a tenth of a poster's time holds Python's lock
(opening the file, turning the resized image into an array), and the rest, decoding and
resizing, runs in parallel.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, too
from nn.data import (DataError, PosterDataset, default_workers, find_dataset,  # noqa: E402
                     load_images, read_labels, to_float)


def timed(fn, repeat=1):
    """Best wall time of `repeat` calls, and the last result."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def decode_rates(paths, size, workers, chunk=250):
    """Posters/s decoding with 1 worker and with `workers`, chunk by chunk, taking turns.

    Why interleaved: on a shared machine the speed of one core drifts by 2x within seconds, so
    two long runs one after the other compare two different machines. Both decode each chunk,
    the first one alternating, into one buffer whose pages were touched beforehand.
    """
    buf = np.ones((min(chunk, len(paths)), size, size, 3), np.uint8)
    seconds = dict.fromkeys(sorted({1, workers}), 0.0)   # one entry on a one-core machine
    for k, lo in enumerate(range(0, len(paths), chunk)):
        part = paths[lo:lo + chunk]
        for w in (list(seconds) if k % 2 == 0 else list(seconds)[::-1]):
            start = time.perf_counter()
            load_images(part, size, workers=w, out=buf[:len(part)], progress=False)
            seconds[w] += time.perf_counter() - start
    return {w: len(paths) / s for w, s in seconds.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="dataset folder (default: $POSTERS_DIR, then data/posters)")
    parser.add_argument("-n", type=int, default=None,
                        help="use the first N posters (default: all, the set training caches)")
    parser.add_argument("--size", type=int, default=350,
                        help="square side in pixels (default: 350)")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    try:
        root = find_dataset(args.data)
        ids = read_labels(root / "train.csv").ids[: args.n]
    except DataError as e:
        parser.exit(2, f"bench_load.py: error: {e}\n")
    paths = [root / "Images" / f"{i}.jpg" for i in ids]
    n, size, workers = len(paths), args.size, default_workers()
    results = {
        "machine": {"os.cpu_count": os.cpu_count(), "usable_cores": workers,
                    "numpy": np.__version__, "pillow": PIL.__version__,
                    "python": platform.python_version(), "platform": platform.platform()},
        "posters": n, "size": size,
    }
    print(f"{n} posters at {size} x {size}; os.cpu_count() = {os.cpu_count()}, usable cores "
          f"{workers}; numpy {np.__version__}, Pillow {PIL.__version__}, Python "
          f"{platform.python_version()}")

    for p in paths:   # into the page cache, so that disk speed does not enter the comparison
        p.read_bytes()
    decode = decode_rates(paths, size, workers)
    for w, rate in decode.items():
        print(f"cold decode + resize, {w} worker{'s' if w > 1 else ' '}: {rate:8.0f} posters/s")
    results["decode_1_worker_per_s"] = decode[1]
    results["decode_all_cores_per_s"] = decode[workers]
    results["decode_speedup"] = decode[workers] / decode[1]
    print(f"  speed-up with {workers} workers: {results['decode_speedup']:.2f}x")

    with tempfile.TemporaryDirectory() as cache:
        def open_dataset():
            return PosterDataset(root, size, cache_dir=cache, limit=n, progress=False)

        build, _ = timed(open_dataset)
        print(f"PosterDataset first build (decode into the cache): {n / build:8.0f} posters/s")

        def reload():
            data = open_dataset()
            assert data.images.max() <= 255   # touches every byte of the memmap
            return data

        seconds, _ = timed(reload, repeat=3)
        results["cached_reload_per_s"] = n / seconds
        results["cached_vs_decode"] = results["cached_reload_per_s"] / decode[workers]
        print(f"cached reload (stat files, open memmap, read all): "
              f"{results['cached_reload_per_s']:8.0f} posters/s, "
              f"{results['cached_vs_decode']:.1f}x decoding on all cores")

        for memo in Path(cache).glob("*.digests.json"):
            memo.unlink()
        seconds, _ = timed(reload)   # once: this reload writes the memo again
        results["cached_reload_hashing_per_s"] = n / seconds
        print(f"  without the digest memo (hash every file):     {n / seconds:8.0f} posters/s, "
              f"{n / seconds / decode[workers]:.1f}x")

    batch, _ = load_images(paths[:33], size, progress=False)
    buf = np.empty((len(batch), batch[0].size), np.float32)
    fresh, _ = timed(lambda: [batch.astype(np.float32) / 255 for _ in range(20)], repeat=3)
    reused, _ = timed(lambda: [to_float(batch, out=buf) for _ in range(20)], repeat=3)
    results["to_float_buffer_batches_per_s"] = 20 / reused
    results["astype_div_batches_per_s"] = 20 / fresh
    results["to_float_speedup"] = fresh / reused
    print(f"uint8 -> float32, batch of 33: to_float into a buffer {20 / reused:6.0f} batches/s, "
          f"astype(float32) / 255 {20 / fresh:6.0f} batches/s ({fresh / reused:.1f}x)")

    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
