"""Property-based tests (Hypothesis) of the public selectors, Subset, budgets, per_class, data constructors and
the grads input checks: for any input, a valid result or a ValueError/TypeError with a message (issue 16).

Bounded: every property runs at most ``MAX_EXAMPLES`` examples with a per-example deadline, and the whole
file is sized to run in well under 30 s on two loaded CPU cores.
"""

import datetime

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import jax.numpy as jnp

from jaxsubset import Subset, budget_from_fraction, check_budget, data, grads, per_class_budget, selectors

MAX_EXAMPLES = 30
PROPS = settings(max_examples=MAX_EXAMPLES, deadline=datetime.timedelta(seconds=5), derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
                 database=None)

# floats including NaN, inf, huge and tiny magnitudes
ANY_FLOAT = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                      st.sampled_from([0.0, 1e-30, -1e-30, 1e20, -1e20, 1e-45, 3.5e38]))
SANE_FLOAT = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
BUDGET = st.one_of(st.integers(-3, 40), st.sampled_from([2.0, 1.5, True, None, "3", np.int64(2)]))


def _clear_error(err: Exception) -> None:
    """The error must be a ValueError/TypeError with a real message."""
    assert isinstance(err, (ValueError, TypeError)), f"{type(err).__name__}: {err}"
    assert len(str(err)) > 10, f"uninformative message {err!r}"


def _check_subset(sub, n: int, budget: int, *, exact: bool = True) -> None:
    assert isinstance(sub, Subset)
    idx, w = sub.indices, sub.weights
    assert idx.dtype == np.int64 and w.dtype == np.float32 and idx.shape == w.shape
    if exact:
        assert idx.size == budget, (idx.size, budget)
    else:
        assert idx.size <= budget
    assert np.unique(idx).size == idx.size
    assert idx.size == 0 or (idx.min() >= 0 and idx.max() < n)
    assert np.all(np.isfinite(w)) and np.all(w >= 0)


def _call(fn, *args, **kwargs):
    """``(result, None)`` or ``(None, error)``; any other exception type fails the test."""
    try:
        return fn(*args, **kwargs), None
    except (ValueError, TypeError) as err:
        _clear_error(err)
        return None, err


def _valid_budget(b, n) -> bool:
    return isinstance(b, (int, np.integer)) and not isinstance(b, bool) and 0 <= b <= n


# ------------------------------------------------------------------ score selectors

SCORES = st.one_of(hnp.arrays(np.float64, st.integers(0, 30), elements=ANY_FLOAT),
                   hnp.arrays(np.float64, st.integers(0, 30), elements=SANE_FLOAT),
                   hnp.arrays(np.float64, st.integers(1, 30), elements=st.sampled_from([0.0, 1.0, 2.0])))  # ties

SCORE_SELECTORS = {
    "top_k": lambda s, b: selectors.top_k(s, b),
    "top_k_small": lambda s, b: selectors.top_k(s, b, largest=False),
    "evenly_spaced": lambda s, b: selectors.evenly_spaced(s, b),
    "quantile_random": lambda s, b: selectors.quantile_random(s, b, seed=3),
    "geda_exact": lambda s, b: selectors.geda(np.abs(s) if s.size else s, b, solver="exact"),
    "geda_w1": lambda s, b: selectors.geda(np.abs(s) if s.size else s, b, num_nodes=None),
    "geda_cpsat": lambda s, b: selectors.geda(np.abs(s) if s.size else s, b, num_nodes=5, time_limit_s=5.0),
}


@pytest.mark.parametrize("name", sorted(SCORE_SELECTORS))
@PROPS
@given(s=SCORES, budget=BUDGET)
def test_score_selectors_valid_or_clear_error(name, s, budget):
    sub, err = _call(SCORE_SELECTORS[name], s, budget)
    finite = bool(np.all(np.isfinite(s)))
    if sub is not None:
        assert finite, "a NaN/inf score gave a result"
        assert _valid_budget(budget, s.size)
        _check_subset(sub, s.size, int(budget))
    elif finite and _valid_budget(budget, s.size):
        # valid input must not be refused (except GEDA's objective overflow guard, which says so)
        assert "overflow" in str(err) or "too large" in str(err), err


@PROPS
@given(n=st.one_of(st.integers(-2, 50), st.sampled_from([2.5, None, "4"])), budget=BUDGET,
       seed=st.integers(0, 2**32))
def test_random_selector(n, budget, seed):
    sub, err = _call(selectors.random, n, budget, seed=seed)
    if sub is not None:
        _check_subset(sub, int(n), int(budget))
    else:
        assert not (isinstance(n, int) and n >= 0 and _valid_budget(budget, n)), err


