"""Issue 25, point 8: `lcdash import-embeddings` checks everything before it writes anything. A corpus of
hostile embed-catalog outputs (manifests, partition names, encoders, columns, vectors, window counts,
bands, objects): each fails in one clear line and leaves every table of the store as it was."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import _hashes
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from lcdash.cli import main
from lcdash.models.astromer import Astromer, AstromerConfig
from lcdash.scale import MANIFEST, OUTPUT_FILE, embeddings_table
from lcdash.store import Store
from lcdash.store.embeddings import load_embeddings, register_encoder
from lcdash.weights import save_encoder

SHAPE = (3, 8)  # n_layers = 2, d_model = 8
IDS = [f"A{i}" for i in range(10)]


def weights_sha256(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def _encoder(folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    cfg = AstromerConfig.astromer2(n_layers=2, n_heads=2, d_model=8, d_ff=8)
    return save_encoder(Astromer(cfg), cfg, folder)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A store of 10 objects (band g; r for the even ones), the encoder that made a 2-partition
    output of all 15 light curves, and another encoder."""
    root = tmp_path_factory.mktemp("import")
    enc, other = _encoder(root / "tiny", 0), _encoder(root / "other", 1)
    db = root / "store.duckdb"
    rows = [
        (o, b, t, 15.0 + 0.1 * t)
        for i, o in enumerate(IDS)
        for b in ("g", "r")[: 2 - i % 2]
        for t in range(8)
    ]
    with Store(db) as store:
        store.ingest(pd.DataFrame(rows, columns=["object_id", "band", "time", "mag"]), survey="s")
    out = root / "out"
    rng = np.random.default_rng(0)
    for k, ids in enumerate((IDS[:5], IDS[5:])):
        heads = pd.DataFrame(
            [(o, b) for i, o in enumerate(IDS) if o in ids for b in ("g", "r")[: 2 - i % 2]],
            columns=["object_id", "band"],
        )
        layers = rng.normal(size=(len(heads), *SHAPE)).astype(np.float32)
        f = out / f"part={k}" / OUTPUT_FILE
        f.parent.mkdir(parents=True)
        pq.write_table(embeddings_table(heads, np.ones(len(heads), np.int32), layers), f)
    manifest = {
        "format": 1,
        "source": "test",
        "model": str(enc),
        "weights_sha256": weights_sha256(enc),
        "partitions": ["part=0", "part=1"],
        "failed": {},
    }
    (out / MANIFEST).write_text(json.dumps(manifest))
    return {"root": root, "db": db, "out": out, "enc": enc, "other": other}


def table_hashes(db) -> dict:
    with Store(db, read_only=True) as store:
        return _hashes.table_hashes(store)


# -- mutations of a copy of the good output (part=1 is the bad one: part=0 is good and comes first) --


def _manifest(out: Path, **change) -> None:
    m = json.loads((out / MANIFEST).read_text())
    m.update(change)
    for k in [k for k, v in change.items() if v is _DROP]:
        m.pop(k)
    (out / MANIFEST).write_text(json.dumps(m))


_DROP = object()


def _table(out: Path, part: str = "part=1") -> pa.Table:
    return pq.read_table(out / part / OUTPUT_FILE)


def _write(out: Path, table: pa.Table, part: str = "part=1") -> None:
    pq.write_table(table, out / part / OUTPUT_FILE)


def _set(out: Path, name: str, array, part: str = "part=1") -> None:
    t = _table(out, part)
    _write(out, t.set_column(t.column_names.index(name), name, array), part)


def _vectors(out: Path, change) -> None:
    """Apply change(values [N, d] float64) to layer_1 of part=1."""
    t = _table(out)
    col = t.column("layer_1").combine_chunks()
    values = col.flatten().to_numpy().astype(np.float64).reshape(t.num_rows, -1)
    change(values)
    arr = pa.ListArray.from_arrays(col.offsets, pa.array(values.reshape(-1), pa.float64()))
    _set(out, "layer_1", arr)


