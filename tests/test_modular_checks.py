"""Chapter 3 self-checks: pass on the reference, fail with a useful message on wrong answers."""

from __future__ import annotations

import einops
import pytest
import torch

from utils import load_model
from utils.modular import algorithm, checks, fourier, progress
from utils.modular.data import all_pairs
from utils.modular.model import DEFAULT_MODEL_CONFIG, build_model
from utils.selfcheck import SelfCheckFailed


@pytest.fixture(scope="module")
def model():
    return load_model("modular_addition", device="cpu")


def reference_basis(p):
    return fourier.fourier_basis(p)[0]


def test_fourier_basis_check():
    checks.check_fourier_basis(reference_basis)
    with pytest.raises(SelfCheckFailed, match="NotImplementedError"):
        checks.check_fourier_basis(lambda p: (_ for _ in ()).throw(NotImplementedError()))
    unnormalised = lambda p: reference_basis(p) * 2  # noqa: E731
    with pytest.raises(SelfCheckFailed, match="differs .*norm 1"):
        checks.check_fourier_basis(unnormalised)
    sin_before_cos = lambda p: reference_basis(p)[[0] + [i + (1 if i % 2 else -1) for i in range(1, p)]]  # noqa: E731
    with pytest.raises(SelfCheckFailed, match="differs"):
        checks.check_fourier_basis(sin_before_cos)
    with pytest.raises(SelfCheckFailed, match="shape"):
        checks.check_fourier_basis(lambda p: reference_basis(p)[:-1])
    with pytest.raises(SelfCheckFailed, match="torch.Tensor"):
        checks.check_fourier_basis(lambda p: reference_basis(p).numpy())


def test_frequency_norms_check(model):
    def reference(embedding, basis):
        return fourier.embedding_frequency_norms(embedding)

    checks.check_frequency_norms(reference, model)
    with pytest.raises(SelfCheckFailed, match="differs"):
        checks.check_frequency_norms(lambda embedding, basis: reference(embedding, basis) ** 2, model)


def test_fourier_transform_2d_check(model):
    checks.check_fourier_transform_2d(lambda values, basis: fourier.fourier_2d(values), model)
    one_axis = lambda values, basis: torch.einsum("ia,ab...->ib...", basis, values)  # noqa: E731
    with pytest.raises(SelfCheckFailed, match="differs"):
        checks.check_fourier_transform_2d(one_axis, model)