# ------------------------------------------------------------------ feature selectors

FEATURES = st.one_of(
    hnp.arrays(np.float64, st.tuples(st.integers(0, 14), st.integers(1, 4)), elements=ANY_FLOAT),
    hnp.arrays(np.float64, st.tuples(st.integers(1, 14), st.integers(1, 4)), elements=SANE_FLOAT),
    st.builds(lambda a, scale: a / max(np.abs(a).max(), 1e-300) * scale,   # largest entry exactly `scale`
              hnp.arrays(np.float64, st.tuples(st.integers(1, 14), st.integers(1, 4)),
                         elements=st.floats(-1, 1)),
              st.sampled_from([1e-30, 1e-20, 1e-12, 1e12, 1e17, 3e18, 1e19, 3e19, 1e25])))

FEATURE_SELECTORS = {
    "craig": (lambda x, b: selectors.craig(x, b), True),
    "craig_matrix_free": (lambda x, b: selectors.craig(x, b, dense_limit=0), True),
    "craig_cosine": (lambda x, b: selectors.craig(x, b, metric="cosine"), True),
    "herding": (lambda x, b: selectors.herding(x, b), True),
    "kcenter": (lambda x, b: selectors.kcenter_greedy(x, b), True),
    "gradmatch": (lambda x, b: selectors.gradmatch(x, b), False),
}


def _float32_ok(x: np.ndarray) -> bool:
    """Inside the documented float32 range of the kernels (see kernels.check_float32_range)."""
    top = float(np.max(np.abs(x))) if x.size else 0.0
    return top * np.sqrt(x.shape[1]) <= 1e18 and not 0.0 < top < 1e-19


@pytest.mark.parametrize("name", sorted(FEATURE_SELECTORS))
@PROPS
@given(x=FEATURES, budget=st.one_of(st.integers(-1, 16), st.just(1.0)))
def test_feature_selectors_valid_or_clear_error(name, x, budget):
    fn, exact = FEATURE_SELECTORS[name]
    sub, err = _call(fn, x, budget)
    x32 = x.astype(np.float32)
    finite = bool(np.all(np.isfinite(x32)))
    if sub is not None:
        assert finite, "non-finite features gave a result"
        assert _valid_budget(budget, x.shape[0])
        _check_subset(sub, x.shape[0], int(budget), exact=exact)
        if name.startswith("craig") and budget > 0:
            assert np.isclose(sub.weights.sum(), x.shape[0]), "CRAIG weights must sum to n"
        if name == "gradmatch":
            target = np.linalg.norm(x32.astype(np.float64).sum(0))
            assert budget == 0 or len(sub) > 0 or target <= 1e-3 * np.linalg.norm(x32), "GRAD-MATCH picked nothing"
    elif finite and _valid_budget(budget, x.shape[0]) and _float32_ok(x32):
        pytest.fail(f"valid features refused: {err}")


# ------------------------------------------------------------------ Subset and budgets

@st.composite
def index_and_weights(draw):
    """Mostly matching lengths (so valid subsets are common), sometimes anything."""
    k = draw(st.integers(0, 8))
    idx = draw(st.one_of(
        hnp.arrays(st.sampled_from([np.int64, np.int32, np.uint8, np.float64, np.bool_]), k,
                   elements=None, unique=draw(st.booleans())),
        st.permutations(list(range(k))).map(np.asarray),
        st.lists(st.one_of(st.integers(-2, 10), st.floats(allow_nan=True)), max_size=6)))
    size = draw(st.one_of(st.just(k), st.integers(0, 8)))
    w = draw(st.one_of(st.none(),
                       hnp.arrays(st.sampled_from([np.float32, np.float64, np.int64]), size, elements=None),
                       hnp.arrays(np.float32, size, elements=st.floats(0, 10, width=32)),
                       st.lists(ANY_FLOAT, min_size=size, max_size=size)))
    return idx, w


@settings(PROPS, max_examples=80)
@given(pair=index_and_weights())
def test_subset_valid_or_clear_error(pair):
    idx, w = pair
    sub, err = _call(Subset, idx, w)
    if sub is not None:
        a = np.asarray(idx)
        assert a.dtype != np.bool_
        _check_subset(sub, int(sub.indices.max()) + 1 if len(sub) else 0, len(sub))
        assert np.array_equal(sub.indices, a.astype(np.int64))
        if isinstance(w, np.ndarray):
            w[...] = -1 if w.size else 0       # editing the caller's array does not change the subset
            assert np.all(sub.weights >= 0)


