"""Causal interventions every chapter uses: ablation, activation patching, path patching, faithfulness.

Everything here works on any TransformerLens ``HookedRootModule`` whose activations start with
``[batch, position, ...]`` (the three models of the course). ``inputs`` is what the model takes:
one tensor (the planarity and modular models), or a tuple of its positional arguments (the
decision transformer takes ``(states, actions, returns_to_go, timesteps)``). A *component* is a named piece of a
model's computation that writes into (or reads from) one hook point:

===================  =====================================  ==================================
name                 what it is                             hook point, index
===================  =====================================  ==================================
``"1.2"``            head 2 of layer 1 (its output z)       ``blocks.1.attn.hook_z[:, :, 2]``
``"MLP 0"``          the whole output of layer 0's MLP      ``blocks.0.hook_mlp_out``
``"N1.320"``         neuron 320 of layer 1's MLP            ``blocks.1.mlp.hook_post[:, :, 320]``
``"embed"``          the token (or adjacency) embedding     ``hook_embed``
===================  =====================================  ==================================

Ablating a component replaces its activation by a *reference* value, and the choice matters
(Miller et al. 2024 show circuit scores moving with it), so every function takes it explicitly:

- ``"zero"``: zeros. Simple, but zero may be a value the model never sees.
- ``"mean"``: the mean over a reference set of inputs, per position (``per_position=True``) or
  pooled over positions too (right when positions are exchangeable, as the planarity model's
  vertices are after training with random renaming).
- ``"resample"``: each input gets the activation of a randomly drawn reference input (the same
  draw for every ablated component, so they stay consistent with each other).

Patching sets a component's activation to its value on *another* input (clean into corrupted is
"denoising", corrupted into clean is "noising"; Heimersheim & Nanda 2024).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal, Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import ActivationCache, HookedRootModule

AblationKind = Literal["zero", "mean", "resample"]
ABLATION_KINDS: tuple[str, ...] = ("zero", "mean", "resample")
Hook = tuple[str, Callable[..., Tensor]]

_HEAD = re.compile(r"^(\d+)\.(\d+)$")
_MLP = re.compile(r"^MLP (\d+)$")
_NEURON = re.compile(r"^N(\d+)\.(\d+)$")


@dataclass(frozen=True)
class Component:
    """One named component: the hook point it lives at and, optionally, one unit along dimension 2.

    ``unit`` is a head for ``hook_z``/``hook_q``/``hook_k``/``hook_v`` (``[batch, position, head,
    d_head]``) and a neuron for ``mlp.hook_post`` (``[batch, position, d_mlp]``); ``None`` means
    the whole activation.
    """

    name: str
    hook_name: str
    unit: int | None = None

    def select(self, activation: Tensor) -> Tensor:
        """This component's slice of an activation of its hook point."""
        return activation if self.unit is None else activation[:, :, self.unit]


def component(model: HookedRootModule, name: str) -> Component:
    """The :class:`Component` called ``name`` (``"1.2"``, ``"MLP 0"``, ``"N1.320"``, ``"embed"``) in ``model``."""
    if isinstance(name, Component):
        return name
    if not isinstance(name, str):
        raise TypeError(f"a component name is a string such as '1.2', 'MLP 0' or 'N1.320', got {type(name).__name__}")
    cfg = model.cfg
    if name == "embed":
        return Component(name, "hook_embed")
    if match := _HEAD.match(name):
        layer, head = int(match[1]), int(match[2])
        _check_range(name, "layer", layer, cfg.n_layers)
        _check_range(name, "head", head, cfg.n_heads)
        return Component(name, f"blocks.{layer}.attn.hook_z", head)
    if match := _MLP.match(name):
        layer = int(match[1])
        _check_range(name, "layer", layer, cfg.n_layers)
        return Component(name, f"blocks.{layer}.hook_mlp_out")
    if match := _NEURON.match(name):
        layer, neuron = int(match[1]), int(match[2])
        _check_range(name, "layer", layer, cfg.n_layers)
        _check_range(name, "neuron", neuron, cfg.d_mlp)
        return Component(name, f"blocks.{layer}.mlp.hook_post", neuron)
    raise ValueError(
        f"unknown component {name!r}: write heads as 'layer.head' ('1.2'), MLPs as 'MLP layer' ('MLP 0'), "
        "neurons as 'Nlayer.neuron' ('N1.320'), or 'embed'"
    )


