"""Command line for Chapter 2.

``python -m utils.memory_dt train [--steps N] [--episodes N] [--eval-episodes N] [--out DIR]``
``python -m utils.memory_dt make-data [--episodes N] [--seed S] [--out FILE]``
``python -m utils.memory_dt evaluate [--target-return R] [--episodes N] [--directory DIR]``
"""

import argparse
import json
import sys
from pathlib import Path

import utils  # noqa: F401 - silences TransformerLens's deprecation warning
from utils.checkpoints import REPO_ROOT

USAGE = ("usage: python -m utils.memory_dt {train,make-data,evaluate} [options] "
         "(see python -m utils.memory_dt COMMAND --help)")


def make_data(argv: list[str]) -> None:
    import torch

    from utils.files import atomic_path
    from utils.memory_dt.data import DEFAULT_DATA_CONFIG, make_demonstrations

    parser = argparse.ArgumentParser(prog="python -m utils.memory_dt make-data",
                                     description="Generate the demonstration set (deterministic).")
    parser.add_argument("--episodes", type=int, default=DEFAULT_DATA_CONFIG["n_episodes"])
    parser.add_argument("--seed", type=int, default=DEFAULT_DATA_CONFIG["seed"])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "data" / "generated" / "memory_dt.pt")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error("--episodes must be at least 1")
    if args.out.is_dir():
        parser.error(f"--out {args.out} is a folder; pass a file path such as {args.out / 'memory_dt.pt'}")
    demonstrations = make_demonstrations(args.episodes, args.seed)
    with atomic_path(args.out) as temporary:  # an interrupted run keeps the previous file
        torch.save(demonstrations.state_dict(), temporary)
    print(json.dumps(demonstrations.summary(), indent=2))
    print(f"wrote {args.out}")


def evaluate_command(argv: list[str]) -> None:
    from utils.checkpoints import load_model
    from utils.memory_dt.env import BEST_RETURN
    from utils.memory_dt.policy import evaluate

    parser = argparse.ArgumentParser(prog="python -m utils.memory_dt evaluate",
                                     description="Play greedy episodes with the trained model.")
    parser.add_argument("--target-return", type=float, default=round(BEST_RETURN, 3))
    parser.add_argument("--episodes", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--directory", type=Path, default=None, help="checkpoint folder")
    args = parser.parse_args(argv)
    model = load_model("memory_dt", directory=args.directory)
    print(json.dumps(evaluate(model, args.target_return, args.episodes, args.seed), indent=2))


if __name__ == "__main__":
    command, rest = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if command == "train":
        from utils.memory_dt.train import parse_args, train

        train(parse_args(rest))
    elif command == "make-data":
        make_data(rest)
    elif command == "evaluate":
        evaluate_command(rest)
    else:
        sys.exit(USAGE)
