"""A zoo of spherical systems sampled by galpy's distribution functions, each with its true
force and density from galpy ("data from another code", issue 28).

Each `Member` names a galpy DF (isotropic Plummer / Hernquist / NFW, King, Osipkov–Merritt,
constant-β, and tracer populations whose density `denspot` is not the potential's), the
potential the stars move in, and whether the DF is cut off in energy at `rmax`.

**Energy truncation.** galpy's `rmax` sets f = 0 for E > Φ(rmax), but `sample` draws the
radii from the *untruncated* density (cut at rmax) and the velocities from the truncated f
at each radius. The two disagree: the truncated DF's own density ν(r) = ∫ f d³v falls below
the untruncated ρ(r) well inside rmax (by 20% at r = rmax/2 for a Hernquist sphere cut at
10 r_s), so galpy's stars are not an equilibrium (the earlier NFW halo's radial dispersion
grew by 16% in 20 time units, `benchmarks/_galpy_halo.py`). `sample` here keeps each of
galpy's stars with probability ν(r)/ρ(r), with ν from galpy's own moment integral
`vmomentdensity(r, 0, 0)`: the kept stars have the radial density of the DF they were
drawn from, so they are a sample of it (velocities are drawn from f at each radius).

Everything is in galpy's natural units (G = 1), where galpy's `HernquistPotential(amp=2M,
a)` is `deeppot.Hernquist(M, a)`, `NFWPotential(amp=M, a)` is `deeppot.NFW(M, a)` and
`PlummerPotential(amp=M, b)` is `deeppot.Plummer(M, b)`: a catalogue's `meta["truth"]`
records that potential when deeppot has the family (not for King), so the pipeline's own
report has a truth; `true_force_density` is galpy's truth for every member.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable

import numpy as np

import deeppot as dp

__all__ = ["MEMBERS", "Member", "catalog", "df_moments", "sample", "stars_of",
           "true_force_density"]


def _hernquist(m=1.0, a=1.0):
    from galpy.potential import HernquistPotential

    return HernquistPotential(amp=2.0 * m, a=a)


def _nfw(m=1.0, a=1.0):
    from galpy.potential import NFWPotential

    return NFWPotential(amp=m, a=a)


def _plummer(m=1.0, b=1.0):
    from galpy.potential import PlummerPotential

    return PlummerPotential(amp=m, b=b)


@dataclasses.dataclass(frozen=True)
class Member:
    """One zoo system.

    - `name`: the member's name (`bench_zoo --member NAME`).
    - `label`: a few words for the table.
    - `build`: `(pot, denspot) -> galpy DF` (built on each call).
    - `pot`: `() -> galpy potential` the stars move in; `denspot`: `() -> galpy potential`
      whose density the stars follow (`None`: `pot`'s, a self-consistent system).
    - `truth`: deeppot's description of the potential (`meta["truth"]`), or `None` when
      deeppot has no such family (King).
    - `rmax`: the DF's energy truncation radius (`None`: none); `sample` then corrects
      galpy's radii (module docstring).
    - `relaxed`: the issue's 5% bar applies (r_a ≤ r_s or β ≥ 0.5) instead of 3%.
    """

    name: str
    label: str
    build: Callable
    pot: Callable
    truth: dict | None
    denspot: Callable | None = None
    rmax: float | None = None
    relaxed: bool = False

    def df(self):
        """The galpy DF."""
        return self.build(self.pot(), self.density())

    def density(self):
        """The galpy potential whose density the stars follow (untruncated)."""
        return (self.denspot or self.pot)()


def _h_truth(m=1.0, a=1.0):
    return {"class": "Hernquist", "m_tot": m, "r_s": a}


def _members() -> dict[str, Member]:
    from galpy import df as g
    from galpy.potential import KingPotential

    nfw = {"class": "NFW", "m_s": 1.0, "r_s": 1.0}
    halo = {"class": "NFW", "m_s": 5.0, "r_s": 5.0}
    out = [
        Member("plummer-iso", "isotropic Plummer",
               lambda p, d: g.isotropicPlummerdf(pot=p), _plummer,
               {"class": "Plummer", "m_tot": 1.0, "b": 1.0}),
        Member("hernquist-iso", "isotropic Hernquist",
               lambda p, d: g.isotropicHernquistdf(pot=p), _hernquist, _h_truth()),
        Member("hernquist-iso-rmax10", "isotropic Hernquist, E cut at Φ(10 r_s)",
               lambda p, d: g.eddingtondf(pot=p, rmax=10.0), _hernquist, _h_truth(),
               rmax=10.0),
        Member("nfw-iso-rmax20", "isotropic NFW, E cut at Φ(20 r_s)",
               lambda p, d: g.isotropicNFWdf(pot=p, rmax=20.0), _nfw, nfw, rmax=20.0),
        Member("king-w5", "King W0 = 5, r_t = 10 (E cut at Φ(r_t))",
               lambda p, d: g.kingdf(W0=5.0, M=1.0, rt=10.0),
               lambda: KingPotential(W0=5.0, M=1.0, rt=10.0), None),
        Member("hernquist-om-ra0.5", "Osipkov–Merritt Hernquist r_a = 0.5 r_s",
               lambda p, d: g.osipkovmerrittHernquistdf(pot=p, ra=0.5), _hernquist,
               _h_truth(), relaxed=True),
        Member("hernquist-om-ra1", "Osipkov–Merritt Hernquist r_a = r_s (the halo)",
               lambda p, d: g.osipkovmerrittHernquistdf(pot=p, ra=1.0), _hernquist,
               _h_truth(), relaxed=True),
        Member("hernquist-om-ra5", "Osipkov–Merritt Hernquist r_a = 5 r_s",
               lambda p, d: g.osipkovmerrittHernquistdf(pot=p, ra=5.0), _hernquist,
               _h_truth()),
        Member("nfw-om-ra3-rmax20", "Osipkov–Merritt NFW r_a = 3 r_s, E cut at Φ(20 r_s)",
               lambda p, d: g.osipkovmerrittNFWdf(pot=p, ra=3.0, rmax=20.0), _nfw, nfw,
               rmax=20.0),
        Member("hernquist-beta0.5", "constant-β Hernquist β = 0.5 (radial)",
               lambda p, d: g.constantbetaHernquistdf(pot=p, beta=0.5), _hernquist,
               _h_truth(), relaxed=True),
        Member("hernquist-beta-0.3", "constant-β Hernquist β = −0.3 (tangential)",
               lambda p, d: g.constantbetaHernquistdf(pot=p, beta=-0.3), _hernquist,
               _h_truth()),
        Member("tracer-hernquist-in-nfw", "isotropic Hernquist tracers (a = 1) in an NFW "
               "halo (M_s = 5, r_s = 5)",
               lambda p, d: g.eddingtondf(pot=p, denspot=d), lambda: _nfw(5.0, 5.0), halo,
               denspot=_hernquist),
        Member("tracer-plummer-om-in-nfw", "Osipkov–Merritt Plummer tracers (b = 1, r_a = 2) "
               "in an NFW halo (M_s = 5, r_s = 5), E cut at Φ(20)",
               lambda p, d: g.osipkovmerrittdf(pot=p, denspot=d, ra=2.0, rmax=20.0),
               lambda: _nfw(5.0, 5.0), halo, denspot=_plummer, rmax=20.0),
    ]
    return {m.name: m for m in out}


class _Lazy(dict):
    """`MEMBERS`, built on first use (galpy is imported then)."""

    def _fill(self):
        if not dict.__len__(self):
            with warnings.catch_warnings():  # galpy's notes on C extensions it lacks
                warnings.simplefilter("ignore")
                self.update(_members())

    def __getitem__(self, k):
        self._fill()
        if not dict.__contains__(self, k):
            raise KeyError(f"no zoo member {k!r}; the members are {', '.join(self)}")
        return dict.__getitem__(self, k)

    def __iter__(self):
        self._fill()
        return dict.__iter__(self)

    def __len__(self):
        self._fill()
        return dict.__len__(self)

    def __contains__(self, k):
        self._fill()
        return dict.__contains__(self, k)

    def keys(self):
        self._fill()
        return dict.keys(self)

    def values(self):
        self._fill()
        return dict.values(self)

    def items(self):
        self._fill()
        return dict.items(self)


MEMBERS: dict[str, Member] = _Lazy()


def stars_of(orbits) -> tuple[np.ndarray, np.ndarray]:
    """Positions and velocities (n, 3) of galpy `Orbit`s, in galpy's natural units."""
    x = np.stack([orbits.x(use_physical=False), orbits.y(use_physical=False),
                  orbits.z(use_physical=False)], -1)
    v = np.stack([orbits.vx(use_physical=False), orbits.vy(use_physical=False),
                  orbits.vz(use_physical=False)], -1)
    return x, v


def df_moments(df, r: np.ndarray) -> dict[str, np.ndarray]:
    """The DF's own density ν(r) = ∫ f d³v and its dispersions ⟨v_r²⟩, ⟨v_t²⟩ (v_t the full
    tangential speed) at radii `r`, by galpy's moment integrals."""
    r = np.atleast_1d(np.asarray(r, np.float64))
    nu = np.array([df.vmomentdensity(ri, 0, 0, use_physical=False) for ri in r])
    vr2 = np.array([df.vmomentdensity(ri, 2, 0, use_physical=False) for ri in r])
    vt2 = np.array([df.vmomentdensity(ri, 0, 2, use_physical=False) for ri in r])
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"nu": nu, "vr2": vr2 / nu, "vt2": vt2 / nu}


