"""Reference outputs of the three shipped models, and the hook edits that produce them.

``tests/data/reference_outputs.pt`` holds, for each shipped model, the inputs used (fixed by a
seed) and the outputs computed from them: clean logits and the logits after each hook edit in
:func:`edits`. It was written once by running this file with TransformerLens 3.9's
``HookedTransformer`` as the models' base class::

    OMP_NUM_THREADS=1 .venv/bin/python tests/reference_outputs.py

Naming models (``... tests/reference_outputs.py modular_addition``) rewrites only their entries and
keeps the others: that is how the entry of a deliberately retrained model is renewed (the Chapter 3
model was retrained through clean-up after this file was first written; its entry was renewed on
TransformerLens 3.9, where the course's transformer equals ``HookedTransformer`` bit for bit).

``tests/test_reference_outputs.py`` recomputes the same outputs with whatever the models are
built on now (the course's own transformer, on TransformerLens 3.9 or 4.x) and requires them to
match within 1e-5. Rewriting the file would defeat that test: only do it after a deliberate
change to the shipped weights, and say so in the commit.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

REFERENCE_FILE = ROOT / "tests" / "data" / "reference_outputs.pt"
MODEL_NAMES = ("modular_addition", "planarity", "memory_dt")

Hook = tuple[str, Callable[..., Any]]


def make_inputs(name: str) -> dict[str, Tensor]:
    """The fixed inputs of one model (stored in the reference file; this makes them the first time)."""
    generator = torch.Generator().manual_seed(14)
    if name == "modular_addition":
        from utils.modular.data import P

        pairs = torch.randint(0, P, (48, 2), generator=generator)
        pairs[:4] = torch.tensor([[0, 0], [1, 2], [P - 1, P - 1], [57, 56]])
        tokens = torch.cat([pairs, torch.full((48, 1), P)], dim=1)
        return {"tokens": tokens}
    if name == "planarity":
        n = 10
        upper = torch.rand((160, n, n), generator=generator) < torch.rand((160, 1, 1), generator=generator)
        upper = torch.triu(upper, diagonal=1)
        return {"adjacency": (upper | upper.transpose(1, 2)).to(torch.uint8)}
    if name == "memory_dt":
        from utils.memory_dt.data import make_demonstrations

        demonstrations = make_demonstrations(24, seed=14)
        episode, offset = demonstrations.sample_windows(24, 9, generator=generator)
        steps = torch.arange(9)
        length = (demonstrations.episode_lengths[episode] - offset).clamp(max=9)
        rows = demonstrations.episode_starts[episode][:, None] + offset[:, None] + torch.minimum(
            steps[None, :], (length - 1)[:, None]
        )
        return {
            "images": demonstrations.images[rows].to(torch.uint8),
            "actions": demonstrations.actions[rows][:, :-1].clone(),
            "returns_to_go": demonstrations.returns_to_go[rows].clone(),
            "timesteps": demonstrations.timesteps[rows].clone(),
        }
    raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")


def model_inputs(name: str, stored: dict[str, Tensor]) -> Any:
    """What the model is called with: one tensor, or the decision transformer's four."""
    if name == "modular_addition":
        return stored["tokens"]
    if name == "planarity":
        return stored["adjacency"].float()
    from utils.memory_dt.data import one_hot_views

    return (one_hot_views(stored["images"].long()), stored["actions"], stored["returns_to_go"], stored["timesteps"])


def _run(model: Any, inputs: Any, hooks: list[Hook]) -> Tensor:
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    return model.run_with_hooks(*args, fwd_hooks=hooks)


def _set(index: Any, value: Callable[[Tensor], Tensor] | float) -> Callable[..., Tensor]:
    """A hook that writes ``value`` (a constant or a function of the old slice) into ``activation[index]``."""

    def hook(activation: Tensor, hook: Any) -> Tensor:
        activation = activation.clone()
        activation[index] = value(activation[index]) if callable(value) else value
        return activation

    return hook


def edits(name: str, model: Any, inputs: Any) -> dict[str, list[Hook]]:
    """Hook edits, one of each kind the notebooks make, named ``<kind>``; each maps to its hooks."""
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    last = model.cfg.n_layers - 1
    generator = torch.Generator().manual_seed(0)
    direction = torch.randn(model.cfg.d_model, generator=generator)
    # A second input for patching: the same batch rolled by one (another example at each row).
    rolled = tuple(torch.roll(arg, 1, dims=0) for arg in args)
    _, corrupted = model.run_with_cache(*rolled)
    every = slice(None)
    n_positions = corrupted["blocks.0.attn.hook_pattern"].shape[-1]
    allowed = torch.ones(n_positions, n_positions)
    if model.cfg.attention_dir == "causal":
        allowed = allowed.tril()
    uniform = allowed / allowed.sum(-1, keepdim=True)  # [query, key]: the same weight on each visible key
    result: dict[str, list[Hook]] = {
        "zero_head_z": [(f"blocks.{last}.attn.hook_z", _set((every, every, 1), 0.0))],
        "patch_resid_pre": [(f"blocks.{last}.hook_resid_pre",
                             lambda activation, hook: corrupted[hook.name])],
        "patch_resid_pre_one_position": [(f"blocks.0.hook_resid_pre",
                                          _set((every, 1), lambda old: corrupted["blocks.0.hook_resid_pre"][:, 1]))],
        "uniform_pattern": [("blocks.0.attn.hook_pattern", _set((every, 2), lambda old: uniform))],
        "shift_attn_scores": [("blocks.0.attn.hook_attn_scores", _set((every, every, every, 0), lambda old: old - 3.0))],
        "add_to_resid_mid": [(f"blocks.{last}.hook_resid_mid", lambda activation, hook: activation + direction)],
        "zero_neurons": [(f"blocks.{last}.mlp.hook_post", _set((every, every, slice(0, None, 3)), 0.0))],
        "scale_head_v": [("blocks.0.attn.hook_v", _set((every, every, 2), lambda old: 0.5 * old))],
        "zero_head_q": [("blocks.0.attn.hook_q", _set((every, every, 0), 0.0))],
        "zero_mlp_out": [("blocks.0.hook_mlp_out", _set((every,), 0.0))],
        "zero_pos_embed": [("hook_pos_embed", _set((every,), 0.0))],
    }
    if model.cfg.normalization_type is not None:
        result["scale_ln2_normalized"] = [("blocks.0.ln2.hook_normalized", lambda activation, hook: 1.5 * activation)]
    return result


