"""The evaluation plots are readable: labelled axes, the accuracy region, the truth."""

import numpy as np
import pytest

import deeppot as dp
from deeppot import evaluate


@pytest.fixture
def res():
    rng = np.random.default_rng(0)
    r = np.exp(rng.uniform(-3, 2, 200))
    return {"r": r, "phi": rng.normal(size=200) * 1e-2, "force": rng.normal(size=200) * 1e-2,
            "density": rng.normal(size=200) * 1e-1}


def test_radial_plot_labels_axes_and_marks_the_region(res, tmp_path):
    fig = evaluate.plot_radial(res, tmp_path / "r.png", region=(0.1, 3.0))
    assert (tmp_path / "r.png").stat().st_size > 0
    for ax in fig.axes:
        assert ax.get_xlabel() == "r" and ax.get_ylabel()
        assert [p.get_label() for p in ax.patches] == ["accuracy region"]


def test_maps_label_their_coordinates_and_draw_the_region(tmp_path):
    image = np.random.default_rng(1).normal(size=(8, 8))
    fig = evaluate.plot_maps({"a": image, "b": image}, (-3, 3, -3, 3), tmp_path / "m.png",
                             labels=("R", "z"), region=(0.1, 3.0))
    maps = [ax for ax in fig.axes if ax.get_title() in ("a", "b")]
    assert [(ax.get_xlabel(), ax.get_ylabel()) for ax in maps] == [("R", "z")] * 2
    assert all(len(ax.patches) == 2 for ax in maps)


def test_profiles_of_the_truth_itself_coincide(tmp_path):
    truth = dp.MiyamotoNagai(m_tot=1.0, a=1.0, b=0.1)
    fig = evaluate.plot_profiles(truth, tmp_path / "p.png", r=np.geomspace(0.05, 10, 40),
                                 truth=truth, region=(0.1, 3.0))
    phi_ax, vc_ax = fig.axes
    assert (phi_ax.get_xlabel(), vc_ax.get_xlabel()) == ("r", "R (z = 0)")
    assert vc_ax.get_ylabel() == "v_c"
    lines = {line.get_label(): line.get_ydata() for line in vc_ax.lines
             if line.get_label() in ("truth", "fitted")}
    np.testing.assert_allclose(lines["fitted"], lines["truth"], rtol=1e-5)


def test_radial_profiles_give_the_known_circular_speed():
    plummer = dp.Plummer(m_tot=1.0, r_s=1.0)
    r = np.array([0.5, 1.0, 2.0])
    prof = evaluate.radial_profiles(plummer, r)
    np.testing.assert_allclose(prof["v_c"], r / (1 + r**2) ** 0.75, rtol=1e-5)
    np.testing.assert_allclose(prof["phi"], -1 / np.sqrt(1 + r**2), rtol=1e-5)


def test_profiles_refuse_bad_radii(tmp_path):
    with pytest.raises(ValueError, match="positive radii"):
        evaluate.plot_profiles(dp.Plummer(), tmp_path / "p.png", r=np.array([0.0, 1.0]))
