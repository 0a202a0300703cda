"""Per-object per-layer embeddings (lcdash.embed) and the embeddings table (lcdash.store.embeddings)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lcdash.embed import count_windows, embed_batch, embed_frame, embed_store
from lcdash.errors import JobError, ModelError, ValidationError
from lcdash.lightcurve import LightCurveBatch
from lcdash.models.astromer import Astromer, AstromerConfig, masked_mean
from lcdash.store import Store
from lcdash.store.embeddings import (
    default_encoder_dir,
    get_encoder,
    has_embeddings,
    list_encoders,
    load_embeddings,
    register_encoder,
    save_embeddings,
)
from lcdash.weights import save_encoder
from lcdash.windows import astromer_windows


def _model(arch="astromer2", seed=0):
    torch.manual_seed(seed)
    cfg = AstromerConfig(arch=arch, n_layers=2, n_heads=2, d_model=16, d_ff=16)
    return Astromer(cfg).eval()


def _curves(lengths, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        t = np.sort(rng.uniform(0, 900, n)) + 53000.0
        out.append((t, (15 + np.sin(t / 7) + rng.normal(0, 0.1, n)).astype(np.float32)))
    return out


def _direct(model, time, mag):
    """Reference: each window through encode(), masked mean per layer, mean over windows."""
    w = astromer_windows(time, mag)
    with torch.no_grad():
        hidden = model.encode(torch.from_numpy(w.mag), torch.from_numpy(w.time), torch.from_numpy(w.mask_in))
    valid = 1.0 - torch.from_numpy(w.mask_in)
    per_window = torch.stack([masked_mean(h, valid) for h in hidden], 1)  # [W, L+1, d]
    return len(w), per_window.mean(0).numpy(), per_window.numpy()


@pytest.mark.parametrize("arch", ["astromer1", "astromer2"])
def test_layer_means_match_direct_computation(arch):
    model = _model(arch)
    curves = _curves([57, 200, 201, 450, 130])
    nw, layers = embed_batch(model, curves, batch_size=4)
    assert nw.dtype == np.int32 and layers.dtype == np.float32
    assert layers.shape == (5, 3, 16)
    assert nw.tolist() == [1, 1, 2, 3, 1]
    for i, (t, m) in enumerate(curves):
        n, mean, per_window = _direct(model, t, m)
        assert nw[i] == n
        np.testing.assert_allclose(layers[i], mean, atol=2e-6)
        np.testing.assert_allclose(layers[i], per_window.mean(0), atol=2e-6)  # windows of one object averaged


def test_padding_and_batch_composition_do_not_matter():
    model = _model()
    curves = _curves([60, 90, 700, 33])
    alone = [embed_batch(model, [c], batch_size=256)[1][0] for c in curves]
    # a LightCurveBatch pads every row to the longest one (700): the extra padding is ignored
    batch = LightCurveBatch.from_arrays([c[0] for c in curves], [c[1] for c in curves])
    _, together = embed_batch(model, batch, batch_size=256)
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_allclose(a, b, atol=2e-6)


def test_batch_size_invariance_and_empty_curves():
    model = _model()
    curves = _curves([250, 10, 640, 199, 401])
    curves.insert(2, (np.zeros(0), np.zeros(0, np.float32)))
    ref_n, ref = embed_batch(model, curves, batch_size=256)
    for bs in (1, 2, 3, 7):
        n, got = embed_batch(model, curves, batch_size=bs)
        assert n.tolist() == ref_n.tolist()
        np.testing.assert_allclose(got, ref, atol=2e-6)
    assert ref_n[2] == 0 and not ref[2].any()
    assert count_windows(curves) == int(ref_n.sum())


def test_progress_and_cancel():
    model = _model()
    curves = _curves([300] * 6)
    seen = []
    embed_batch(model, curves, batch_size=4, progress=lambda d, t, msg, m=None: seen.append((d, t)))
    assert seen[-1] == (12, 12) and len(seen) == 3

    class Cancel:
        cancelled = True

        def __call__(self, *a, **k):
            pass

    with pytest.raises(JobError, match="cancelled"):
        embed_batch(model, curves, progress=Cancel())
    with pytest.raises(ModelError, match="precision"):
        embed_batch(model, curves, precision="fp8")


def test_bf16_is_close():
    model = _model()
    curves = _curves([200, 300])
    _, f32 = embed_batch(model, curves)
    _, b16 = embed_batch(model, curves, precision="bf16")
    assert np.abs(f32 - b16).max() < 0.1


@pytest.fixture()
def encoder_dir(tmp_path):
    model = _model()
    return save_encoder(model, model.cfg, tmp_path / "tiny")


def test_embed_frame_single_and_multi_band(encoder_dir):
    curves = _curves([120, 260])
    rows = []
    for oid, (t, m) in zip(["a", "b"], curves, strict=True):
        for band, off in (("g", 0.0), ("r", 0.3)):
            rows.append(pd.DataFrame({"object_id": oid, "time": t, "mag": m + off, "band": band}))
    df = pd.concat(rows).sample(frac=1.0, random_state=0)  # any row order
    out = embed_frame(df, encoder_dir)
    assert list(out.columns) == ["object_id", "band", "n_windows", "layer_0", "layer_1", "layer_2"]
    assert list(zip(out.object_id, out.band, strict=True)) == [("a", "g"), ("a", "r"), ("b", "g"), ("b", "r")]
    single = embed_frame(df[df.band == "g"].drop(columns="band"), encoder_dir)
    assert list(single.columns) == ["object_id", "n_windows", "layer_0", "layer_1", "layer_2"]
    np.testing.assert_allclose(np.stack(single.layer_2), np.stack(out.layer_2[out.band == "g"]), atol=1e-6)
    _, ref = embed_batch(_model(), curves)
    np.testing.assert_allclose(np.stack(single.layer_1), ref[:, 1], atol=1e-6)
    assert single.n_windows.tolist() == [1, 2]
    with pytest.raises(ValidationError, match="mag"):
        embed_frame(df.drop(columns="mag"), encoder_dir)


@pytest.fixture()
def demo_store(tmp_path):
    from lcdash.store.demo import create_demo_store

    store = create_demo_store(tmp_path / "demo.duckdb", n_objects=12, seed=1, bands=("g", "r"))
    yield store
    store.close()


def test_embeddings_table_round_trip(demo_store, encoder_dir):
    store = demo_store
    enc = register_encoder(store, "tiny", encoder_dir, source="test")
    assert (enc["arch"], enc["n_layers"], enc["d_model"], enc["source"]) == ("astromer2", 2, 16, "test")
    assert not has_embeddings(store, "tiny")
    rng = np.random.default_rng(0)
    layers = rng.normal(size=(4, 3, 16)).astype(np.float32)
    save_embeddings(store, "tiny", [3, 1, 2, 4], ["g", "g", "r", "g"], [1, 2, 3, 4], layers)
    oid, band, got = load_embeddings(store, "tiny")
    assert oid.tolist() == [1, 2, 3, 4] and band == ["g", "r", "g", "g"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, layers[[1, 2, 0, 3]])
    # replacing rows with the same keys; order of a given oid list; band filter
    save_embeddings(store, "tiny", [1], ["g"], [9], layers[:1] + 1)
    oid, band, got = load_embeddings(store, "tiny", oids=[4, 1, 77])
    assert oid.tolist() == [4, 1]
    np.testing.assert_array_equal(got[1], layers[0] + 1)
    assert load_embeddings(store, "tiny", band="r")[0].tolist() == [2]
    assert has_embeddings(store, "tiny", band="r") and not has_embeddings(store, "tiny", band="i")
    assert list_encoders(store).set_index("name").loc["tiny", "n_embeddings"] == 4
    with pytest.raises(ModelError, match=r"\[1, 3, 16\]"):
        save_embeddings(store, "tiny", [1], "g", [1], np.zeros((1, 3, 8), np.float32))
    with pytest.raises(ModelError, match="no encoder named 'nope'"):
        get_encoder(store, "nope")
    # re-registering the same weights keeps the embeddings; other weights drop them
    register_encoder(store, "tiny", encoder_dir)
    assert has_embeddings(store, "tiny")
    other = _model(seed=1)
    save_encoder(other, other.cfg, encoder_dir)
    register_encoder(store, "tiny", encoder_dir)
    assert not has_embeddings(store, "tiny")


def test_embed_store_all_bands(demo_store, encoder_dir):
    store = demo_store
    register_encoder(store, "tiny", encoder_dir)
    res = embed_store(store, "tiny", batch_size=8, chunk_size=5)
    assert res["rows"] == 24 and res["objects"] == 24
    oid, band, layers = load_embeddings(store, "tiny")
    assert sorted(set(band)) == ["g", "r"] and len(oid) == 24
    batch = store.read_batch(oid[:3], band="r")
    model = _model()
    _, ref = embed_batch(model, batch)
    got = load_embeddings(store, "tiny", oids=oid[:3], band="r")[2]
    np.testing.assert_allclose(got, ref, atol=1e-6)
    assert embed_store(store, "tiny")["objects"] == 0  # already done
    assert embed_store(store, "tiny", band="g", overwrite=True)["rows"] == 12


def test_default_encoder_dir_is_in_the_repo():
    d = default_encoder_dir()
    assert d.parts[-3:] == ("data", "encoders", "astromer2-logpe-folded-demo")
    assert (d.parents[2] / "lcdash").is_dir()


def test_shipped_encoder_loads_and_embeds():
    from lcdash.weights import load_encoder

    d = default_encoder_dir()
    if not (d / "model.safetensors").exists():
        pytest.skip("the shipped encoder is not there yet")
    model, cfg = load_encoder(d)
    assert cfg.arch == "astromer2"
    nw, layers = embed_batch(model, _curves([150, 420]))
    assert layers.shape == (2, cfg.n_layers + 1, cfg.d_model) and np.isfinite(layers).all()


def test_store_reads_are_readonly_safe(tmp_path, encoder_dir):
    """load_embeddings works on a store opened read-only (the app's readers)."""
    path = tmp_path / "s.duckdb"
    with Store(path) as store:
        register_encoder(store, "tiny", encoder_dir)
        save_embeddings(store, "tiny", [1, 2], "g", [1, 1], np.ones((2, 3, 16), np.float32))
    with Store(path, read_only=True) as ro:
        oid, _, layers = load_embeddings(ro, "tiny")
        assert oid.tolist() == [1, 2] and layers.sum() == 96


@pytest.mark.slow
def test_official_and_shipped_encoders_embed_catalina_from_the_store(shared, shared_data, tmp_path):
    """Catalina ingested with the store's ingest, embedded end to end by the converted official
    macho_a0 weights and by the shipped encoder; macho_a0 reproduces the golden mean embeddings."""
    from lcdash.io import prepare
    from lcdash.weights import import_official, load_encoder

    folder = shared_data / "catalina_train"
    obs, objs, report = prepare(pd.read_parquet(folder / "observations.parquet"),
                                objects=pd.read_parquet(folder / "objects.parquet"), name="catalina_train")
    report.raise_if_errors()
    a0 = import_official(shared / "weights" / "astromer" / "macho_a0.zip", tmp_path / "a0")
    encoders = {"macho_a0": a0}
    if (default_encoder_dir() / "model.safetensors").exists():
        encoders["astromer2-logpe-folded-demo"] = default_encoder_dir()
    with Store(tmp_path / "catalina.duckdb") as store:
        store.ingest(obs, objs, validation=report)
        n = store.info()["objects"]
        for name, path in encoders.items():
            register_encoder(store, name, path)
            res = embed_store(store, name, batch_size=256)
            print(f"{name}: {res['rows']} light curves, {res['windows']} windows, {res['lc_per_s']:.0f} LC/s")
            oid, band, layers = load_embeddings(store, name)
            _, cfg = load_encoder(path)
            assert res["rows"] == n == len(oid)
            assert layers.shape == (n, cfg.n_layers + 1, cfg.d_model) and np.isfinite(layers).all()
            assert res["windows"] > n  # Catalina light curves reach 367 observations: several windows

        # the store's light curves, cut to the golden's first 200 observations, give its embeddings
        golden = np.load(shared / "golden" / "macho_a0_golden.npz")
        ids = [str(i) for i in golden["object_ids"][:64]]
        batch = store.read_batch(store.resolve(ids))  # the objects table's survey column names the survey
    same = [i for i in range(64) if np.array_equal(batch.row(i)[0][:200], golden["raw_times_mjd"][i])]
    assert len(same) >= 48  # ingest averages observations that share a time: a few curves differ
    model, _ = load_encoder(encoders["macho_a0"])
    curves = [(batch.row(i)[0][:200], batch.row(i)[1][:200]) for i in same]
    _, layers = embed_batch(model, curves)
    np.testing.assert_allclose(layers[:, -1], golden["mean_embedding"][same], atol=1e-4)
