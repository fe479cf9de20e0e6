"""Self-checks for the Chapter 3 exercises: each compares the learner's function with the reference.

Call them from the notebook right after an exercise, e.g. ``checks.check_fourier_basis(make_fourier_basis)``.
"""

from __future__ import annotations

from typing import Callable

import einops
import torch

from utils.modular import algorithm, fourier, progress
from utils.modular.data import P, all_pairs
from utils.selfcheck import SelfCheckFailed, assert_float_close, assert_tensors_close, call_learner, passed


def check_fourier_basis(make_fourier_basis: Callable[[int], torch.Tensor]) -> None:
    """``make_fourier_basis(p)`` must return the orthonormal ``[p, p]`` basis: const, cos 1, sin 1, ..."""
    for p in (7, P):
        expected = fourier.fourier_basis(p)[0]
        actual = call_learner(make_fourier_basis, p)
        assert_tensors_close(
            f"make_fourier_basis({p})", actual, expected, atol=1e-5,
            hint="Rows are: the constant, then cos and sin of frequency 1, 2, ..., each scaled to norm 1.",
        )
    passed("make_fourier_basis")


def check_frequency_norms(
    frequency_norms: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], model
) -> None:
    """``frequency_norms(embedding, basis)`` gives the norm of each frequency's cos and sin rows."""
    embedding = model.W_E[:-1].detach().cpu()
    basis = fourier.fourier_basis(P)[0]
    expected = fourier.embedding_frequency_norms(embedding)
    actual = call_learner(frequency_norms, embedding, basis)
    assert_tensors_close(
        "frequency_norms(W_E, basis)", actual, expected, atol=1e-4,
        hint="Entry k-1 is the norm of the two rows (cos k, sin k) of basis @ embedding, taken together.",
    )
    passed("frequency_norms")


def _neuron_grid(model, neurons: int = 16) -> torch.Tensor:
    return fourier.neuron_activations_grid(model)[..., :neurons].detach().cpu()


def check_fourier_transform_2d(
    fourier_transform_2d: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], model
) -> None:
    """``fourier_transform_2d(values, basis)`` transforms the ``a`` and ``b`` axes of ``[a, b, neuron]``."""
    activations = _neuron_grid(model)
    basis = fourier.fourier_basis(P)[0]
    expected = fourier.fourier_2d(activations)
    actual = call_learner(fourier_transform_2d, activations, basis)
    assert_tensors_close(
        "fourier_transform_2d(neuron activations, basis)", actual, expected, atol=1e-3,
        hint="Transform both input axes: coefficient[i, j] = sum over a, b of basis[i, a] basis[j, b] values[a, b].",
    )
    passed("fourier_transform_2d")


def check_frequency_fractions(
    frequency_fractions: Callable[[torch.Tensor], torch.Tensor], model
) -> None:
    """``frequency_fractions(coefficients)`` gives each neuron's variance explained by each frequency."""
    activations = _neuron_grid(model)
    coefficients = fourier.fourier_2d(activations)
    expected = fourier.neuron_frequency_fractions(activations)
    actual = call_learner(frequency_fractions, coefficients.clone())
    assert_tensors_close(
        "frequency_fractions(coefficients)", actual, expected, atol=1e-4,
        hint="Leave out the constant-constant term (the mean); for frequency k keep the 3x3 block of rows and "
        "columns {const, cos k, sin k}; divide its squared sum by the total squared sum.",
    )
    passed("frequency_fractions")


def check_split_logits(
    split_logits: Callable[[torch.Tensor, list[int]], tuple[torch.Tensor, torch.Tensor]],
    model,
    frequencies: list[int],
) -> None:
    """``split_logits(logits, frequencies)`` returns ``(restricted, excluded)`` logits of shape ``[a, b, c]``."""
    with torch.no_grad():
        logits = model(all_pairs(P).to(model.cfg.device))[:, -1, :].cpu()
    grid = einops.rearrange(logits, "(a b) c -> a b c", a=P, b=P)
    expected_restricted, expected_excluded = fourier.split_logits(grid, frequencies)
    result = call_learner(split_logits, grid.clone(), list(frequencies))
    if not (isinstance(result, tuple) and len(result) == 2):
        raise SelfCheckFailed("split_logits should return a pair (restricted, excluded).")
    restricted, excluded = result
    assert_tensors_close(
        "restricted logits", restricted, expected_restricted, atol=2e-3, rtol=1e-3,
        hint="Keep each output's mean over (a, b) plus the projection onto the normalised "
        "cos(w(a+b)) and sin(w(a+b)) patterns of the key frequencies.",
    )
    assert_tensors_close(
        "excluded logits", excluded, expected_excluded, atol=2e-3, rtol=1e-3,
        hint="Excluded logits are the logits minus the projection onto the key-frequency patterns "
        "(the mean stays).",
    )
    passed("split_logits")


