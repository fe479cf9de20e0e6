"""Self-checks for the Chapter 2 exercises: each compares the learner's function with the reference.

Call them from the notebook right after an exercise, e.g. ``checks.check_ov_circuits(ov_circuits, folded)``,
where ``folded`` is the model after :func:`utils.memory_dt.model.fold_layer_norm`.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from jaxtyping import Float
from torch import Tensor

from utils.memory_dt.analysis import ov_svd
from utils.memory_dt.env import CHANNEL_NAMES, VIEW_SIZE
from utils.memory_dt.model import DecisionTransformer
from utils.selfcheck import SelfCheckFailed, assert_tensors_close, call_learner, passed


def reference_ov_circuits(
    W_V: Float[Tensor, "layer head d_model d_head"], W_O: Float[Tensor, "layer head d_head d_model"]
) -> Float[Tensor, "layer head d_model d_model"]:
    """Each head's OV matrix ``W_V @ W_O``: what a unit of residual read at the source writes at the destination."""
    return torch.einsum("lhmd,lhdn->lhmn", W_V, W_O)


def reference_directions_onto(
    singular_values: Float[Tensor, "layer head direction"], right_singular: Float[Tensor, "layer head direction d_model"],
    readout: Float[Tensor, "d_model column"], n_directions: int,
) -> Float[Tensor, "layer head direction column"]:
    """The first ``n_directions`` right singular vectors of each OV matrix, times their singular values, read by ``readout``."""
    written = right_singular[..., :n_directions, :] * singular_values[..., :n_directions, None]
    return written @ readout


def reference_embedding_images(
    left_singular: Float[Tensor, "layer head d_model direction"], W_state: Float[Tensor, "feature d_model"],
    channel: str, n_directions: int,
) -> Float[Tensor, "layer head direction x y"]:
    """How strongly each view cell's ``channel`` feature points along each head's left singular directions."""
    start = CHANNEL_NAMES.index(channel) * VIEW_SIZE * VIEW_SIZE
    embedding = W_state[start: start + VIEW_SIZE * VIEW_SIZE]  # [x * 7 + y, d_model]
    scores = torch.einsum("fm,lhmk->lhkf", embedding, left_singular[..., :n_directions])
    return scores.reshape(*scores.shape[:-1], VIEW_SIZE, VIEW_SIZE)


def reference_ov_cosine_similarity(W_OV: Float[Tensor, "layer head d_model d_model"]) -> Float[Tensor, "head_a head_b"]:
    """Cosine similarity between every pair of heads' flattened OV matrices, heads ordered layer-major."""
    flat = W_OV.flatten(0, 1).flatten(1)
    flat = flat / flat.norm(dim=1, keepdim=True)
    return flat @ flat.T


def _weights(model: DecisionTransformer) -> dict[str, Tensor]:
    return {"W_V": model.W_V.detach().cpu(), "W_O": model.W_O.detach().cpu(),
            "W_U": model.W_U.detach().cpu(), "W_in": model.W_in.detach().cpu(),
            "W_state": model.W_state.detach().cpu()}


def _svd(model: DecisionTransformer) -> tuple[Tensor, Tensor, Tensor]:
    return ov_svd(model.W_V.detach().cpu(), model.W_O.detach().cpu())


def _call_with_shapes(function: Callable[..., Any], hint: str, *args: Any) -> Any:
    """Call the learner; an axis mistake (RuntimeError or IndexError from a shape mismatch) becomes a one-line failure."""
    try:
        return call_learner(function, *args)
    except (RuntimeError, IndexError) as error:
        name = getattr(function, "__name__", "your function")
        raise SelfCheckFailed(f"{name} raised {type(error).__name__} ({str(error).splitlines()[0][:90]}): "
                              f"probably an axis mix-up. {hint}") from None


