"""Cusped, radially anisotropic halos sampled by galpy ("data from another code"); the
whole family of such systems is `_galpy_zoo` (`bench_zoo`), whose `hernquist-om-ra1` member
is `hernquist_halo`.

- `hernquist_halo`: galpy's `osipkovmerrittHernquistdf`, f(Q) with Q = −E − L²/(2 r_a²)
  in a Hernquist potential (ρ ∝ r⁻¹ inside r_s, r⁻⁴ outside; finite mass, no
  truncation). In galpy's natural units (G = 1) `HernquistPotential(amp=2M, a=r_s)` is
  `deeppot.Hernquist(M, r_s)`. Its exact scores are those of `deeppot.flows.HernquistDF(
  r_a=...)`, a closed form written independently of galpy: the two agree (Stein's
  identity on galpy's stars, `python -m benchmarks.check_equilibrium`; ln f to a constant,
  `tests/unit/test_analytic_dfs.py`), and galpy's stars stay in equilibrium in the
  potential.
- `nfw_halo`: galpy's `osipkovmerrittNFWdf` truncated at `rmax` (the halo of earlier
  results). **Not an equilibrium**: galpy draws radii from the truncated NFW density and
  velocities from f(Q) at each radius, which do not agree with each other, so in the
  NFW potential the stars' radial velocity dispersion at 1–3 r_s grows by 16% within
  20 time units (`python -m benchmarks.check_equilibrium`), and galpy's f(Q) is not the
  density of its own stars (Stein's identity fails beyond r_s). Kept to reproduce the
  earlier rows and that diagnosis.
"""

from __future__ import annotations

import numpy as np

import deeppot as dp

from ._galpy_zoo import stars_of as _stars

M_S, R_S = 1.0, 1.0


def hernquist_halo(seed: int, n: int, *, ra: float = 1.0):
    """`n` stars of galpy's Osipkov–Merritt Hernquist halo (mass 1, scale radius 1,
    anisotropy radius `ra`) as a `PhaseSpaceCatalog`, and the truth `deeppot.Hernquist`."""
    from galpy.df import osipkovmerrittHernquistdf
    from galpy.potential import HernquistPotential

    df = osipkovmerrittHernquistdf(pot=HernquistPotential(amp=2.0 * M_S, a=R_S), ra=ra)
    np.random.seed(seed)
    x, v = _stars(df.sample(n=int(n)))
    meta = {"generator": "galpy.df.osipkovmerrittHernquistdf", "seed": seed,
            "params": {"m_tot": M_S, "r_s": R_S, "ra": ra},
            "truth": {"class": "Hernquist", "m_tot": M_S, "r_s": R_S}}
    return dp.PhaseSpaceCatalog(x, v, meta=meta), dp.Hernquist(m_tot=M_S, r_s=R_S)


def hernquist_exact_scores(ra: float = 1.0):
    """The exact scores of `hernquist_halo(..., ra)`: `(w) -> (∂ln f/∂x, ∂ln f/∂v)`."""
    import jax.numpy as jnp

    truth = dp.flows.HernquistDF(m_tot=M_S, r_s=R_S, r_a=ra)

    def scores(w):
        return tuple(np.asarray(a) for a in truth.score(jnp.asarray(w)))

    return scores


def _galpy_nfw_df(ra: float, rmax: float):
    from galpy.df import osipkovmerrittNFWdf
    from galpy.potential import NFWPotential

    pot = NFWPotential(amp=M_S, a=R_S)
    return pot, osipkovmerrittNFWdf(pot=pot, ra=ra, rmax=rmax)


def nfw_halo(seed: int, n: int, *, ra: float = 2.0, rmax: float = 30.0):
    """`n` stars of galpy's Osipkov–Merritt NFW halo truncated at `rmax` (not an
    equilibrium: see the module docstring) and the NFW it was drawn for."""
    _, df = _galpy_nfw_df(ra, rmax)
    np.random.seed(seed)
    x, v = _stars(df.sample(n=int(n)))
    meta = {"generator": "galpy.df.osipkovmerrittNFWdf", "seed": seed,
            "params": {"m_s": M_S, "r_s": R_S, "ra": ra, "rmax": rmax},
            "truth": {"class": "NFW", "m_s": M_S, "r_s": R_S}}
    return dp.PhaseSpaceCatalog(x, v, meta=meta), dp.NFW(m_s=M_S, r_s=R_S)


class NFWGalpyScores:
    """The scores of galpy's NFW f(Q) at phase-space points (float64, numpy), by the chain
    rule through (E, L) with central differences of galpy's DF:

        ∂ln f/∂x = f_E ∇Φ + f_L (v × L)/|L|,    ∂ln f/∂v = f_E v + f_L (L × x)/|L|.

    They are not the scores of `nfw_halo`'s stars (see the module docstring)."""

    def __init__(self, ra: float = 2.0, rmax: float = 30.0):
        self.pot, self.df = _galpy_nfw_df(ra, rmax)
        self.truth = dp.NFW(m_s=M_S, r_s=R_S)

    def _ln_f(self, e, big_l):
        return np.log(self.df((e, big_l), use_physical=False))

    def __call__(self, w):
        w = np.asarray(w, np.float64)
        x, v = w[:, :3], w[:, 3:]
        r = np.linalg.norm(x, axis=-1)
        phi = -M_S * np.log1p(r / R_S) / r
        e = 0.5 * np.sum(v**2, -1) + phi
        lvec = np.cross(x, v)
        big_l = np.linalg.norm(lvec, axis=-1)
        he, hl = 1e-5 * np.maximum(np.abs(e), 1e-3), 1e-5 * np.maximum(big_l, 1e-3)
        f_e = (self._ln_f(e + he, big_l) - self._ln_f(e - he, big_l)) / (2 * he)
        f_l = (self._ln_f(e, big_l + hl) - self._ln_f(e, big_l - hl)) / (2 * hl)
        grad_phi = np.asarray(self.truth.gradient(x))
        dl_dx = np.cross(v, lvec) / big_l[:, None]
        dl_dv = np.cross(lvec, x) / big_l[:, None]
        dx = f_e[:, None] * grad_phi + f_l[:, None] * dl_dx
        dv = f_e[:, None] * v + f_l[:, None] * dl_dv
        return dx, dv


def main(argv=None):
    """`python -m benchmarks._galpy_halo [PATH]`: write `hernquist_halo(0, 2^16)` as a
    catalogue file (its meta records the truth), the input of benchmarks/configs/halo.toml."""
    from pathlib import Path

    from ._harness import parser

    p = parser(main.__doc__, __file__)
    p.add_argument("path", nargs="?", default="runs/halo/hernquist_om.npz")
    path = Path(p.parse_args(argv).path)
    path.parent.mkdir(parents=True, exist_ok=True)
    print(hernquist_halo(0, 2**16)[0].save(path))


if __name__ == "__main__":
    main()
