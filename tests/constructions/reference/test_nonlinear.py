"""The nonlinear baselines against independent implementations: scikit-learn's estimators, per-prompt
loops written the way Garg et al.'s src/models.py writes them, and the n x n Gaussian-process form of
the evidence for the Bayes selector."""

from __future__ import annotations

import itertools
import math
import sys

import pytest
import torch

from constructions.reference import nonlinear as nl
from constructions.reference import trees

F64 = torch.float64


def draw(B=3, N=6, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, d, generator=g, dtype=F64)
    y = torch.randn(B, N, generator=g, dtype=F64)
    q = torch.randn(B, d, generator=g, dtype=F64)
    return x, y, q


# ----------------------------------------------------------------------------------------------
# Averaging and k-NN


def test_averaging_is_the_mean_of_y_times_x_dotted_with_the_query_for_every_prefix():
    x, y, q = draw()
    got = nl.averaging(x, y, q, prefix=True)
    for b in range(x.shape[0]):
        assert got[b, 0] == 0
        for n in range(1, x.shape[1] + 1):
            want = (x[b, :n] * y[b, :n, None]).mean(0) @ q[b]
            assert torch.allclose(got[b, n], want, rtol=1e-12, atol=1e-12)  # float64 round-off


@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_knn_matches_sklearn_kneighbors_regressor_on_every_prefix(weights):
    neighbors = pytest.importorskip("sklearn.neighbors")
    x, y, q = draw(B=3, N=7, d=2, seed=1)
    got = nl.knn(x, y, q, k=3, weights=weights, prefix=True)
    assert torch.equal(got[:, 0], torch.zeros(3, dtype=F64))
    for b, n in itertools.product(range(3), range(1, 8)):
        model = neighbors.KNeighborsRegressor(n_neighbors=min(3, n), weights=weights)
        want = model.fit(x[b, :n].numpy(), y[b, :n].numpy()).predict(q[b, None].numpy())[0]
        assert got[b, n].item() == pytest.approx(want, rel=1e-12, abs=1e-12)  # float64 round-off
    assert torch.equal(nl.knn(x, y, q, k=3, weights=weights), got[:, -1])


def test_distance_knn_returns_the_label_of_an_example_equal_to_the_query():
    x, y, _ = draw(B=2, N=5, d=2, seed=2)
    got = nl.knn(x, y, x[:, 1], k=3, weights="distance")
    assert torch.equal(got, y[:, 1])


def test_knn_rejects_an_unknown_weighting():
    x, y, q = draw()
    with pytest.raises(ValueError, match="weights must be one of"):
        nl.knn(x, y, q, weights="gaussian")


# ----------------------------------------------------------------------------------------------
# Two-layer network by Adam


def loop_nn_gd(params: nl.TwoLayer, x, y, q, *, steps, lr):
    """One torch.nn network and one torch.optim.Adam per prompt and prefix, as Garg et al.'s GDModel."""
    B, N, d = x.shape
    width = params.W1.shape[-1]
    out = torch.zeros(B, N + 1, dtype=F64)
    for b, n in itertools.product(range(B), range(1, N + 1)):
        net = torch.nn.Sequential(torch.nn.Linear(d, width), torch.nn.ReLU(), torch.nn.Linear(width, 1)).to(F64)
        with torch.no_grad():
            net[0].weight.copy_(params.W1[b].T)  # every prefix starts from the prompt's one init
            net[0].bias.copy_(params.b1[b])
            net[2].weight.copy_(params.W2[b][None])
            net[2].bias.copy_(params.b2[b][None])
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.mse_loss(net(x[b, :n])[:, 0], y[b, :n]).backward()
            opt.step()
        out[b, n] = net(q[b, None])[0, 0].detach()
    return out


def test_nn_gd_equals_one_torch_adam_loop_per_prompt_and_prefix_from_the_same_init():
    x, y, q = draw(B=2, N=4, d=3, seed=3)
    width, steps, lr = 5, 25, 2e-2
    got = nl.nn_gd(x, y, q, width=width, steps=steps, lr=lr, generator=torch.Generator().manual_seed(7), prefix=True)
    params = nl.init_two_layer((2,), 3, width, torch.Generator().manual_seed(7))
    want = loop_nn_gd(params, x, y, q, steps=steps, lr=lr)
    # Same float64 updates in a different summation order: round-off only, well below 1e-9.
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-9)