def _check_range(name: str, what: str, value: int, size: int) -> None:
    if not 0 <= value < size:
        raise ValueError(f"component {name!r}: {what} {value} does not exist; this model has {what}s 0 .. {size - 1}")


def components(model: HookedRootModule, names: Iterable[str | Component]) -> list[Component]:
    """:func:`component` for each name, refusing duplicates."""
    parsed = [component(model, name) for name in names]
    seen = [item.name for item in parsed]
    duplicates = sorted({name for name in seen if seen.count(name) > 1})
    if duplicates:
        raise ValueError(f"components listed twice: {duplicates}; list each once")
    return parsed


def head_names(model: HookedRootModule) -> list[str]:
    """Every attention head of ``model``, ``["0.0", "0.1", ...]``."""
    return [f"{layer}.{head}" for layer in range(model.cfg.n_layers) for head in range(model.cfg.n_heads)]


def mlp_names(model: HookedRootModule) -> list[str]:
    """Every MLP of ``model``, ``["MLP 0", "MLP 1", ...]``."""
    return [f"MLP {layer}" for layer in range(model.cfg.n_layers)]




def _as_args(inputs: Any) -> tuple:
    """The model's positional arguments: a tuple stays as it is, anything else is the one argument."""
    return inputs if isinstance(inputs, tuple) else (inputs,)


def batch_size_of(inputs: Any) -> int:
    """How many inputs a batch holds (the length of its first argument)."""
    return len(_as_args(inputs)[0])


def run_with_hooks(model: HookedRootModule, inputs: Any, hooks: list[Hook]) -> Tensor:
    """``model.run_with_hooks`` for one tensor or a tuple of positional inputs."""
    return model.run_with_hooks(*_as_args(inputs), fwd_hooks=hooks)

# --------------------------------------------------------------------------------------------
# Reference values and ablation


@torch.no_grad()
def reference_cache(model: HookedRootModule, inputs: Any, names: Iterable[str | Component]) -> ActivationCache:
    """The activations the components ``names`` need, on the reference inputs (one forward pass)."""
    hook_names = {item.hook_name for item in components(model, names)}
    _, cache = model.run_with_cache(*_as_args(inputs), names_filter=lambda hook_name: hook_name in hook_names)
    return cache


def ablation_values(
    reference: Tensor,
    batch_size: int,
    kind: AblationKind = "mean",
    per_position: bool = True,
    generator: torch.Generator | None = None,
    resample_indices: Tensor | None = None,
) -> Tensor:
    """What an ablated activation is replaced by, for a batch of ``batch_size`` inputs.

    Args:
        reference: the activation on the reference inputs, ``[reference_batch, position, ...]``.
        kind: ``"zero"``, ``"mean"`` or ``"resample"`` (see the module docstring).
        per_position: for ``"mean"``, average each position separately (``True``) or pool all
            positions (``False``).
        generator: for ``"resample"``, the random generator that draws reference inputs.
        resample_indices: for ``"resample"``, which reference input each input gets (overrides
            ``generator``); pass the same indices to every component to keep them consistent.

    Returns:
        ``[batch_size, position, ...]``.
    """
    if kind not in ABLATION_KINDS:
        raise ValueError(f"ablation kind must be one of {ABLATION_KINDS}, got {kind!r}")
    shape = (batch_size, *reference.shape[1:])
    if kind == "zero":
        return torch.zeros(shape, dtype=reference.dtype, device=reference.device)
    if kind == "mean":
        mean = reference.mean(dim=0) if per_position else reference.mean(dim=(0, 1))[None].expand(reference.shape[1:])
        return mean.expand(shape)
    if resample_indices is None:
        resample_indices = torch.randint(len(reference), (batch_size,), generator=generator)
    if len(resample_indices) != batch_size:
        raise ValueError(f"resample_indices has {len(resample_indices)} entries for a batch of {batch_size}; give one per input")
    return reference[resample_indices.to(reference.device)]


def _replace_hook(selected: Sequence[Component], values: Sequence[Tensor]) -> Callable[..., Tensor]:
    """A hook that writes ``values`` into the slices of its activation that ``selected`` name."""

    def hook(activation: Tensor, hook: Any) -> Tensor:
        activation = activation.clone()
        for item, value in zip(selected, values):
            if item.unit is None:
                activation[:] = value
            else:
                activation[:, :, item.unit] = value
        return activation

    return hook


