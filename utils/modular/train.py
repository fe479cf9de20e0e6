"""Train the Chapter 3 model through grokking and clean-up: ``python -m utils.modular train``.

Full-batch AdamW on 30% of all pairs, as in the original grokking experiments, for a fixed budget
of 40,000 epochs (the paper's length): the test loss falls below 1e-6 long before the weights stop
shrinking, and the clean-up phase is part of what the chapter studies (``--stop-test-loss`` stops
early instead). The run saves a resumable state every ``--resume-every`` epochs under
``runs/modular_addition/``, so a killed run picks up where it stopped. At the end it writes the
checkpoint (see :mod:`utils.checkpoints`) to ``runs/modular_addition/`` (``--out DIR`` elsewhere;
``--ship`` to ``trained_models/``, with ``--overwrite`` to replace the shipped one), plus

- ``snapshots.pt``: float16 weight snapshots at the epochs of ``shipped_snapshot_epochs`` (read
  them with :func:`utils.checkpoints.load_snapshots`; their SHA-256 is in ``weights.sha256``);
- ``training_log.json``: train and test loss every ``log_every`` epochs, and progress measures
  (restricted loss, excluded loss, total squared weight) on every ``snapshot_every``-epoch
  snapshot, computed with the final model's key frequencies.

On two CPU cores the full run takes about an hour (one thread); on a GPU, minutes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from utils.checkpoints import move_to_device, save_checkpoint
from utils.device import get_device
from utils.files import write_text
from utils.training import (add_output_arguments, check_output_arguments, check_positive, load_resume_state,
                            resume_failed, save_resume_state)
from utils.modular import fourier, progress as progress_measures
from utils.modular.data import P, all_pairs, labels_for, train_test_split
from utils.modular.model import DEFAULT_MODEL_CONFIG, build_model, final_position_logits

DEFAULT_TRAINING_CONFIG: dict[str, Any] = {
    "p": P,
    "train_fraction": 0.3,
    "data_seed": 598,
    "lr": 1e-3,
    "weight_decay": 1.0,
    "betas": [0.9, 0.98],
    "max_epochs": 40_000,
    "stop_test_loss": None,
    "log_every": 100,
    "snapshot_every": 250,
    # Snapshots that ship (float16, ~0.45 MB each): dense through memorisation and grokking, sparse
    # through clean-up. Epochs past the end of a shorter run are left out.
    "shipped_snapshot_epochs": list(range(0, 13_001, 500)) + [15_000, 20_000, 30_000, 40_000],
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m utils.modular train", description=__doc__)
    parser.add_argument("--max-epochs", type=int, default=DEFAULT_TRAINING_CONFIG["max_epochs"])
    parser.add_argument("--stop-test-loss", type=float, default=None,
                        help="stop once the test loss is below this (default: train the whole budget)")
    add_output_arguments(parser, "modular_addition", resume_every=1000, unit="epochs")
    args = parser.parse_args(argv)
    check_positive(parser, args, "max_epochs")
    if args.stop_test_loss is not None:
        check_positive(parser, args, "stop_test_loss")
    check_output_arguments(parser, args, "modular_addition")
    return args


@torch.enable_grad()  # training needs autograd even when the caller (a notebook, a test) turned it off
def train(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device) if args.device else get_device()
    training_config = dict(DEFAULT_TRAINING_CONFIG, max_epochs=args.max_epochs,
                           stop_test_loss=args.stop_test_loss)
    torch.manual_seed(DEFAULT_MODEL_CONFIG["seed"])
    model = move_to_device(build_model(DEFAULT_MODEL_CONFIG), device)
    optimizer = torch.optim.AdamW(
        [parameter for parameter in model.parameters() if parameter.requires_grad],
        lr=training_config["lr"], weight_decay=training_config["weight_decay"],
        betas=tuple(training_config["betas"]),
    )
    tokens = all_pairs(P).to(device)
    labels = labels_for(tokens, P)
    train_indices, test_indices = train_test_split(P, training_config["train_fraction"],
                                                   training_config["data_seed"])
    train_tokens, train_labels = tokens[train_indices.to(device)], labels[train_indices.to(device)]
    test_tokens, test_labels = tokens[test_indices.to(device)], labels[test_indices.to(device)]

    log: list[dict[str, float]] = []
    snapshots: dict[int, dict[str, torch.Tensor]] = {0: weight_snapshot(model)}
    start_epoch = 0
    resume_path = args.run_dir / "resume.pt"
    if resume_path.exists() and not args.fresh:
        state = load_resume_state(resume_path, device)
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start_epoch, log = int(state["epoch"]), json.loads(state["log"])
            snapshots = {int(epoch): weights for epoch, weights in state["snapshots"].items()}
        except (KeyError, RuntimeError, ValueError, TypeError, AttributeError):
            raise resume_failed(resume_path) from None
        print(f"resuming from epoch {start_epoch} ({resume_path})", flush=True)

    started = time.time()
    epoch = start_epoch
    test_loss = float("inf")
    while epoch < training_config["max_epochs"]:
        model.train()
        train_loss = fourier.cross_entropy(final_position_logits(model, train_tokens), train_labels)
        train_loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        epoch += 1
        if epoch % training_config["log_every"] == 0 or epoch == 1:
            with torch.no_grad():
                model.eval()
                test_loss = float(fourier.cross_entropy(final_position_logits(model, test_tokens), test_labels))
            log.append({"epoch": epoch, "train_loss": float(train_loss.detach()), "test_loss": test_loss})
            if epoch % (10 * training_config["log_every"]) == 0:
                print(f"epoch {epoch:6d}  train {float(train_loss.detach()):.3e}  test {test_loss:.3e}  "
                      f"({time.time() - started:.0f}s)", flush=True)
        if epoch % training_config["snapshot_every"] == 0:
            snapshots[epoch] = weight_snapshot(model)
        if epoch % args.resume_every == 0:
            save_resume_state({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                               "log": json.dumps(log), "snapshots": snapshots}, resume_path)
        if training_config["stop_test_loss"] is not None and test_loss < training_config["stop_test_loss"]:
            print(f"test loss {test_loss:.3e} below {training_config['stop_test_loss']:.0e} at epoch {epoch}")
            break
    training_config["epochs_trained"] = epoch
    return finish(model, training_config, log, snapshots, train_indices, args.out, time.time() - started)


def weight_snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trained weights in float16 on the CPU (the biases are frozen at zero and left out)."""
    return {name: parameter.detach().to("cpu", torch.float16).clone()
            for name, parameter in model.named_parameters() if parameter.requires_grad}


