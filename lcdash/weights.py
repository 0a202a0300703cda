"""Official Astromer weights without TensorFlow: read, convert, save, load, download.

* TF2 tensor-bundle checkpoints (`weights.index` + `weights.data-0000x-of-0000y`): the index is a
  LevelDB SSTable mapping tensor names to BundleEntryProto records (dtype, shape, shard, offset, size,
  crc32c); the data shards hold raw little-endian tensor bytes. A small SSTable reader and protobuf
  decoder below read them.
* Keras `.h5` weights (ATLAS) with h5py.

Converted encoders are stored as `model.safetensors` + `config.json` (architecture, hyper-parameters,
source, sha256 of the source archive); loading never unpickles anything.
Variable names and the layer each feeds: ../shared/golden/README.md section 3.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import struct
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lcdash.errors import ModelError, one_line
from lcdash.jsonio import read_encoder_config, read_json_object

BASE_URL = "https://github.com/astromer-science/weights/raw/main"

# name -> (url, sha256 of the archive). The 2023 experiment checkpoints use other code (golden README
# sections 1 and 7) and are listed so that asking for them gives a clear answer, not a 404.
OFFICIAL: dict[str, dict[str, str]] = {
    "macho_a0": {
        "url": f"{BASE_URL}/macho_a0.zip",
        "sha256": "76a204a37a0d47bfd722477f55231624c0c56cf9eea3369b5f22ff445d95158b",
        "about": "Astromer 1 pretrained on MACHO (the paper's model), TF checkpoint",
    },
    "atlas": {
        "url": f"{BASE_URL}/atlas.zip",
        "sha256": "ea4c4dae7407554dd6f2dd3c4b5eb0faac83b07b2022786a0c307002c4c643d6",
        "about": "Astromer 1 pretrained on ATLAS, Keras h5",
    },
    "astromer_1": {
        "url": f"{BASE_URL}/astromer_1.tar.gz",
        "sha256": "7eb91319e6604baf4601ed4e58d5b180ed40be0dd54b73d9b34efd22003113fc",
        "about": "2023 experiment 'paper' checkpoint",
        "unsupported": "true",
    },
    "astromer_2": {
        "url": f"{BASE_URL}/astromer_2.tar.gz",
        "sha256": "f2381bf7b77f0b2ecf4bd615e665d823a62baa60341927996b12d93d7ef2ffc6",
        "about": "2023 experiment 'paper_nsp' checkpoint",
        "unsupported": "true",
    },
}

ProgressFn = Callable[[int, int, str], None]


# ------------------------------------------------------------------------------------------------
# protobuf wire format (just what BundleEntryProto / BundleHeaderProto need)
# ------------------------------------------------------------------------------------------------
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ModelError("checkpoint index is truncated (varint runs past the end)")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise ModelError("checkpoint index is corrupt (varint too long)")


def _fields(buf: bytes) -> list[tuple[int, int, object]]:
    """Decode one protobuf message into (field number, wire type, value) triples; length-delimited
    values stay bytes, fixed32/64 stay ints."""
    out, pos = [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = _varint(buf, pos)
        elif wire == 1:
            val = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            val = bytes(buf[pos : pos + n])
            pos += n
        elif wire == 5:
            val = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        else:
            raise ModelError(f"checkpoint index is corrupt (protobuf wire type {wire})")
        out.append((num, wire, val))
    return out


# TensorFlow DataType enum -> numpy little-endian dtype (the numeric types a checkpoint may hold)
_TF_DTYPES = {
    1: "<f4",
    2: "<f8",
    3: "<i4",
    4: "u1",
    5: "<i2",
    6: "i1",
    9: "<i8",
    10: "?",
    14: "<u2",
    17: "<u2",
    19: "<f2",
    22: "<u4",
    23: "<u8",
}
_BFLOAT16 = 14


def _parse_entry(buf: bytes) -> dict:
    """BundleEntryProto: dtype=1, shape=2 (TensorShapeProto: dim=2 {size=1}), shard_id=3, offset=4,
    size=5, crc32c=6 (fixed32), slices=7."""
    e = {"dtype": 0, "shape": [], "shard_id": 0, "offset": 0, "size": 0, "crc32c": None, "sliced": False}
    for num, _, val in _fields(buf):
        if num == 1:
            e["dtype"] = val
        elif num == 2:
            for dnum, _, dval in _fields(val):
                if dnum == 2:
                    size = next((v for n, _, v in _fields(dval) if n == 1), 0)
                    e["shape"].append(size - (1 << 64) if size >= 1 << 63 else size)
        elif num == 3:
            e["shard_id"] = val
        elif num == 4:
            e["offset"] = val
        elif num == 5:
            e["size"] = val
        elif num == 6:
            e["crc32c"] = val
        elif num == 7:
            e["sliced"] = True
    return e


# ------------------------------------------------------------------------------------------------
# crc32c (Castagnoli), as TF masks it
# ------------------------------------------------------------------------------------------------
def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def _crc32c_bytes(crc: int, data) -> int:
    """Raw register update, one byte at a time (no initial value / final xor)."""
    table = _CRC_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc


_CRC_CHUNK = 256
_CRC_NP = np.array(_CRC_TABLE, np.uint32)


@functools.cache
def _crc32c_shift_tables() -> list[list[int]]:
    """The register after _CRC_CHUNK zero bytes, as 4 byte-wise lookup tables (the update is linear
    over GF(2), so shift(r) = xor of the tables at r's four bytes)."""
    regs = (np.arange(256, dtype=np.uint32)[None, :] << (8 * np.arange(4, dtype=np.uint32))[:, None]).ravel()
    for _ in range(_CRC_CHUNK):
        regs = _CRC_NP[regs & 0xFF] ^ (regs >> 8)
    return [row.tolist() for row in regs.reshape(4, 256)]


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of data. Long inputs are cut into 256-byte chunks whose CRCs numpy computes
    side by side, then chained with the zero-shift tables: ~100x faster than byte by byte."""
    n_chunks = len(data) // _CRC_CHUNK
    if n_chunks < 8:
        return _crc32c_bytes(0xFFFFFFFF, data) ^ 0xFFFFFFFF
    cols = np.frombuffer(data, np.uint8, count=n_chunks * _CRC_CHUNK).reshape(n_chunks, _CRC_CHUNK).T.copy()
    regs = np.zeros(n_chunks, np.uint32)
    for col in cols:  # byte j of every chunk at once
        regs = _CRC_NP[(regs ^ col) & 0xFF] ^ (regs >> 8)
    t0, t1, t2, t3 = _crc32c_shift_tables()
    crc = 0xFFFFFFFF
    for part in regs.tolist():  # crc(A || B) register = shift_len(B)(crc(A)) xor crc_from_zero(B)
        crc = t0[crc & 0xFF] ^ t1[(crc >> 8) & 0xFF] ^ t2[(crc >> 16) & 0xFF] ^ t3[crc >> 24] ^ part
    crc = _crc32c_bytes(crc, data[n_chunks * _CRC_CHUNK :])
    return crc ^ 0xFFFFFFFF


def _unmask_crc(masked: int) -> int:
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# ------------------------------------------------------------------------------------------------
# LevelDB SSTable (the .index file)
# ------------------------------------------------------------------------------------------------
_TABLE_MAGIC = 0xDB4775248B80FB57


def _block(data: bytes, handle: bytes | tuple[int, int]) -> bytes:
    if isinstance(handle, bytes):
        offset, pos = _varint(handle, 0)
        size, _ = _varint(handle, pos)
    else:
        offset, size = handle
    if offset + size + 5 > len(data):
        raise ModelError("checkpoint index is truncated (block past the end of the file)")
    compression = data[offset + size]
    if compression != 0:
        raise ModelError(
            f"checkpoint index block is compressed (type {compression}); only uncompressed is supported"
        )
    return data[offset : offset + size]


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    """Entries of one block: keys are prefix-compressed against the previous key (restart points
    reset the prefix; walking all entries in order needs only the shared-prefix lengths)."""
    if len(block) < 4:
        raise ModelError("checkpoint index is corrupt (block too small)")
    n_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 - 4 * n_restarts
    if end < 0:
        raise ModelError("checkpoint index is corrupt (restart array)")
    out, pos, key = [], 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        vlen, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        out.append((key, block[pos : pos + vlen]))
        pos += vlen
    return out


def read_sstable(path: str | os.PathLike) -> dict[bytes, bytes]:
    """All key -> value pairs of a LevelDB table file (footer -> index block -> data blocks)."""
    data = Path(path).read_bytes()
    if len(data) < 48:
        raise ModelError(f"{path} is not a TensorFlow checkpoint index (too short)")
    footer = data[-48:]
    if struct.unpack_from("<Q", footer, 40)[0] != _TABLE_MAGIC:
        raise ModelError(f"{path} is not a TensorFlow checkpoint index (bad table magic)")
    pos = 0
    _, pos = _varint(footer, pos)  # metaindex offset
    _, pos = _varint(footer, pos)  # metaindex size
    idx_off, pos = _varint(footer, pos)
    idx_size, pos = _varint(footer, pos)
    table = {}
    for _, handle in _block_entries(_block(data, (idx_off, idx_size))):
        for k, v in _block_entries(_block(data, handle)):
            table[k] = v
    return table


def read_tf_checkpoint(prefix: str | os.PathLike, verify_crc: bool = True) -> dict[str, np.ndarray]:
    """Numeric tensors of a TF2 tensor-bundle checkpoint `prefix` (the path without `.index`), by
    name. Strings (the object graph) are skipped."""
    prefix = str(prefix)
    index = prefix + ".index"
    if not os.path.exists(index):
        raise ModelError(f"no checkpoint index at {index}")
    table = read_sstable(index)
    header = table.pop(b"", None)
    num_shards = 1
    if header is not None:
        for num, _, val in _fields(header):
            if num == 1:
                num_shards = val
            elif num == 2 and val != 0:
                raise ModelError(f"{index}: big-endian checkpoints are not supported")
    shards: dict[int, bytes] = {}
    out = {}
    for key, value in table.items():
        name = key.decode("utf-8", "replace")
        e = _parse_entry(value)
        if e["dtype"] not in _TF_DTYPES:
            continue  # DT_STRING object graph, resources, variants
        if e["sliced"]:
            raise ModelError(f"{index}: partitioned (sliced) variable {name} is not supported")
        sid = e["shard_id"]
        if sid not in shards:
            shard = f"{prefix}.data-{sid:05d}-of-{num_shards:05d}"
            if not os.path.exists(shard):
                raise ModelError(f"checkpoint data shard missing: {shard}")
            shards[sid] = Path(shard).read_bytes()
        raw = shards[sid][e["offset"] : e["offset"] + e["size"]]
        if len(raw) != e["size"]:
            raise ModelError(f"checkpoint data shard {sid} is truncated at tensor {name}")
        if verify_crc and e["crc32c"] is not None and crc32c(raw) != _unmask_crc(e["crc32c"]):
            raise ModelError(f"checksum mismatch in checkpoint tensor {name}: the file is corrupt")
        dt = np.dtype(_TF_DTYPES[e["dtype"]])
        arr = np.frombuffer(raw, dt)
        if e["dtype"] == _BFLOAT16:
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        n = int(np.prod(e["shape"])) if e["shape"] else 1
        if arr.size != n:
            raise ModelError(f"checkpoint tensor {name}: {arr.size} values for shape {e['shape']}")
        out[name] = arr.reshape(e["shape"]).copy()
    return out


# ------------------------------------------------------------------------------------------------
# mapping to the PyTorch model
# ------------------------------------------------------------------------------------------------
def _dense(sd: dict, torch_name: str, kernel: np.ndarray, bias: np.ndarray) -> None:
    sd[f"{torch_name}.weight"] = np.ascontiguousarray(kernel.T)  # Keras kernel [in, out]
    sd[f"{torch_name}.bias"] = bias


def _norm(sd: dict, torch_name: str, gamma: np.ndarray, beta: np.ndarray) -> None:
    sd[f"{torch_name}.weight"] = gamma
    sd[f"{torch_name}.bias"] = beta


def astromer1_state_from_checkpoint(tensors: dict[str, np.ndarray]) -> tuple[dict, int]:
    """Map the python-library Astromer 1 checkpoint names (golden README section 3) to the PyTorch
    state dict. Returns (state dict of numpy arrays, n_layers)."""
    suffix = "/.ATTRIBUTES/VARIABLE_VALUE"
    t = {k[: -len(suffix)]: v for k, v in tensors.items() if k.endswith(suffix)}
    enc, reg = "layer_with_weights-0", "layer_with_weights-1"
    if f"{enc}/inp_transform/kernel" not in t:
        found = ", ".join(sorted(t)[:6])
        raise ModelError(
            "checkpoint is not an Astromer 1 (python-library) model: no "
            f"{enc}/inp_transform/kernel (found: {found} ...)"
        )
    layers = sorted({int(k.split("/")[2]) for k in t if k.startswith(f"{enc}/enc_layers/")})
    if layers != list(range(len(layers))):
        raise ModelError(f"checkpoint has non-consecutive encoder layers {layers}")
    used, sd = set(), {}

    def get(name):
        if name not in t:
            raise ModelError(f"checkpoint lacks the variable {name}")
        used.add(name)
        return t[name]

    def dense(tn, cn):
        _dense(sd, tn, get(f"{cn}/kernel"), get(f"{cn}/bias"))

    def norm(tn, cn):
        _norm(sd, tn, get(f"{cn}/gamma"), get(f"{cn}/beta"))

    dense("inp_transform", f"{enc}/inp_transform")
    for i in layers:
        p, q = f"{enc}/enc_layers/{i}", f"blocks.{i}"
        for tf_name, pt_name in [("wq", "wq"), ("wk", "wk"), ("wv", "wv"), ("dense", "out")]:
            dense(f"{q}.attn.{pt_name}", f"{p}/mha/{tf_name}")
        dense(f"{q}.ffn.fc1", f"{p}/ffn/layer_with_weights-0")
        dense(f"{q}.ffn.fc2", f"{p}/ffn/layer_with_weights-1")
        norm(f"{q}.ln1", f"{p}/layernorm1")
        norm(f"{q}.ln2", f"{p}/layernorm2")
    norm("head.ln", f"{reg}/bn_0")
    dense("head.out", f"{reg}/reg_layer")
    model_vars = {k for k in t if k.startswith(("layer_with_weights-", "layer-"))}
    extra = sorted(model_vars - used)
    if extra:
        raise ModelError(f"checkpoint has variables this Astromer 1 model does not use: {extra[:5]}")
    return sd, len(layers)


def astromer1_state_from_h5(path: str | os.PathLike) -> tuple[dict, int]:
    """Map a Keras 2 `.h5` of the python-library Astromer 1 (layers `encoder`, `regression`). The
    `weight_names` order is the model's weight order: input Dense, then per block WQ, WK, WV,
    MixerDense, FFN Dense 1, FFN Dense 2, LN1, LN2; the head is RegLayer then its LayerNorm."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ModelError(f"cannot read Keras weights {path}: {exc}") from exc
    with f:
        if "encoder" not in f or "regression" not in f:
            raise ModelError(
                f"{path} is not an Astromer 1 Keras file (needs layers 'encoder' and 'regression')"
            )

        def weights(layer):
            g = f[layer]
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in g.attrs["weight_names"]]
            return [(n, np.asarray(g[n][()])) for n in names]

        enc, reg = weights("encoder"), weights("regression")
    if (len(enc) - 2) % 16 or len(enc) < 18 or len(reg) != 4:
        raise ModelError(f"{path}: unexpected number of weights ({len(enc)} encoder, {len(reg)} head)")

    def take(items, i, kinds):
        out = []
        for j, kind in enumerate(kinds):
            name, arr = items[i + j]
            if not name.split("/")[-1].startswith(kind):
                raise ModelError(f"{path}: expected a {kind} at weight {i + j}, found {name}")
            out.append(arr)
        return out

    sd: dict = {}
    _dense(sd, "inp_transform", *take(enc, 0, ["kernel", "bias"]))
    n_layers = (len(enc) - 2) // 16
    for i in range(n_layers):
        base, q = 2 + 16 * i, f"blocks.{i}"
        for j, (pt, tag) in enumerate([("wq", "WQ"), ("wk", "WK"), ("wv", "WV"), ("out", "MixerDense")]):
            if f"/{tag}/" not in enc[base + 2 * j][0]:
                raise ModelError(
                    f"{path}: expected {tag} at weight {base + 2 * j}, found {enc[base + 2 * j][0]}"
                )
            _dense(sd, f"{q}.attn.{pt}", *take(enc, base + 2 * j, ["kernel", "bias"]))
        _dense(sd, f"{q}.ffn.fc1", *take(enc, base + 8, ["kernel", "bias"]))
        _dense(sd, f"{q}.ffn.fc2", *take(enc, base + 10, ["kernel", "bias"]))
        _norm(sd, f"{q}.ln1", *take(enc, base + 12, ["gamma", "beta"]))
        _norm(sd, f"{q}.ln2", *take(enc, base + 14, ["gamma", "beta"]))
    _dense(sd, "head.out", *take(reg, 0, ["kernel", "bias"]))
    _norm(sd, "head.ln", *take(reg, 2, ["gamma", "beta"]))
    return sd, n_layers