def _outside(out: Path, absolute: bool) -> None:
    target = out.parent / "outside" / "x"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(out / "part=1" / OUTPUT_FILE, target / OUTPUT_FILE)
    _manifest(out, partitions=["part=0", str(target) if absolute else "../outside/x"])


def _symlink(out: Path) -> None:
    target = out.parent / "elsewhere"
    shutil.move(out / "part=1", target)
    (out / "part=1").symlink_to(target)


def _null_element(out: Path) -> None:
    t = _table(out)
    col = t.column("layer_0").combine_chunks()
    values = col.flatten().to_pylist()
    values[3] = None
    _set(out, "layer_0", pa.ListArray.from_arrays(col.offsets, pa.array(values, pa.float32())))


def _null_vector(out: Path) -> None:
    t = _table(out)
    rows = t.column("layer_2").to_pylist()
    rows[0] = None
    _set(out, "layer_2", pa.array(rows, pa.list_(pa.float32())))


def _short_vector(out: Path) -> None:
    t = _table(out)
    rows = t.column("layer_2").to_pylist()
    rows[1] = rows[1][:7]
    _set(out, "layer_2", pa.array(rows, pa.list_(pa.float32())))


def _rename(out: Path, old: str, new: str) -> None:
    t = _table(out)
    _write(out, t.rename_columns([new if c == old else c for c in t.column_names]))


def _drop(out: Path, col: str) -> None:
    _write(out, _table(out).drop_columns([col]))


def _add_layer(out: Path) -> None:
    t = _table(out)
    _write(out, t.append_column("layer_3", t.column("layer_2")))


def _duplicate_row(out: Path) -> None:
    t = _table(out)
    _write(out, pa.concat_tables([t, t.slice(0, 1)]))


def _duplicate_across(out: Path) -> None:
    t0, t1 = _table(out, "part=0"), _table(out)
    _write(out, pa.concat_tables([t1, t0.slice(0, 1)]))


def _object_ids(out: Path, values) -> None:
    _set(out, "object_id", pa.array(values, pa.string()))


def _other_registered(world, db: Path) -> None:
    with Store(db) as store:
        register_encoder(store, "tiny", world["other"])


