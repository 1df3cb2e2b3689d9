"""Conditional distribution functions, f(x, v) = ν(x) p(v | x): a density model and a
velocity model conditioned on the position."""

from __future__ import annotations

import abc
import math
import typing
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import paramax
from flowjax.bijections import Affine, RationalQuadraticSpline
from flowjax.distributions import AbstractDistribution, Logistic, StandardNormal, VmapMixture
from flowjax.flows import coupling_flow, masked_autoregressive_flow
from jaxtyping import Array, Float, PRNGKeyArray

from .. import registry
from ._analytic import _LOG_C, PlummerDF, _enclosed_mass
from ._base import AbstractAutodiffDF, AbstractTrainableDF, _check_key, _chunked, autodiff_score
from ._geometry import safe_norm, unit_vectors
from ._profile import VelocityProfile

__all__ = ["AbstractConditionalDF", "ConditionalDF", "ConditionalPlummerDF"]

SYMMETRIES = ("none", "spherical", "axisymmetric")  # of ConditionalDF's factors
DENSITY_MODELS = ("flow", "logistic_mixture")  # of ConditionalDF's density factor
_LOG_2PI = math.log(2.0 * math.pi)
_LOG_4PI = math.log(4.0 * math.pi)


class AbstractConditionalDF(AbstractAutodiffDF):
    """A DF written as f(x, v) = ν(x) p(v | x): a normalised number density ν and, at each
    position, a normalised velocity distribution p(·|x).

    A position-only selection S(x) multiplies ν only, so p(v|x) keeps the system's
    symmetry; and stationarity at one position, v·∇ln ν + v·∇ₓln p − ∇Φ·∇ᵥln p = 0 for
    every v, is linear in ∇ln ν(x) and ∇Φ(x), so ∇ln ν can be profiled out with velocities
    drawn at the stars' own positions (`sample_velocities`, `velocity_scores`; the term
    `deeppot.terms.ProfiledStationarity`). Subclasses implement the two log-factors and
    their samplers, batched; the joint log-density, scores and samples follow.
    """

    @abc.abstractmethod
    def _log_density_chunk(self, x: Float[Array, "m 3"]) -> Float[Array, " m"]:
        """ln ν(x) of a chunk of positions."""

    @abc.abstractmethod
    def _log_velocity_chunk(self, x: Float[Array, "m 3"], v: Float[Array, "m 3"]
                            ) -> Float[Array, " m"]:
        """ln p(v | x) of a chunk of points."""

    @abc.abstractmethod
    def _sample_positions(self, key: PRNGKeyArray, m: int) -> Float[Array, "m 3"]:
        """m positions drawn from ν."""

    @abc.abstractmethod
    def _sample_velocities(self, key: PRNGKeyArray, x: Float[Array, "m 3"]
                           ) -> Float[Array, "m 3"]:
        """One velocity drawn from p(·|x) at each of the positions `x`."""

    # ------------------------------------------------------------------ the joint DF

    def _log_prob_chunk(self, w):
        x, v = w[:, :3], w[:, 3:]
        return self._log_density_chunk(x) + self._log_velocity_chunk(x, v)

    def _sample_chunk(self, key, m):
        k_x, k_v = jax.random.split(key)
        x = self._sample_positions(k_x, m)
        w = jnp.concatenate([x, self._sample_velocities(k_v, x)], -1)
        return w, self._log_prob_chunk(w)

    # ------------------------------------------------------------------ the factors

    def _velocity_score_chunk(self, w):
        return jax.grad(lambda u: jnp.sum(self._log_velocity_chunk(u[:, :3], u[:, 3:])))(w)

    def log_density(self, x: Float[Array, "... 3"]) -> Float[Array, "..."]:
        """ln ν(x), the log of the normalised number density.

        **Arguments:**

        - `x`: positions, shape `(..., 3)`.

        **Returns:** `ln ν`, shape `(...)`.
        """
        x, batch = _as_positions(x)
        return _density_impl(self, x).reshape(batch)

    def density_score(self, x: Float[Array, "... 3"]) -> Float[Array, "... 3"]:
        """∇ln ν(x), the position score of the density factor.

        **Arguments:**

        - `x`: positions, shape `(..., 3)`.

        **Returns:** `∇ln ν`, shape `(..., 3)`.
        """
        x, batch = _as_positions(x)
        return _density_score_impl(self, x).reshape(*batch, 3)

    def velocity_scores(self, x: Float[Array, "... 3"], v: Float[Array, "... 3"]
                        ) -> tuple[Float[Array, "... 3"], Float[Array, "... 3"]]:
        """Scores of the velocity factor, ∇ₓln p(v|x) and ∇ᵥln p(v|x).

        **Arguments:**

        - `x`, `v`: positions and velocities, shape `(..., 3)` each.

        **Returns:** `(dlnp_dx, dlnp_dv)`, each of shape `(..., 3)`.
        """
        x, v = jnp.broadcast_arrays(jnp.asarray(x), jnp.asarray(v))
        w, batch = _as_positions(jnp.concatenate([x, v], -1), 6)
        g = _velocity_score_impl(self, w).reshape(*batch, 6)
        return g[..., :3], g[..., 3:]

    def sample_velocities(self, key: PRNGKeyArray, x: Float[Array, "n 3"], k: int = 1
                          ) -> Float[Array, "n k 3"]:
        """Draw `k` velocities from p(·|x) at each of the positions `x` (for instance a
        catalogue's, whose positions are data).

        **Arguments:**

        - `key`: a typed key.
        - `x`: positions, shape `(n, 3)`.
        - `k`: velocities per position.

        **Returns:** velocities of shape `(n, k, 3)`.
        """
        _check_key(key)
        x, _ = _as_positions(x)
        if int(k) < 1:
            raise ValueError(f"k must be at least 1; got {k}")
        n = x.shape[0]
        rep = jnp.repeat(x, int(k), axis=0)
        v = _velocities_impl(self, key, rep)
        return v.reshape(n, int(k), 3)