def test_nn_gd_does_not_depend_on_the_chunk_size_and_fits_its_examples():
    x, y, q = draw(B=5, N=6, d=2, seed=4)
    one = nl.nn_gd(x, y, q, width=16, steps=40, prefix=True, chunk=2)
    assert torch.allclose(one, nl.nn_gd(x, y, q, width=16, steps=40, prefix=True, chunk=64), rtol=0, atol=1e-12)
    assert torch.equal(one[:, 0], torch.zeros(5, dtype=F64))
    # Queried at its own examples, a long fit of a wide net interpolates them: error far below var(y) = 1.
    fit = nl.nn_gd(x[:1], y[:1], x[0, 2:3], width=64, steps=2000, lr=1e-2)
    assert abs(float(fit[0]) - float(y[0, 2])) < 0.05


# ----------------------------------------------------------------------------------------------
# Logistic regression


def labelled(B=3, N=12, d=3, seed=5, flip=0.2):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, d, generator=g, dtype=F64)
    w = torch.randn(B, d, generator=g, dtype=F64)
    y = torch.sign((x * w[:, None]).sum(-1))
    y = torch.where(torch.rand(B, N, generator=g, dtype=F64) < flip, -y, y)
    return x, y, torch.randn(B, d, generator=g, dtype=F64)


@pytest.mark.parametrize("lam", [0.1, 1.0])
def test_logistic_regression_matches_sklearn_with_c_equal_to_one_over_lam_on_every_prefix(lam):
    linear_model = pytest.importorskip("sklearn.linear_model")
    x, y, _ = labelled()
    w = nl.logistic_regression(x, y, lam=lam, prefix=True)
    assert torch.equal(w[:, 0], torch.zeros(3, 3, dtype=F64))
    for b, n in itertools.product(range(3), range(1, 13)):
        if len(set(y[b, :n].tolist())) < 2:
            continue  # sklearn refuses one-class data
        model = linear_model.LogisticRegression(C=1 / lam, fit_intercept=False, tol=1e-12, max_iter=10_000)
        want = torch.from_numpy(model.fit(x[b, :n].numpy(), y[b, :n].numpy()).coef_[0])
        # lbfgs stops at a gradient of ~1e-12 relative; Newton reaches round-off: 1e-6 absolute is ample.
        assert torch.allclose(w[b, n], want, atol=1e-6)


