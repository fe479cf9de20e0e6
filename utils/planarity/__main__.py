"""Command line for Chapter 1.

- ``python -m utils.planarity train [--epochs N] [--train-size N] [--out DIR] ...``: train the
  model (see ``--help``);
- ``python -m utils.planarity make-data [--out PATH] [--workers N]``: regenerate the committed
  validation set ``data/planarity/validation.npz``.
"""

import argparse
import sys
import time
from pathlib import Path

import utils  # noqa: F401 - silences TransformerLens's deprecation warning

USAGE = "usage: python -m utils.planarity {train,make-data} [options] (see --help after the command)"


def make_data(argv: list[str]) -> None:
    from utils.planarity import data

    parser = argparse.ArgumentParser(prog="python -m utils.planarity make-data",
                                     description="Regenerate the committed validation set.")
    parser.add_argument("--out", type=Path, default=data.VALIDATION_PATH)
    parser.add_argument("--workers", type=int, default=None, help="default: one per core")
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}; leave it out for one per core")
    if args.out.is_dir():
        parser.error(f"--out {args.out} is a folder; pass a file path such as {args.out / 'validation.npz'}")
    started = time.time()
    path = data.make_validation_set(args.out, args.workers)
    written = len(data.load_graph_set(path)[0].labels)  # report what is on disk, not what was asked
    print(f"wrote {written:,} graphs (seed {data.VALIDATION_SEED}) to {path} "
          f"({path.stat().st_size:,} bytes) in {time.time() - started:.1f}s")


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in {"train", "make-data"}:
        sys.exit(USAGE)
    if sys.argv[1] == "train":
        from utils.planarity.train import parse_args, train

        train(parse_args(sys.argv[2:]))
    else:
        make_data(sys.argv[2:])
