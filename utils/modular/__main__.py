"""Command line for Chapter 3: ``python -m utils.modular train [--max-epochs N] [--out DIR]``."""

import sys

import utils  # noqa: F401 - silences TransformerLens's deprecation warning
from utils.modular.train import parse_args, train

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "train":
        sys.exit("usage: python -m utils.modular train [--max-epochs N] [--out DIR] (see --help)")
    train(parse_args(sys.argv[2:]))
