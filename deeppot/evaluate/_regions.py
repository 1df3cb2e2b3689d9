"""Where to measure: masks of regions over residuals (radial shells, cylinders, dense
parts) and grids of positions (a midplane, an (R, z) plane)."""

import numpy as np


def radial_region(res, r_min: float, r_max: float):
    """Mask of points with r_min ≤ r ≤ r_max."""
    return (res["r"] >= r_min) & (res["r"] <= r_max)


def cylinder_region(res, R_min: float, R_max: float, z_max: float):
    """Mask of points with R_min ≤ R ≤ R_max and |z| ≤ z_max (e.g. a bar's region)."""
    return (res["R"] >= R_min) & (res["R"] <= R_max) & (np.abs(res["z"]) <= z_max)


def density_region(res, fraction: float = 0.1):
    """Mask of points where the true density exceeds `fraction` of its maximum there."""
    return res["rho_true"] > fraction * np.nanmax(res["rho_true"])


def midplane_grid(extent: float, n: int = 64, z: float = 0.0) -> np.ndarray:
    """An n × n grid of positions in the plane at height z, |x|, |y| ≤ extent; (n, n, 3)."""
    u = np.linspace(-extent, extent, n)
    X, Y = np.meshgrid(u, u, indexing="xy")
    return np.stack([X, Y, np.full_like(X, z)], axis=-1)


def rz_grid(R_max: float, z_max: float, n_R: int = 48, n_z: int = 48, n_phi: int = 16):
    """Positions on an (R, z) grid repeated over n_phi azimuths; shape (n_z, n_R, n_phi, 3).

    Average residuals over the azimuth axis (-1 of the residual arrays) for the paper's
    azimuthally averaged (R, z) maps.
    """
    R = np.linspace(R_max / n_R, R_max, n_R)
    z = np.linspace(-z_max, z_max, n_z)
    phi = np.linspace(0, 2 * np.pi, n_phi, endpoint=False)
    Z, RR, P = np.meshgrid(z, R, phi, indexing="ij")
    return np.stack([RR * np.cos(P), RR * np.sin(P), Z], axis=-1)