def check_effective_weights(
    effective_weights: Callable[[object], tuple[torch.Tensor, torch.Tensor]], model
) -> None:
    """``effective_weights(model)`` returns ``(W_neur [head, input, neuron], W_logit [neuron, output])``."""
    reference = algorithm.effective_weights(model)
    result = call_learner(effective_weights, model)
    if not (isinstance(result, tuple) and len(result) == 2):
        raise SelfCheckFailed("effective_weights should return a pair (W_neur, W_logit).")
    W_neur, W_logit = result
    assert_tensors_close(
        "W_neur", W_neur, reference.neuron, atol=1e-3, rtol=1e-3,
        hint="W_neur[h] = W_E[:-1] @ W_V[0, h] @ W_O[0, h] @ W_in[0], one [input, neuron] matrix per head "
        "(the numbers only: drop the '=' row).",
    )
    assert_tensors_close(
        "W_logit", W_logit, reference.logit, atol=1e-3, rtol=1e-3,
        hint="W_logit = W_out[0] @ W_U: what one unit of each neuron adds to each answer's logit.",
    )
    passed("effective_weights")


def check_term_shares(
    term_shares: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]], model
) -> None:
    """``term_shares(activations, neuron_frequency, basis)`` gives each neuron's linear and product shares."""
    activations = _neuron_grid(model, neurons=64)
    frequency = fourier.neuron_frequency_fractions(activations).argmax(dim=1) + 1
    expected = algorithm.term_shares(activations, frequency)
    result = call_learner(term_shares, activations.clone(), frequency.clone(), fourier.fourier_basis(P)[0])
    if not (isinstance(result, tuple) and len(result) == 2):
        raise SelfCheckFailed("term_shares should return a pair (linear, product), one share per neuron each.")
    for name, actual in zip(("linear", "product"), result):
        assert_tensors_close(
            f"{name} shares", actual, expected[name], atol=2e-3, rtol=1e-2,
            hint="Per neuron: squared 2D Fourier coefficients of its frequency w in the cells (const, cos w), "
            "(const, sin w), (cos w, const), (sin w, const) for linear, the four cos/sin w x cos/sin w cells for "
            "product, each divided by the neuron's variance (all squared coefficients except const x const).",
        )
    passed("term_shares")


def check_remove_frequency_hook(remove_frequency_hook: Callable[..., torch.Tensor], model, frequency: int) -> None:
    """``remove_frequency_hook(activation, hook, frequency, basis)`` removes one frequency's terms at ``=``
    (checked with ``frequency``, which should be a key frequency: removing any other changes little)."""
    frequency = fourier.check_frequencies([frequency])[0]
    tokens = all_pairs(P).to(model.cfg.device)
    basis = fourier.fourier_basis(P)[0].to(model.cfg.device)
    with torch.no_grad():
        for frequency in (frequency,):
            expected = model.run_with_hooks(
                tokens, fwd_hooks=[("blocks.0.mlp.hook_post", algorithm.frequency_removal_hook([frequency]))])[:, -1]
            seen = {}

            def learner_hook(activation, hook, frequency=frequency):
                result = call_learner(remove_frequency_hook, activation.clone(), hook, frequency, basis)
                if not isinstance(result, torch.Tensor):
                    raise SelfCheckFailed(f"remove_frequency_hook should return the edited activation tensor, got "
                                          f"{type(result).__name__}; end with `return activation`.")
                seen["shape"] = tuple(result.shape)
                return result

            actual = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.mlp.hook_post", learner_hook)])[:, -1]
            if seen.get("shape") != (P * P, 3, model.cfg.d_mlp):
                raise SelfCheckFailed(f"remove_frequency_hook returned shape {seen.get('shape')}, expected the activation's "
                                      f"own shape {(P * P, 3, model.cfg.d_mlp)}.")
            assert_tensors_close(
                f"logits with frequency {frequency} removed from the neurons", actual.cpu(), expected.cpu(),
                atol=5e-2, rtol=1e-2,
                hint="Zero the 2D coefficients in rows and columns {0, 2w-1, 2w} except [0, 0] (the mean stays), "
                "transform back with the transposed basis, and write the result into position -1 only.",
            )
    passed("remove_frequency_hook")


