"""A Plummer mock as a CSV catalogue and as a Gadget-4 HDF5 snapshot (issue 26's bar).

    python -m benchmarks.snapshot_mock OUT_DIR [--n 8192] [--seed 0]

The demo's Plummer sphere (`deeppot.mocks.plummer`, r_max = 10) in physical units: b = 1 kpc
and M = 1 kpc (km/s)² / G ≈ 2.325e5 M☉, so that its numbers in `galactic` units (kpc, km/s)
are the demo's and the demo's network sizes and input scale apply unchanged. Written twice:

- `OUT_DIR/mock.csv`: the catalogue as it is (centred, at rest), its `meta` recording the
  true `Plummer` potential in galactic units;
- `OUT_DIR/mock.hdf5`: the same stars tilted by 30° about the x axis, moved to
  (12 000, −3 000, 500) kpc and given a bulk velocity (100, −50, 20) km/s, written as a
  Gadget-4 snapshot with h = 0.7 in kpc/h, km/s and 1e10 M☉/h (comoving, a = 1, float64),
  with the true `Acceleration` and `Potential` at each star.

`deeppot run benchmarks/configs/snapshot-{csv,hdf5}.toml` then runs the demo-quick recipe on
each (docs/results.md, "A simulation snapshot").
"""

import argparse
from pathlib import Path

import jax
import numpy as np

import deeppot as dp

TILT_DEG = 30.0
OFFSET_KPC = np.array([12000.0, -3000.0, 500.0])
BULK_KMS = np.array([100.0, -50.0, 20.0])


def tilt_matrix(deg: float = TILT_DEG) -> np.ndarray:
    """The rotation by `deg` degrees about the x axis."""
    t = np.deg2rad(deg)
    return np.array([[1.0, 0.0, 0.0], [0.0, np.cos(t), -np.sin(t)],
                     [0.0, np.sin(t), np.cos(t)]])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--n", type=int, default=8192)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    unit = dp.mocks.plummer(jax.random.key(args.seed), args.n)
    G = dp.units.galactic.G
    truth = dp.Plummer(m_tot=1.0 / G, r_s=1.0, units="galactic")
    x, v = np.asarray(unit.x), np.asarray(unit.v)  # kpc, km/s: G M / b = 1 (km/s)²
    meta = {**unit.meta, "truth": dp.mocks.describe_potential(truth),
            "generator": "benchmarks.snapshot_mock"}
    meta.pop("truth_df")  # the DF of the unit sphere, not of this one's units
    csv = dp.PhaseSpaceCatalog(x, v, meta=meta, units="galactic")
    csv.save(args.out / "mock.csv")

    R = tilt_matrix()
    acc = np.asarray(truth.acceleration(x))
    phi = np.asarray(truth.potential(x))
    moved = dp.PhaseSpaceCatalog(
        x @ R.T + OFFSET_KPC, v @ R.T + BULK_KMS, np.full(len(x), 1.0 / G / len(x)),
        units="galactic", truth={"acceleration": acc @ R.T, "potential": phi})
    dp.snapshot.write_snapshot(moved, args.out / "mock.hdf5", hubble=0.7)
    print(f"wrote {args.out / 'mock.csv'} and {args.out / 'mock.hdf5'} ({len(x)} stars)")


if __name__ == "__main__":
    main()