def _group_by_hook(pairs: Iterable[tuple[Component, Tensor]]) -> list[Hook]:
    grouped: dict[str, tuple[list[Component], list[Tensor]]] = {}
    for item, value in pairs:
        grouped.setdefault(item.hook_name, ([], []))
        grouped[item.hook_name][0].append(item)
        grouped[item.hook_name][1].append(value)
    return [(hook_name, _replace_hook(selected, values)) for hook_name, (selected, values) in grouped.items()]


def ablation_hooks(
    model: HookedRootModule,
    ablated: Iterable[str | Component],
    reference: ActivationCache,
    batch_size: int,
    kind: AblationKind = "mean",
    per_position: bool = True,
    seed: int = 0,
) -> list[Hook]:
    """Forward hooks that ablate the components ``ablated`` for a batch of ``batch_size`` inputs.

    ``reference`` is a cache of the reference inputs (:func:`reference_cache`). For
    ``"resample"``, one draw of reference inputs (from ``seed``) serves every component.
    """
    ablated = components(model, ablated)
    hook_names = list(reference.keys())
    if ablated and not hook_names:
        raise ValueError("the reference cache is empty: build it with reference_cache(model, inputs, names)")
    indices = None
    if kind == "resample" and ablated:
        reference_batch = len(reference[hook_names[0]])
        indices = torch.randint(reference_batch, (batch_size,), generator=torch.Generator().manual_seed(seed))
    pairs = []
    for item in ablated:
        if item.hook_name not in reference.keys():
            raise ValueError(f"the reference cache lacks {item.hook_name!r} (for {item.name}); build it with the same component names")
        values = ablation_values(item.select(reference[item.hook_name]), batch_size, kind, per_position, resample_indices=indices)
        pairs.append((item, values))
    return _group_by_hook(pairs)


@torch.no_grad()
def run_with_ablation(
    model: HookedRootModule,
    inputs: Any,
    ablated: Iterable[str | Component],
    reference: ActivationCache,
    kind: AblationKind = "mean",
    per_position: bool = True,
    seed: int = 0,
) -> Tensor:
    """The model's output on ``inputs`` with the components ``ablated`` replaced (see :func:`ablation_hooks`)."""
    hooks = ablation_hooks(model, ablated, reference, batch_size_of(inputs), kind, per_position, seed)
    return run_with_hooks(model, inputs, hooks)


# --------------------------------------------------------------------------------------------
# Activation patching and path patching


def patching_hooks(model: HookedRootModule, patched: Iterable[str | Component], source: ActivationCache) -> list[Hook]:
    """Forward hooks that set each component in ``patched`` to its value in ``source`` (another run)."""
    pairs = []
    for item in components(model, patched):
        if item.hook_name not in source.keys():
            raise ValueError(f"the source cache lacks {item.hook_name!r} (for {item.name}); cache that hook point")
        pairs.append((item, item.select(source[item.hook_name])))
    return _group_by_hook(pairs)


@torch.no_grad()
def run_with_patch(model: HookedRootModule, inputs: Any, patched: Iterable[str | Component], source: ActivationCache) -> Tensor:
    """The model's output on ``inputs`` with the components ``patched`` taken from the ``source`` run.

    Everything downstream of a patched component is recomputed: this measures its total effect.
    """
    return run_with_hooks(model, inputs, patching_hooks(model, patched, source))


@torch.no_grad()
def path_patch(
    model: HookedRootModule,
    inputs: Any,
    source: ActivationCache,
    base: ActivationCache,
    senders: Iterable[str | Component],
    receivers: Iterable[Component],
    frozen: Iterable[str | Component],
) -> Tensor:
    """Patch only the paths from ``senders`` to ``receivers`` (Wang et al. 2022's path patching).

    1. Run ``inputs`` (whose cache is ``base``) with the senders set to their ``source`` values and
       every ``frozen`` component held at its ``base`` value, so the senders' change reaches the
       receivers directly and through nothing else that is frozen; record the receivers.
    2. Run ``inputs`` again with only the receivers set to the recorded values; everything after
       them is recomputed.

    ``receivers`` are :class:`Component` s at the point where a path ends, for example head 1.2's
    query: ``Component("1.2 q", "blocks.1.attn.hook_q", 2)``. Components in ``frozen`` that are also
    senders are not frozen.
    """
    senders = components(model, senders)
    sender_names = {item.name for item in senders}
    frozen = [item for item in components(model, frozen) if item.name not in sender_names]
    receivers = list(receivers)
    hooks = patching_hooks(model, senders, source) + patching_hooks(model, frozen, base)
    recorded: dict[str, Tensor] = {}

    def recorder(activation: Tensor, hook: Any) -> None:
        recorded[hook.name] = activation.detach().clone()

    receiver_hooks = sorted({item.hook_name for item in receivers})
    run_with_hooks(model, inputs, hooks + [(name, recorder) for name in receiver_hooks])
    pairs = [(item, item.select(recorded[item.hook_name])) for item in receivers]
    return run_with_hooks(model, inputs, _group_by_hook(pairs))