def _as_positions(x, d: int = 3):
    x = jnp.asarray(x)
    if x.ndim == 0 or x.shape[-1] != d:
        raise ValueError(f"expected points of shape (..., {d}); got {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(jnp.result_type(float))
    return x.reshape(-1, d), x.shape[:-1]


@eqx.filter_jit
def _density_impl(df, x):
    return _chunked(df._log_density_chunk, x, df.chunk_size)


@eqx.filter_jit
def _density_score_impl(df, x):
    return _chunked(lambda y: autodiff_score(df._log_density_chunk, y), x, df.chunk_size)


@eqx.filter_jit
def _velocity_score_impl(df, w):
    return _chunked(df._velocity_score_chunk, w, df.chunk_size)


@eqx.filter_jit
def _velocities_impl(df, key, x):
    """One velocity per row of `x`, in chunks with a key each."""
    n, size = x.shape[0], df.chunk_size
    if n <= size:
        return df._sample_velocities(key, x)
    n_chunks = -(-n // size)
    pad = jnp.concatenate([x, jnp.broadcast_to(x[:1], (n_chunks * size - n, 3))])
    keys = jax.random.split(key, n_chunks)
    out = jax.lax.map(lambda a: df._sample_velocities(a[0], a[1]),
                      (keys, pad.reshape(n_chunks, size, 3)))
    return out.reshape(-1, 3)[:n]


# ---------------------------------------------------------------------- analytic oracle


@registry.distribution_functions.register
@typing.final
class ConditionalPlummerDF(AbstractConditionalDF):
    """The isotropic Plummer sphere (G = M = b = 1) as ν(x) p(v|x), exactly: ν ∝ (1 + r²)^{−5/2}
    and p(v|x) = f(E) / ν(x), the same joint density as `PlummerDF` (truncated at `r_max`).

    **Arguments:**

    - `r_max`: truncation radius, or `None` for the untruncated sphere.
    - `chunk_size`: points per evaluation chunk.
    """

    r_max: float | None = eqx.field(static=True, default=10.0)
    chunk_size: int = eqx.field(static=True, default=65536)

    def __check_init__(self):
        self._joint  # noqa: B018 (building it checks the arguments)

    @property
    def _joint(self) -> PlummerDF:
        """The same distribution as one `PlummerDF`."""
        return PlummerDF(r_max=self.r_max, chunk_size=self.chunk_size)

    def _log_density_chunk(self, x):
        r2 = jnp.sum(x**2, -1)
        lp = math.log(3.0 / (4.0 * math.pi)) - 2.5 * jnp.log1p(r2) - self._joint.log_mass
        return lp if self.r_max is None else jnp.where(r2 < self.r_max**2, lp, -jnp.inf)

    def _log_velocity_chunk(self, x, v):
        r2 = jnp.sum(x**2, -1)
        e = 0.5 * jnp.sum(v**2, -1) - (1.0 + r2) ** -0.5
        inside = e < 0
        lp = (_LOG_C + 3.5 * jnp.log(jnp.where(inside, -e, 1.0))
              - math.log(3.0 / (4.0 * math.pi)) + 2.5 * jnp.log1p(r2))
        return jnp.where(inside, lp, -jnp.inf)

    def _sample_positions(self, key, m):
        dtype = jnp.result_type(float)
        k_r, k_dir = jax.random.split(key)
        m_max = 1.0 if self.r_max is None else _enclosed_mass(self.r_max)
        u = jax.random.uniform(k_r, (m,), dtype, minval=jnp.finfo(dtype).tiny, maxval=m_max)
        r = (u ** (-2.0 / 3.0) - 1.0) ** -0.5
        return r[:, None] * unit_vectors(k_dir, m, dtype)

    def _sample_velocities(self, key, x):
        m = x.shape[0]
        k_q, k_dir = jax.random.split(key)
        # q = v / v_esc has density ∝ q² (1 − q²)^{7/2}: q² ~ Beta(3/2, 9/2)
        q = jnp.sqrt(jax.random.beta(k_q, 1.5, 4.5, (m,), x.dtype))
        speed = q * jnp.sqrt(2.0) * (1.0 + jnp.sum(x**2, -1)) ** -0.25
        return speed[:, None] * unit_vectors(k_dir, m, x.dtype)


# ---------------------------------------------------------------------- reductions


def _position_coords(symmetry: str, x, z0):
    """Reduced position coordinates y of a batch and ln J with ln ν(x) = ln p_y(y) + ln J."""
    if symmetry == "spherical":
        r = safe_norm(x)
        return jnp.log(r)[:, None], -_LOG_4PI - 3.0 * jnp.log(r)
    if symmetry == "axisymmetric":
        big_r, z = safe_norm(x[:, :2]), x[:, 2]
        y = jnp.stack([jnp.log(big_r), jnp.arcsinh(z / z0)], -1)
        return y, -_LOG_2PI - 2.0 * jnp.log(big_r) - 0.5 * jnp.log(z0**2 + z**2)
    return x, jnp.zeros(x.shape[0], x.dtype)


def _position_expand(symmetry: str, key, y, z0):
    """Positions with reduced coordinates y and uniformly random angles."""
    if symmetry == "spherical":
        return jnp.exp(y) * unit_vectors(key, y.shape[0], y.dtype)
    if symmetry == "axisymmetric":
        phi = jax.random.uniform(key, (y.shape[0],), y.dtype, 0.0, 2.0 * math.pi)
        big_r = jnp.exp(y[:, 0])
        return jnp.stack([big_r * jnp.cos(phi), big_r * jnp.sin(phi), z0 * jnp.sinh(y[:, 1])], -1)
    return y


def _velocity_coords(symmetry: str, x, v):
    """Reduced velocity coordinates u at x and ln J with ln p(v|x) = ln p_u(u|x) + ln J."""
    if symmetry == "spherical":  # (v_r, ln v_t); d³v = 2π v_t² dv_r d ln v_t
        r = safe_norm(x)
        v_r = jnp.sum(x * v, -1) / r
        v_t = safe_norm(jnp.cross(x, v)) / r
        return jnp.stack([v_r, jnp.log(v_t)], -1), -_LOG_2PI - 2.0 * jnp.log(v_t)
    if symmetry == "axisymmetric":  # (v_R, v_z, v_φ), a rotation
        big_r = safe_norm(x[:, :2])
        c, s = x[:, 0] / big_r, x[:, 1] / big_r
        u = jnp.stack([c * v[:, 0] + s * v[:, 1], v[:, 2], c * v[:, 1] - s * v[:, 0]], -1)
        return u, jnp.zeros(x.shape[0], x.dtype)
    return v, jnp.zeros(x.shape[0], x.dtype)


def _velocity_expand(symmetry: str, key, x, u):
    """Velocities at x with reduced coordinates u (a random tangential direction for the
    spherical reduction)."""
    if symmetry == "spherical":
        n = x / safe_norm(x)[:, None]
        g = jax.random.normal(key, x.shape, x.dtype)
        e = g - jnp.sum(g * n, -1, keepdims=True) * n
        e = e / jnp.linalg.norm(e, axis=-1, keepdims=True)
        return u[:, :1] * n + jnp.exp(u[:, 1:]) * e
    if symmetry == "axisymmetric":
        big_r = safe_norm(x[:, :2])
        c, s = x[:, 0] / big_r, x[:, 1] / big_r
        v_r, v_z, v_phi = u[:, 0], u[:, 1], u[:, 2]
        return jnp.stack([c * v_r - s * v_phi, s * v_r + c * v_phi, v_z], -1)
    return u


_POSITION_DIM = {"none": 3, "spherical": 1, "axisymmetric": 2}
_VELOCITY_DIM = {"none": 3, "spherical": 2, "axisymmetric": 3}


def _moments(a, p):
    if p is None:
        return jnp.mean(a, 0), jnp.std(a, 0)
    loc = jnp.sum(p[:, None] * a, 0)
    return loc, jnp.sqrt(jnp.sum(p[:, None] * (a - loc) ** 2, 0))


# ---------------------------------------------------------------------- the flow model


def _logistic_mixture(components: int, spread: float = 2.0) -> VmapMixture:
    """A 1-D mixture of `components` logistic distributions (shape `(1,)`), initialised
    close to a standard normal, as the flows start: locations evenly spread over
    [−`spread`, `spread`], weights ∝ exp(−μ²/2) and scales equal to the spacing (so the
    initial tails fall steeply, and ν stays bounded at small r).

    ln p(y) = logsumexp_k [ln w_k + ln σ((y − μ_k)/s_k) + ln σ(−(y − μ_k)/s_k) − ln s_k]:
    smooth in y, with exponential tails; sampled exactly (a component, then its inverse
    CDF). All weights, locations and scales are trainable.
    """
    components = int(components)
    if components < 1:
        raise ValueError(f"density_components must be at least 1; got {components}")
    dtype = jnp.result_type(float)
    loc = jnp.linspace(-spread, spread, components, dtype=dtype)
    scale = jnp.full(components, 2.0 * spread / max(components - 1, 1), dtype)
    parts = eqx.filter_vmap(Logistic)(loc[:, None], scale[:, None])
    return VmapMixture(parts, weights=jnp.exp(-0.5 * loc**2))


@registry.distribution_functions.register("conditional")
@typing.final
class ConditionalDF(AbstractConditionalDF, AbstractTrainableDF):
    """f(x, v) = ν(x) p(v | x) with two flowjax spline flows: one on the (reduced) position
    coordinates and one on the velocity coordinates conditioned on the position.

    `symmetry` reduces the velocity factor: `"spherical"` models p(v_r, ln v_t | ln r)
    (p(v|x) = p_u / (2π v_t²)), `"axisymmetric"` p(v_R, v_z, v_φ | ln R, asinh(z/z₀)),
    `"none"` p(v | x). `density_symmetry` (default: the same) reduces ν: `"spherical"` a flow
    on ln r (ν = p / (4π r³)), `"axisymmetric"` on (ln R, asinh(z/z₀)), `"none"` a 3-D flow
    on x. Under a selection S(x) the observed density S ν is not symmetric: keep
    `density_symmetry="none"` there and let the velocity factor keep the symmetry. Every
    coordinate is standardised by `standardise` (mean and standard deviation; z₀ the 0.2
    quantile of |z|). Scores are exact autodiff of the joint log-density.

    With `scale_velocities` (spherical velocity factor only) the velocity at x is first
    divided by smooth dispersion profiles fitted to the stars, as `SphericalDF` does: its
    radial component by σ_r(r), its tangential vector by σ_t(r) (`VelocityProfile`, set by
    `standardise`). The map is linear in v at each x, so p(v|x) = p'(v'|x) / (σ_r σ_t²)
    exactly, and the velocity flow sees unit-scale velocities at every radius, which a
    cusped system's dispersions, changing by orders of magnitude with r, need.

    Trained by maximum likelihood (`"nll"`): the joint NLL is the NLL of ν on the positions
    plus that of p on the velocities given the positions.

    **Arguments:**

    - `key`: a typed key.
    - `symmetry`: the velocity factor's symmetry, one of `"none"`, `"spherical"`,
      `"axisymmetric"`.
    - `density_symmetry`: the density factor's, or `None` for `symmetry`.
    - `kind`: `"coupling"` or `"autoregressive"` flows.
    - `transformer`: `"spline"` (rational-quadratic splines, as `SplineFlow`: flexible, but
      their scores jump at the knots) or `"affine"` (affine layers whose scale and shift are
      smooth networks of the other coordinates and the condition: smooth scores). A 1-D
      factor (ν on ln r, `density_symmetry="spherical"`) has no other coordinate and no
      condition, so its affine layers compose to one affine map: ν is then a Gaussian in
      ln r, too rigid for most systems (a cusped halo's ν), where splines stay flexible;
      `density_model="logistic_mixture"` (below) is flexible and smooth.
    - `flow_layers`, `knots`, `interval`, `nn_width`, `nn_depth`, `nn_activation`: as in
      `SplineFlow`, for both flows (`knots` and `interval` for splines only).
    - `scale_velocities`: divide the velocities by the fitted dispersion profiles (above);
      needs `symmetry="spherical"`.
    - `density_model`: `"flow"` (the flow above) or `"logistic_mixture"`, for a 1-D density
      factor only (`density_symmetry="spherical"`): ν is then a mixture of
      `density_components` logistic distributions in standardised ln r, smooth (smooth
      scores), flexible, and with exponential tails in ln r, i.e. power laws in r, as cusps,
      cores and outskirts have.
    - `density_components`: the mixture's number of components.
    - `chunk_size`: points per evaluation chunk.
    """

    density: AbstractDistribution
    velocity: AbstractDistribution
    y_loc: Float[Array, " dy"]
    y_scale: Float[Array, " dy"]
    c_loc: Float[Array, " dc"]
    c_scale: Float[Array, " dc"]
    u_loc: Float[Array, " du"]
    u_scale: Float[Array, " du"]
    z0: Float[Array, ""]
    profile: VelocityProfile | None
    symmetry: str = eqx.field(static=True)
    density_symmetry: str = eqx.field(static=True)
    chunk_size: int = eqx.field(static=True)
    architecture: tuple[tuple[str, typing.Any], ...] = eqx.field(static=True)
    objectives: typing.ClassVar[tuple[str, ...]] = ("nll",)

    def __init__(self, key: PRNGKeyArray, *, symmetry: str = "none",
                 density_symmetry: str | None = None, kind: str = "coupling",
                 transformer: str = "spline", flow_layers: int = 8, knots: int = 8,
                 interval: float = 5.0, nn_width: int = 128, nn_depth: int = 2,
                 nn_activation: Callable = jax.nn.silu, scale_velocities: bool = False,
                 density_model: str = "flow", density_components: int = 16,
                 chunk_size: int = 16384):
        builders = {"coupling": coupling_flow, "autoregressive": masked_autoregressive_flow}
        if kind not in builders:
            raise ValueError(f"kind must be one of {tuple(builders)}; got {kind!r}")
        if transformer not in ("spline", "affine"):
            raise ValueError(f"transformer must be 'spline' or 'affine'; got {transformer!r}")
        density_symmetry = symmetry if density_symmetry is None else density_symmetry
        for name, value in (("symmetry", symmetry), ("density_symmetry", density_symmetry)):
            if value not in SYMMETRIES:
                raise ValueError(f"{name} must be one of {SYMMETRIES}; got {value!r}")
        if scale_velocities and symmetry != "spherical":
            raise ValueError("scale_velocities needs symmetry='spherical' (the dispersion "
                             f"profiles are radial); got symmetry={symmetry!r}")
        if density_model not in DENSITY_MODELS:
            raise ValueError(f"density_model must be one of {DENSITY_MODELS}; "
                             f"got {density_model!r}")
        if density_model == "logistic_mixture" and density_symmetry != "spherical":
            raise ValueError("density_model='logistic_mixture' needs a 1-D density factor "
                             f"(density_symmetry='spherical'); got {density_symmetry!r}")
        dy, dc = _POSITION_DIM[density_symmetry], _POSITION_DIM[symmetry]
        du = _VELOCITY_DIM[symmetry]
        k_d, k_v = jax.random.split(key)
        bijection = (RationalQuadraticSpline(knots=knots, interval=interval)
                     if transformer == "spline" else Affine())
        common = dict(transformer=bijection,
                      flow_layers=flow_layers, nn_width=nn_width, nn_depth=nn_depth,
                      nn_activation=nn_activation)
        self.density = (_logistic_mixture(density_components)
                        if density_model == "logistic_mixture"
                        else builders[kind](k_d, base_dist=StandardNormal((dy,)), **common))
        self.velocity = builders[kind](k_v, base_dist=StandardNormal((du,)), cond_dim=dc,
                                       **common)
        dtype = jnp.result_type(float)
        self.y_loc, self.y_scale = jnp.zeros(dy, dtype), jnp.ones(dy, dtype)
        self.c_loc, self.c_scale = jnp.zeros(dc, dtype), jnp.ones(dc, dtype)
        self.u_loc, self.u_scale = jnp.zeros(du, dtype), jnp.ones(du, dtype)
        self.z0 = jnp.ones((), dtype)
        self.profile = VelocityProfile() if scale_velocities else None
        self.symmetry, self.density_symmetry = symmetry, density_symmetry
        self.chunk_size = int(chunk_size)
        self.architecture = (("symmetry", symmetry), ("density_symmetry", density_symmetry),
                             ("kind", kind), ("transformer", transformer),
                             ("flow_layers", flow_layers), ("knots", knots),
                             ("interval", float(interval)), ("nn_width", nn_width),
                             ("nn_depth", nn_depth), ("nn_activation", nn_activation),
                             ("scale_velocities", bool(scale_velocities)),
                             ("density_model", density_model),
                             ("density_components", int(density_components)))

    def __check_init__(self):
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")

    @property
    def constructor_arguments(self) -> dict[str, typing.Any]:
        """The arguments that rebuild this DF's structure (for model files)."""
        return {**dict(self.architecture), "chunk_size": self.chunk_size}

    # ------------------------------------------------------------------ factors

    def _fixed(self):
        return jax.lax.stop_gradient((self.y_loc, self.y_scale, self.c_loc, self.c_scale,
                                      self.u_loc, self.u_scale, self.z0))

    def _condition(self, x):
        _, _, c_loc, c_scale, _, _, z0 = self._fixed()
        return (_position_coords(self.symmetry, x, z0)[0] - c_loc) / c_scale

    def _log_density_chunk(self, x):
        y_loc, y_scale, *_, z0 = self._fixed()
        y, log_j = _position_coords(self.density_symmetry, x, z0)
        lp = paramax.unwrap(self.density).log_prob((y - y_loc) / y_scale)
        return lp - jnp.sum(jnp.log(y_scale)) + log_j

    def _scaled(self, x, v, inverse: bool = False):
        """Velocities in units of the local dispersions (`inverse`: back) and the
        log-determinant of that map of v; the identity without `scale_velocities`."""
        if self.profile is None:
            return v, jnp.zeros(x.shape[0], x.dtype)
        return self.profile.scaled_cartesian(x, v, inverse=inverse)

    def _log_velocity_chunk(self, x, v):
        *_, u_loc, u_scale, _ = self._fixed()
        v, log_s = self._scaled(x, v)
        u, log_j = _velocity_coords(self.symmetry, x, v)
        lp = paramax.unwrap(self.velocity).log_prob((u - u_loc) / u_scale, self._condition(x))
        return lp - jnp.sum(jnp.log(u_scale)) + log_j + log_s

    def _sample_positions(self, key, m):
        y_loc, y_scale, *_, z0 = self._fixed()
        k_y, k_a = jax.random.split(key)
        y = paramax.unwrap(self.density).sample(k_y, (m,)) * y_scale + y_loc
        return _position_expand(self.density_symmetry, k_a, y, z0)

    def _sample_velocities(self, key, x):
        *_, u_loc, u_scale, _ = self._fixed()
        k_u, k_a = jax.random.split(key)
        u = paramax.unwrap(self.velocity).sample(k_u, (), condition=self._condition(x))
        return self._scaled(x, _velocity_expand(self.symmetry, k_a, x, u * u_scale + u_loc),
                            inverse=True)[0]

    # ------------------------------------------------------------------ training

    @property
    def standardisation(self) -> tuple[Array, ...]:
        """The coordinates' locations and scales, z₀ and the velocity profile's coefficients
        (with `scale_velocities`), set by `standardise`."""
        profile = () if self.profile is None else (self.profile.knots, self.profile.coef)
        return (self.y_loc, self.y_scale, self.c_loc, self.c_scale, self.u_loc, self.u_scale,
                self.z0, *profile)

    def standardise(self, w: Float[Array, "n 6"], weights: Float[Array, " n"] | None = None):
        """Copy whose coordinate locations and scales are the (weighted) means and standard
        deviations of the reduced coordinates of `w`, and z₀ the 0.2 quantile of |z|; with
        `scale_velocities`, the velocity profile is fitted to `w` first and the velocity
        coordinates are those of the scaled velocities.

        **Arguments:**

        - `w`: training points, shape `(n, 6)`.
        - `weights`: optional non-negative per-point weights, shape `(n,)`.

        **Returns:** the standardised DF.
        """
        w = jnp.asarray(w).reshape(-1, 6)
        x, v = w[:, :3], w[:, 3:]
        p = None
        if weights is not None:
            p = jnp.asarray(weights, w.dtype)
            if p.shape != w.shape[:1]:
                raise ValueError(f"weights must have shape ({w.shape[0]},), got {p.shape}")
            p = p / jnp.sum(p)
        profile = ()
        if self.profile is not None:
            fitted = self.profile.fit_points(w, p)
            v = fitted.scaled_cartesian(x, v)[0]
            profile = (fitted.knots, fitted.coef)
        dtype = self.y_loc.dtype
        z0 = jnp.quantile(jnp.abs(x[:, 2]), 0.2).astype(dtype)
        if not bool(z0 > 0):
            raise ValueError("the training positions need a spread in z (z₀ = 0)")
        stats = []
        for coords in (_position_coords(self.density_symmetry, x, z0)[0],
                       _position_coords(self.symmetry, x, z0)[0],
                       _velocity_coords(self.symmetry, x, v)[0]):
            loc, scale = _moments(coords, p)
            if not bool(jnp.all(scale > 0)) or not bool(jnp.all(jnp.isfinite(loc))):
                raise ValueError("every reduced coordinate of the training data must be "
                                 "finite and vary")
            stats += [loc.astype(dtype), scale.astype(dtype)]
        return eqx.tree_at(lambda d: d.standardisation, self, (*stats, z0, *profile))

    def batch_log_prob(self, w: Float[Array, "m 6"]) -> Float[Array, " m"]:
        """Joint log-density of a batch in one pass (what training differentiates)."""
        return self._log_prob_chunk(w)

    def objective_loss(self, objective, w, key):
        """The joint negative log-likelihood, ν's on the positions plus p's on the
        velocities given the positions, for a likelihood objective."""
        if not objective.likelihood:
            raise ValueError(f"ConditionalDF trains by maximum likelihood; got "
                             f"{type(objective).__name__}")
        return -jnp.mean(self.batch_log_prob(w))