@PROPS
@given(b=BUDGET, n=st.integers(-2, 40))
def test_check_budget(b, n):
    out, err = _call(check_budget, b, n)
    if out is not None:
        assert isinstance(out, int) and 0 <= out <= n and out == b
    else:
        assert not _valid_budget(b, n) or n < 0


@PROPS
@given(f=st.one_of(ANY_FLOAT, st.floats(0, 1)), n=st.one_of(st.integers(-2, 10**6), st.just(1.5)))
def test_budget_from_fraction(f, n):
    out, err = _call(budget_from_fraction, f, n)
    if out is not None:
        assert isinstance(out, int) and 0 <= out <= n and 0 < f <= 1
        assert out == (0 if n == 0 else max(1, int(round(f * n))))


LABELS = st.one_of(
    hnp.arrays(np.int64, st.integers(0, 40), elements=st.integers(0, 5)),
    hnp.arrays(np.int64, st.integers(0, 10), elements=st.integers(-3, 10**12)),
    hnp.arrays(np.float64, st.integers(0, 10), elements=st.floats(0, 5)))


@PROPS
@given(y=LABELS, budget=BUDGET, c=st.one_of(st.none(), st.integers(-1, 8), st.just(10**9), st.just(2.0)))
def test_per_class_budget(y, budget, c):
    out, err = _call(per_class_budget, y, budget, c)
    if out is not None:
        sizes = np.bincount(y, minlength=out.size)
        assert out.sum() == budget and np.all(out >= 0) and np.all(out <= sizes[:out.size])
        # proportional: each class within one of its exact quota
        if y.size:
            quota = budget * sizes / y.size
            assert np.all(np.abs(out - quota) < 1 + 1e-9)


@pytest.mark.parametrize("method", ["random", "quantile", "craig"])
@PROPS
@given(y=LABELS, budget=st.integers(-1, 40), seed=st.integers(0, 100))
def test_per_class_selectors(method, y, budget, seed):
    n = y.size
    rng = np.random.default_rng(seed)
    if method == "random":
        call = lambda: selectors.per_class(selectors.random, y, budget, seed=seed)  # noqa: E731
    elif method == "quantile":
        call = lambda: selectors.per_class(selectors.quantile_random, y, budget,  # noqa: E731
                                           arrays={"scores": rng.normal(size=n)}, seed=seed)
    else:
        call = lambda: selectors.per_class(selectors.craig, y, budget,  # noqa: E731
                                           arrays={"features": rng.normal(size=(n, 3))})
    sub, err = _call(call)
    if sub is not None:
        _check_subset(sub, n, budget)
        counts = np.bincount(y[sub.indices], minlength=int(y.max()) + 1 if n else 0)
        assert np.array_equal(counts[:len(per_class_budget(y, budget))], per_class_budget(y, budget))


# ------------------------------------------------------------------ data constructors

@PROPS
@given(x=hnp.arrays(np.float64, st.tuples(st.integers(0, 6), st.integers(1, 3)), elements=ANY_FLOAT),
       y=hnp.arrays(st.sampled_from([np.int64, np.float64, np.uint64]), st.integers(0, 6), elements=None),
       c=st.one_of(st.none(), st.integers(-1, 6), st.just(2.5)))
def test_from_arrays_valid_or_clear_error(x, y, c):
    xt, yt = np.zeros((2, x.shape[1])), np.array([0, 1])
    ds, err = _call(data.from_arrays, x, y, xt, yt, num_classes=c)
    if ds is not None:
        assert ds.x_train.dtype == np.float32 and np.all(np.isfinite(ds.x_train))
        assert ds.y_train.dtype == np.int32 and x.shape[0] == ds.y_train.size > 0
        assert np.array_equal(ds.y_train, y)           # no wrapping
        assert 0 <= ds.y_train.min() and ds.y_train.max() < ds.num_classes
        assert len(ds.class_names) == ds.num_classes <= 2 * np.unique(np.r_[y, yt]).size + 1000 or c is not None


@PROPS
@given(classes=st.lists(st.one_of(st.integers(-2, 5), st.floats(0, 4), st.just("1")), max_size=3),
       f=st.one_of(st.floats(-1, 2), st.just(float("nan"))))
def test_make_imbalanced(classes, f):
    ds = data.from_arrays(np.zeros((12, 2)), np.arange(12) % 3, np.zeros((3, 2)), [0, 1, 2])
    out, err = _call(data.make_imbalanced, ds, classes, f)
    if out is not None:
        assert all(isinstance(c, int) for c in classes) and 0 < f <= 1
        assert 1 <= out.y_train.size <= 12


# ------------------------------------------------------------------ grads input checks

def _linear_apply(params, x):
    return x.reshape(x.shape[0], -1) @ params["w"]


LINEAR = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(6, 3)), jnp.float32)}


