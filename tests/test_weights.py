"""Checkpoint readers (protobuf, crc32c, SSTable), safe extraction, conversion, save/load, download, CLI."""

from __future__ import annotations

import functools
import http.server
import io
import shutil
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from lcdash.cli import main as cli_main
from lcdash.errors import ModelError
from lcdash.models.astromer import Astromer, AstromerConfig
from lcdash.weights import (
    OFFICIAL,
    _fields,
    _unmask_crc,
    _varint,
    crc32c,
    download,
    extract_archive,
    import_official,
    load_encoder,
    read_encoder_config,
    read_tf_checkpoint,
    save_encoder,
    sha256_file,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def weights_dir(shared: Path) -> Path:
    return shared / "weights" / "astromer"


# ---------------------------------------------------------------------------- wire formats


def test_varint_and_protobuf_fields():
    assert _varint(bytes([0x96, 0x01]), 0) == (150, 2)
    assert _varint(bytes([0x00]), 0) == (0, 1)
    # field 1 varint 1 (DT_FLOAT), field 2 bytes (shape {dim {size 3}}), field 6 fixed32
    msg = bytes([0x08, 0x01, 0x12, 0x04, 0x12, 0x02, 0x08, 0x03, 0x35]) + (1234).to_bytes(4, "little")
    assert _fields(msg) == [(1, 0, 1), (2, 2, bytes([0x12, 0x02, 0x08, 0x03])), (6, 5, 1234)]
    with pytest.raises(ModelError, match="truncated"):
        _varint(bytes([0x80]), 0)


def test_crc32c_known_values():
    assert crc32c(b"123456789") == 0xE3069283  # the standard CRC-32C check value
    assert crc32c(b"") == 0
    masked = ((0xE3069283 >> 15) | (0xE3069283 << 17)) & 0xFFFFFFFF
    assert _unmask_crc((masked + 0xA282EAD8) & 0xFFFFFFFF) == 0xE3069283


# ---------------------------------------------------------------------------- TF checkpoint


@pytest.fixture(scope="module")
def macho_extracted(shared, tmp_path_factory):
    return extract_archive(weights_dir(shared) / "macho_a0.zip", tmp_path_factory.mktemp("macho"))


def test_read_tf_checkpoint_lists_the_38_tensors(macho_extracted):
    t = read_tf_checkpoint(macho_extracted / "macho" / "weights")
    suffix = "/.ATTRIBUTES/VARIABLE_VALUE"
    assert len(t) == 38 and all(k.endswith(suffix) for k in t)
    assert sum(v.size for v in t.values()) == 661_505
    assert t["layer_with_weights-0/inp_transform/kernel" + suffix].shape == (1, 256)
    assert t["layer_with_weights-0/enc_layers/1/ffn/layer_with_weights-0/kernel" + suffix].shape == (256, 128)
    assert t["layer_with_weights-1/reg_layer/kernel" + suffix].shape == (256, 1)
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in t.values())


def test_corrupt_checkpoints_raise_model_error(macho_extracted, tmp_path):
    src = macho_extracted / "macho"
    for f in src.glob("weights.*"):
        shutil.copy(f, tmp_path / f.name)
    data = tmp_path / "weights.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[1000] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="checksum"):
        read_tf_checkpoint(tmp_path / "weights")
    (tmp_path / "weights.index").write_bytes(b"not an sstable" * 10)
    with pytest.raises(ModelError, match="not a TensorFlow checkpoint index"):
        read_tf_checkpoint(tmp_path / "weights")
    with pytest.raises(ModelError, match="no checkpoint index"):
        read_tf_checkpoint(tmp_path / "missing")


# ---------------------------------------------------------------------------- archives


def test_extract_refuses_path_traversal_and_links(tmp_path):
    evil_zip = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil_zip, "w") as z:
        z.writestr("../escape.txt", "x")
    with pytest.raises(ModelError, match="outside"):
        extract_archive(evil_zip, tmp_path / "out1")
    assert not (tmp_path / "escape.txt").exists()

    evil_tar = tmp_path / "evil.tar.gz"
    with tarfile.open(evil_tar, "w:gz") as tf:
        info = tarfile.TarInfo("link")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(ModelError, match="link"):
        extract_archive(evil_tar, tmp_path / "out2")

    abs_tar = tmp_path / "abs.tar"
    with tarfile.open(abs_tar, "w") as tf:
        info = tarfile.TarInfo("/tmp/abs-escape.txt")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ModelError, match="outside"):
        extract_archive(abs_tar, tmp_path / "out3")

    with pytest.raises(ModelError, match="neither a zip nor a tar"):
        extract_archive(Path(__file__), tmp_path / "out4")


def test_import_2023_checkpoints_is_refused_with_a_reason(shared, tmp_path):
    for name in ("astromer_1.tar.gz", "astromer_2.tar.gz"):
        with pytest.raises(ModelError, match="2023 Astromer experiment"):
            import_official(weights_dir(shared) / name, tmp_path / name)
    with pytest.raises(ModelError, match="2023 Astromer experiment"):
        download("astromer_2", tmp_path / "x")