# ------------------------------------------------------------------------------------------------
# archives and import
# ------------------------------------------------------------------------------------------------
def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _safe_target(root: Path, name: str) -> Path:
    target = (root / name).resolve()
    if target != root and root not in target.parents:
        raise ModelError(f"archive member {name!r} would be written outside the extraction folder")
    return target


MAX_ARCHIVE_BYTES = 4 * 2**30  # official archives unpack to a few MB


def extract_archive(path: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract a .zip / .tar(.gz) into dest, refusing absolute paths, '..' escapes and links."""
    path, root = Path(path), Path(dest).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(path):
        import zlib

        try:
            with zipfile.ZipFile(path) as z:
                if sum(i.file_size for i in z.infolist()) > MAX_ARCHIVE_BYTES:
                    raise ModelError(f"{path.name}: unpacks to more than {MAX_ARCHIVE_BYTES // 2**30} GB")
                for info in z.infolist():
                    target = _safe_target(root, info.filename)
                    if info.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with z.open(info) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
            raise ModelError(f"{path.name}: a damaged zip archive ({one_line(exc)})") from exc
        return root
    try:
        tf = tarfile.open(path)
    except (tarfile.TarError, OSError) as exc:
        raise ModelError(f"{path} is neither a zip nor a tar archive") from exc
    with tf:
        try:
            members = tf.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ModelError(f"{path.name}: a damaged tar archive ({one_line(exc)})") from exc
        if sum(m.size for m in members) > MAX_ARCHIVE_BYTES:
            raise ModelError(f"{path.name}: unpacks to more than {MAX_ARCHIVE_BYTES // 2**30} GB")
        for m in members:
            target = _safe_target(root, m.name)
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif m.isfile():
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(m)
                with src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            else:
                raise ModelError(f"archive member {m.name!r} is a link or device; refusing to extract")
    return root


def _find_source(root: Path) -> tuple[str, Path]:
    """('ckpt', prefix) or ('h5', file) inside an extracted archive or a folder."""
    if root.is_file():
        if root.suffix == ".h5":
            return "h5", root
        if root.suffix == ".index":
            return "ckpt", root.with_suffix("")
    indexes = sorted(root.rglob("*.index"))
    h5s = sorted(root.rglob("*.h5"))
    if indexes:
        return "ckpt", indexes[0].with_suffix("")
    if h5s:
        return "h5", h5s[0]
    raise ModelError(f"no TensorFlow checkpoint (*.index) or Keras weights (*.h5) found in {root}")


def _unsupported_2023(root: Path) -> str | None:
    """The 2023 experiment checkpoints ship a config.toml: name why they cannot be imported."""
    tomls = list(root.rglob("config.toml")) if root.is_dir() else []
    if not tomls:
        return None
    text = tomls[0].read_text(errors="replace")
    exp = next(
        (ln.split("=", 1)[1].strip().strip('"') for ln in text.splitlines() if ln.startswith("exp_name")), "?"
    )
    return (
        f"this is a 2023 Astromer experiment checkpoint (exp_name {exp!r}, cridonoso/astromer @ ae142b5); "
        "it was made by different code (its own input embedding, time scaling and positional encoding; "
        "see ../shared/golden/README.md section 7) from the published Astromer 1/2 that lcdash implements, "
        "so it cannot be imported. Use macho_a0 or atlas."
    )


def import_official(path: str | os.PathLike, out_dir: str | os.PathLike, name: str | None = None) -> Path:
    """Convert an official archive (zip / tar.gz) or an extracted folder / checkpoint into out_dir
    (model.safetensors + config.json). Returns out_dir."""
    import torch

    from lcdash.models.astromer import Astromer

    path = Path(path)
    if not path.exists():
        raise ModelError(f"no such file or folder: {path}")
    archive_sha = sha256_file(path) if path.is_file() else None
    with tempfile.TemporaryDirectory(prefix="lcdash-weights-") as tmp:
        if path.is_file() and path.suffix not in (".h5", ".index"):
            root = extract_archive(path, tmp)
        else:
            root = path
        why = _unsupported_2023(root)
        if why:
            raise ModelError(why)
        kind, src = _find_source(root)
        try:
            if kind == "ckpt":
                sd, n_layers = astromer1_state_from_checkpoint(read_tf_checkpoint(src))
            else:
                sd, n_layers = astromer1_state_from_h5(src)
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - struct, h5py, KeyError...: a damaged file
            raise ModelError(f"{src.name}: cannot read the weights ({one_line(exc)})") from exc
        conf = {}
        for cj in (src.parent / "conf.json",) if src.parent.is_dir() else ():
            if cj.exists():
                conf = _reference_conf(cj)
    try:
        d_ff = int(sd["blocks.0.ffn.fc1.weight"].shape[0])
        d_model = int(sd["inp_transform.weight"].shape[0])
    except (KeyError, IndexError, AttributeError) as exc:
        raise ModelError(f"{path.name}: the weights lack the Astromer 1 input layer or first block") from exc
    cfg = config_from_dict(
        {
            "arch": "astromer1",
            "n_layers": n_layers,
            "d_model": d_model,
            "d_ff": d_ff,
            "n_heads": conf.get("heads", 4),
            "window": conf.get("max_obs", 200),
        },
        f"{path.name} (conf.json)",
    )
    _check_shapes({k: tuple(np.shape(v)) for k, v in sd.items()}, cfg, path.name, exact=False)
    model = Astromer(cfg)
    state = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in sd.items()}
    _check_finite(state, path.name)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise ModelError(
            f"{path.name}: the weights do not fit the Astromer 1 model ({one_line(exc)})"
        ) from exc
    if missing or unexpected:
        raise ModelError(
            one_line(f"weights do not fit the Astromer 1 model: missing {missing}, unexpected {unexpected}")
        )
    extra = {
        "source": {
            "name": name
            or (path.parent.name if path.stem.split(".")[0] == "weights" else path.stem.split(".")[0]),
            "path": str(path.name),
            "sha256": archive_sha,
            "format": "tf-checkpoint" if kind == "ckpt" else "keras-h5",
            "reference_conf": conf,
        }
    }
    return save_encoder(model, cfg, out_dir, extra=extra)


# ------------------------------------------------------------------------------------------------
# save / load
# ------------------------------------------------------------------------------------------------
def save_encoder(model, cfg, out_dir: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write model.safetensors + config.json ({"arch", ..., "config": cfg, **extra})."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt", "arch": cfg.arch})
    meta = {
        "format": "lcdash-astromer",
        "version": 1,
        "arch": cfg.arch,
        "config": cfg.to_dict(),
        "n_params": int(sum(v.numel() for v in state.values())),
        **(extra or {}),
    }
    (out / "config.json").write_text(json.dumps(meta, indent=2, default=str))
    return out


# Bounds on an encoder configuration from an untrusted folder; the published models sit far
# inside them (Astromer 2: 6 blocks, d_model 256).
CONFIG_INTS = {
    "n_layers": (1, 48),
    "n_heads": (1, 64),
    "d_model": (1, 4096),
    "d_ff": (1, 16384),
    "window": (1, 10_000),
}
CONFIG_FLOATS = {"dropout": (0.0, 1.0), "ln_eps": (0.0, 1.0), "pe_base": (1.0, 1e12)}


def config_from_dict(d, where: str):
    """AstromerConfig from untrusted JSON: every value of the right type and within CONFIG_INTS /
    CONFIG_FLOATS, else a one-line ModelError naming the key."""
    import math

    from lcdash.models.astromer import AstromerConfig

    if not isinstance(d, dict):
        raise ModelError(f"{where}: the model configuration must be a JSON object, not {type(d).__name__}")
    for key, (lo, hi) in CONFIG_INTS.items():
        if key in d:
            v = d[key]
            if isinstance(v, bool) or not isinstance(v, int):
                raise ModelError(f"{where}: {key} must be a whole number, got {one_line(repr(v), 40)}")
            if not lo <= v <= hi:
                raise ModelError(f"{where}: {key} must be between {lo} and {hi:,}, got {v:,}")
    for key, (lo, hi) in CONFIG_FLOATS.items():
        if key in d:
            v = d[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ModelError(f"{where}: {key} must be a number, got {one_line(repr(v), 40)}")
            if not lo <= v <= hi or (key == "ln_eps" and v <= 0):
                raise ModelError(f"{where}: {key} must be in [{lo}, {hi}], got {v}")
    if "arch" in d and not isinstance(d["arch"], str):
        raise ModelError(f"{where}: arch must be text, got {one_line(repr(d['arch']), 40)}")
    try:
        return AstromerConfig.from_dict(d)
    except ModelError as exc:
        raise ModelError(f"{where}: {one_line(exc)}") from exc
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        raise ModelError(f"{where}: not a valid model configuration ({one_line(exc)})") from exc


def _reference_conf(path: Path) -> dict:
    """An official archive's conf.json (heads, max_obs, ...), checked like any untrusted JSON."""
    return read_json_object(path, path.name)


def _expected_shapes(cfg) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of Astromer(cfg), from a model on the meta device (no memory used)."""
    import torch

    from lcdash.models.astromer import Astromer

    with torch.device("meta"):
        model = Astromer(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _check_shapes(found: dict[str, tuple], cfg, where: str, exact: bool = True) -> None:
    """The weights' tensor shapes against what cfg builds; `exact`: no other tensors allowed."""
    expected = _expected_shapes(cfg)
    for name, shape in found.items():
        if name in expected and tuple(shape) != expected[name]:
            raise ModelError(
                f"{where} does not match its configuration: tensor {name} has shape {list(shape)}, "
                f"d_model {cfg.d_model} / d_ff {cfg.d_ff} need {list(expected[name])}"
            )
    if exact:
        missing = sorted(set(expected) - set(found))
        extra = sorted(set(found) - set(expected))
        if missing or extra:
            what = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
            n = len(missing) + len(extra)
            raise ModelError(f"{where} does not match its configuration ({what}; {n} tensor(s) differ)")


def _safetensors_shapes(path: Path) -> dict[str, tuple]:
    """Tensor shapes from a safetensors header (8-byte length + JSON), read before any tensor."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ModelError(f"cannot read {path}: not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, 100 * 2**20):
            raise ModelError(f"cannot read {path}: not a safetensors file (bad header length)")
        try:
            header = json.loads(fh.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise ModelError(f"cannot read {path}: not a safetensors file ({one_line(exc)})") from exc
    if not isinstance(header, dict):
        raise ModelError(f"cannot read {path}: not a safetensors file (header is not a JSON object)")
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ModelError(f"{path.name}: tensor {one_line(name, 60)} has no valid shape")
        out[name] = tuple(shape)
    return out


def _check_finite(state: dict, where: str) -> None:
    import torch

    for name, t in state.items():
        if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ModelError(f"{where}: tensor {name} holds NaN or infinite values; the weights are damaged")


def load_encoder(model_dir: str | os.PathLike, device=None):
    """(model in eval mode, AstromerConfig) from a folder written by `save_encoder`.

    The folder may come from anyone, so before anything is allocated the configuration is
    checked (types, bounds) and the safetensors header's shapes are compared with what it builds;
    weights with NaN or inf are refused."""
    from safetensors.torch import load_file

    from lcdash.models.astromer import Astromer

    meta = read_encoder_config(model_dir)
    if "config" not in meta:
        raise ModelError(f"{model_dir}/config.json has no 'config' section")
    cfg = config_from_dict(meta["config"], f"{model_dir}/config.json")
    weights = Path(model_dir) / "model.safetensors"
    if not weights.exists():
        raise ModelError(f"{model_dir} has no model.safetensors")
    _check_shapes(_safetensors_shapes(weights), cfg, str(weights))
    try:
        state = load_file(str(weights), device="cpu")
    except Exception as exc:  # safetensors raises its own error types
        raise ModelError(f"cannot read {weights}: {one_line(exc)}") from exc
    _check_finite(state, str(weights))
    model = Astromer(cfg)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{weights} does not match its config.json: {one_line(exc)}") from exc
    model.eval()
    if device is not None:
        model.to(device)
    return model, cfg


# ------------------------------------------------------------------------------------------------
# download
# ------------------------------------------------------------------------------------------------
def download(
    name: str,
    out_dir: str | os.PathLike,
    url: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: ProgressFn | None = None,
) -> Path:
    """Fetch an official archive (urllib), check its sha256, convert it into out_dir.
    With `cache_dir`, a verified archive there is reused."""
    import urllib.error
    import urllib.request

    if name not in OFFICIAL:
        raise ModelError(f"unknown official weights {name!r}; known: {', '.join(OFFICIAL)}")
    spec = OFFICIAL[name]
    if spec.get("unsupported"):
        raise ModelError(
            f"{name} is a 2023 Astromer experiment checkpoint made by different code from the published "
            "Astromer 1/2; lcdash cannot import it. Use macho_a0 or atlas."
        )
    url = url or spec["url"]
    fname = spec["url"].rsplit("/", 1)[-1]
    with tempfile.TemporaryDirectory(prefix="lcdash-download-") as tmp:
        cached = Path(cache_dir) / fname if cache_dir else None
        if cached is not None and cached.exists() and sha256_file(cached) == spec["sha256"]:
            archive = cached
        else:
            archive = Path(tmp) / fname
            try:
                with urllib.request.urlopen(url, timeout=60) as resp, open(archive, "wb") as fh:
                    total = int(resp.headers.get("Content-Length") or 0)
                    done = 0
                    while chunk := resp.read(1 << 16):
                        fh.write(chunk)
                        done += len(chunk)
                        if progress:
                            progress(done, total, f"downloading {fname}")
            except (urllib.error.URLError, OSError, ValueError) as exc:
                raise ModelError(f"cannot download {name} from {url}: {exc}") from exc
            digest = sha256_file(archive)
            if digest != spec["sha256"]:
                raise ModelError(
                    f"{fname} from {url} has sha256 {digest}, expected {spec['sha256']}: "
                    "the download is corrupt or not the official file"
                )
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(archive, cached)
        return import_official(archive, out_dir, name=name)
