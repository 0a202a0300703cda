"""Hostile input and faults (issue 17): input limits, objects never merged by accident, one
transaction per ingest command, one-line messages, validation gaps, untrusted encoder folders,
job state of killed workers, and a seeded fuzz of bad inputs through the CLI.

(The SQL sandbox's walls and bounds are in tests/test_sql.py.)"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lcdash import io
from lcdash.cli import main
from lcdash.errors import LcdashError, ModelError, ValidationError, user_message
from lcdash.store import Store

REPO = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, command: str = "ingest") -> str:
    """The CLI's error: the last stderr line, with no traceback anywhere."""
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"lcdash {command}:"), err
    return last


def long_table(n_obj=3, n=8, seed=0, **extra) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "object_id": np.repeat([f"s{i}" for i in range(n_obj)], n),
            "time": np.tile(np.arange(n, dtype=float), n_obj) + 50_000,
            "mag": 15 + rng.normal(0, 0.1, n_obj * n),
            "mag_err": 0.05,
            **extra,
        }
    )


def table_hashes(db) -> dict:
    """A hash of every table's content (sorted rows), to show a failed command changed nothing."""
    with Store(db, read_only=True) as store:
        cur = store.cursor()
        try:
            names = [
                r[0]
                for r in cur.execute(
                    "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' ORDER BY 1"
                ).fetchall()
            ]
            out = {}
            for name in names:
                rows = cur.execute(f'SELECT * FROM "{name}"').fetchall()
                out[name] = hashlib.sha1(repr(sorted(map(repr, rows))).encode()).hexdigest()
            return out
        finally:
            cur.close()


@pytest.fixture
def filled_db(tmp_path):
    db = tmp_path / "store.duckdb"
    with Store(db) as store:
        obs, objs, _ = io.prepare(long_table())
        store.ingest(obs, objs, survey="base")
    return db


# -- 3. input limits --------------------------------------------------------------------------------


def test_long_row_csv_is_refused_before_parsing(tmp_path, capsys, filled_db):
    path = tmp_path / "wide.csv"
    path.write_text("id,time,mag\na,1,15\n" + ",".join(["1"] * 50_000) + "\n")  # a 100 KB row
    with pytest.raises(ValidationError, match="line 3 is longer than"):
        io.read_inputs(path)
    before = table_hashes(filled_db)
    code, _, err = run(capsys, "ingest", path, "--db", filled_db)
    assert code == 1 and "longer than" in one_line_error(err)
    assert table_hashes(filled_db) == before


def test_too_many_columns(tmp_path):
    path = tmp_path / "cols.csv"
    path.write_text(",".join(f"c{i}" for i in range(io.MAX_COLUMNS + 5)) + "\n")
    with pytest.raises(ValidationError, match="columns; the limit is"):
        io.read_inputs(path)


def bomb_rows(n: int) -> bytes:
    return b"object_id,time,mag\n" + b"".join(b"a,%d,15.0\n" % i for i in range(n))