CASES = {  # name: (mutation(out, world, db), extra CLI arguments, words of the one line)
    "no manifest": (lambda o, w, d: (o / MANIFEST).unlink(), [], "not an embed-catalog output"),
    "manifest not JSON": (lambda o, w, d: (o / MANIFEST).write_text("{nope"), [], "not a readable manifest"),
    "manifest a list": (lambda o, w, d: (o / MANIFEST).write_text("[1, 2]"), [], "not a manifest"),
    "manifest binary": (
        lambda o, w, d: (o / MANIFEST).write_bytes(b"\xff\xfe\x00"),
        [],
        "not a readable manifest",
    ),
    "partitions not a list": (lambda o, w, d: _manifest(o, partitions="part=0"), [], "must be a list"),
    "partition not a string": (lambda o, w, d: _manifest(o, partitions=["part=0", 7]), [], "must be a list"),
    "partition ../outside": (lambda o, w, d: _outside(o, False), [], "is not a folder inside"),
    "partition absolute": (lambda o, w, d: _outside(o, True), [], "is not a folder inside"),
    "partition symlink out": (lambda o, w, d: _symlink(o), [], "is not a folder inside"),
    "partition twice": (
        lambda o, w, d: _manifest(o, partitions=["part=0", "part=1", "part=0"]),
        [],
        "listed twice",
    ),
    "no weights hash": (lambda o, w, d: _manifest(o, weights_sha256=_DROP), [], "no weights_sha256"),
    "another encoder registered under the name": (
        lambda o, w, d: _other_registered(w, d),
        [],
        "in the store has other weights",
    ),
    "encoder folder gone": (
        lambda o, w, d: _manifest(o, model=str(o / "gone")),
        [],
        "give its folder with --model",
    ),
    "--model another encoder": (lambda o, w, d: None, ["--model", "OTHER"], "has other weights"),
    "--model not an encoder": (lambda o, w, d: None, ["--model", "ROOT"], "not an encoder folder"),
    "another encoder's vectors": (
        lambda o, w, d: _manifest(o, weights_sha256=weights_sha256(w["other"])),
        [],
        "now has other weights",
    ),
    "corrupt partition": (
        lambda o, w, d: (o / "part=1" / OUTPUT_FILE).write_bytes(b"PAR1 nope"),
        [],
        "partition part=1: ",
    ),
    "no n_windows": (lambda o, w, d: _drop(o, "n_windows"), [], "partition part=1: no 'n_windows' column"),
    "no object_id": (lambda o, w, d: _drop(o, "object_id"), [], "no 'object_id' column"),
    "no layers": (
        lambda o, w, d: [_drop(o, f"layer_{k}") for k in range(3)],
        [],
        "0 layer columns, the encoder has 3",
    ),
    "a layer missing": (lambda o, w, d: _drop(o, "layer_1"), [], "are not layer_0 .. layer_1"),
    "a layer too many": (lambda o, w, d: _add_layer(o), [], "4 layer columns, the encoder has 3"),
    "layer_x": (lambda o, w, d: _rename(o, "layer_2", "layer_x"), [], "'layer_x' is not a layer column"),
    "layer of strings": (
        lambda o, w, d: _set(o, "layer_0", pa.array(["x"] * 7)),
        [],
        "not a list of numbers",
    ),
    "short vector": (lambda o, w, d: _short_vector(o), [], "has 7 values, expected 8"),
    "null vector": (lambda o, w, d: _null_vector(o), [], "have no vector"),
    "null value": (lambda o, w, d: _null_element(o), [], "missing value(s)"),
    "NaN": (lambda o, w, d: _vectors(o, lambda v: v.__setitem__((2, 3), np.nan)), [], "NaN or infinite"),
    "inf": (lambda o, w, d: _vectors(o, lambda v: v.__setitem__((0, 0), -np.inf)), [], "NaN or infinite"),
    "beyond float32": (
        lambda o, w, d: _vectors(o, lambda v: v.__setitem__((1, 1), 1e300)),
        [],
        "NaN or infinite",
    ),
    "negative n_windows": (
        lambda o, w, d: _set(o, "n_windows", pa.array([1, -3, 1, 1, 1, 1, 1], pa.int32())),
        [],
        "n_windows -3 is not a window count",
    ),
    "huge n_windows": (
        lambda o, w, d: _set(o, "n_windows", pa.array([2**40] * 7, pa.int64())),
        [],
        "is not a window count",
    ),
    "fractional n_windows": (
        lambda o, w, d: _set(o, "n_windows", pa.array([1.5] * 7)),
        [],
        "not whole numbers",
    ),
    "null n_windows": (
        lambda o, w, d: _set(o, "n_windows", pa.array([1, None, 1, 1, 1, 1, 1], pa.int32())),
        [],
        "'n_windows': 1 row(s) are empty",
    ),
    "null object_id": (
        lambda o, w, d: _object_ids(o, ["A5", None, "A6", "A7", "A7", "A8", "A9"]),
        [],
        "'object_id': 1 row(s) are empty",
    ),
    "null band": (
        lambda o, w, d: _set(o, "band", pa.array(["g", None, "g", "g", "r", "g", "g"])),
        [],
        "'band': 1 row(s) are empty",
    ),
    "unknown band": (
        lambda o, w, d: _set(o, "band", pa.array(["g", "r", "g", "g", "r", "g", "zz"])),
        [],
        "has no band 'zz' in the store",
    ),
    "band r of a g-only object": (
        lambda o, w, d: _set(o, "band", pa.array(["r", "g", "r", "g", "g", "r", "g"])),
        [],
        "has no band 'r'",
    ),
    "unknown object": (
        lambda o, w, d: _object_ids(o, ["A5", "A6", "A6", "Z7", "A8", "A8", "Z9"]),
        [],
        "not in the store, e.g. 'Z7' (use --skip-missing)",
    ),
    "row twice": (lambda o, w, d: _duplicate_row(o), [], "is in it twice"),
    "object in two partitions": (
        lambda o, w, d: _duplicate_across(o),
        [],
        "is in partitions part=0 and part=1",
    ),
    "no such store": (lambda o, w, d: None, ["--db", "NOSTORE"], "no such store"),
}


