"""lcdash.io: readers for every format, column guessing, and each validation rule on real files."""

from __future__ import annotations

import io as pyio
import json
import zipfile

import numpy as np
import pandas as pd
import pytest

from lcdash import io
from lcdash.errors import ValidationError
from lcdash.store import Store


def lc_frame(object_id="star1", n=8, band="V", t0=100.0, seed=0, **cols):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "object_id": [object_id] * n,
            "band": [band] * n,
            "mjd": t0 + np.arange(n, dtype=float),
            "mag": 15 + rng.normal(0, 0.1, n),
            "magerr": np.full(n, 0.05),
        }
    )
    for k, v in cols.items():
        df[k] = v
    return df


def write(df: pd.DataFrame, path):
    """Write a frame in the format named by the path's suffix."""
    suffix = path.suffix
    if suffix == ".csv":
        df.to_csv(path, index=False)
    elif suffix == ".parquet":
        df.to_parquet(path, index=False)
    else:
        from astropy.table import Table

        fmt = {".fits": "fits", ".vot": "votable", ".ecsv": "ascii.ecsv"}[suffix]
        Table.from_pandas(df).write(path, format=fmt)
    return path


FORMATS = [".csv", ".parquet", ".fits", ".vot", ".ecsv"]


def rules(report, action=None):
    return {p.rule for p in report.problems if action is None or p.action.startswith(action)}


# -- reading -------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", FORMATS)
def test_each_format_is_read_and_ingested(tmp_path, suffix):
    df = pd.concat([lc_frame("a", 6), lc_frame("b", 7, seed=1)], ignore_index=True)
    path = write(df, tmp_path / f"obs{suffix}")
    frame = io.read_table(path)
    assert len(frame) == 13
    obs, objs, report = io.prepare([(path.name, frame)])
    assert report.ok, report.summary()
    with Store(tmp_path / "s.duckdb") as store:
        result = store.ingest(obs, objs, survey="fmt", validation=report)
        assert result.observations_new == 13
        lc = store.lightcurve(int(store.objects(limit=1)["oid"][0]))
        np.testing.assert_allclose(lc.mag, df.loc[df.object_id == "a", "mag"], rtol=1e-6)


def test_read_table_from_buffer_needs_name(tmp_path):
    df = lc_frame()
    buf = pyio.BytesIO(df.to_csv(index=False).encode())
    assert len(io.read_table(buf, "upload.csv")) == len(df)
    with pytest.raises(ValidationError, match="needs a file name"):
        io.read_table(pyio.BytesIO(b"a,b\n1,2\n"))
    with pytest.raises(ValidationError, match="unknown file type"):
        io.read_table(tmp_path / "x.docx")


def test_unreadable_file_names_the_file(tmp_path):
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(ValidationError, match="broken.parquet: cannot read as parquet"):
        io.read_table(bad)


def test_gzipped_csv_path_and_buffer(tmp_path):
    import gzip

    df = lc_frame()
    path = tmp_path / "lc.csv.gz"
    with gzip.open(path, "wt") as fh:
        df.to_csv(fh, index=False)
    assert len(io.read_table(path)) == len(df)
    assert len(io.read_table(pyio.BytesIO(path.read_bytes()), "upload.csv.gz")) == len(df)
    assert io.file_stem("lc.csv.gz") == "lc"


def test_csv_ids_keep_leading_zeros(tmp_path):
    path = tmp_path / "zeros.csv"
    path.write_text("id,mjd,mag,filter\n007,1.0,15.0,1\n007,2.0,15.1,1\n")
    frame = io.read_table(path)
    assert frame["id"].tolist() == ["007", "007"] and frame["filter"].tolist() == ["1", "1"]
    assert frame["mjd"].dtype.kind == "f"


def test_whitespace_text_with_comments(tmp_path):
    path = tmp_path / "star7.dat"
    path.write_text("# HJD mag err\nhjd mag err\n1.0 15.1 0.02\n2.0 15.2 0.02\n")
    frame = io.read_table(path)
    assert list(frame.columns) == ["hjd", "mag", "err"] and len(frame) == 2


