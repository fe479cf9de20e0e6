"""Chapter 3 self-checks: pass on the reference, fail with a useful message on wrong answers."""

from __future__ import annotations

import pytest
import torch

from utils import load_model
from utils.modular import checks, fourier
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