# --------------------------------------------------------------------------------------------
# Circuits: faithfulness, completeness, minimality


Metric = Callable[[Tensor], float]


@torch.no_grad()
def circuit_performance(
    model: HookedRootModule,
    inputs: Any,
    metric: Metric,
    circuit: Iterable[str],
    candidates: Iterable[str],
    reference: ActivationCache,
    kind: AblationKind = "mean",
    per_position: bool = True,
    seed: int = 0,
) -> float:
    """``metric`` of the model's output when every candidate component outside ``circuit`` is ablated.

    ``candidates`` are the components that could be in a circuit (for example every head); those
    not in ``circuit`` are ablated, the rest of the model runs as usual.
    """
    circuit, candidates = list(circuit), list(candidates)
    unknown = sorted(set(circuit) - set(candidates))
    if unknown:
        raise ValueError(f"circuit components {unknown} are not among the candidates; add them to the candidates")
    ablated = [name for name in candidates if name not in set(circuit)]
    return metric(run_with_ablation(model, inputs, ablated, reference, kind, per_position, seed))


@torch.no_grad()
def faithfulness_curve(
    model: HookedRootModule,
    inputs: Any,
    metric: Metric,
    order: Sequence[str],
    reference: ActivationCache,
    kind: AblationKind = "mean",
    per_position: bool = True,
    seed: int = 0,
) -> list[float]:
    """``metric`` for the circuits made of the first 0, 1, ..., ``len(order)`` components of ``order``.

    Every component of ``order`` not yet added is ablated; entry ``k`` of the result is the
    circuit of the first ``k`` components.
    """
    return [
        circuit_performance(model, inputs, metric, order[:size], order, reference, kind, per_position, seed)
        for size in range(len(order) + 1)
    ]


def minimality(
    model: HookedRootModule,
    inputs: Any,
    metric: Metric,
    circuit: Sequence[str],
    candidates: Sequence[str],
    reference: ActivationCache,
    kind: AblationKind = "mean",
    per_position: bool = True,
    seed: int = 0,
) -> dict[str, float]:
    """For each component of ``circuit``: ``metric(circuit) - metric(circuit without it)``.

    A component whose removal costs nothing is not needed: the circuit is not minimal.
    """
    whole = circuit_performance(model, inputs, metric, circuit, candidates, reference, kind, per_position, seed)
    return {
        name: whole - circuit_performance(
            model, inputs, metric, [other for other in circuit if other != name], candidates, reference, kind, per_position, seed
        )
        for name in circuit
    }


def completeness_gap(
    model: HookedRootModule,
    inputs: Any,
    metric: Metric,
    circuit: Sequence[str],
    candidates: Sequence[str],
    knocked_out: Sequence[str],
    reference: ActivationCache,
    kind: AblationKind = "mean",
    per_position: bool = True,
    seed: int = 0,
) -> tuple[float, float]:
    """``(metric(circuit minus K), metric(model minus K))`` for a subset ``K`` of the circuit.

    A complete circuit behaves like the whole model when the same parts are knocked out of both:
    the two numbers are close for every ``K``. A large gap means the model has other components
    that do the knocked-out parts' job (backups the circuit misses).
    """
    missing = sorted(set(knocked_out) - set(circuit))
    if missing:
        raise ValueError(f"knocked-out components {missing} are not in the circuit; knock out a subset of it")
    in_circuit = circuit_performance(
        model, inputs, metric, [name for name in circuit if name not in knocked_out], candidates, reference, kind, per_position, seed
    )
    in_model = circuit_performance(
        model, inputs, metric, [name for name in candidates if name not in knocked_out], candidates, reference, kind, per_position, seed
    )
    return in_circuit, in_model


def logit_difference(logits: Float[Tensor, "batch classes"], labels: Tensor) -> Tensor:
    """Per input: (logit of the right class) − (largest other logit). Positive means the answer is right."""
    right_logit = logits.gather(-1, labels[:, None].long())[:, 0]
    others = logits.scatter(-1, labels[:, None].long(), float("-inf"))
    return right_logit - others.max(dim=-1).values