def head_logit_attribution(model: Any, inputs: Any) -> Tensor:
    """Each head's direct effect on the first logit minus the mean logit, via ``cache.stack_head_results``.

    ``[n_layers * n_heads, batch]`` at the last position (for the planarity model, the mean over
    vertices); pins ``run_with_cache``, ``ActivationCache.stack_head_results`` and ``W_U``.
    """
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    _, cache = model.run_with_cache(*args)
    heads = cache.stack_head_results(layer=-1)  # [component, batch, position, d_model]
    final = heads.mean(2) if "hook_pooled" in model.hook_dict else heads[:, :, -1]
    direction = model.W_U[:, 0] - model.W_U.mean(-1)
    return final @ direction


@torch.no_grad()
def compute_outputs(name: str, model: Any, stored: dict[str, Tensor]) -> dict[str, Tensor]:
    """All outputs of ``model`` (the shipped model ``name``) on the stored inputs."""
    model.eval()
    inputs = model_inputs(name, stored)
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    outputs = {"logits": model(*args)}
    for kind, hooks in edits(name, model, inputs).items():
        edited = _run(model, inputs, hooks)
        # The modular model's answer is read at "=": keep only that position (a smaller file).
        outputs[f"edit/{kind}"] = edited[:, -1] if name == "modular_addition" else edited
        model.reset_hooks()
    outputs["head_logit_attribution"] = head_logit_attribution(model, inputs)
    if name == "modular_addition":
        from utils.modular.model import final_position_logits

        outputs["final_position_logits"] = final_position_logits(model, inputs)
    if name == "planarity":
        model.set_use_attn_result(True)
        try:
            outputs["edit/zero_head_result"] = _run(
                model, inputs, [("blocks.1.attn.hook_result", _set((slice(None), slice(None), 3), 0.0))]
            )
        finally:
            model.set_use_attn_result(False)
    if name == "memory_dt":
        from utils.memory_dt.model import fold_layer_norm

        folded = fold_layer_norm(model).eval()
        outputs["folded/logits"] = folded(*args)
        outputs["folded/head_logit_attribution"] = head_logit_attribution(folded, inputs)
        outputs["folded/edit/zero_head_z"] = _run(folded, inputs, edits(name, folded, inputs)["zero_head_z"])
    return {key: value.detach().float().contiguous() for key, value in outputs.items()}


@torch.no_grad()
def untrained_logits(name: str, stored: dict[str, Tensor]) -> Tensor:
    """Logits of a freshly built (seeded) model of the shipped architecture: pins the initialisation,
    which the notebooks' untrained baselines depend on."""
    from utils.checkpoints import MODELS, load_config

    model = MODELS[name].build(load_config(name)["model"]).eval()
    inputs = model_inputs(name, stored)
    return model(*(inputs if isinstance(inputs, tuple) else (inputs,))).detach().float().contiguous()


def main(names: list[str]) -> None:
    from utils.checkpoints import load_model

    torch.set_num_threads(1)
    unknown = sorted(set(names) - set(MODEL_NAMES))
    if unknown:
        sys.exit(f"unknown model(s) {unknown}; name some of {list(MODEL_NAMES)}, or none to rewrite all")
    reference: dict[str, dict[str, dict[str, Tensor]]] = {}
    if names:
        reference = torch.load(REFERENCE_FILE, weights_only=True)
    for name in names or MODEL_NAMES:
        stored = make_inputs(name)
        model = load_model(name, device="cpu")
        reference[name] = {"inputs": stored, "outputs": compute_outputs(name, model, stored)}
        reference[name]["outputs"]["untrained/logits"] = untrained_logits(name, stored)
        print(name, {key: tuple(value.shape) for key, value in reference[name]["outputs"].items()})
    REFERENCE_FILE.parent.mkdir(parents=True, exist_ok=True)
    torch.save(reference, REFERENCE_FILE)
    for name, entry in reference.items():  # every edit must change the output, or it pins nothing
        clean = entry["outputs"]["logits"]
        for key, value in entry["outputs"].items():
            if key.startswith("edit/"):
                change = (value - (clean[:, -1] if name == "modular_addition" else clean)).abs().max()
                print(f"  {name} {key}: max change {change:.3g}")
                assert change > 1e-2, f"{name} {key} leaves the output unchanged"
    print(f"wrote {REFERENCE_FILE} ({REFERENCE_FILE.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main(sys.argv[1:])