def test_import_records_source_and_config(shared, tmp_path):
    out = import_official(weights_dir(shared) / "atlas.zip", tmp_path / "atlas")
    meta = read_encoder_config(out)
    assert meta["arch"] == "astromer1" and meta["n_params"] == 661_505
    assert meta["source"]["sha256"] == OFFICIAL["atlas"]["sha256"]
    assert meta["source"]["format"] == "keras-h5" and meta["source"]["name"] == "atlas"
    assert meta["config"]["n_layers"] == 2 and meta["config"]["d_ff"] == 128
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]


def test_official_sha256_match_the_shared_archives(shared):
    for name in ("macho_a0", "atlas", "astromer_1", "astromer_2"):
        path = weights_dir(shared) / OFFICIAL[name]["url"].rsplit("/", 1)[-1]
        assert sha256_file(path) == OFFICIAL[name]["sha256"]


# ---------------------------------------------------------------------------- save / load


@pytest.mark.parametrize(
    "cfg", [AstromerConfig.astromer1(), AstromerConfig.astromer2(n_layers=2, d_model=64)]
)
def test_save_load_round_trip_is_bit_identical(cfg, tmp_path):
    torch.manual_seed(0)
    model = Astromer(cfg)
    if cfg.arch == "astromer2":
        with torch.no_grad():
            model.mask_token.fill_(0.25)
    save_encoder(model, cfg, tmp_path, extra={"note": "test"})
    loaded, cfg2 = load_encoder(tmp_path)
    assert cfg2 == cfg and not loaded.training
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_encoder_config(tmp_path)["note"] == "test"
    mag, time, mask = torch.randn(2, 200), torch.randn(2, 200) * 100, torch.zeros(2, 200)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(mag, time, mask), loaded(mag, time, mask))


def test_load_errors(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        load_encoder(tmp_path)
    cfg = AstromerConfig.astromer1(d_model=32, d_ff=16)
    save_encoder(Astromer(cfg), cfg, tmp_path)
    text = (tmp_path / "config.json").read_text().replace('"d_ff": 16', '"d_ff": 32')
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ModelError, match="does not match"):
        load_encoder(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="cannot read"):
        load_encoder(tmp_path)


# ---------------------------------------------------------------------------- download


@pytest.fixture
def http_dir(tmp_path):
    """A local http.server serving tmp_path/www; yields (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield www, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_download_checks_sha256_then_converts(shared, http_dir, tmp_path):
    www, base = http_dir
    shutil.copy(weights_dir(shared) / "macho_a0.zip", www / "macho_a0.zip")
    seen = []
    out = download(
        "macho_a0",
        tmp_path / "m",
        url=f"{base}/macho_a0.zip",
        cache_dir=tmp_path / "cache",
        progress=lambda done, total, msg: seen.append((done, total)),
    )
    model, cfg = load_encoder(out)
    assert cfg.arch == "astromer1" and model.n_params() == 661_505
    assert seen and seen[-1][0] == seen[-1][1] == (www / "macho_a0.zip").stat().st_size
    assert (tmp_path / "cache" / "macho_a0.zip").exists()

    raw = bytearray((www / "macho_a0.zip").read_bytes())
    raw[500] ^= 0xFF
    (www / "bad.zip").write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="sha256"):
        download("macho_a0", tmp_path / "bad", url=f"{base}/bad.zip")
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ModelError, match="cannot download"):
        download("macho_a0", tmp_path / "missing", url=f"{base}/nothing-here.zip")
    with pytest.raises(ModelError, match="unknown official weights"):
        download("nope", tmp_path / "x")
    # the verified cached archive is reused without the network
    out2 = download("macho_a0", tmp_path / "m2", url=f"{base}/nothing-here.zip", cache_dir=tmp_path / "cache")
    assert read_encoder_config(out2)["source"]["sha256"] == OFFICIAL["macho_a0"]["sha256"]


def test_cli_import_and_errors(shared, tmp_path, capsys):
    assert (
        cli_main(
            ["weights", "import", str(weights_dir(shared) / "macho_a0.zip"), "--out", str(tmp_path / "m")]
        )
        == 0
    )
    assert "661,505 parameters" in capsys.readouterr().out
    assert load_encoder(tmp_path / "m")[1].n_layers == 2
    assert cli_main(["weights", "import", str(tmp_path / "missing.zip"), "--out", str(tmp_path / "x")]) == 1
    assert "no such file" in capsys.readouterr().err
    assert cli_main(["weights", "download", "nope"]) == 1
    assert "unknown official weights" in capsys.readouterr().err


def test_import_from_folder_index_and_h5_paths_gives_the_same_weights(shared, macho_extracted, tmp_path):
    from safetensors.numpy import load_file

    def state(out):
        return load_file(str(out / "model.safetensors"))

    zipped = state(import_official(weights_dir(shared) / "macho_a0.zip", tmp_path / "zip"))
    for i, src in enumerate([macho_extracted, macho_extracted / "macho" / "weights.index"]):
        other = state(import_official(src, tmp_path / f"m{i}"))
        assert zipped.keys() == other.keys() and all(np.array_equal(zipped[k], other[k]) for k in zipped)
    assert read_encoder_config(tmp_path / "m1")["source"]["name"] == "macho"

    atlas = extract_archive(weights_dir(shared) / "atlas.zip", tmp_path / "atlas_x")
    a = state(import_official(weights_dir(shared) / "atlas.zip", tmp_path / "a0"))
    b = state(import_official(atlas / "atlas" / "weights.h5", tmp_path / "a1"))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], zipped[k]) for k in a)  # ATLAS is a different model