def test_gzip_and_zip_bombs_stop_at_the_limit(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(io, "MAX_INPUT_BYTES", 2 * 2**20)
    data = bomb_rows(400_000)  # about 6 MB, compressing to about 1 MB... a small bomb
    gz = tmp_path / "bomb.csv.gz"
    gz.write_bytes(gzip.compress(data))
    zp = tmp_path / "bomb.zip"
    with zipfile.ZipFile(zp, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("lcs/a.csv", data)
    for path in (gz, zp):
        assert path.stat().st_size < len(data) / 2
        with pytest.raises(ValidationError, match=r"more than 2 MB of data \(after decompression\)"):
            io.read_inputs(path)
    # a zip whose directory under-states the size is stopped while decompressing
    with zipfile.ZipFile(tmp_path / "liar.zip", "w", zipfile.ZIP_STORED) as z:
        z.writestr("a.csv", data[: 2**20])
        z.writestr("b.csv", data[: 2**20])
        z.writestr("c.csv", data[: 2**20])
    with pytest.raises(ValidationError, match="after decompression"):
        io.read_inputs(tmp_path / "liar.zip")
    db = tmp_path / "new.duckdb"
    code, _, err = run(capsys, "ingest", gz, "--db", db)
    assert code == 1 and "after decompression" in one_line_error(err)
    assert not db.exists()  # a store this command created is removed again


def test_row_limit_checked_from_the_parquet_footer(tmp_path, monkeypatch):
    path = tmp_path / "rows.parquet"
    long_table(n_obj=50, n=100).to_parquet(path)
    monkeypatch.setattr(io, "MAX_ROWS", 1000)
    with pytest.raises(ValidationError, match="5,000 rows; the limit for one ingest is 1,000"):
        io.read_inputs(path)


# -- 4. untrusted encoder folders -------------------------------------------------------------------


def small_encoder(tmp_path, name="enc"):
    from lcdash.models.astromer import Astromer, AstromerConfig
    from lcdash.weights import save_encoder

    cfg = AstromerConfig.astromer2(n_layers=1, d_model=16, d_ff=16, n_heads=2)
    return save_encoder(Astromer(cfg), cfg, tmp_path / name)


def set_config(folder: Path, config) -> None:
    meta = json.loads((folder / "config.json").read_text())
    meta["config"] = config
    (folder / "config.json").write_text(json.dumps(meta))


def test_config_is_checked_against_the_header_before_building(tmp_path):
    """A config claiming a 0.5-billion-parameter model next to a 5k-parameter safetensors file:
    refused from the header, and the process never allocates the model."""
    folder = small_encoder(tmp_path)
    meta = json.loads((folder / "config.json").read_text())
    set_config(folder, {**meta["config"], "d_model": 4096, "d_ff": 16384, "n_layers": 8})
    code = (
        "import json, sys\n"
        "from lcdash.errors import ModelError\n"
        "from lcdash.weights import load_encoder\n"
        "try:\n"
        "    load_encoder(sys.argv[1]); msg = 'loaded'\n"
        "except ModelError as exc:\n"
        "    msg = str(exc)\n"
        "rss = int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) / 1024\n"
        "print(json.dumps({'msg': msg, 'rss_mb': rss}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(folder)], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert "does not match its configuration" in got["msg"], got
    assert got["rss_mb"] < 1500, got  # the model itself would need about 2.7 GB


@pytest.mark.parametrize(
    "config, match",
    [
        (42, "JSON object"),
        ([], "JSON object"),
        ({"n_heads": 0}, "n_heads must be between"),
        ({"n_layers": "4"}, "n_layers must be a whole number"),
        ({"window": 0}, "window must be between"),
        ({"d_model": 16, "n_heads": 3}, "not divisible"),
        ({"dropout": float("nan")}, "dropout must be a number"),
        ({"arch": ["x"]}, "arch must be text"),
    ],
)
def test_bad_encoder_configs_are_one_line_model_errors(tmp_path, capsys, config, match):
    folder = small_encoder(tmp_path)
    meta = json.loads((folder / "config.json").read_text())
    set_config(folder, config if not isinstance(config, dict) else {**meta["config"], **config})
    from lcdash.weights import load_encoder

    with pytest.raises(ModelError, match=match) as info:
        load_encoder(folder)
    assert len(str(info.value).splitlines()) == 1
    obs = tmp_path / "obs.csv"
    long_table().to_csv(obs, index=False)
    code, _, err = run(capsys, "embed-file", obs, "--model", folder, "--out", tmp_path / "e.parquet")
    assert code == 1 and match.split()[0] in one_line_error(err, "embed-file")


def test_whole_config_file_not_an_object(tmp_path):
    from lcdash.weights import load_encoder

    folder = small_encoder(tmp_path)
    for text in ("42", "[]", "{", '"x"'):
        (folder / "config.json").write_text(text)
        with pytest.raises(ModelError) as info:
            load_encoder(folder)
        assert len(str(info.value).splitlines()) == 1


def test_nan_weights_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    from lcdash.weights import load_encoder

    folder = small_encoder(tmp_path)
    state = load_file(str(folder / "model.safetensors"))
    state = {k: v * float("nan") if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ModelError, match="NaN or infinite"):
        load_encoder(folder)


# -- 7. official archives that are damaged ------------------------------------------------------------


def test_damaged_weight_archives_give_one_line(shared, tmp_path, capsys):
    src = shared / "weights" / "astromer"
    # a CRC-corrupt zip: bytes flipped inside the compressed checkpoint data
    data = bytearray((src / "macho_a0.zip").read_bytes())
    with zipfile.ZipFile(src / "macho_a0.zip") as z:
        info = z.getinfo("macho/weights.data-00000-of-00001")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 100
    data[start : start + 64] = bytes(64)
    (tmp_path / "crc.zip").write_bytes(bytes(data))
    code, _, err = run(capsys, "weights", "import", tmp_path / "crc.zip", "--out", tmp_path / "o1")
    assert code == 1 and "damaged" in one_line_error(err, "weights")
    # conf.json that is not JSON, not an object, or says 0 heads
    with zipfile.ZipFile(src / "atlas.zip") as z:
        z.extractall(tmp_path / "atlas")
    folder = tmp_path / "atlas" / "atlas"
    for text, match in (("{", "not valid JSON"), ("[]", "JSON object"), ('{"heads": 0}', "n_heads")):
        (folder / "conf.json").write_text(text)
        code, _, err = run(capsys, "weights", "import", folder, "--out", tmp_path / "o2")
        assert code == 1 and match in one_line_error(err, "weights")
    (folder / "conf.json").write_text('{"heads": 4, "max_obs": 200}')
    # a weights.h5 with one tensor of the wrong shape
    import h5py

    with h5py.File(folder / "weights.h5", "r+") as f:
        g = f["encoder"]
        name = next(
            n.decode() if isinstance(n, bytes) else n for n in g.attrs["weight_names"] if "WQ" in str(n)
        )
        shape = g[name].shape
        del g[name]
        g.create_dataset(name, data=np.zeros((shape[0] + 3, *shape[1:]), np.float32))
    code, _, err = run(capsys, "weights", "import", folder, "--out", tmp_path / "o3")
    assert code == 1 and "shape" in one_line_error(err, "weights")


# -- 5. objects never merged by accident ----------------------------------------------------------------


@pytest.mark.parametrize("id_name", ["ÏD", "", "id;drop table objects", None])
def test_unrecognised_id_column_stops_the_ingest(tmp_path, capsys, filled_db, id_name):
    df = long_table(n_obj=4)
    df = df.drop(columns="object_id") if id_name is None else df.rename(columns={"object_id": id_name})
    path = tmp_path / "many.csv"
    df.to_csv(path, index=False)
    before = table_hashes(filled_db)
    code, _, err = run(capsys, "ingest", path, "--db", filled_db)
    line = one_line_error(err)
    assert code == 1 and "looks like several stars" in line and "--map object_id" in line
    assert table_hashes(filled_db) == before


def test_same_file_name_in_two_folders_or_zip_folders(tmp_path, capsys, filled_db):
    one = long_table(n_obj=1).drop(columns="object_id")
    for sub in ("a", "b"):
        (tmp_path / "lcs" / sub).mkdir(parents=True)
        one.assign(time=one["time"] + (0 if sub == "a" else 0.5)).to_csv(
            tmp_path / "lcs" / sub / "star.csv", index=False
        )
    with zipfile.ZipFile(tmp_path / "lcs.zip", "w") as z:
        for sub in ("a", "b"):
            z.write(tmp_path / "lcs" / sub / "star.csv", f"top/{sub}/star.csv")
    before = table_hashes(filled_db)
    for path in (tmp_path / "lcs", tmp_path / "lcs.zip"):
        code, _, err = run(capsys, "ingest", path, "--db", filled_db)
        line = one_line_error(err)
        assert code == 1 and "a/star.csv, b/star.csv" in line and "'star'" in line
    assert table_hashes(filled_db) == before
    # the explicit override merges them into one object
    code, _, _ = run(capsys, "ingest", tmp_path / "lcs", "--db", filled_db, "--allow-merge", "--survey", "m")
    assert code == 0
    with Store(filled_db, read_only=True) as store:
        assert store.objects(survey="m")["n_obs"].tolist() == [16]


def test_one_id_with_other_values_at_the_same_times_in_two_files():
    a = long_table(n_obj=1)
    _, _, report = io.prepare([("x/1.csv", a), ("y/2.csv", a.assign(mag=a["mag"] + 1))])
    assert [p.rule for p in report.errors] == ["same_object_files"]
    assert "x/1.csv and y/2.csv" in report.errors[0].message
    _, _, report = io.prepare([("x/1.csv", a), ("y/2.csv", a)])  # a re-export: exact copies dropped
    assert report.ok and report.n_rows_kept == len(a)


def test_unsorted_times_in_a_file_named_object(tmp_path):
    one = long_table(n_obj=1).drop(columns="object_id").iloc[::-1]
    _, _, report = io.prepare([("star.csv", one)])
    assert [p.rule for p in report.errors] == ["ambiguous_object"]
    _, _, report = io.prepare([("star.csv", one)], allow_merge=True)
    assert report.ok and report.n_objects == 1


def test_unmapped_band_column_warns(tmp_path):
    """Issue 11, defect 2: star, t_eros, Rmag, sig, filt with two bands; only time and error mapped."""
    rng = np.random.default_rng(1)
    t = np.arange(10.0)
    df = pd.DataFrame(
        {
            "star": np.repeat(["e1", "e2"], 20),
            "t_eros": np.tile(np.r_[t, t], 2),
            "Rmag": 15 + rng.normal(0, 0.1, 40),
            "sig": 0.02,
            "filt": np.tile(np.repeat(["R", "B"], 10), 2),
        }
    )
    _, _, report = io.prepare(df, {"time": "t_eros", "mag_err": "sig"})
    warn = [p for p in report.warnings if p.rule == "possible_band_column"]
    assert warn and "'filt'" in warn[0].message and "--map band=COLUMN" in warn[0].message
    assert "warning" in report.summary()
    assert "warning" in set(report.to_frame()["action"].str.split(":").str[0])
    # mapped, there is nothing to warn about
    _, _, report = io.prepare(df, {"time": "t_eros", "mag_err": "sig", "band": "filt"})
    assert not report.warnings and report.n_rows_kept == 40


# -- 6. one transaction per command -----------------------------------------------------------------------


def test_ingest_of_two_datasets_is_all_or_nothing(tmp_path, capsys, filled_db):
    ds1, ds2 = tmp_path / "DS1", tmp_path / "DS2"
    ds1.mkdir()
    ds2.mkdir()
    long_table(n_obj=2, seed=3).assign(object_id=lambda d: "x" + d["object_id"]).to_parquet(
        ds1 / "observations.parquet"
    )
    bad = long_table(n_obj=2).assign(mag=lambda d: d["mag"].astype(str))
    bad.loc[3, "mag"] = "oops"
    bad.to_parquet(ds2 / "observations.parquet")
    before = table_hashes(filled_db)
    code, _, err = run(capsys, "ingest", ds1, ds2, "--db", filled_db)
    line = one_line_error(err)
    assert code == 1 and str(ds2) in line and "nothing was ingested" in line
    assert table_hashes(filled_db) == before
    code, _, _ = run(capsys, "ingest", ds1, "--db", filled_db)
    assert code == 0 and table_hashes(filled_db) != before


# -- 7. one line, never a traceback -------------------------------------------------------------------------


def test_huge_numbers_binary_ids_and_odd_files_are_one_line(tmp_path, capsys, filled_db):
    import pyarrow as pa
    import pyarrow.parquet as pq

    cases = {}
    big = tmp_path / "big.csv"
    big.write_text("object_id,time,mag\n" + "".join(f"a,{i},1{'9' * 400}\n" for i in range(6)))
    cases[big] = "no observations are left"
    binid = tmp_path / "binid.parquet"
    pq.write_table(
        pa.table({"id": pa.array([b"\xff\xfe"] * 6), "time": np.arange(6.0), "mag": np.full(6, 15.0)}), binid
    )
    cases[binid] = "binary values"
    dup = tmp_path / "dup.parquet"
    pq.write_table(
        pa.table([pa.array(["a"] * 6), np.arange(6.0), np.arange(6.0)], names=["id", "mag", "mag"]), dup
    )
    cases[dup] = "appears more than once"
    ecsv = tmp_path / "trunc.ecsv"
    ecsv.write_text(
        "# %ECSV 1.0\n# ---\n# datatype:\n# - {name: id, datatype: string}\n# - {name: time\nid time\n"
    )
    cases[ecsv] = "cannot read as ecsv"
    before = table_hashes(filled_db)
    for path, match in cases.items():
        code, _, err = run(capsys, "ingest", path, "--db", filled_db)
        assert code == 1 and match in one_line_error(err), (path, err)
    assert table_hashes(filled_db) == before


def test_user_message_is_a_plain_sentence():
    msg = user_message(OverflowError("int too large to convert to float"))
    assert not msg.startswith("OverflowError") and "too large" in msg
    assert user_message(LcdashError("x.csv: bad\nsecond line")) == "x.csv: bad second line"
    assert user_message(ValueError("")) == "an unexpected problem"


def test_unexpected_errors_in_the_cli_are_one_line(monkeypatch, capsys, tmp_path):
    import lcdash.cli.data as data_cli

    def boom(args):
        raise OverflowError("int too large to convert to float")

    monkeypatch.setattr(data_cli, "cmd_info", boom)
    code, _, err = run(capsys, "info", "--db", tmp_path / "x.duckdb")
    assert (
        code == 1 and err.strip() == "lcdash info: a number is too large (int too large to convert to float)"
    )


# -- 8. validation gaps --------------------------------------------------------------------------------------


def test_out_of_range_error_is_stored_as_null(tmp_path):
    df = long_table(n_obj=1)
    df.loc[2, "mag_err"] = 1e300
    obs, objs, report = io.prepare(df)
    assert [p.rule for p in report.fixes] == ["missing_error"]
    with Store(tmp_path / "s.duckdb") as store:
        store.ingest(obs, objs, survey="t")
        errs = store.lightcurve(1).mag_err
    assert np.isnan(errs[2]) and np.isfinite(np.delete(errs, 2)).all()


def test_parquet_timestamps_become_mjd(tmp_path):
    df = long_table(n_obj=1).assign(time=pd.date_range("2020-01-01", periods=8, freq="D", tz="UTC"))
    df.to_parquet(tmp_path / "ts.parquet")
    obs, _, report = io.prepare(io.read_inputs(tmp_path / "ts.parquet"))
    assert report.ok and [p.rule for p in report.fixes] == ["timestamp_time"]
    assert obs["time"].iloc[0] == 58849.0  # 2020-01-01 00:00 UTC


@pytest.mark.parametrize("kind", ["bool_mag", "list_id", "struct_id"])
def test_booleans_lists_and_structs_are_refused(tmp_path, kind):
    df = long_table(n_obj=1)
    if kind == "bool_mag":
        df["mag"] = np.arange(8) % 2 == 0
    elif kind == "list_id":
        df["object_id"] = [[1]] * 8
    else:
        df["object_id"] = [{"a": 1}] * 8
    df.to_parquet(tmp_path / "x.parquet")
    _, _, report = io.prepare(io.read_inputs(tmp_path / "x.parquet"))
    assert not report.ok and report.errors[0].rule in ("non_numeric", "bad_id")


def test_header_only_tables_are_an_error(tmp_path, capsys, filled_db):
    (tmp_path / "h.csv").write_text("object_id,time,mag\n")
    long_table().iloc[:0].to_parquet(tmp_path / "h.parquet")
    for path in (tmp_path / "h.csv", tmp_path / "h.parquet"):
        code, _, err = run(capsys, "ingest", path, "--db", filled_db)
        assert code == 1 and "no data rows" in one_line_error(err)


def test_fits_with_an_empty_first_table(tmp_path):
    from astropy.io import fits
    from astropy.table import Table

    data = Table.from_pandas(long_table(n_obj=2))
    empty = Table.from_pandas(long_table(n_obj=2).iloc[:0])
    hdul = fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(empty), fits.table_to_hdu(data)])
    hdul.writeto(tmp_path / "two.fits")
    frame = io.read_table(tmp_path / "two.fits")
    assert len(frame) == 16
    hdul = fits.HDUList(
        [fits.PrimaryHDU(), fits.table_to_hdu(empty), fits.table_to_hdu(data), fits.table_to_hdu(data)]
    )
    hdul.writeto(tmp_path / "three.fits")
    with pytest.raises(ValidationError, match="the first table HDU is empty"):
        io.read_table(tmp_path / "three.fits")


# -- 9. job state of a killed worker ----------------------------------------------------------------


def test_jobs_list_beside_the_app_shows_a_killed_worker_failed(tmp_path, capsys):
    from lcdash.jobs import (
        JOB_FILE,
        PROGRESS_FILE,
        WORKER_FILE,
        _proc_start,
        job_from_folder,
        write_json_atomic,
    )

    db = tmp_path / "app.duckdb"
    Store(db).close()
    folder = tmp_path / "jobs" / "j1"
    folder.mkdir(parents=True)
    write_json_atomic(folder / JOB_FILE, {"job_id": "j1", "kind": "embed", "params": {}})
    write_json_atomic(folder / PROGRESS_FILE, {"step": 772, "total": 16195, "message": "embedding"})
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    write_json_atomic(folder / WORKER_FILE, {"pid": worker.pid, "start": _proc_start(worker.pid)})
    assert job_from_folder(folder).state == "running"
    # the "app": another process holding the store's write lock
    app = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from lcdash.store import Store; s = Store(sys.argv[1]); "
            "print('ready', flush=True); time.sleep(600)",
            str(db),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert app.stdout.readline().strip() == "ready"
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        code, out, _ = run(capsys, "jobs", "list", "--db", db)
        assert code == 0 and "in use by another process" in out
        row = next(line for line in out.splitlines() if line.startswith("j1"))
        assert "failed" in row and "running" not in row
        assert "worker lost" in out
    finally:
        app.kill()
        app.wait()


def test_explore_shows_a_failed_umap_job_with_a_retry(app_db):
    from streamlit.testing.v1 import AppTest

    from lcdash.store import jobs as jobs_table

    with Store(app_db) as store:
        encoder = store.sql("SELECT name FROM encoders ORDER BY name")["name"][0]
        params = {
            "encoder": encoder,
            "embedding": "weighted",
            "n_neighbors": 7,
            "min_dist": 0.1,
            "metric": "cosine",
            "seed": 0,
        }
        jobs_table.insert_job(
            store, "lost-umap", "project", params, str(app_db.parent / "jobs" / "x"), "failed"
        )
        jobs_table.update_job(
            store, "lost-umap", error="worker lost: the worker process was killed by SIGKILL"
        )
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
    at.switch_page("pages/explore.py")
    at.run()
    at.number_input(key="explore_nn").set_value(7)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("UMAP job for these settings failed" in e.value and "worker lost" in e.value for e in at.error)
    assert at.button(key="explore_project_go").label == "Retry the UMAP job"


# -- the fuzz: a few hundred bad inputs through `lcdash ingest` ------------------------------------

FORMATS = ("csv", "tsv", "txt", "parquet", "fits", "votable", "ecsv")


def write_table(df: pd.DataFrame, path: Path, fmt: str) -> None:
    if fmt in ("csv", "tsv", "txt"):
        df.to_csv(path, index=False, sep={"csv": ",", "tsv": "\t", "txt": ","}[fmt])
    elif fmt == "parquet":
        df.to_parquet(path)
    else:
        from astropy.table import Table

        t = Table.from_pandas(df.astype({c: str for c in df.columns if df[c].dtype == object}))
        t.write(path, format={"fits": "fits", "votable": "votable", "ecsv": "ascii.ecsv"}[fmt])


def bad_input(rng: np.random.Generator, case: int, folder: Path) -> Path:
    """One input that must be refused: a sound table spoilt by one of the mutations below, in one
    of the formats, sometimes gzipped or zipped."""
    fmt = FORMATS[case % len(FORMATS)]
    mutation = MUTATIONS[(case // len(FORMATS)) % len(MUTATIONS)]
    n_obj, n = int(rng.integers(1, 4)), int(rng.integers(6, 12))
    df = long_table(n_obj=n_obj, n=n, seed=int(rng.integers(1 << 30)))
    df["object_id"] = [f"c{case}_{x}" for x in df["object_id"]]
    path = folder / f"case{case}.{fmt}"
    raw = mutation(rng, df, path, fmt)
    if raw is not None:
        path.write_bytes(raw)
    wrap = rng.integers(5)
    if wrap == 0 and fmt != "parquet":
        gz = path.with_name(path.name + ".gz")
        gz.write_bytes(gzip.compress(path.read_bytes()))
        return gz
    if wrap == 1:
        zp = path.with_suffix(".zip")
        with zipfile.ZipFile(zp, "w", zipfile.ZIP_DEFLATED) as z:
            z.write(path, f"inner/{path.name}")
        return zp
    return path


def _no_mag(rng, df, path, fmt):
    write_table(df.rename(columns={"mag": f"q{rng.integers(100)}x", "mag_err": "w"}), path, fmt)


def _text_in_time(rng, df, path, fmt):
    df = df.astype({"time": str})
    df.loc[int(rng.integers(len(df))), "time"] = rng.choice(["x!", "1,5", "--7", "12:30:00", "one"])
    write_table(df, path, fmt)


def _negative_error(rng, df, path, fmt):
    df.loc[int(rng.integers(len(df))), "mag_err"] = -float(rng.uniform(0.01, 1))
    write_table(df, path, fmt)


def _flux(rng, df, path, fmt):
    write_table(df.assign(mag=rng.uniform(1e3, 1e5, len(df))), path, fmt)


def _header_only(rng, df, path, fmt):
    write_table(df.iloc[:0], path, fmt)


def _no_id_repeated_times(rng, df, path, fmt):
    df = long_table(n_obj=3, n=8, seed=int(rng.integers(99))).drop(columns="object_id")
    write_table(df.sample(frac=1.0, random_state=int(rng.integers(99))), path, fmt)


def _all_times_huge(rng, df, path, fmt):
    if fmt in ("csv", "tsv", "txt"):
        write_table(df.assign(time="9" * int(rng.integers(320, 500))), path, fmt)
    else:
        write_table(df.assign(time=np.inf), path, fmt)


def _garbage(rng, df, path, fmt):
    return bytes(rng.integers(0, 256, int(rng.integers(1, 3000)), dtype=np.uint8))


def _truncated_binary(rng, df, path, fmt):
    if fmt in ("csv", "tsv", "txt", "ecsv"):  # a text table cut mid-way can still be valid: spoil it
        return _too_wide(rng, df, path, fmt)
    write_table(df, path, fmt)
    data = path.read_bytes()
    return data[: int(rng.integers(1, max(2, len(data) // 3)))]


def _too_wide(rng, df, path, fmt):
    if fmt in ("csv", "tsv", "txt", "ecsv"):
        write_table(df, path, fmt)
        return path.read_bytes() + b"1" * (io.MAX_LINE_BYTES + 10) + b"\n"
    wide = pd.DataFrame({f"c{i}": [1.0] for i in range(io.MAX_COLUMNS + 1)})
    write_table(pd.concat([df.iloc[:1].reset_index(drop=True), wide], axis=1), path, fmt)


def _too_few(rng, df, path, fmt):
    write_table(df.iloc[:3], path, fmt)


def _bool_or_null_mag(rng, df, path, fmt):
    if fmt == "parquet":
        write_table(df.assign(mag=np.arange(len(df)) % 2 == 0), path, fmt)
    else:
        write_table(df.assign(mag=np.nan), path, fmt)


MUTATIONS = [
    _no_mag,
    _text_in_time,
    _negative_error,
    _flux,
    _header_only,
    _no_id_repeated_times,
    _all_times_huge,
    _garbage,
    _truncated_binary,
    _too_wide,
    _too_few,
    _bool_or_null_mag,
]


def test_fuzz_bad_inputs_fail_cleanly(tmp_path, capsys, filled_db, monkeypatch):
    """Seeded: 252 bad inputs (12 mutations x 7 formats x 3, some gzipped or zipped) through the
    CLI. Each exits 1 with one line naming the problem, no traceback, and the store is unchanged."""
    import warnings

    monkeypatch.setattr(io, "MAX_LINE_BYTES", 4096)
    monkeypatch.setattr(io, "MAX_COLUMNS", 60)
    rng = np.random.default_rng(17)
    before = table_hashes(filled_db)
    failures = []
    for case in range(3 * len(FORMATS) * len(MUTATIONS)):
        path = bad_input(rng, case, tmp_path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            code, out, err = run(capsys, "ingest", path, "--db", filled_db)
        lines = err.strip().splitlines()
        ok = (
            code == 1
            and "Traceback" not in err
            and lines
            and lines[-1].startswith("lcdash ingest: ")
            and len(lines[-1]) < 600
        )
        if not ok:
            failures.append((case, path.name, code, err[-500:]))
        if case % 50 == 0:
            assert table_hashes(filled_db) == before, case
    assert not failures, failures[:5]
    assert table_hashes(filled_db) == before
