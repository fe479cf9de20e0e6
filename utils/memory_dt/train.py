"""Train the Chapter 2 decision transformer: ``python -m utils.memory_dt train``.

Generates the demonstrations (:mod:`utils.memory_dt.data`, deterministic from their seed), keeps
them on the training device as flat tensors, and trains with AdamW on random 9-step windows
(cross-entropy of the action taken at every real step of the window). A resumable state is saved
every ``--resume-every`` steps under ``runs/memory_dt/``. At the end the policy plays 500 greedy
episodes asking for the best possible return (0.892) and 500 asking for return 0, plus a small
sweep of targets, and the checkpoint is written with :func:`utils.checkpoints.save_checkpoint` to
``runs/memory_dt`` (``--out DIR`` elsewhere; ``--ship`` to ``trained_models/memory_dt``, with
``--overwrite`` to replace the shipped one).

``--tiny`` is a budget for CI and tests (``--steps 20 --episodes 10 --eval-episodes 4
--batch-size 16``): seconds on a CPU, and a model that has learnt little.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from utils.checkpoints import move_to_device, save_checkpoint
from utils.device import get_device
from utils.files import write_text
from utils.memory_dt.data import DEFAULT_DATA_CONFIG, Demonstrations, make_demonstrations
from utils.memory_dt.env import BEST_RETURN, CONFIGURATIONS
from utils.memory_dt.model import DEFAULT_MODEL_CONFIG, DecisionTransformer, build_model
from utils.memory_dt.policy import evaluate
from utils.training import (add_output_arguments, check_output_arguments, load_resume_state, resume_failed,
                            save_resume_state)

DEFAULT_TRAINING_CONFIG: dict[str, Any] = {
    "data": DEFAULT_DATA_CONFIG,
    "steps": 4000,
    "batch_size": 256,
    "lr": 5e-4,
    "warmup_steps": 200,
    "final_lr_fraction": 0.1,  # cosine decay from lr to lr * this
    "weight_decay": 0.01,
    "betas": [0.9, 0.95],
    "grad_clip": 1.0,
    "sample_seed": 7,
    "eval_episodes": 500,
    "eval_seed": 100_000,  # evaluation episodes use env seeds eval_seed, eval_seed + 1, ...
    "target_return": round(BEST_RETURN, 3),
    "sweep_targets": [0.0, 0.25, 0.5, 0.75, round(BEST_RETURN, 3)],
    "sweep_episodes": 40,
    "log_every": 50,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m utils.memory_dt train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=DEFAULT_TRAINING_CONFIG["steps"])
    parser.add_argument("--episodes", type=int, default=DEFAULT_DATA_CONFIG["n_episodes"],
                        help="demonstration episodes to generate")
    parser.add_argument("--eval-episodes", type=int, default=DEFAULT_TRAINING_CONFIG["eval_episodes"])
    parser.add_argument("--batch-size", type=int, default=DEFAULT_TRAINING_CONFIG["batch_size"])
    add_output_arguments(parser, "memory_dt", resume_every=500, unit="steps")
    parser.add_argument("--tiny", action="store_true",
                        help="CI budget: --steps 20 --episodes 10 --eval-episodes 4 --batch-size 16")
    args = parser.parse_args(argv)
    if args.tiny:
        args.steps, args.episodes, args.eval_episodes, args.batch_size = 20, 10, 4, 16
    for name in ("steps", "episodes", "eval_episodes", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    check_output_arguments(parser, args, "memory_dt")
    return args


def learning_rate(step: int, config: dict[str, Any]) -> float:
    """Linear warm-up, then cosine decay to ``final_lr_fraction`` of the peak."""
    warmup = min(config["warmup_steps"], max(1, config["steps"] // 10))
    if step < warmup:
        return config["lr"] * (step + 1) / warmup
    progress = (step - warmup) / max(1, config["steps"] - warmup)
    floor = config["final_lr_fraction"]
    return config["lr"] * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def window_loss(model: DecisionTransformer, demonstrations: Demonstrations, episode: torch.Tensor,
                offset: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the demonstrated action at every real step of the windows."""
    states, actions, returns_to_go, timesteps, mask = demonstrations.windows(
        episode, offset, model.context_timesteps)
    logits = model(states, actions, returns_to_go, timesteps)
    losses = torch.nn.functional.cross_entropy(logits.flatten(0, 1), actions.flatten(), reduction="none")
    mask = mask.flatten().float()
    return (losses * mask).sum() / mask.sum()