@settings(PROPS, max_examples=10)
@given(x=st.one_of(hnp.arrays(np.float32, (5, 2, 3), elements=st.floats(-1e3, 1e3, width=32)),
                   hnp.arrays(np.float32, (5, 2, 3), elements=st.floats(width=32)),
                   hnp.arrays(np.float32, (0, 2, 3))),
       fn=st.sampled_from(["losses", "input_grad_norms", "grad_norms", "per_sample_grads"]))
def test_grads_inputs_checked(x, fn):
    """Fixed shapes, so each function compiles once; contents vary (NaN, inf, empty)."""
    y = np.arange(x.shape[0]) % 3
    out, err = _call(getattr(grads, fn), _linear_apply, LINEAR, x, y)
    finite = bool(np.all(np.isfinite(x)))
    if out is not None:
        assert finite and x.shape[0] > 0, "NaN/inf/empty input gave a result"
        assert out.shape[0] == x.shape[0] and np.all(np.isfinite(out))
    else:  # finite inputs too large for the model overflow its outputs: reported by row, as a ValueError too
        assert not finite or x.shape[0] == 0 or np.abs(x).max() > 1e15, err


# ------------------------------------------------------------------ the registry (what the CLI and pipeline call)

REGISTRY_METHODS = ["random", "loss_hard", "el2n_easy", "evenly_spaced", "quantile_random", "geda", "geda_w1",
                    "craig", "gradmatch", "herding", "kcenter", "craig_grads", "gradmatch_grads"]


@st.composite
def pools(draw):
    n = draw(st.integers(1, 24))
    y = draw(hnp.arrays(np.int64, n, elements=st.integers(0, 2)))
    rng = np.random.default_rng(draw(st.integers(0, 1000)))
    q = {"loss": rng.exponential(size=n), "el2n": rng.random(n), "grad_norm": rng.exponential(size=n),
         "last_layer_e": rng.normal(size=(n, 3)), "last_layer_h": rng.normal(size=(n, 4)),
         "grads": rng.normal(size=(n, 5))}
    corrupt = draw(st.sampled_from([None, *q]))
    if corrupt is not None:
        q[corrupt] = q[corrupt].copy()
        q[corrupt].reshape(n, -1)[draw(st.integers(0, n - 1)), 0] = draw(st.sampled_from([np.nan, np.inf]))
    return y, q, corrupt


@pytest.mark.parametrize("method", REGISTRY_METHODS)
@settings(PROPS, max_examples=12)
@given(pool=pools(), budget=st.integers(-1, 26), seed=st.integers(0, 50))
def test_registry_select_valid_or_clear_error(method, pool, budget, seed):
    _registry_property(method, pool, budget, seed)


@settings(PROPS, max_examples=5)   # online GEDA compiles its weight solver once per subset size
@given(pool=pools(), budget=st.integers(-1, 26), seed=st.integers(0, 50))
def test_registry_online_geda_valid_or_clear_error(pool, budget, seed):
    _registry_property("online_geda", pool, budget, seed)


def _registry_property(method, pool, budget, seed):
    y, q, corrupt = pool
    sub, err = _call(selectors.select, method, y, budget, q, seed=seed)
    used = corrupt is not None and corrupt in selectors.METHODS[method].needs
    if sub is not None:
        assert not used, f"a NaN/inf in {corrupt} gave a result"
        _check_subset(sub, y.size, budget, exact=not method.startswith("gradmatch"))
        if method.startswith("craig"):  # per class: each class with a budget is covered by its picks
            covered = sum(int(np.sum(y == c)) for c, b in enumerate(per_class_budget(y, budget)) if b > 0)
            assert np.isclose(sub.weights.sum(), covered)
    else:
        assert used or not 0 <= budget <= y.size, err


@settings(PROPS, max_examples=25)
@given(g=hnp.arrays(np.float64, st.sampled_from([(0, 2), (3, 2), (5, 3)]), elements=ANY_FLOAT),  # few compiles
       prior=st.one_of(ANY_FLOAT, st.floats(0.1, 10)), lam=st.one_of(ANY_FLOAT, st.floats(0, 1)))
def test_match_weights_valid_or_clear_error(g, prior, lam):
    w, err = _call(selectors.match_weights, g, g.sum(0) if np.all(np.isfinite(g)) else np.zeros(g.shape[1]),
                   prior=prior, lam=lam)
    if w is not None:
        assert w.shape == (g.shape[0],) and w.dtype == np.float32
        assert np.all(np.isfinite(w)) and np.all(w >= 0)
        assert np.isfinite(prior) and prior > 0 and np.isfinite(lam) and lam >= 0
