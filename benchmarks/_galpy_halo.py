"""A cusped, radially anisotropic NFW halo sampled by galpy ("data from another code").

galpy's `osipkovmerrittNFWdf` is f(Q) with Q = −E − L²/(2 r_a²) in an NFW potential; in
galpy's natural units (G = 1) `NFWPotential(amp=m_s, a=r_s)` is `deeppot.NFW(m_s, r_s)`.
Its exact scores follow from the chain rule through (E, L), with ∂ln f/∂E and ∂ln f/∂L by
central differences of galpy's DF:

    ∂ln f/∂x = f_E ∇Φ + f_L (v × L)/|L|,    ∂ln f/∂v = f_E v + f_L (L × x)/|L|.
"""

from __future__ import annotations

import numpy as np

import deeppot as dp

M_S, R_S = 1.0, 1.0


def _galpy_df(ra: float, rmax: float):
    from galpy.df import osipkovmerrittNFWdf
    from galpy.potential import NFWPotential

    pot = NFWPotential(amp=M_S, a=R_S)
    return pot, osipkovmerrittNFWdf(pot=pot, ra=ra, rmax=rmax)


def nfw_halo(seed: int, n: int, *, ra: float = 2.0, rmax: float = 30.0):
    """`n` stars of the Osipkov–Merritt NFW halo (scale radius 1, anisotropy radius `ra`,
    truncated at `rmax`), as a `PhaseSpaceCatalog`, and the truth `deeppot.NFW`."""
    _, df = _galpy_df(ra, rmax)
    np.random.seed(seed)
    orbits = df.sample(n=int(n))
    x = np.stack([orbits.x(use_physical=False), orbits.y(use_physical=False),
                  orbits.z(use_physical=False)], -1)
    v = np.stack([orbits.vx(use_physical=False), orbits.vy(use_physical=False),
                  orbits.vz(use_physical=False)], -1)
    meta = {"generator": "galpy.df.osipkovmerrittNFWdf", "seed": seed,
            "params": {"m_s": M_S, "r_s": R_S, "ra": ra, "rmax": rmax},
            "truth": {"class": "NFW", "m_s": M_S, "r_s": R_S}}
    return dp.PhaseSpaceCatalog(x, v, meta=meta), dp.NFW(m_s=M_S, r_s=R_S)


class ExactScores:
    """Exact scores of the galpy halo DF at phase-space points (float64, numpy)."""

    def __init__(self, ra: float = 2.0, rmax: float = 30.0):
        self.pot, self.df = _galpy_df(ra, rmax)
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