def test_folder_and_zip_of_one_file_per_object(tmp_path):
    folder = tmp_path / "lcs"
    folder.mkdir()
    for i in range(3):
        lc_frame(n=6, seed=i).drop(columns=["object_id", "band"]).to_csv(
            folder / f"OGLE-{i}.csv", index=False
        )
    frames = io.read_inputs(folder)
    obs, objs, report = io.prepare(frames, band="I")
    assert report.ok
    assert sorted(objs["object_id"]) == ["OGLE-0", "OGLE-1", "OGLE-2"]
    assert set(obs["band"]) == {"I"}
    zpath = tmp_path / "lcs.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f"inner/{f.name}")
        zf.writestr("README.md", "not a table")
    zframes = io.read_inputs(zpath)
    assert [n for n, _ in zframes] == [n for n, _ in frames]
    with open(zpath, "rb") as fh:  # a buffer, as the app's uploader gives
        assert len(io.read_zip(fh, "upload.zip")) == 3


# -- mapping ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "columns, expected",
    [
        (["oid", "mjd", "mag", "magerr", "fid"], ["oid", "mjd", "mag", "magerr", "fid"]),
        (
            ["sourceid", "hjd", "magnitude", "sigma", "filter"],
            ["sourceid", "hjd", "magnitude", "sigma", "filter"],
        ),
        (["ID", "BJD", "Mag", "e_mag", "Band"], ["ID", "BJD", "Mag", "e_mag", "Band"]),
        (
            ["object_id", "time_mjd", "mag", "mag_err", "band"],
            ["object_id", "time_mjd", "mag", "mag_err", "band"],
        ),
        (["id", "jd", "mag", "err"], ["id", "jd", "mag", "err", None]),
        (["time", "mag_auto", "magerr_auto"], [None, "time", "mag_auto", "magerr_auto", None]),
    ],
)
def test_guess_mapping(columns, expected):
    assert list(io.guess_mapping(columns).values()) == expected


def test_guess_objects_mapping():
    m = io.guess_mapping(
        ["object_id", "label", "period", "ra_deg", "dec_deg", "survey", "amp"], kind="objects"
    )
    assert m == {
        "object_id": "object_id",
        "label": "label",
        "period": "period",
        "ra": "ra_deg",
        "dec": "dec_deg",
        "survey": "survey",
    }


def test_parse_mapping():
    assert io.parse_mapping(["time=HJD", "Vmag=mag", "band="]) == {"time": "HJD", "mag": "Vmag", "band": None}
    parsed = io.parse_mapping(["object_id=star", "type=label", "objects.object_id=name"])
    assert io.split_mapping(parsed) == ({"object_id": "star"}, {"label": "type", "object_id": "name"})
    with pytest.raises(ValidationError, match="expected ROLE=COLUMN"):
        io.parse_mapping(["foo=bar"])


def test_explicit_mapping_overrides_guess(tmp_path):
    df = lc_frame().rename(columns={"mag": "V", "mjd": "when"})
    df["mag"] = 99.0  # a decoy the guess would pick
    obs, _, report = io.prepare(df, {"time": "when", "mag": "V"})
    assert report.ok
    np.testing.assert_allclose(obs["mag"], df["V"])


# -- validation rules, each on a real file ------------------------------------------------------------


def prepare_file(path, **kw):
    return io.prepare([(path.name, io.read_table(path))], **kw)


def test_missing_column_is_an_error(tmp_path):
    path = write(lc_frame().drop(columns=["mag"]), tmp_path / "nomag.csv")
    obs, _, report = prepare_file(path)
    assert not report.ok and len(obs) == 0
    err = report.errors[0]
    assert err.rule == "missing_column" and err.file == "nomag.csv"
    with pytest.raises(ValidationError, match="nomag.csv.*no magnitude column"):
        report.raise_if_errors()


def test_unknown_mapped_column(tmp_path):
    path = write(lc_frame(), tmp_path / "obs.parquet")
    _, _, report = prepare_file(path, mapping={"time": "HJD"})
    assert rules(report, "error") == {"unknown_column"}
    assert report.errors[0].column == "HJD"


def test_non_numeric_values_name_rows(tmp_path):
    df = lc_frame().astype({"mag": object})
    df.loc[2, "mag"] = "bright"
    df.loc[5, "mag"] = "15,3"
    path = write(df, tmp_path / "text.csv")
    _, _, report = prepare_file(path)
    err = report.errors[0]
    assert (err.rule, err.file, err.column, err.rows) == ("non_numeric", "text.csv", "mag", [3, 6])
    assert "'bright'" in err.message
    with pytest.raises(ValidationError, match=r"text.csv, column 'mag', rows 3, 6"):
        report.raise_if_errors()