def _keep_probability(m: Member, df) -> Callable[[np.ndarray], np.ndarray]:
    """r ↦ ν(r)/ρ(r): the truncated DF's density over the density galpy draws radii from."""
    grid = np.geomspace(1e-3, m.rmax, 160)
    nu = df_moments(df, grid)["nu"]
    rho = np.asarray(m.density().dens(grid, 0.0, use_physical=False), np.float64)
    ratio = np.clip(nu / rho, 0.0, 1.0)
    return lambda r: np.interp(np.log(np.maximum(r, grid[0])), np.log(grid), ratio)


def sample(member: Member | str, seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` stars `(x, v)` of the member's DF, seeded by `seed` (numpy's global generator,
    which galpy draws from); energy-truncated members are corrected (module docstring)."""
    m = MEMBERS[member] if isinstance(member, str) else member
    df = m.df()
    np.random.seed(seed)
    if m.rmax is None:
        return stars_of(df.sample(n=int(n)))
    keep = _keep_probability(m, df)
    xs, vs, have = [], [], 0
    while have < n:
        x, v = stars_of(df.sample(n=int(1.3 * (n - have)) + 64))
        ok = np.random.uniform(size=len(x)) < keep(np.linalg.norm(x, axis=-1))
        xs.append(x[ok])
        vs.append(v[ok])
        have += int(ok.sum())
    return np.concatenate(xs)[:n], np.concatenate(vs)[:n]


def catalog(member: Member | str, seed: int, n: int) -> dp.PhaseSpaceCatalog:
    """`sample` as a `PhaseSpaceCatalog` whose meta records the generator and, when deeppot
    has the family, the true potential."""
    m = MEMBERS[member] if isinstance(member, str) else member
    x, v = sample(m, seed, n)
    meta = {"generator": f"galpy zoo: {m.name}", "seed": seed, "zoo_member": m.name}
    if m.truth is not None:
        meta["truth"] = dict(m.truth)
    return dp.PhaseSpaceCatalog(x, v, meta=meta)


def true_force_density(member: Member | str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """galpy's force −∇Φ (n, 3) and mass density ρ (n,) of the member's potential at `x`."""
    from galpy.potential import evaluateDensities, evaluaterforces

    m = MEMBERS[member] if isinstance(member, str) else member
    pot = m.pot()
    x = np.asarray(x, np.float64)
    big_r, z = np.hypot(x[:, 0], x[:, 1]), x[:, 2]
    r = np.linalg.norm(x, axis=-1)
    fr = np.asarray(evaluaterforces(pot, big_r, z, use_physical=False), np.float64)
    rho = np.asarray(evaluateDensities(pot, big_r, z, use_physical=False), np.float64)
    return fr[:, None] * x / r[:, None], rho
