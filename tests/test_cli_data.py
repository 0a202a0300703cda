"""CLI data commands: demo, ingest, sql, info (in-process through lcdash.cli.main)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lcdash.cli import main
from lcdash.store import Store

REPO = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_data_module_imports_light():
    code = "import sys, lcdash.cli.data; print({'duckdb', 'torch', 'astropy', 'umap'} & set(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "set()"


def test_demo_info_sql(capsys, tmp_path):
    db = tmp_path / "demo.duckdb"
    code, out, _ = run(capsys, "demo", "--db", db, "--n-objects", 40, "--seed", 1)
    assert code == 0 and "40 objects" in out
    code, out, _ = run(capsys, "info", "--db", db)
    assert code == 0 and "objects" in out and "40" in out and "synthetic" in out
    code, out, _ = run(capsys, "info", "--db", db, "--json")
    assert json.loads(out)["objects"] == 40
    code, out, _ = run(
        capsys,
        "sql",
        "SELECT label, count(*) AS n FROM objects GROUP BY 1 ORDER BY 1",
        "--db",
        db,
        "--format",
        "csv",
    )
    assert code == 0 and out.splitlines()[0] == "label,n"
    code, out, _ = run(
        capsys, "sql", "SELECT oid FROM objects ORDER BY oid", "--db", db, "--format", "json", "--limit", 3
    )
    assert json.loads(out) == [{"oid": 1}, {"oid": 2}, {"oid": 3}]
    code, out, err = run(capsys, "sql", "SELECT oid, object_id FROM objects", "--db", db, "--limit", 2)
    assert code == 0 and "object_id" in out and "first 2 rows" in err
    code, out, err = run(capsys, "sql", "DROP TABLE objects", "--db", db)
    assert (
        code == 1
        and err.startswith("lcdash sql:")
        and "read-only" in err
        and len(err.strip().splitlines()) == 1
    )
    code, _, err = run(capsys, "sql", "SELECT * FROM read_csv('/etc/passwd')", "--db", db)
    assert code == 1 and "read_csv" in err


def test_info_missing_store(capsys, tmp_path):
    code, _, err = run(capsys, "info", "--db", tmp_path / "nope.duckdb")
    assert code == 1 and "no such store" in err


def write_per_object(folder: Path, n_objects=3, n=12, bad=None):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n_objects):
        df = pd.DataFrame(
            {"HJD": 2450000 + np.sort(rng.uniform(0, 50, n)), "Vmag": 14 + rng.normal(0, 0.1, n), "sig": 0.02}
        )
        if bad == i:
            df = df.astype({"Vmag": object})
            df.loc[4, "Vmag"] = "oops"
        df.to_csv(folder / f"V{i:03d}.csv", index=False)
    return folder


def test_ingest_per_object_files_with_mapping(capsys, tmp_path):
    folder = write_per_object(tmp_path / "lcs")
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"name": ["V000", "V001", "V002"], "type": ["RRab", "EW", "EA"]}).to_csv(labels, index=False)
    db = tmp_path / "s.duckdb"
    code, out, err = run(
        capsys,
        "ingest",
        folder,
        "--db",
        db,
        "--objects",
        labels,
        "--survey",
        "MySurvey",
        "--map",
        "mag=Vmag",
        "mag_err=sig",
        "objects.object_id=name",
        "type=label",
        "--band",
        "V",
    )
    assert code == 0, err
    assert "3 new object(s)" in out and "36 new observation(s)" in out
    with Store(db, read_only=True) as s:
        objs = s.objects()
        assert objs["object_id"].tolist() == ["V000", "V001", "V002"]
        assert objs["label"].tolist() == ["RRab", "EW", "EA"] and set(objs["survey"]) == {"MySurvey"}
        assert s.bands() == ["V"]
    code, out, _ = run(
        capsys, "ingest", folder, "--db", db, "--survey", "MySurvey", "--map", "mag=Vmag", "--band", "V"
    )
    assert code == 0 and "0 new observation(s), 36 already present" in out


def test_failed_ingest_exits_nonzero_and_changes_nothing(capsys, tmp_path):
    db = tmp_path / "s.duckdb"
    good = write_per_object(tmp_path / "good")
    assert run(capsys, "ingest", good, "--db", db, "--survey", "S", "--map", "mag=Vmag")[0] == 0
    with Store(db, read_only=True) as s:
        before = s.info()
    bad = write_per_object(tmp_path / "bad", bad=1)
    code, _, err = run(capsys, "ingest", bad, "--db", db, "--survey", "S", "--map", "mag=Vmag")
    last = err.strip().splitlines()[-1]
    assert code == 1 and last.startswith("lcdash ingest: V001.csv, column 'Vmag', row 5")
    code, _, err = run(capsys, "ingest", tmp_path / "missing", "--db", db)
    assert code == 1 and "no such file" in err
    code, _, err = run(capsys, "ingest", good, "--db", db, "--map", "bogus")
    assert code == 1 and "ROLE=COLUMN" in err
    with Store(db, read_only=True) as s:
        assert s.info() == before


def test_dataset_folder_subset(capsys, tmp_path, shared_data):
    """The full ingest in small: 200 Catalina and 100 EROS-1 objects in folders like ../shared/data."""
    sizes = {}
    for name, k in (("catalina_train", 200), ("eros1", 100)):
        src = shared_data / name
        objects = pd.read_parquet(src / "objects.parquet").iloc[:k]
        obs = pd.read_parquet(src / "observations.parquet")
        obs = obs[obs["object_id"].isin(objects["object_id"])]
        dst = tmp_path / name
        dst.mkdir()
        objects.to_parquet(dst / "objects.parquet")
        obs.to_parquet(dst / "observations.parquet")
        sizes[name] = (objects, obs)
    db = tmp_path / "c.duckdb"
    code, out, err = run(capsys, "ingest", tmp_path / "catalina_train", tmp_path / "eros1", "--db", db)
    assert code == 0, err
    with Store(db, read_only=True) as s:
        info = s.info()
    cat = info["surveys"]["CSS-SSS (Catalina Siding Spring)"]
    eros = info["surveys"]["EROS-1 (LMC photographic plates)"]
    assert cat["objects"] == 200 and eros["objects"] == 100
    assert eros["observations"] == len(sizes["eros1"][1])  # EROS-1 has no duplicate times
    assert cat["observations"] <= len(sizes["catalina_train"][1])
    assert set(info["bands"]) == {"V_CSS", "EROS1_B", "EROS1_R"}
    assert info["labelled"] == 300


@pytest.mark.slow
def test_full_shared_ingest(tmp_path, shared_data):
    db = tmp_path / "c.duckdb"
    for name in ("catalina_train", "eros1"):
        proc = subprocess.run(
            [sys.executable, "-m", "lcdash", "ingest", str(shared_data / name), "--db", str(db)],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr
        if name == "catalina_train":
            assert "3,619,070 rows read" in proc.stderr
    with Store(db, read_only=True) as s:
        info = s.info()
        cat = info["surveys"]["CSS-SSS (Catalina Siding Spring)"]
        eros = info["surveys"]["EROS-1 (LMC photographic plates)"]
        # Catalina: 3,619,070 rows; 4,306 exact duplicate rows dropped and 3,166 rows sharing a time
        # with another row averaged, so 3,611,598 unique (oid, band, time) observations are stored
        assert (cat["objects"], cat["observations"], cat["labelled"]) == (16_195, 3_611_598, 16_195)
        assert (eros["objects"], eros["observations"], eros["labelled"]) == (3_641, 861_339, 3_641)
        assert (
            info["bands"]["EROS1_B"]["lightcurves"] == 3_641
            and info["bands"]["EROS1_R"]["lightcurves"] == 3_641
        )
        assert s.labels(survey="EROS-1 (LMC photographic plates)").to_dict() == {
            "RRLyrae": 2231,
            "Cepheid": 736,
            "EB": 439,
            "Mira": 235,
        }
        assert s.labels(survey="CSS-SSS (Catalina Siding Spring)")["EA"] == 3156
    proc = subprocess.run(
        [sys.executable, "-m", "lcdash", "ingest", str(shared_data / "eros1"), "--db", str(db)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and "0 new observation(s), 861,339 already present" in proc.stdout
