"""`python -m lcdash pretrain | finetune | embed | embed-file` (lcdash.cli.models)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from lcdash.cli import main
from lcdash.embed import embed_batch
from lcdash.models.astromer import Astromer, AstromerConfig
from lcdash.store import Store
from lcdash.store.embeddings import list_encoders, load_embeddings
from lcdash.weights import load_encoder, save_encoder


@pytest.fixture()
def encoder_dir(tmp_path):
    torch.manual_seed(0)
    cfg = AstromerConfig.astromer2(n_layers=1, n_heads=2, d_model=8, d_ff=8)
    return save_encoder(Astromer(cfg), cfg, tmp_path / "tiny-enc")


def _observations(bands=("g",)):
    rng = np.random.default_rng(0)
    rows = []
    for oid, n in (("star-1", 90), ("star-2", 310), ("star-3", 205)):
        for k, band in enumerate(bands):
            t = np.sort(rng.uniform(0, 600, n)) + 55000.0
            rows.append(pd.DataFrame({"object_id": oid, "time": t, "mag": 16 + np.sin(t) + k,
                                      "mag_err": 0.02, "band": band}))
    return pd.concat(rows, ignore_index=True)


def test_embed_file_single_band(tmp_path, encoder_dir, capsys):
    obs = _observations().drop(columns="band").rename(columns={"time": "hjd"})
    src = tmp_path / "lc.parquet"
    obs.to_parquet(src)
    out = tmp_path / "emb.parquet"
    args = ["embed-file", str(src), "--model", str(encoder_dir), "--out", str(out), "--map", "time=hjd"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["rows"] == 3 and report["layers"] == 2
    tb = pq.read_table(out)
    assert tb.column_names == ["object_id", "n_windows", "layer_0", "layer_1"]
    assert tb.schema.field("layer_1").type == pa.list_(pa.float32())
    assert tb.column("n_windows").to_pylist() == [1, 2, 2]
    model, _ = load_encoder(encoder_dir)
    curves = [(g["hjd"].to_numpy(), g["mag"].to_numpy()) for _, g in obs.groupby("object_id")]
    _, ref = embed_batch(model, curves)
    got = np.array(tb.column("layer_1").to_pylist(), np.float32)
    np.testing.assert_allclose(got, ref[:, 1], atol=1e-6)


def test_embed_file_multi_band(tmp_path, encoder_dir):
    src = tmp_path / "lc.parquet"
    _observations(bands=("B", "R")).to_parquet(src)
    out = tmp_path / "emb.parquet"
    assert main(["embed-file", str(src), "--model", str(encoder_dir), "--out", str(out)]) == 0
    df = pd.read_parquet(out)
    assert list(df.columns[:3]) == ["object_id", "band", "n_windows"]
    assert list(zip(df.object_id, df.band, strict=True)) == [
        ("star-1", "B"), ("star-1", "R"), ("star-2", "B"), ("star-2", "R"), ("star-3", "B"), ("star-3", "R")]
    assert len(df.layer_0.iloc[0]) == 8


def test_embed_file_errors(tmp_path, encoder_dir, capsys):
    src = tmp_path / "lc.parquet"
    _observations().drop(columns=["mag"]).to_parquet(src)
    dst = str(tmp_path / "o.parquet")
    assert main(["embed-file", str(src), "--model", str(encoder_dir), "--out", dst]) == 1
    assert "lacks column(s) mag" in capsys.readouterr().err
    assert main(["embed-file", str(src), "--model", str(tmp_path), "--out", dst]) == 1
    assert "not an encoder folder" in capsys.readouterr().err


@pytest.fixture()
def demo_db(tmp_path):
    from lcdash.store.demo import create_demo_store

    path = tmp_path / "demo.duckdb"
    create_demo_store(path, n_objects=16, seed=0).close()
    return path


def test_embed_cli_on_demo_store(demo_db, encoder_dir, capsys):
    assert main(["embed", "--db", str(demo_db), "--model", str(encoder_dir), "--batch-size", "16"]) == 0
    assert "embedded 16 light curves" in capsys.readouterr().out
    with Store(demo_db, read_only=True) as store:
        assert list_encoders(store).name.tolist() == ["tiny-enc"]
        oid, band, layers = load_embeddings(store, "tiny-enc")
        assert len(oid) == 16 and layers.shape == (16, 2, 8) and np.isfinite(layers).all()
    # by name, already done
    assert main(["embed", "--db", str(demo_db), "--model", "tiny-enc"]) == 0
    assert "already embedded" in capsys.readouterr().out
    assert main(["embed", "--db", str(demo_db), "--model", "unknown-encoder"]) == 1
    assert "no encoder named" in capsys.readouterr().err


def test_pretrain_and_finetune_cli(demo_db, tmp_path, capsys):
    out = tmp_path / "pre"
    args = ["pretrain", "--db", str(demo_db), "--arch", "astromer2", "--n-layers", "1", "--d-model", "8",
            "--n-heads", "2", "--d-ff", "8", "--epochs", "1", "--batch-size", "8", "--threads", "1",
            "--out", str(out), "--register", "mini"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "best validation RMSE" in text and "registered encoder 'mini'" in text
    _, cfg = load_encoder(out)
    assert (cfg.n_layers, cfg.d_model) == (1, 8)
    ft = tmp_path / "ft"
    assert main(["finetune", "--from", str(out), "--db", str(demo_db), "--out", str(ft), "--epochs", "1",
                 "--batch-size", "8", "--max-objects", "10", "--threads", "1"]) == 0
    meta = json.loads((ft / "config.json").read_text())
    assert meta["training"]["lr"] == 1e-5 and meta["training"]["n_train"] + meta["training"]["n_val"] == 10
    assert main(["finetune", "--from", str(out), "--db", str(demo_db), "--out", str(out)]) == 1
    assert "--out must differ" in capsys.readouterr().err


def test_finetune_on_a_survey_by_name_keeps_the_parent_and_records_lineage(demo_db, tmp_path, capsys):
    """Domain adaptation: the masked objective on every curve of a survey (labels unused), from a
    registered encoder; the parent's folder is never written, the child is registered beside it."""
    import hashlib
    import shutil

    from lcdash.models.astromer import Astromer, AstromerConfig
    from lcdash.store import Store
    from lcdash.store.embeddings import get_encoder, register_encoder
    from lcdash.weights import save_encoder

    db = tmp_path / "store.duckdb"
    shutil.copy(demo_db, db)
    parent = tmp_path / "parent"
    cfg = AstromerConfig(n_layers=1, n_heads=2, d_model=8, d_ff=8)
    save_encoder(Astromer(cfg), cfg, parent)
    with Store(db) as store:
        register_encoder(store, "parent-enc", parent)
        survey = store.objects(columns=["survey"])["survey"].iloc[0]

    def digest(folder):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}

    before = digest(parent)
    child = tmp_path / "adapted"
    assert main(["finetune", "--from", "parent-enc", "--db", str(db), "--survey", survey,
                 "--out", str(child), "--epochs", "1", "--batch-size", "8", "--lr", "1e-2",
                 "--threads", "1"]) == 0
    assert digest(parent) == before
    a, _ = load_encoder(parent)
    b, _ = load_encoder(child)
    pairs = zip(a.parameters(), b.parameters(), strict=True)
    assert any(not np.allclose(x.detach(), y.detach()) for x, y in pairs)
    with Store(db, read_only=True) as store:
        enc = get_encoder(store, "adapted")
    assert enc["source"].startswith(f"fine-tuned from parent-enc on {survey}")
    assert "labels unused" in enc["source"]
    # a survey without light curves, and an unknown parent, get one-line reasons
    capsys.readouterr()
    assert main(["finetune", "--from", "parent-enc", "--db", str(db), "--survey", "no such survey",
                 "--out", str(tmp_path / "x")]) == 1
    assert "fewer than 2 light curves" in capsys.readouterr().err
    assert main(["finetune", "--from", "nope", "--db", str(db), "--out", str(tmp_path / "y")]) == 1
    assert "neither an encoder folder" in capsys.readouterr().err
