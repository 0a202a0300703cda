"""Store benchmark on ../shared/data/catalina_train: ingest rate, batch retrieval, layout choice.

    .venv/bin/python bench/store_bench.py [--data DIR] [--repeats 3] [--n-batch 10000]

Measures, each beside a straightforward pandas / DuckDB baseline run here too:
  1. ingest (observations/s): Parquet -> lcdash.io.prepare -> Store.ingest, against pandas
     read + sort + drop_duplicates + a plain DuckDB long-table insert;
  2. batch retrieval of N light curves as padded arrays (light curves/s): Store.read_batch,
     against pandas read_parquet + isin + groupby + pad;
  3. the physical layout (the reason for schema.OBSERVATIONS_DDL): the same batch read and a
     one-object read from a long table sorted by (oid, band, time) and from one row per
     (oid, band) with LIST columns, in the same DuckDB file.
Prints the median and best of --repeats runs. Targets: ingest >= 1M obs/s, retrieval >= 20k lc/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lcdash import io  # noqa: E402
from lcdash.lightcurve import LightCurveBatch  # noqa: E402
from lcdash.store import Store  # noqa: E402


def timed(fn, repeats):
    """Wall-clock times (and, in CPU, the process CPU seconds: all threads) of `repeats` runs."""
    times, cpu, out = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    CPU.append(statistics.median(cpu))
    return times, out


CPU: list[float] = []


def line(name, n, unit, times):
    """Rates from the median and best wall time; the CPU column is n / median CPU seconds, which the
    other processes on a shared machine disturb less than wall time."""
    med, best = statistics.median(times), min(times)
    print(
        f"  {name:<52s} {n / med:>11,.0f} {unit}/s median {n / best:>11,.0f} best "
        f"{n / CPU[-1]:>11,.0f} per CPU-s  ({med * 1e3:,.0f} ms)"
    )


def pad_groups(oid_codes, time, mag, err):
    """numpy padding of a long table already grouped by object (baseline helper)."""
    starts = np.flatnonzero(np.r_[True, oid_codes[1:] != oid_codes[:-1]])
    n = np.diff(np.r_[starts, oid_codes.size]).astype(np.int32)
    return LightCurveBatch.from_flat(
        np.arange(n.size), ["x"] * n.size, n, time, mag.astype(np.float32), err.astype(np.float32)
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "catalina_train"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n-batch", type=int, default=10_000)
    args = ap.parse_args()
    data = Path(args.data)
    obs_file, obj_file = data / "observations.parquet", data / "objects.parquet"
    if not obs_file.exists():
        print(f"no data at {data}; pass --data", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="lcdash-bench-"))
    n_rows = pd.read_parquet(obs_file, columns=["mag"]).shape[0]
    print(f"data: {obs_file} ({n_rows:,} observations); repeats={args.repeats}; duckdb {duckdb.__version__}")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")

    # 1. ingest -------------------------------------------------------------------------------
    print("\n1. ingest from Parquet (observations read per second)")
    counter = iter(range(10**6))

    def lcdash_ingest():
        obs = pd.read_parquet(obs_file)
        objects = pd.read_parquet(obj_file)
        o, j, report = io.prepare(obs, objects=objects)
        with Store(tmp / f"ingest{next(counter)}.duckdb") as store:
            return store.ingest(o, j, validation=report)

    def stages():
        t0 = time.perf_counter()
        obs = pd.read_parquet(obs_file)
        objects = pd.read_parquet(obj_file)
        t1 = time.perf_counter()
        o, j, report = io.prepare(obs, objects=objects)
        t2 = time.perf_counter()
        with Store(tmp / f"ingest{next(counter)}.duckdb") as store:
            store.ingest(o, j, validation=report)
        t3 = time.perf_counter()
        return t1 - t0, t2 - t1, t3 - t2

    def pandas_ingest():
        obs = pd.read_parquet(obs_file)
        tcol = "time_mjd" if "time_mjd" in obs.columns else "time"
        obs = obs.sort_values(["object_id", "band", tcol]).drop_duplicates(["object_id", "band", tcol])
        con = duckdb.connect(str(tmp / f"pandas{next(counter)}.duckdb"))
        con.execute("CREATE TABLE observations AS SELECT * FROM obs")
        con.close()
        return len(obs)

    times, report = timed(lcdash_ingest, args.repeats)
    line("lcdash: read + prepare + Store.ingest", n_rows, "obs", times)
    parts = [stages() for _ in range(max(1, args.repeats - 1))]
    med = [statistics.median(p[i] for p in parts) for i in range(3)]
    print(
        f"    stages (median s): read {med[0]:.2f}, prepare {med[1]:.2f}, Store.ingest {med[2]:.2f}; "
        f"Store.ingest alone {n_rows / med[2]:,.0f} obs/s"
    )
    print(f"    {report.summary()}")
    times, _ = timed(pandas_ingest, args.repeats)
    line("baseline: pandas read + sort + dedupe + DuckDB insert", n_rows, "obs", times)

    # 2. batch retrieval -------------------------------------------------------------------------
    db = tmp / "ingest0.duckdb"
    store = Store(db)
    all_oids = store.objects(columns=["oid", "object_id"])
    rng = np.random.default_rng(0)
    pick = rng.choice(len(all_oids), size=min(args.n_batch, len(all_oids)), replace=False)
    oids = all_oids["oid"].to_numpy()[pick]
    ids = all_oids["object_id"].to_numpy()[pick]
    n = oids.size
    print(f"\n2. batch retrieval of {n:,} random light curves as padded arrays")
    times, batch = timed(lambda: store.read_batch(oids), args.repeats)
    line("lcdash: Store.read_batch", n, "lc", times)
    print(f"    batch shape {batch.time.shape}, {int(batch.length.sum()):,} observations")

    def pandas_batch():
        obs = pd.read_parquet(obs_file)
        tcol = "time_mjd" if "time_mjd" in obs.columns else "time"
        sub = obs[obs["object_id"].isin(ids)].sort_values(["object_id", tcol])
        codes = sub.groupby("object_id", sort=False).ngroup().to_numpy()
        return pad_groups(codes, sub[tcol].to_numpy(), sub["mag"].to_numpy(), sub["mag_err"].to_numpy())

    times, _ = timed(pandas_batch, args.repeats)
    line("baseline: pandas read_parquet + isin + groupby + pad", n, "lc", times)
    npz = tmp / "batch.npz"
    times, _ = timed(lambda: batch.save(npz), args.repeats)
    line("LightCurveBatch.save (npz)", n, "lc", times)
    times, _ = timed(lambda: type(batch).load(npz), args.repeats)
    line("LightCurveBatch.load (npz)", n, "lc", times)
    one = oids[:200]
    times, _ = timed(lambda: [store.lightcurve(int(o)) for o in one], args.repeats)
    line("Store.lightcurve (one object, all bands)", one.size, "lc", times)
    store.close()

    # 3. layout ---------------------------------------------------------------------------------
    print("\n3. physical layout, same data and DuckDB file")
    con = duckdb.connect(str(db))
    con.execute(
        "CREATE TEMP TABLE long AS SELECT oid, band, time, mag, mag_err FROM observations "
        "ORDER BY oid, band, time"
    )
    req = pa.table({"i": np.arange(n), "oid": oids})
    con.register("req", req)

    def long_batch():
        r = con.execute(
            "SELECT l.oid, l.time, l.mag, l.mag_err FROM req JOIN long l USING (oid) "
            "ORDER BY req.i, l.band, l.time"
        ).fetchnumpy()
        o = r["oid"]
        return pad_groups(o, r["time"], r["mag"], np.nan_to_num(r["mag_err"]))

    def list_batch():
        tb = con.sql(
            "SELECT l.n_obs, l.time, l.mag, l.mag_err FROM req JOIN lightcurves l USING (oid) ORDER BY req.i"
        ).to_arrow_table()
        cnt = tb.column("n_obs").to_numpy()
        flat = [
            tb.column(c).combine_chunks().flatten().to_numpy(zero_copy_only=False)
            for c in ("time", "mag", "mag_err")
        ]
        return LightCurveBatch.from_flat(np.arange(cnt.size), ["x"] * cnt.size, cnt.astype(np.int32), *flat)

    times, _ = timed(long_batch, args.repeats)
    line("long table (oid, band, time): batch read + pad", n, "lc", times)
    times, _ = timed(list_batch, args.repeats)
    line("one row per (oid, band) with LIST columns: batch + pad", n, "lc", times)
    times, _ = timed(
        lambda: [
            con.execute(
                "SELECT time, mag, mag_err FROM long WHERE oid = ? ORDER BY band, time", [int(o)]
            ).fetchnumpy()
            for o in one
        ],
        args.repeats,
    )
    line("long table: one light curve", one.size, "lc", times)
    times, _ = timed(
        lambda: [
            con.sql(f"SELECT time, mag, mag_err FROM lightcurves WHERE oid = {int(o)}").to_arrow_table()
            for o in one
        ],
        args.repeats,
    )
    line("LIST columns: one light curve", one.size, "lc", times)
    con.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