def test_logistic_regression_stays_finite_on_separable_data_and_predicts_its_labels():
    x, y, q = labelled(flip=0.0)
    w = nl.logistic_regression(x, y, lam=1e-3, n_iter=50)
    assert torch.isfinite(w).all()
    assert torch.equal(nl.logistic_predict(w, x[:, 0], output="label"), y[:, 0])
    p = nl.logistic_predict(w, q, output="probability")
    assert torch.allclose(nl.logistic_predict(w, q, output="mean"), 2 * p - 1, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Trees and boosting (scikit-learn)


def test_decision_tree_fits_each_prompt_and_prefix_like_a_direct_sklearn_fit():
    tree = pytest.importorskip("sklearn.tree")
    x, y, q = draw(B=2, N=5, d=2, seed=6)
    got = trees.decision_tree(x, y, q, max_depth=2, prefix=True)
    assert torch.equal(got[:, 0], torch.zeros(2, dtype=F64))
    for b, n in itertools.product(range(2), range(1, 6)):
        model = tree.DecisionTreeRegressor(max_depth=2, random_state=0).fit(x[b, :n].numpy(), y[b, :n].numpy())
        assert got[b, n].item() == model.predict(q[b, None].numpy())[0]


def test_a_depth_one_tree_recovers_a_step_in_one_coordinate():
    pytest.importorskip("sklearn")
    g = torch.Generator().manual_seed(8)
    x = torch.randn(4, 30, 3, generator=g, dtype=F64)
    q = torch.randn(4, 3, generator=g, dtype=F64)
    step = lambda t: torch.where(t[..., 1] > 0, 2.0, -1.0).to(F64)  # noqa: E731
    got = trees.decision_tree(x, step(x), q, max_depth=1)
    assert torch.equal(got, step(q))


def test_gradient_boosting_reproduces_a_constant_and_a_direct_sklearn_fit():
    ensemble = pytest.importorskip("sklearn.ensemble")
    x, y, q = draw(B=2, N=6, d=2, seed=9)
    const = trees.gradient_boosting(x, torch.full_like(y, 1.5), q, n_estimators=5)
    assert torch.allclose(const, torch.full((2,), 1.5, dtype=F64), atol=1e-12)
    got = trees.gradient_boosting(x, y, q, n_estimators=7, prefix=True)
    model = ensemble.GradientBoostingRegressor(n_estimators=7, max_depth=6, learning_rate=0.3, random_state=0)
    assert got[1, 4].item() == model.fit(x[1, :4].numpy(), y[1, :4].numpy()).predict(q[1, None].numpy())[0]


def test_tree_baselines_name_the_baselines_extra_when_sklearn_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    x, y, q = draw()
    with pytest.raises(ImportError, match=r'pip install -e "\.\[baselines\]"'):
        trees.decision_tree(x, y, q)


# ----------------------------------------------------------------------------------------------
# The Bayes selector


def gp_fit(phi, y, phi_q, noise_std, w_std):
    """Evidence and posterior mean in the n x n form: y ~ N(0, K + sigma^2 I), K = tau^2 Phi Phi^T;
    E[y_q | y] = tau^2 phi_q Phi^T (K + sigma^2 I)^{-1} y. Independent of the d x d code under test."""
    n = len(y)
    if n == 0:
        return 0.0, 0.0
    cov = w_std**2 * phi @ phi.T + noise_std**2 * torch.eye(n, dtype=F64)
    ev = torch.distributions.MultivariateNormal(torch.zeros(n, dtype=F64), cov).log_prob(y)
    return float(ev), float(w_std**2 * phi_q @ phi.T @ torch.linalg.solve(cov, y))


def brute_force(families, probs, x, y, q):
    """Posterior over families and the posterior-weighted prediction for one prompt, by the n x n
    form; a sparse family enumerates its supports here as well."""
    evs, preds = [], []
    for f in families:
        if isinstance(f, nl.SparseFamily):
            fits = [gp_fit(x[:, list(s)], y, q[list(s)], f.noise_std, f.w_std)
                    for s in itertools.combinations(range(x.shape[1]), f.k)]
            e = torch.tensor([a for a, _ in fits], dtype=F64)
            evs.append(float(torch.logsumexp(e, 0)) - math.log(len(fits)))
            preds.append(float((torch.softmax(e, 0) * torch.tensor([b for _, b in fits], dtype=F64)).sum()))
        else:
            phi = (lambda t: t * t / math.sqrt(3)) if f.features == "squares" else (lambda t: t)
            ev, pred = gp_fit(phi(x), y, phi(q), f.noise_std, f.w_std)
            evs.append(ev)
            preds.append(pred)
    post = torch.softmax(torch.tensor(evs, dtype=F64) + torch.tensor(probs, dtype=F64).log(), 0)
    return post, float((post * torch.tensor(preds, dtype=F64)).sum())


MIXTURES = {
    "two noise levels": ([nl.GaussianFamily(0.1), nl.GaussianFamily(1.0, w_std=0.5)], [0.3, 0.7]),
    "dense vs sparse": ([nl.GaussianFamily(0.2), nl.SparseFamily(k=2, noise_std=0.2)], [0.5, 0.5]),
    "linear vs quadratic": ([nl.GaussianFamily(0.3), nl.GaussianFamily(0.3, features="squares")], [0.6, 0.4]),
}


@pytest.mark.parametrize("name", list(MIXTURES))
def test_bayes_mixture_posterior_and_prediction_equal_the_gaussian_process_form_on_every_prefix(name):
    families, probs = MIXTURES[name]
    x, _, q = draw(B=2, N=5, d=4, seed=10)
    y = x[..., 0] - 0.5 * x[..., 1] + 0.3 * torch.randn(2, 5, generator=torch.Generator().manual_seed(1), dtype=F64)
    sel = nl.bayes_mixture(x, y, q, families, probs=probs, prefix=True)
    for b, n in itertools.product(range(2), range(6)):
        post, pred = brute_force(families, probs, x[b, :n], y[b, :n], q[b])
        # float64 solves of 5 x 5 systems both ways: agreement to ~1e-10.
        assert torch.allclose(sel.posterior[b, n], post, atol=1e-9), (b, n)
        assert sel.prediction[b, n].item() == pytest.approx(pred, abs=1e-9)
    assert torch.allclose(sel.posterior[:, 0], torch.tensor([probs, probs], dtype=F64), atol=1e-12)


def test_bayes_mixture_posterior_averages_to_the_prior_over_prompts_drawn_from_the_mixture():
    """E[p(m | data)] = p(m) when prompts are drawn from the model (the posterior is a martingale):
    a wrong normalising constant in one family's evidence shifts the average away from the prior."""
    g = torch.Generator().manual_seed(11)
    B, N, d, probs, levels = 4000, 6, 3, [0.3, 0.7], [0.2, 1.0]
    m = (torch.rand(B, generator=g, dtype=F64) > probs[0]).long()
    x = torch.randn(B, N, d, generator=g, dtype=F64)
    w = torch.randn(B, d, generator=g, dtype=F64)
    y = (x * w[:, None]).sum(-1) + torch.tensor(levels, dtype=F64)[m, None] * torch.randn(B, N, generator=g, dtype=F64)
    post = nl.bayes_mixture(x, y, x[:, 0], [nl.GaussianFamily(s) for s in levels], probs=probs, prefix=True).posterior
    for n in range(1, N + 1):  # few examples: the prior weighs; many: the evidence does
        mean, sd = post[:, n, 0].mean(), post[:, n, 0].std() / math.sqrt(B)
        assert abs(float(mean) - probs[0]) < 4 * float(sd), n  # 4 standard errors: a false alarm ~ 1e-4
    assert float(post[m == 0, N, 0].mean()) > 0.8  # and it does tell the families apart


def test_the_selector_without_prefixes_is_its_last_prefix_whatever_the_support_chunks():
    families = [nl.SparseFamily(k=2, noise_std=0.3), nl.GaussianFamily(0.3)]
    x, y, q = draw(B=4, N=7, d=5, seed=13)
    full = nl.bayes_mixture(x, y, q, families, prefix=True)
    last = nl.bayes_mixture(x, y, q, families)
    assert torch.allclose(last.prediction, full.prediction[:, -1], atol=1e-12)  # float64 round-off
    assert torch.allclose(last.posterior, full.posterior[:, -1], atol=1e-12)
    one_go, chunked = (nl._sparse_fit(families[0], x, y, q, True, chunk=c) for c in (256, 3))
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(one_go, chunked))