def check_embedding_key_share(
    embedding_key_share: Callable[[torch.Tensor, list[int], torch.Tensor], float], model, frequencies: list[int]
) -> None:
    """``embedding_key_share(embedding, frequencies, basis)``: share of ``W_E[:-1]``'s squared norm on ``frequencies``."""
    basis = fourier.fourier_basis(P)[0]
    cases = [("the model's embedding", model.W_E[:-1].detach().cpu()),
             ("a random embedding", torch.randn(P, model.cfg.d_model, generator=torch.Generator().manual_seed(0)) + 1.0)]
    for what, embedding in cases:
        expected = progress.embedding_key_share(embedding, frequencies)
        actual = call_learner(embedding_key_share, embedding.clone(), list(frequencies), basis)
        assert_float_close(
            f"embedding_key_share on {what}", actual, expected, atol=2e-3,
            hint="Squared norm of the rows cos k, sin k of basis @ embedding, summed over the given frequencies, "
            "divided by the squared norm of the whole embedding (the constant row included).",
        )
    passed("embedding_key_share")


def check_single_frequency_share(
    single_frequency_share: Callable[[object, float], float], model, snapshot_model=None
) -> None:
    """``single_frequency_share(model, threshold)``: share of neurons explained to ``>= threshold`` by one frequency.

    Checked on ``model`` at threshold 0.85, and on ``snapshot_model`` (e.g. an early snapshot) at 0.5 if given.
    """
    for which, checked, threshold in (("the model", model, 0.85), ("the snapshot", snapshot_model, 0.5)):
        if checked is None:
            continue
        grid = fourier.neuron_activations_grid(checked).cpu()
        expected = progress.single_frequency_share(grid, threshold)
        actual = call_learner(single_frequency_share, checked, threshold)
        assert_float_close(
            f"single_frequency_share({which}, {threshold})", actual, expected, atol=1e-3,
            hint="Post-ReLU activations at '=' for all pairs as an a x b grid, each neuron's largest share of "
            "variance on one frequency (fourier.neuron_frequency_fractions), then the share of neurons at or "
            "above the threshold.",
        )
    passed("single_frequency_share")


def check_progress_losses(
    progress_losses: Callable[[torch.Tensor, list[int], torch.Tensor], tuple[float, float]],
    snapshot_model, frequencies: list[int], train_indices: torch.Tensor,
) -> None:
    """``progress_losses(logits, frequencies, train_indices)`` returns ``(restricted loss, excluded loss)``.

    Checked on ``snapshot_model`` (pass a snapshot from before clean-up, whose losses are far from zero).
    """
    from utils.modular.model import final_position_logits

    tokens = all_pairs(P).to(snapshot_model.cfg.device)
    labels = (tokens[:, 0] + tokens[:, 1]) % P
    with torch.no_grad():
        logits = final_position_logits(snapshot_model, tokens).cpu()
    restricted, excluded = fourier.split_logits(logits.reshape(P, P, P), list(frequencies))
    expected = (float(fourier.cross_entropy(restricted.reshape(P * P, P), labels.cpu())),
                float(fourier.cross_entropy(excluded.reshape(P * P, P)[train_indices], labels.cpu()[train_indices])))
    result = call_learner(progress_losses, logits.clone(), list(frequencies), train_indices.clone())
    if not (isinstance(result, tuple) and len(result) == 2):
        raise SelfCheckFailed("progress_losses should return a pair (restricted loss, excluded loss) of floats.")
    for name, actual, value, hint in (
        ("restricted loss", result[0], expected[0], "Keep each answer's mean plus the key-frequency part "
         "(split_logits' first output) and take the loss over all pairs."),
        ("excluded loss", result[1], expected[1], "Remove the key-frequency part (split_logits' second output) and "
         "take the loss over the training pairs only."),
    ):
        assert_float_close(f"progress_losses' {name}", actual, value, atol=1e-3 * max(1.0, abs(value)), hint=hint)
    passed("progress_losses")