def check_ov_circuits(ov_circuits: Callable[[Tensor, Tensor], Tensor], model: DecisionTransformer) -> None:
    """``ov_circuits(W_V, W_O)`` must return ``[layer, head, d_model, d_model]`` OV matrices."""
    weights = _weights(model)
    expected = reference_ov_circuits(weights["W_V"], weights["W_O"])
    actual = call_learner(ov_circuits, weights["W_V"].clone(), weights["W_O"].clone())
    assert_tensors_close(
        "ov_circuits(W_V, W_O)", actual, expected, atol=1e-5,
        hint="For each layer and head, multiply W_V [d_model, d_head] by W_O [d_head, d_model] (in that order).",
    )
    passed("ov_circuits")


def check_directions_onto(
    directions_onto: Callable[[Tensor, Tensor, Tensor, int], Tensor], model: DecisionTransformer
) -> None:
    """``directions_onto(S, Vᵀ, readout, n)`` projects scaled right singular vectors onto readout columns."""
    weights = _weights(model)
    _, singular_values, right_singular = _svd(model)
    for readout_name, readout, n_directions in (("W_U", weights["W_U"], 4), ("W_in[2]", weights["W_in"][2], 2)):
        expected = reference_directions_onto(singular_values, right_singular, readout, n_directions)
        actual = _call_with_shapes(directions_onto, "The right singular vectors are the ROWS of Vᵀ [layer, head, direction, d_model].",
                                   singular_values.clone(), right_singular.clone(), readout.clone(), n_directions)
        assert_tensors_close(
            f"directions_onto(S, Vᵀ, {readout_name}, {n_directions})", actual, expected, atol=1e-4,
            hint="The right singular vectors are the ROWS of Vᵀ (axis -2 indexes directions); keep the first n, "
            "scale each by its singular value, then multiply by the readout.",
        )
    passed("directions_onto")


def check_embedding_images(
    embedding_images: Callable[[Tensor, Tensor, str, int], Tensor], model: DecisionTransformer
) -> None:
    """``embedding_images(U, W_state, channel, n)`` gives ``[layer, head, direction, x, y]`` scores."""
    weights = _weights(model)
    left_singular, _, _ = _svd(model)
    for channel in ("key", "ball"):
        expected = reference_embedding_images(left_singular, weights["W_state"], channel, 3)
        actual = _call_with_shapes(embedding_images, "Left singular vectors are the COLUMNS of U [layer, head, d_model, direction].",
                                   left_singular.clone(), weights["W_state"].clone(), channel, 3)
        assert_tensors_close(
            f"embedding_images(U, W_state, {channel!r}, 3)", actual, expected, atol=1e-4,
            hint="Left singular vectors are the COLUMNS of U (its last axis indexes directions); the channel's 49 "
            "features start at channel * 49 and are ordered x * 7 + y, so reshape the last axis to (7, 7) as (x, y).",
        )
    passed("embedding_images")


def check_ov_cosine_similarity(
    ov_cosine_similarity: Callable[[Tensor], Tensor], model: DecisionTransformer
) -> None:
    """``ov_cosine_similarity(W_OV)`` gives the ``[24, 24]`` cosine similarities of the flattened OV matrices."""
    weights = _weights(model)
    W_OV = reference_ov_circuits(weights["W_V"], weights["W_O"])
    expected = reference_ov_cosine_similarity(W_OV)
    actual = call_learner(ov_cosine_similarity, W_OV.clone())
    if isinstance(actual, Tensor) and actual.ndim == 4:
        raise SelfCheckFailed(
            "ov_cosine_similarity returned a 4D tensor; flatten (layer, head) into one axis of 24 heads "
            "and compare the whole flattened d_model x d_model matrices."
        )
    assert_tensors_close(
        "ov_cosine_similarity(W_OV)", actual, expected, atol=1e-4,
        hint="Flatten each head's OV matrix into one vector of 65,536 numbers, normalise each vector to norm 1, "
        "and take all the dot products (heads ordered L0H0, L0H1, ..., L2H7).",
    )
    passed("ov_cosine_similarity")