def test_a_sign_family_takes_prompts_whose_labels_are_all_plus_or_minus_one():
    x, y, q = labelled(B=2, N=4)
    families = [nl.GaussianFamily(0.5), nl.SignFamily(output="label")]
    sel = nl.bayes_mixture(x, y, q, families, probs=[0.4, 0.6], prefix=True)
    assert torch.allclose(sel.posterior[:, 0], torch.tensor([[0.4, 0.6]] * 2, dtype=F64))
    assert torch.equal(sel.posterior[:, 1:, 1], torch.ones(2, 4, dtype=F64))
    assert torch.equal(sel.prediction[:, 1:], nl.logistic(x, y, q, output="label", prefix=True)[:, 1:])
    real = y.clone()
    real[:, 2] = 0.37  # one label off the lattice: prefixes from 3 examples on are regression prompts
    post = nl.bayes_mixture(x, real, q, families, prefix=True).posterior
    assert torch.equal(post[:, 3:, 1], torch.zeros(2, 2, dtype=F64))
    assert torch.equal(post[:, 3:, 0], torch.ones(2, 2, dtype=F64))


def test_bayes_mixture_map_picks_the_most_probable_familys_prediction():
    families, probs = MIXTURES["two noise levels"]
    x, y, q = draw(B=4, N=5, d=4, seed=12)
    sel = nl.bayes_mixture(x, y, q, families, probs=probs, select="map")
    best = sel.posterior.argmax(-1)
    fits = [nl.family_fit(f, x, y, q)[1] for f in families]
    assert torch.equal(sel.prediction, torch.stack(fits, -1).gather(-1, best[:, None])[:, 0])


@pytest.mark.parametrize("families, match", [
    ([nl.SignFamily(), nl.SignFamily()], "at most one SignFamily"),
    (["isotropic"], "supports GaussianFamily"),
    ([nl.SparseFamily(k=10, noise_std=0.1)], "SparseFamily.k = 10"),
])
def test_bayes_mixture_names_what_it_cannot_do(families, match):
    x, y, q = draw(d=4)
    with pytest.raises(ValueError, match=match):
        nl.bayes_mixture(x, y, q, families)


def test_families_validate_their_fields():
    with pytest.raises(ValueError, match="GaussianFamily.noise_std"):
        nl.GaussianFamily(0.0)
    with pytest.raises(ValueError, match="GaussianFamily.features"):
        nl.GaussianFamily(0.1, features="cubes")