def test_flux_column_name_is_an_error(tmp_path):
    df = lc_frame().drop(columns=["mag"]).assign(flux=np.full(8, 1200.0))
    path = write(df, tmp_path / "flux.parquet")
    _, _, report = prepare_file(path)
    err = report.errors[0]
    assert err.rule == "flux" and err.column == "flux" and "2.5 log10" in err.message


def test_flux_values_in_mag_column_are_an_error(tmp_path):
    df = lc_frame().assign(mag=np.linspace(800, 5000, 8))
    path = write(df, tmp_path / "fluxvalues.ecsv")
    _, _, report = prepare_file(path)
    assert rules(report, "error") == {"flux"}
    assert report.errors[0].file == "fluxvalues.ecsv"


def test_negative_errors_are_an_error(tmp_path):
    df = lc_frame()
    df.loc[4, "magerr"] = -0.1
    path = write(df, tmp_path / "neg.fits")
    _, _, report = prepare_file(path)
    err = report.errors[0]
    assert (err.rule, err.column, err.rows) == ("negative_error", "magerr", [5])


def test_nan_and_inf_rows(tmp_path):
    df = lc_frame(n=10)
    df.loc[1, "mjd"] = np.nan
    df.loc[3, "mag"] = np.inf
    df.loc[4, "mag"] = np.nan
    df.loc[6, "magerr"] = np.nan
    df.loc[7, "magerr"] = 0.0
    path = write(df, tmp_path / "gaps.vot")
    obs, _, report = prepare_file(path)
    assert report.ok
    by_rule = {p.rule: p for p in report.problems}
    assert by_rule["missing_time"].rows == [2] and by_rule["missing_time"].action == "fixed: rows dropped"
    assert by_rule["missing_mag"].rows == [4, 5]
    assert by_rule["missing_error"].rows == [7] and by_rule["missing_error"].action == "fixed: stored as NULL"
    assert by_rule["zero_error"].rows == [8]
    assert len(obs) == 7
    assert obs["mag_err"].isna().sum() == 2
    with Store(tmp_path / "s.duckdb") as store:
        store.ingest(obs, survey="gaps")
        nulls = store.sql("SELECT count(*) AS n FROM observations WHERE mag_err IS NULL")["n"][0]
        assert nulls == 2
        batch = store.read_batch(store.objects()["oid"])
        assert np.isnan(batch.mag_err[0, : batch.length[0]]).sum() == 2


def test_sentinel_magnitudes_dropped(tmp_path):
    df = lc_frame(n=10)
    df.loc[[2, 7], "mag"] = [99.0, -99.999]
    path = write(df, tmp_path / "sentinel.csv")
    obs, _, report = prepare_file(path)
    p = report.problems[0]
    assert (p.rule, p.rows, p.action) == ("sentinel_mag", [3, 8], "fixed: rows dropped")
    assert len(obs) == 8 and obs["mag"].max() < 20


def test_unsorted_times_are_sorted(tmp_path):
    df = lc_frame(n=8).iloc[[0, 1, 5, 2, 3, 4, 6, 7]]
    path = write(df, tmp_path / "unsorted.csv")
    obs, _, report = prepare_file(path)
    p = report.problems[0]
    assert (p.rule, p.action, p.rows) == ("unsorted_time", "fixed: sorted by time", [4])
    assert np.all(np.diff(obs["time"]) > 0)


def test_interleaved_objects_are_grouped_without_a_report(tmp_path):
    a, b = lc_frame("a", 6), lc_frame("b", 6, seed=1)
    df = pd.concat([a, b]).sort_values("mjd", kind="stable")
    obs, objs, report = io.prepare(df)
    assert report.problems == [] and list(objs["object_id"]) == ["a", "b"]
    assert list(obs["object_id"]) == ["a"] * 6 + ["b"] * 6