@torch.enable_grad()  # training needs autograd even when the caller (a notebook, a test) turned it off
def train(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device) if args.device else get_device()
    training_config = json.loads(json.dumps(DEFAULT_TRAINING_CONFIG))  # a deep, JSON-clean copy
    training_config["data"]["n_episodes"] = args.episodes
    training_config.update(steps=args.steps, batch_size=args.batch_size, eval_episodes=args.eval_episodes)
    started = time.time()

    data_started = time.time()
    data_config = training_config["data"]
    demonstrations = make_demonstrations(
        data_config["n_episodes"], data_config["seed"], data_config["kind_weights"],
        data_config["noisy_epsilon"], data_config["wrong_epsilon"],
    ).to(device)
    data_seconds = time.time() - data_started
    print(f"{demonstrations.n_episodes} demonstrations, {int(demonstrations.actions.shape[0])} steps "
          f"({data_seconds:.1f}s)", flush=True)

    model = move_to_device(build_model(DEFAULT_MODEL_CONFIG), device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=training_config["lr"],
                                  weight_decay=training_config["weight_decay"],
                                  betas=tuple(training_config["betas"]))
    generator = torch.Generator(device=device).manual_seed(training_config["sample_seed"])
    log: list[dict[str, float]] = []
    step = 0
    resume_path = args.run_dir / "resume.pt"
    if resume_path.exists() and not args.fresh:
        state = load_resume_state(resume_path, device)
        try:
            saved_config = json.loads(state["training_config"])
        except (KeyError, TypeError, ValueError):
            raise resume_failed(resume_path) from None
        if saved_config != training_config or state.get("device_type") != device.type:
            print(f"ignoring {resume_path}: it was made with a different configuration or device "
                  f"({state.get('device_type')}); starting afresh", flush=True)
        else:
            try:
                model.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
                generator.set_state(state["generator"].cpu())  # generator states are CPU byte tensors
                step, log = int(state["step"]), json.loads(state["log"])
            except (KeyError, RuntimeError, ValueError, TypeError, AttributeError):
                raise resume_failed(resume_path) from None
            print(f"resuming from step {step} ({resume_path})", flush=True)

    train_started = time.time()
    model.train()
    while step < training_config["steps"]:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, training_config)
        episode, offset = demonstrations.sample_windows(
            training_config["batch_size"], model.context_timesteps, generator)
        loss = window_loss(model, demonstrations, episode, offset)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), training_config["grad_clip"])
        optimizer.step()
        step += 1
        if step % training_config["log_every"] == 0 or step == training_config["steps"]:
            current = float(loss.detach())
            log.append({"step": step, "loss": current, "lr": learning_rate(step - 1, training_config)})
            if step % (10 * training_config["log_every"]) == 0 or step == training_config["steps"]:
                print(f"step {step:5d}  loss {current:.4f}  ({time.time() - train_started:.0f}s)", flush=True)
        if step % args.resume_every == 0 or step == training_config["steps"]:
            save_resume_state({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                               "generator": generator.get_state(), "log": json.dumps(log),
                               "training_config": json.dumps(training_config), "device_type": device.type},
                              resume_path)
    train_seconds = time.time() - train_started
    return finish(model, demonstrations, training_config, log, args.out,
                  {"data": data_seconds, "train": train_seconds, "started": started})


@torch.no_grad()
def finish(model: DecisionTransformer, demonstrations: Demonstrations, training_config: dict[str, Any],
           log: list[dict[str, float]], out: Path, seconds: dict[str, float]) -> dict[str, Any]:
    """Evaluate the final model, then write checkpoint, metrics and ``training_log.json``."""
    model.eval()
    eval_started = time.time()
    episodes, seed = training_config["eval_episodes"], training_config["eval_seed"]
    best = evaluate(model, training_config["target_return"], episodes=episodes, seed=seed)
    zero = evaluate(model, 0.0, episodes=episodes, seed=seed)
    sweep_episodes = min(training_config["sweep_episodes"], episodes)
    sweep = {
        f"{target:.3f}": evaluate(model, target, episodes=sweep_episodes, seed=seed)
        for target in training_config["sweep_targets"]
    }
    eval_seconds = time.time() - eval_started
    probe = demonstrations.sample_windows(
        min(4096, 64 * demonstrations.n_episodes), model.context_timesteps,
        torch.Generator(device=demonstrations.actions.device).manual_seed(0))
    metrics = {
        "target_return": training_config["target_return"],
        "eval_episodes": episodes,
        "success_rate": best["success_rate"],
        "wrong_object_rate": best["wrong_object_rate"],
        "timeout_rate": best["timeout_rate"],
        "mean_return": best["mean_return"],
        "mean_length": best["mean_length"],
        "success_rate_by_configuration": best["success_rate_by_configuration"],
        "episodes_by_configuration": best["episodes_by_configuration"],
        "return_0": {key: zero[key] for key in
                     ("success_rate", "wrong_object_rate", "timeout_rate", "mean_return", "mean_length")},
        "success_rate_by_target_return": {target: result["success_rate"] for target, result in sweep.items()},
        "wrong_object_rate_by_target_return": {
            target: result["wrong_object_rate"] for target, result in sweep.items()},
        "final_loss": float(window_loss(model, demonstrations, *probe)),
        "steps_trained": training_config["steps"],
        "demonstrations": demonstrations.summary(),
        "data_seconds": round(seconds["data"], 1),
        "training_seconds": round(seconds["train"], 1),
        "evaluation_seconds": round(eval_seconds, 1),
        "total_seconds": round(time.time() - seconds["started"], 1),
        "device": str(next(model.parameters()).device),
        "configurations": list(CONFIGURATIONS),
    }
    config = {"model": DEFAULT_MODEL_CONFIG, "training": training_config}
    save_checkpoint(model, out, config, metrics)
    write_text(out / "training_log.json", json.dumps({"losses": log}) + "\n")
    print(json.dumps({key: metrics[key] for key in metrics if key != "demonstrations"}, indent=2))
    return metrics
