"""Train the Chapter 1 planarity model: ``python -m utils.planarity train``.

The training set (94,992 graphs ``G(10, m)``, ``m = 15 .. 20``, half planar for each ``m``) is
generated from a fixed seed, in parallel over the CPU cores, and cached in ``data/generated/``.
It lives on the training device as one tensor; each step takes a slice of a seeded permutation
and renames every graph's vertices at random (planarity does not depend on the names, so this
is a free augmentation). AdamW with a one-cycle learning-rate schedule.

A resumable state is written to ``runs/planarity/resume.pt`` every ``--resume-every`` epochs; a
killed run started again with the same arguments picks up there (``--fresh`` ignores it). At
the end the checkpoint goes to ``runs/planarity`` (``--out DIR`` elsewhere; ``--ship`` to
``trained_models/planarity``, with ``--overwrite`` to replace the shipped one) with its config and
metrics (see :mod:`utils.checkpoints`), plus ``training_log.json`` with per-epoch numbers.

CI runs a tiny budget: ``python -m utils.planarity train --epochs 1 --train-size 144 --batch-size 64
--eval-graphs 24 --out /tmp/planarity``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any

import torch
import torch.nn.functional as F

from utils.checkpoints import move_to_device, save_checkpoint
from utils.device import get_device
from utils.files import write_text
from utils.planarity import data
from utils.planarity.model import DEFAULT_MODEL_CONFIG, PlanarityTransformer, build_model
from utils.training import (add_output_arguments, check_output_arguments, check_positive, load_resume_state,
                            resume_failed, save_resume_state)

DEFAULT_TRAINING_CONFIG: dict[str, Any] = {
    "train_size": data.TRAIN_SIZE,
    "train_seed": data.TRAIN_SEED,
    "edge_counts": list(data.TRAIN_EDGE_COUNTS),
    # The recipe of the shipped checkpoint (trained on 2 CPU cores in about 31 minutes, 100%
    # validation accuracy): the original research recipe (batch 128, peak lr 1e-3) with random
    # vertex renaming, which reaches it in 55 epochs instead of 100.
    "epochs": 55,
    "batch_size": 128,
    "lr": 1e-3,
    "pct_start": 0.1,
    "betas": [0.9, 0.99],
    "weight_decay": 0.1,
    "relabel_vertices": True,
    "shuffle_seed": 1234,
}
EVAL_SEED = 3  # fresh G(10, m) for m = 11 .. 24, natural mix of classes
FRESH_BALANCED_SEED = 4  # a fresh balanced set from the training distribution
RELABEL_SEED = 5  # vertex renaming of the validation set


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m utils.planarity train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = DEFAULT_TRAINING_CONFIG
    parser.add_argument("--epochs", type=int, default=defaults["epochs"])
    parser.add_argument("--batch-size", type=int, default=defaults["batch_size"])
    parser.add_argument("--lr", type=float, default=defaults["lr"], help="peak of the one-cycle schedule")
    parser.add_argument("--train-size", type=int, default=defaults["train_size"],
                        help="training graphs, a multiple of 12")
    parser.add_argument("--no-relabel", action="store_true", help="do not rename vertices at random")
    parser.add_argument("--eval-graphs", type=int, default=2_000,
                        help="fresh graphs per edge count for the final metrics")
    add_output_arguments(parser, "planarity", resume_every=10, unit="epochs")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes that generate graphs (default: one per core; the data do not depend on it)")
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "train_size", "eval_graphs"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    check_positive(parser, args, "lr")
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}; leave it out for one per core")
    if args.train_size % 12:
        parser.error(f"--train-size must be a multiple of 12 (6 edge counts x 2 classes), got {args.train_size}")
    if args.batch_size > args.train_size:
        parser.error(f"--batch-size {args.batch_size} is larger than --train-size {args.train_size}")
    check_output_arguments(parser, args, "planarity")
    return args


@torch.enable_grad()  # training needs autograd even when the caller (a notebook, a test) turned it off
def train(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device) if args.device else get_device()
    training_config = dict(
        DEFAULT_TRAINING_CONFIG, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        train_size=args.train_size, relabel_vertices=not args.no_relabel,
    )

    started = time.time()
    train_set = data.training_set(args.train_size, training_config["train_seed"], workers=args.workers)
    validation_set = data.load_validation_set()
    data_seconds = time.time() - started
    print(f"{len(train_set.labels):,} training graphs ready in {data_seconds:.1f}s", flush=True)
    train_adjacency, train_labels = train_set.adjacency.to(device), train_set.labels.to(device)
    validation = validation_set.to(device)

    model = move_to_device(build_model(DEFAULT_MODEL_CONFIG), device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=training_config["lr"], betas=tuple(training_config["betas"]),
        weight_decay=training_config["weight_decay"], **({"fused": True} if device.type == "cuda" else {}),
    )
    steps_per_epoch = len(train_labels) // training_config["batch_size"]  # the last partial batch is dropped
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, one_cycle(training_config["epochs"] * steps_per_epoch, training_config["pct_start"])
    )

    log: list[dict[str, float]] = []
    start_epoch, seconds_before = 0, 0.0
    resume_path = args.run_dir / "resume.pt"
    if resume_path.exists() and not args.fresh:
        state = load_resume_state(resume_path, device)
        try:
            saved_config = json.loads(state["training_config"])
        except (KeyError, TypeError, ValueError):
            raise resume_failed(resume_path) from None
        if saved_config != training_config:
            changed = sorted(key for key in training_config if saved_config.get(key) != training_config[key])
            raise SystemExit(
                f"{resume_path} was saved by a run with different settings ({', '.join(changed)}); "
                "rerun with the same arguments, or pass --fresh to start over"
            )
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            start_epoch, log = int(state["epoch"]), json.loads(state["log"])
            seconds_before = float(state["seconds"])
        except (KeyError, RuntimeError, ValueError, TypeError, AttributeError):
            raise resume_failed(resume_path) from None
        print(f"resuming from epoch {start_epoch} ({resume_path})", flush=True)

    generator = torch.Generator(device=device)
    batch_size = training_config["batch_size"]
    loop_started = time.time()
    for epoch in range(start_epoch, training_config["epochs"]):
        model.train()
        # Seeded per epoch, so a resumed run sees the same batches as an uninterrupted one.
        generator.manual_seed(training_config["shuffle_seed"] * 100_003 + epoch)
        order = torch.randperm(len(train_labels), device=device, generator=generator)
        # Shuffle (and rename vertices) once per epoch, so a step only slices these tensors.
        epoch_adjacency, epoch_labels = train_adjacency[order], train_labels[order]
        if training_config["relabel_vertices"]:
            epoch_adjacency = data.relabel_vertices(epoch_adjacency, generator)
        loss_sum = torch.zeros((), device=device)
        for step in range(steps_per_epoch):
            batch = slice(step * batch_size, (step + 1) * batch_size)
            loss = F.cross_entropy(model(epoch_adjacency[batch], check_input=False), epoch_labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach()
        validation_loss, validation_accuracy = evaluate(model, validation.adjacency, validation.labels)
        seconds = seconds_before + time.time() - loop_started
        log.append({
            "epoch": epoch + 1,
            "train_loss": float(loss_sum) / steps_per_epoch,
            "validation_loss": validation_loss,
            "validation_accuracy": validation_accuracy,
            "lr": scheduler.get_last_lr()[0],
            "seconds": round(seconds, 1),
        })
        print(f"epoch {epoch + 1:3d}  train loss {log[-1]['train_loss']:.4f}  val loss {validation_loss:.4f} acc {validation_accuracy:.4f}  ({seconds:.0f}s)", flush=True)
        if (epoch + 1) % args.resume_every == 0 and epoch + 1 < training_config["epochs"]:
            save_resume_state({
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "log": json.dumps(log),
                "seconds": seconds, "training_config": json.dumps(training_config),
            }, resume_path)
    training_seconds = seconds_before + time.time() - loop_started
    training_config["steps"] = training_config["epochs"] * steps_per_epoch
    return finish(model, training_config, log, args, training_seconds, data_seconds)


def one_cycle(total_steps: int, pct_start: float, start_div: float = 25.0, final_div: float = 1e4):
    """Learning-rate factor per step: cosine from ``1/start_div`` up to 1 over the first
    ``pct_start`` of the steps, then cosine down to ``1/(start_div * final_div)`` (the shape of
    torch's OneCycleLR, which misbehaves when the warm-up is under one step)."""
    warmup = max(1, round(pct_start * total_steps))
    start, end = 1.0 / start_div, 1.0 / (start_div * final_div)

    def factor(step: int) -> float:
        if step < warmup:
            progress, low, high = step / warmup, start, 1.0
        else:
            progress, low, high = (step - warmup) / max(1, total_steps - warmup), 1.0, end
        return high + (low - high) * (1 + math.cos(math.pi * min(progress, 1.0))) / 2

    return factor


@torch.no_grad()
def evaluate(
    model: PlanarityTransformer, adjacency: torch.Tensor, labels: torch.Tensor, batch_size: int = 8_192
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on a labelled set."""
    model.eval()
    logits = torch.cat([model(part, check_input=False) for part in adjacency.split(batch_size)])
    loss = F.cross_entropy(logits.float(), labels)
    accuracy = (logits.argmax(dim=-1) == labels).float().mean()
    return float(loss), float(accuracy)


@torch.no_grad()
def measure(model: PlanarityTransformer, eval_graphs: int, workers: int | None = None) -> dict[str, Any]:
    """The metrics that ship with the checkpoint.

    Accuracy on the committed validation set, overall and per edge count; on a fresh balanced
    set from the training distribution; on fresh ``G(10, m)`` for ``m = 11 .. 24`` (the natural
    mix of classes, which is lopsided away from ``m = 17``); on the validation set with every
    graph's vertices renamed at random, and how often that renaming leaves the answer unchanged;
    and whether each of :func:`utils.planarity.data.named_graphs` is classified correctly.
    """
    model.eval()
    device = next(model.parameters()).device

    def predictions(adjacency: torch.Tensor) -> torch.Tensor:
        return torch.cat([model(part.to(device), check_input=False).argmax(dim=-1).cpu()
                          for part in adjacency.split(8_192)])

    def accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
        return float((predicted == labels).float().mean())

    validation = data.load_validation_set()
    predicted = predictions(validation.adjacency)
    metrics: dict[str, Any] = {"validation_accuracy": accuracy(predicted, validation.labels)}
    metrics["validation_accuracy_by_edge_count"] = {
        str(m): accuracy(predicted[validation.edge_counts == m], validation.labels[validation.edge_counts == m])
        for m in data.TRAIN_EDGE_COUNTS
    }
    per_class = max(1, eval_graphs // 2)  # eval_graphs per edge count, half of them planar
    fresh = data.balanced_dataset(2 * per_class * len(data.TRAIN_EDGE_COUNTS), data.TRAIN_EDGE_COUNTS,
                                  FRESH_BALANCED_SEED, workers)
    metrics["fresh_balanced_accuracy"] = accuracy(predictions(fresh.adjacency), fresh.labels)
    metrics["fresh_balanced_graphs"] = len(fresh.labels)
    metrics["gnm_accuracy_by_edge_count"] = {
        str(m): {
            "accuracy": accuracy(predictions(batch.adjacency), batch.labels),
            "planar_fraction": float(batch.labels.float().mean()),
            "graphs": len(batch.labels),
        }
        for m, batch in data.gnm_batches(data.EVAL_EDGE_COUNTS, eval_graphs, EVAL_SEED, workers).items()
    }
    relabelled = predictions(
        data.relabel_vertices(validation.adjacency, torch.Generator().manual_seed(RELABEL_SEED))
    )
    metrics["relabelled_validation_accuracy"] = accuracy(relabelled, validation.labels)
    metrics["relabelling_agreement"] = accuracy(relabelled, predicted)
    named = data.named_graphs()
    named_batch = data.batch_from_adjacency(torch.stack(list(named.values())))
    metrics["named_graphs_correct"] = {
        name: bool(prediction == label)
        for name, prediction, label in zip(named, predictions(named_batch.adjacency).tolist(),
                                           named_batch.labels.tolist())
    }
    return metrics


def finish(model, training_config, log, args, training_seconds: float, data_seconds: float) -> dict[str, Any]:
    """Measure the final model and write the checkpoint and the training log."""
    started = time.time()
    metrics = measure(model, args.eval_graphs, args.workers)
    metrics.update({
        "epochs_trained": training_config["epochs"],
        "final_train_loss": log[-1]["train_loss"] if log else None,
        "training_seconds": round(training_seconds, 1),
        "data_seconds": round(data_seconds, 1),
        "evaluation_seconds": round(time.time() - started, 1),
        "device": str(next(model.parameters()).device),
    })
    training_config["evaluation"] = {
        "validation_file": "data/planarity/validation.npz", "eval_graphs_per_edge_count": args.eval_graphs,
        "gnm_seed": EVAL_SEED, "fresh_balanced_seed": FRESH_BALANCED_SEED, "relabel_seed": RELABEL_SEED,
    }
    config = {"model": DEFAULT_MODEL_CONFIG, "training": training_config}
    save_checkpoint(model, args.out, config, metrics)
    write_text(args.out / "training_log.json", json.dumps(log) + "\n")
    print(json.dumps(metrics, indent=2))
    return metrics