def test_frequency_fractions_check(model):
    p = fourier.P

    def reference(coefficients):
        grid = torch.einsum("ia,jb,ij...->ab...", *(2 * [fourier.fourier_basis(p)[0]]), coefficients)
        return fourier.neuron_frequency_fractions(grid)

    checks.check_frequency_fractions(reference, model)

    def keeps_the_mean(coefficients):
        total = coefficients.pow(2).sum(dim=(0, 1))
        blocks = [coefficients[[0, 2 * k - 1, 2 * k]][:, [0, 2 * k - 1, 2 * k]] for k in range(1, p // 2 + 1)]
        return torch.stack([block.pow(2).sum(dim=(0, 1)) / total for block in blocks], dim=1)

    with pytest.raises(SelfCheckFailed, match="differs"):
        checks.check_frequency_fractions(keeps_the_mean, model)


def test_split_logits_check(model):
    frequencies = fourier.key_frequencies(model)
    checks.check_split_logits(fourier.split_logits, model, frequencies)
    with pytest.raises(SelfCheckFailed, match="pair"):
        checks.check_split_logits(lambda logits, freqs: logits, model, frequencies)

    def forgets_the_mean(logits, freqs):
        restricted, excluded = fourier.split_logits(logits, freqs)
        return restricted - logits.mean(dim=(0, 1), keepdim=True), excluded

    with pytest.raises(SelfCheckFailed, match="restricted logits differs"):
        checks.check_split_logits(forgets_the_mean, model, frequencies)


def _stub(*args, **kwargs):
    raise NotImplementedError()


def test_effective_weights_check(model):
    def reference(model):
        weights = algorithm.effective_weights(model)
        return weights.neuron, weights.logit

    checks.check_effective_weights(reference, model)
    with pytest.raises(SelfCheckFailed, match="NotImplementedError"):
        checks.check_effective_weights(_stub, model)
    with_equals_row = lambda model: (  # noqa: E731 - keeps the '=' token's row of W_E
        torch.einsum("xd,hde,hef,fn->hxn", model.W_E, model.W_V[0], model.W_O[0], model.W_in[0]), reference(model)[1])
    with pytest.raises(SelfCheckFailed, match="W_neur has shape .*drop the '=' row"):
        checks.check_effective_weights(with_equals_row, model)
    reads_w_in = lambda model: (reference(model)[0], model.W_in[0].T @ model.W_U)  # noqa: E731 - W_in for W_out
    with pytest.raises(SelfCheckFailed, match="W_logit differs"):
        checks.check_effective_weights(reads_w_in, model)
    with pytest.raises(SelfCheckFailed, match="pair"):
        checks.check_effective_weights(lambda model: reference(model)[0], model)


def test_term_shares_check(model):
    def reference(activations, frequency, basis):
        shares = algorithm.term_shares(activations, frequency)
        return shares["linear"], shares["product"]

    checks.check_term_shares(reference, model)
    with pytest.raises(SelfCheckFailed, match="NotImplementedError"):
        checks.check_term_shares(_stub, model)

    def keeps_the_mean(activations, frequency, basis):  # divides by the total including the mean
        linear, product = reference(activations, frequency, basis)
        coefficients = fourier.fourier_2d(activations)
        with_mean = coefficients.pow(2).sum(dim=(0, 1))
        without = with_mean - coefficients[0, 0].pow(2)
        return linear * without / with_mean, product * without / with_mean

    with pytest.raises(SelfCheckFailed, match="linear shares differs"):
        checks.check_term_shares(keeps_the_mean, model)
    swapped = lambda activations, frequency, basis: reference(activations, frequency, basis)[::-1]  # noqa: E731
    with pytest.raises(SelfCheckFailed, match="differs"):
        checks.check_term_shares(swapped, model)


def test_remove_frequency_hook_check(model):
    key = fourier.key_frequencies(model)

    def reference(activation, hook, frequency, basis):
        return algorithm.frequency_removal_hook([frequency])(activation, hook)

    checks.check_remove_frequency_hook(reference, model, key[0])
    with pytest.raises(SelfCheckFailed, match="NotImplementedError"):
        checks.check_remove_frequency_hook(_stub, model, key[0])

    def removes_the_mean_too(activation, hook, frequency, basis):
        edited = reference(activation, hook, frequency, basis)
        edited[:, -1] -= activation[:, -1].mean(dim=0)
        return edited

    with pytest.raises(SelfCheckFailed, match="differs"):
        checks.check_remove_frequency_hook(removes_the_mean_too, model, key[0])

    def removes_only_the_linear_terms(activation, hook, frequency, basis):
        grid = einops.rearrange(activation[:, -1], "(a b) n -> a b n", a=fourier.P)
        coefficients = fourier.fourier_2d(grid)
        for row in (2 * frequency - 1, 2 * frequency):
            coefficients[row, 0] = coefficients[0, row] = 0.0
        edited = torch.einsum("ia,jb,ij...->ab...", basis, basis, coefficients)
        activation = activation.clone()
        activation[:, -1] = einops.rearrange(edited, "a b n -> (a b) n")
        return activation

    with pytest.raises(SelfCheckFailed, match="differs"):
        checks.check_remove_frequency_hook(removes_only_the_linear_terms, model, key[0])
    with pytest.raises(SelfCheckFailed, match="return the edited activation"):
        checks.check_remove_frequency_hook(lambda activation, hook, frequency, basis: None, model, key[0])


def test_embedding_key_share_check(model):
    key = fourier.key_frequencies(model)

    def reference(embedding, frequencies, basis):
        return progress.embedding_key_share(embedding, frequencies)

    checks.check_embedding_key_share(reference, model, key)
    with pytest.raises(SelfCheckFailed, match="NotImplementedError"):
        checks.check_embedding_key_share(_stub, model, key)

    def leaves_out_the_constant(embedding, frequencies, basis):  # the total over the frequencies only
        in_basis = basis @ embedding
        rows = [row for k in frequencies for row in (2 * k - 1, 2 * k)]
        return (in_basis[rows].pow(2).sum() / in_basis[1:].pow(2).sum()).item()

    with pytest.raises(SelfCheckFailed, match="random embedding"):
        checks.check_embedding_key_share(leaves_out_the_constant, model, key)
    norms_not_squares = lambda embedding, frequencies, basis: (  # noqa: E731
        (basis @ embedding)[[r for k in frequencies for r in (2 * k - 1, 2 * k)]].norm() / (basis @ embedding).norm()).item()
    with pytest.raises(SelfCheckFailed, match="expected"):
        checks.check_embedding_key_share(norms_not_squares, model, key)


def test_single_frequency_share_check(model):
    untrained = build_model(DEFAULT_MODEL_CONFIG).eval()

    def reference(checked, threshold):
        return progress.single_frequency_share(fourier.neuron_activations_grid(checked), threshold)

    checks.check_single_frequency_share(reference, model, untrained)
    with pytest.raises(SelfCheckFailed, match="NotImplementedError"):
        checks.check_single_frequency_share(_stub, model)

    def mean_best_fraction(checked, threshold):  # the average best share, not the share of neurons over the threshold
        return fourier.neuron_frequency_fractions(fourier.neuron_activations_grid(checked)).max(dim=1).values.mean().item()

    with pytest.raises(SelfCheckFailed, match="single_frequency_share"):
        checks.check_single_frequency_share(mean_best_fraction, model)

    def pre_relu(checked, threshold):  # reads the neurons before the ReLU
        _, cache = checked.run_with_cache(all_pairs(fourier.P), names_filter="blocks.0.mlp.hook_pre")
        grid = einops.rearrange(cache["blocks.0.mlp.hook_pre"][:, -1], "(a b) n -> a b n", a=fourier.P)
        return progress.single_frequency_share(grid, threshold)

    with pytest.raises(SelfCheckFailed, match="single_frequency_share"):
        checks.check_single_frequency_share(pre_relu, model)


def test_progress_losses_check(model):
    from utils.checkpoints import load_snapshots
    from utils.modular.data import train_test_split

    snapshots = load_snapshots()
    early = progress.load_snapshot(build_model(DEFAULT_MODEL_CONFIG).eval(), snapshots[5000])
    key, (train, _) = fourier.key_frequencies(model), train_test_split()

    def reference(logits, frequencies, train_indices):
        restricted, excluded = fourier.split_logits(logits.reshape(fourier.P, fourier.P, -1), frequencies)
        labels = all_pairs(fourier.P)[:, :2].sum(dim=1) % fourier.P
        return (fourier.cross_entropy(restricted.reshape(-1, fourier.P), labels).item(),
                fourier.cross_entropy(excluded.reshape(-1, fourier.P)[train_indices], labels[train_indices]).item())

    checks.check_progress_losses(reference, early, key, train)
    with pytest.raises(SelfCheckFailed, match="NotImplementedError"):
        checks.check_progress_losses(_stub, early, key, train)

    def excluded_on_all_pairs(logits, frequencies, train_indices):
        return reference(logits, frequencies, torch.arange(fourier.P ** 2))

    with pytest.raises(SelfCheckFailed, match="excluded loss"):
        checks.check_progress_losses(excluded_on_all_pairs, early, key, train)
    with pytest.raises(SelfCheckFailed, match="pair"):
        checks.check_progress_losses(lambda logits, frequencies, train_indices: 1.0, early, key, train)