@torch.no_grad()
def finish(model, training_config, log, snapshots, train_indices, out: Path, seconds: float) -> dict[str, Any]:
    """Measure the final model, compute progress measures, and write checkpoint and log."""
    model.eval()
    tokens = all_pairs(P).to(model.cfg.device)
    labels = labels_for(tokens, P)
    logits = model(tokens)[:, -1, :]
    test_mask = torch.ones(P * P, dtype=torch.bool)
    test_mask[train_indices] = False
    test_mask = test_mask.to(logits.device)
    frequencies = fourier.key_frequencies(model)
    metrics = {
        "accuracy_all_pairs": float((logits.argmax(-1) == labels).float().mean()),
        "train_loss": float(fourier.cross_entropy(logits[~test_mask], labels[~test_mask])),
        "test_loss": float(fourier.cross_entropy(logits[test_mask], labels[test_mask])),
        "key_frequencies": frequencies,
        "epochs_trained": training_config["epochs_trained"],
        "training_seconds": round(seconds, 1),
        "device": str(model.cfg.device),
    }
    progress = []
    final_state = {key: value.clone() for key, value in model.state_dict().items()}
    for epoch in sorted(snapshots):
        progress_measures.load_snapshot(model, snapshots[epoch])  # checked: a snapshot that does not fit fails
        # A run too short to grok has no key frequencies, and then no restricted or excluded loss.
        restricted, excluded = (
            fourier.restricted_and_excluded_loss(model, frequencies, train_indices,
                                                 logits=final_position_logits(model, tokens))
            if frequencies else (None, None))
        squared_weight = progress_measures.total_squared_weight(model)
        progress.append({"epoch": epoch, "restricted_loss": restricted, "excluded_loss": excluded,
                         "total_squared_weight": squared_weight})
    model.load_state_dict(final_state)
    config = {"model": DEFAULT_MODEL_CONFIG, "training": training_config}
    shipped = [epoch for epoch in training_config["shipped_snapshot_epochs"] if epoch in snapshots]
    save_checkpoint(model, out, config, metrics, snapshots={epoch: snapshots[epoch] for epoch in shipped})
    write_text(out / "training_log.json", json.dumps({"losses": log, "progress_measures": progress}) + "\n")
    print(json.dumps(metrics, indent=2))
    return metrics