def test_duplicate_rows_dropped_and_duplicate_times_averaged(tmp_path):
    df = lc_frame(n=8)
    exact = df.iloc[[2]]
    other = df.iloc[[5]].assign(mag=df.mag[5] + 0.2, magerr=0.05)
    path = write(pd.concat([df, exact, other], ignore_index=True), tmp_path / "dups.parquet")
    obs, _, report = prepare_file(path)
    by_rule = {p.rule: p for p in report.problems}
    assert by_rule["duplicate_row"].rows == [9] and by_rule["duplicate_row"].action == "fixed: dropped"
    assert by_rule["duplicate_time"].rows == [10] and by_rule["duplicate_time"].action == "fixed: averaged"
    assert len(obs) == 8
    assert obs["mag"][5] == pytest.approx(df.mag[5] + 0.1)
    assert obs["mag_err"][5] == pytest.approx(np.sqrt(2 * 0.05**2) / 2)
    _, _, strict = prepare_file(path, duplicates="error")
    assert [p.rule for p in strict.errors] == ["duplicate_time"]


def test_duplicate_groups_of_three(tmp_path):
    df = lc_frame(n=8)
    trio = df.iloc[[3, 3]].assign(mag=[df.mag[3] + 0.3, df.mag[3] + 0.6], magerr=[0.05, np.nan])
    pair = df.iloc[[6]]
    path = write(
        pd.concat([df, trio, pair], ignore_index=True).sample(frac=1, random_state=2), tmp_path / "d.csv"
    )
    obs, _, report = prepare_file(path)
    by_rule = {p.rule: p for p in report.problems}
    assert by_rule["duplicate_row"].count == 1 and by_rule["duplicate_time"].count == 2
    assert len(obs) == 8
    assert obs["mag"][3] == pytest.approx(df.mag[3] + 0.3)
    assert np.isnan(obs["mag_err"][3])  # one of the three had no error: the mean has none either
    assert obs["mag"][6] == pytest.approx(df.mag[6]) and obs["mag_err"][6] == pytest.approx(0.05)


def test_too_few_observations_dropped(tmp_path):
    df = pd.concat([lc_frame("long", 8), lc_frame("short", 3, seed=2)], ignore_index=True)
    path = write(df, tmp_path / "short.ecsv")
    obs, objs, report = prepare_file(path)
    p = report.problems[0]
    assert p.rule == "too_few_observations" and p.action.startswith("fixed")
    assert p.rows == [9, 10, 11] and "short" in p.message
    assert list(objs["object_id"]) == ["long"] and set(obs["object_id"]) == {"long"}
    obs, objs, _ = prepare_file(path, min_obs=3)
    assert len(objs) == 2


def test_objects_table_rules(tmp_path):
    obs_df = pd.concat([lc_frame("a"), lc_frame("b", seed=1)], ignore_index=True)
    objects = pd.DataFrame(
        {
            "ID": ["a", "b", "ghost"],
            "class": ["RRab", None, "EW"],
            "P": [0.5, np.nan, 1.0],
            "amplitude": [0.7, 0.3, 0.1],
        }
    )
    obs, objs, report = io.prepare(
        obs_df, objects=objects, objects_mapping={"object_id": "ID", "period": "P"}, objects_name="cat.csv"
    )
    assert report.ok
    p = report.problems[0]
    assert (p.rule, p.file, p.rows) == ("unknown_object", "cat.csv", [3])
    assert list(objs["label"]) == ["RRab", None]
    assert objs["period"][0] == 0.5 and np.isnan(objs["period"][1])
    assert json.loads(objs["meta"][0]) == {"amplitude": 0.7}
    dup = pd.concat([objects, objects.iloc[[0]]], ignore_index=True)
    _, _, bad = io.prepare(obs_df, objects=dup, objects_mapping={"object_id": "ID"})
    assert [e.rule for e in bad.errors] == ["duplicate_object"] and bad.errors[0].rows == [4]


def test_multi_file_report_names_the_file(tmp_path):
    good = write(lc_frame("a"), tmp_path / "a.csv")
    bad_df = lc_frame("b").astype({"mjd": object})
    bad_df.loc[1, "mjd"] = "yesterday"
    bad = write(bad_df, tmp_path / "b.csv")
    _, _, report = io.prepare(io.read_inputs([good, bad]))
    assert [(e.file, e.column, e.rows) for e in report.errors] == [("b.csv", "mjd", [2])]


def test_report_frame_and_summary(tmp_path):
    df = lc_frame(n=8).iloc[[1, 0, 2, 3, 4, 5, 6, 7]]
    _, _, report = io.prepare(df)
    frame = report.to_frame()
    assert list(frame.columns) == ["file", "column", "rows", "count", "rule", "action", "message"]
    assert frame["rule"].tolist() == ["unsorted_time"]
    assert "0 error(s), 1 fix(es)" in report.summary()