def test_hostile_outputs_fail_in_one_line_and_change_nothing(world, tmp_path, capsys):
    assert len(CASES) >= 31
    assert _table(world["out"]).num_rows == 7  # the mutations above are sized for it
    problems = []
    for k, (case, (mutate, extra, words)) in enumerate(CASES.items()):
        out, db = tmp_path / f"out{k}", tmp_path / f"store{k}.duckdb"
        shutil.copytree(world["out"], out, symlinks=True)
        shutil.copy(world["db"], db)
        mutate(out, world, db)
        before = table_hashes(db)
        subs = {
            "OTHER": str(world["other"]),
            "ROOT": str(world["root"]),
            "NOSTORE": str(tmp_path / "none.duckdb"),
        }
        args = [subs.get(a, a) for a in extra]
        argv = ["import-embeddings", str(out), "--db", str(db), "--name", "tiny", *args]
        if "--db" in args:
            argv = ["import-embeddings", str(out), *args, "--name", "tiny"]
        code = main(argv)
        err = capsys.readouterr().err.strip()
        lines = [x for x in err.splitlines() if x.strip() and not x.startswith("import (tiny)")]
        if code != 1 or len(lines) != 1 or words not in lines[0] or "an unexpected problem" in err:
            problems.append(f"{case}: rc {code}, {err[-300:]!r}")
        elif table_hashes(db) != before:
            problems.append(f"{case}: the store changed")
        elif case == "no such store" and (tmp_path / "none.duckdb").exists():
            problems.append(f"{case}: a store was created")
    assert not problems, "\n".join(problems)


def test_the_good_output_imports_whole_and_again_adds_nothing(world, tmp_path, capsys):
    db = tmp_path / "store.duckdb"
    shutil.copy(world["db"], db)
    assert main(["import-embeddings", str(world["out"]), "--db", str(db), "--name", "tiny"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 15
    first = table_hashes(db)
    assert main(["import-embeddings", str(world["out"]), "--db", str(db), "--name", "tiny"]) == 0
    assert table_hashes(db) == first and json.loads(capsys.readouterr().out)["rows"] == 15
    with Store(db, read_only=True) as store:
        oid, band, layers = load_embeddings(store, "tiny")
    assert len(oid) == 15 and layers.shape == (15, *SHAPE) and np.isfinite(layers).all()
    # an unknown object is left out when asked, and nothing else changes for it
    out = tmp_path / "out"
    shutil.copytree(world["out"], out)
    _object_ids(out, ["A5", "A6", "A6", "Z7", "A8", "A8", "Z9"])
    code = main(["import-embeddings", str(out), "--db", str(db), "--name", "tiny", "--skip-missing"])
    assert code == 0 and json.loads(capsys.readouterr().out)["skipped_objects"] == 2


def test_a_large_import_in_several_transactions_gives_the_same_rows(world, tmp_path, capsys, monkeypatch):
    from lcdash import scale

    got = {}
    for k, commit_rows in enumerate((scale.IMPORT_COMMIT_ROWS, 4)):  # 4: a transaction per partition
        monkeypatch.setattr(scale, "IMPORT_COMMIT_ROWS", commit_rows)
        db = tmp_path / f"store{k}.duckdb"
        shutil.copy(world["db"], db)
        assert main(["import-embeddings", str(world["out"]), "--db", str(db), "--name", "tiny"]) == 0
        with Store(db, read_only=True) as store:
            got[commit_rows] = load_embeddings(store, "tiny")
    (oid_a, band_a, lay_a), (oid_b, band_b, lay_b) = got.values()
    assert (oid_a == oid_b).all() and band_a == band_b and np.array_equal(lay_a, lay_b) and len(oid_a) == 15
