"""metasp.fit, metasp.polish and metasp.reference.fit finish the same way: the head prior, the
diagnostics and the warnings of one post-processing step."""

import warnings

import numpy as np
import pytest

import metasp
from metasp import DiagnosticWarning, MetaSPResult


def _bare(result) -> MetaSPResult:
    """The fitted subspace and heads of ``result`` without its head prior."""
    return MetaSPResult(B=result.B.copy(), W=result.W.copy(), Theta=result.Theta.copy(),
                        singular_values=result.singular_values.copy(), n_iter=result.n_iter,
                        status=result.status)


@pytest.fixture(scope="module")
def data():
    return metasp.datasets.make_hps(T=60, m=12, d=10, s=2, sigma=0.3, random_state=4)


def test_a_polished_result_adapts_with_the_prior_of_its_subspace(data):
    X, y, B, _ = data
    start = B + 0.05 * np.random.default_rng(0).standard_normal(B.shape)
    polished = metasp.polish(X, y, start)
    assert polished.status == "converged"
    assert polished.head_mean is not None and polished.noise_variance > 0
    # The prior fitted for the same subspace by hand, as for any result.
    expected = _bare(polished).fit_prior(X, y)
    np.testing.assert_allclose(polished.head_mean, expected.head_mean, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(polished.head_cov, expected.head_cov, rtol=1e-12, atol=1e-14)
    assert polished.noise_variance == pytest.approx(expected.noise_variance, rel=1e-12)
    X_new, y_new = X[0, :4], y[0, :4]
    np.testing.assert_allclose(polished.adapt(X_new, y_new), expected.adapt(X_new, y_new),
                               rtol=1e-10)


def test_polish_and_fit_give_the_same_prior_for_the_same_subspace(data):
    X, y, _, _ = data
    fitted = metasp.fit(X, y, 2, heads="fixed", random_state=0)
    # Polishing the fitted subspace leaves it where it is: both finish on the same B.
    polished = metasp.polish(X, y, fitted.B)
    assert metasp.metrics.sin_angle(polished.B, fitted.B) < 1e-8
    np.testing.assert_allclose(polished.head_mean @ polished.B, fitted.head_mean @ fitted.B,
                               rtol=1e-6, atol=1e-9)
    assert polished.noise_variance == pytest.approx(fitted.noise_variance, rel=1e-6)


def test_polish_reports_diagnostics(data):
    X, y, B, _ = data
    # Two samples per task: fewer than the s (T + d - s) unknowns of the model.
    with pytest.warns(DiagnosticWarning, match="samples"):
        polished = metasp.polish(X[:, :2], y[:, :2], B, max_iter=5)
    assert "too_few_samples" in [finding.code for finding in polished.diagnostics]


def test_reference_fit_has_the_prior_of_the_compiled_fit(data):
    X, y, _, _ = data
    options = dict(heads="fixed", random_state=0)
    compiled = metasp.fit(X, y, 2, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reference = metasp.reference.fit(X, y, 2, random_state=0)
    assert metasp.metrics.sin_angle(compiled.B, reference.B) < 1e-9
    # Compare in the feature space: the signs of the rows of B are arbitrary.
    np.testing.assert_allclose(compiled.head_mean @ compiled.B, reference.head_mean @ reference.B,
                               rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(compiled.B.T @ compiled.head_cov @ compiled.B,
                               reference.B.T @ reference.head_cov @ reference.B,
                               rtol=1e-8, atol=1e-10)
    assert reference.noise_variance == pytest.approx(compiled.noise_variance, rel=1e-8)
    assert [d.code for d in reference.diagnostics] == [d.code for d in compiled.diagnostics]


def test_reference_fit_adapts_like_the_compiled_fit(data):
    X, y, _, _ = data
    compiled = metasp.fit(X, y, 2, heads="fixed", random_state=0)
    reference = metasp.reference.fit(X, y, 2, random_state=0)
    X_new, y_new = X[1, :3], y[1, :3]
    np.testing.assert_allclose(
        compiled.predict(X_new, compiled.adapt(X_new, y_new)),
        reference.predict(X_new, reference.adapt(X_new, y_new)), rtol=1e-7)
