"""Fuzzed inputs meet a clear error or a correct result: never a traceback, never silence.

Configs, catalogues, potential parameters and command lines drawn by hypothesis. The
number of examples is bounded in CI (conftest: 20); `make test-all` runs more.
"""

import dataclasses
import math

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import deeppot as dp
from deeppot import cli, pipeline
from deeppot.pipeline.config import SECTIONS

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=4),
    st.dictionaries(st.text(max_size=5), st.floats(allow_nan=True), max_size=3),
)
KEYS = {name: [f.name for f in dataclasses.fields(cls)] for name, cls in SECTIONS.items()}


@st.composite
def raw_configs(draw):
    raw = {}
    for name in draw(st.lists(st.sampled_from([*SECTIONS, "junk"]), max_size=4, unique=True)):
        keys = KEYS.get(name, ["x"]) + ["nonsense"]
        table = draw(st.dictionaries(st.sampled_from(keys), SCALARS, max_size=4))
        raw[name] = table if draw(st.integers(0, 9)) else draw(SCALARS)
    return raw


@given(raw_configs())
def test_any_config_is_valid_or_a_config_error(raw):
    toml_safe = {k: v for k, v in raw.items() if v is not None}
    try:
        cfg = pipeline.parse_config(toml_safe)
    except dp.ConfigError as err:
        assert str(err).startswith("invalid config") or "a config is" in str(err)
        return
    assert pipeline.parse_config(cfg.to_dict()) == cfg


FINITE_OR_NOT = st.floats(allow_nan=True, allow_infinity=True, width=64)


@st.composite
def arrays(draw, shape):
    from hypothesis.extra.numpy import arrays as np_arrays

    values = st.one_of(st.floats(-1e3, 1e3), st.sampled_from([np.nan, np.inf, -np.inf, 0.0]))
    return draw(np_arrays(np.float64, shape, elements=values))


@given(st.data(), st.integers(0, 5), st.sampled_from([(3, 3), (3, 2), (2, 3)]),
       st.sampled_from([None, "same", "short"]), st.sampled_from([".npz", ".csv", ".h5"]))
def test_any_catalogue_is_valid_or_a_value_error(tmp_path_factory, data, n, dims, weights,
                                                 suffix):
    x = data.draw(arrays((n, dims[0])), label="x")
    v = data.draw(arrays((n, dims[1])), label="v")
    w = None if weights is None else data.draw(arrays((n if weights == "same" else n + 1,)))
    try:
        cat = dp.PhaseSpaceCatalog(x, v, w)
    except ValueError as err:
        assert str(err)
        return
    assert np.all(np.isfinite(cat.w)) and len(cat) == n > 0 and dims == (3, 3)
    assert cat.weights is None or np.all(cat.weights >= 0)
    path = tmp_path_factory.mktemp("cat") / f"c{suffix}"
    assert dp.PhaseSpaceCatalog.load(cat.save(path), check_fit=False) == cat


PARAMETER = st.one_of(FINITE_OR_NOT, st.integers(-5, 5), st.sampled_from(["1", None, [1.0]]))
FAMILIES = sorted(n for n in dp.registry.potentials if not pipeline.config.learned_model(n))


@pytest.mark.parametrize("family", FAMILIES)
@given(st.data())
def test_any_parameters_give_a_clear_error_or_a_finite_potential(family, data):
    import inspect

    make = dp.registry.potentials[family]
    names = [p for p in inspect.signature(make).parameters if p not in ("G", "units")]
    params = {k: data.draw(PARAMETER, label=k) for k in names}
    try:
        pot = make(**params)
    except (ValueError, TypeError) as err:
        assert str(err)
        return
    values = [float(np.asarray(p)) for p in params.values()]
    assert all(math.isfinite(p) and p > 0 for p in values)  # nothing bad slipped through
    x = jnp.array([[0.3, -0.2, 0.5], [2.0, 1.0, -3.0]])
    phi, grad = pot.potential(x), pot.gradient(x)
    big = max(abs(p) for p in values)
    if 1e-6 < min(values) and big < 1e6:  # away from float32 under/overflow
        assert np.all(np.isfinite(phi)) and np.all(np.isfinite(grad))


WORDS = st.sampled_from([
    "run", "mock", "fit-df", "scores", "fit-potential", "evaluate", "plummer", "disk",
    "--n", "0", "-3", "1e2", "abc", "--out", "/nonexistent/dir/x.npz", "missing.npz",
    "--set", "fit.steps=-1", "df.kind=maf", "run.x64=yes", "--config", "missing.toml",
    "--select", "--select-radius", "-1", "--checkpoint-dir", "--catalog", "-o",
])


@given(st.lists(WORDS, max_size=7))
def test_any_command_line_ends_in_a_status_and_no_traceback(argv):
    """(Outputs only ever name a missing directory, so nothing is generated or written.)"""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli.main(argv)
        except SystemExit as exit_:  # argparse's own usage errors
            code = exit_.code
    assert isinstance(code, int) and "Traceback" not in err.getvalue()
    if code not in (0, 2) or "deeppot: " in err.getvalue():
        assert err.getvalue().strip().startswith(("deeppot", "usage"))