def reference_random_tail_counts(
    scores: Float[Tensor, "connection"], size: int, threshold: float, n_samples: int, seed: int = 0,
) -> Float[Tensor, "sample"]:
    """How many of ``size`` connections drawn at random (without replacement) have ``|score| > threshold``,
    for each of ``n_samples`` independent draws from a generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    strong = (scores.abs() > threshold).float()
    draws = torch.stack([torch.randperm(len(scores), generator=generator)[:size] for _ in range(n_samples)])
    return strong[draws].sum(dim=-1)


def check_random_tail_counts(
    random_tail_counts: Callable[[Tensor, int, float, int, int], Tensor], model: DecisionTransformer
) -> None:
    """``random_tail_counts(scores, size, threshold, n_samples, seed)``: a baseline distribution of tail counts.

    Random draws cannot be compared entry by entry, so the check tests what any correct sampler
    satisfies: shape, whole counts between 0 and ``size``, the same answer for the same seed, a
    different one for another seed, and a mean close to ``size`` times the tail's share of all
    connections, on the real head-direction -> layer-2 neuron scores.
    """
    _, singular_values, right_singular = _svd(model)
    scores = reference_directions_onto(singular_values, right_singular, model.W_in[2].detach().cpu(), 32).flatten()
    threshold = float(scores.abs().quantile(0.99))
    size, n_samples = 1536, 200
    counts = call_learner(random_tail_counts, scores.clone(), size, threshold, n_samples, 0)
    if not isinstance(counts, Tensor) or counts.shape != (n_samples,):
        raise SelfCheckFailed(
            f"random_tail_counts(scores, {size}, threshold, {n_samples}, 0) should return a tensor of shape "
            f"({n_samples},), one count per random sample, got "
            f"{tuple(counts.shape) if isinstance(counts, Tensor) else type(counts).__name__}"
        )
    counts = counts.double()
    if not torch.equal(counts, counts.round()) or counts.min() < 0 or counts.max() > size:
        raise SelfCheckFailed(f"each entry should count connections, a whole number in 0..{size}; got values from "
                              f"{counts.min().item():g} to {counts.max().item():g}")
    again = call_learner(random_tail_counts, scores.clone(), size, threshold, n_samples, 0).double()
    if not torch.equal(counts, again):
        raise SelfCheckFailed("the same seed gave different counts: draw with torch.Generator().manual_seed(seed)")
    other = call_learner(random_tail_counts, scores.clone(), size, threshold, n_samples, 1).double()
    if torch.equal(counts, other):
        raise SelfCheckFailed("seeds 0 and 1 gave the same counts: the samples should depend on the seed")
    if counts.std() == 0:
        raise SelfCheckFailed("every sample gave the same count: draw a fresh random sample each time")
    share = float((scores.abs() > threshold).double().mean())
    expected = size * share
    if abs(float(counts.mean()) - expected) > 0.15 * expected:
        raise SelfCheckFailed(
            f"the mean count is {float(counts.mean()):.1f}, but a random sample of {size} should hold about "
            f"{expected:.1f} connections with |score| > threshold: count both tails (use the absolute value) and "
            f"sample connections, not directions or heads"
        )
    # Sampling without replacement: the count's variance is hypergeometric. A sampler that takes contiguous
    # blocks (neighbouring connections share a head and direction, so their strengths are correlated) spreads far more.
    total = len(scores)
    variance = size * share * (1 - share) * (total - size) / (total - 1)
    if not 0.5 * variance < float(counts.var()) < 2 * variance:
        raise SelfCheckFailed(
            f"the counts vary with variance {float(counts.var()):.1f}, but independent random samples of {size} connections "
            f"should give about {variance:.1f}: draw each sample's connections at random (torch.randperm), not a contiguous block"
        )
    passed("random_tail_counts")
