"""The store and the map at a million objects: every step a user takes on a large survey, timed, with
the peak memory of each step.

    .venv/bin/python bench/million_bench.py [--n-objects 1000000] [--work DIR] [--keep] [--json OUT]
        [--parquet DIR] [--db FILE] [--memory-limit 2GB]

Steps, in order, on one store (`--db`, default WORK/million.duckdb, replaced unless it already holds
the survey and --reuse-db is given):

1. the survey: `lcdash demo --out-parquet` (streamed synthetic survey, 10,000 objects a partition,
   one band, 60-400 observations a light curve) into WORK/parquet, or `--parquet DIR` reused;
2. ingest: `lcdash.store.ingest_dataset` (one partition read at a time, written 131,072 light curves an
   INSERT, a transaction each above 20M observations, undone on failure):
   objects/s and observations/s; the store's size on disk after it;
3. `Store.info()` (the sidebar), the Data page's filter (`Store.objects` with survey + label + period,
   LIMIT 1,001 as the page asks, and the full match) and two `Store.sql` queries (the page's default
   GROUP BY over objects, and one over all light curves);
4. `Store.read_batch` of 1,024 random objects and `Store.lightcurve` of one;
5. embeddings: BENCH-ONLY GENERATED VECTORS, not the encoder: embedding a million light curves with
   the encoder takes about an hour on 2 cores, so `bench_only_clustered_embeddings` writes clustered
   random vectors of the real shape of the shipped encoder (astromer2-logpe-folded-demo: 5 layers x
   128) in chunks of 50,000 with `save_embeddings`; then reads them back: `load_embeddings` of 1,024
   objects and a full `iter_embeddings` scan;
6. the projection as the `project` job computes it: `map_input_chunks` over the stored embeddings,
   `lcdash.projection.project` (a sampled UMAP fit + batched transform above SAMPLED_FIT_ABOVE
   points), `save_projection`; then `load_projection` and `workspace.projection_points` (what Explore
   reads);
7. a label set of 100,000 objects: `set_labels` (write), `get_labels` and `label_counts` (read).

Memory: a thread samples this process's RSS every 50 ms; "peak RSS" of a step is the largest sample
during it (the target: no step above 4 GB), and the process's overall peak (getrusage) is printed at
the end. DuckDB's memory limit (--memory-limit, default the store's) bounds what DuckDB holds.
The machine may be shared: the 1-minute load average is printed before and after each step.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SURVEY = "million (synthetic)"


def load() -> float:
    return round(os.getloadavg()[0], 2)


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Peak:
    """Largest RSS sampled (every 50 ms) since the last reset."""

    def __init__(self):
        self.peak = rss_mb()
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_mb())

    def reset(self) -> None:
        self.peak = rss_mb()

    def stop(self) -> None:
        self._stop.set()


class Bench:
    def __init__(self, json_path: str | None):
        self.rows: list[dict] = []
        self.peak = Peak()
        self.json_path = json_path
        self.meta: dict = {}

    def step(self, name: str, fn, n: int | None = None, unit: str = "", extra=None):
        """Run fn(), print and record: seconds, CPU seconds, rate, peak RSS, load before/after."""
        before = load()
        self.peak.reset()
        c0 = time.process_time()
        t0 = time.perf_counter()
        out = fn()
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
        row = {"step": name, "seconds": round(wall, 3), "cpu_s": round(cpu, 2),
               "peak_rss_mb": round(self.peak.peak), "load_before": before, "load_after": load()}
        if n is not None:
            row["n"] = n
            row["rate"] = round(n / wall, 1) if wall > 0 else None
            row["unit"] = unit
        if extra is not None:
            row.update(extra(out) if callable(extra) else extra)
        self.rows.append(row)
        rate = f"  {row['rate']:>14,.0f} {unit}/s" if n is not None and row["rate"] else ""
        more = "  " + ", ".join(f"{k}={v}" for k, v in row.items()
                                if k not in ("step", "seconds", "cpu_s", "peak_rss_mb", "load_before",
                                             "load_after", "n", "rate", "unit")) if extra else ""
        print(f"{name:<46s} {wall:>9.2f} s (CPU {cpu:>8.1f} s){rate}  peak RSS {row['peak_rss_mb']:>6,} MB  "
              f"load {before} -> {row['load_after']}{more}", flush=True)
        self.save()
        return out

    def save(self) -> None:
        if self.json_path:
            Path(self.json_path).write_text(json.dumps({**self.meta, "steps": self.rows}, indent=1))


def bench_only_clustered_embeddings(n: int, shape: tuple[int, int], seed: int, n_clusters: int = 12):
    """BENCH-ONLY stand-in for encoder output: chunks of clustered random vectors [n, L+1, d]
    (float32), centres N(0, 1) per cluster and layer, spread 0.3. Not embeddings of any light curve."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, *shape)).astype(np.float32)

    def chunk(m: int, rs: np.random.Generator):
        c = rs.integers(0, n_clusters, size=m)
        return centres[c] + 0.3 * rs.normal(size=(m, *shape)).astype(np.float32)

    return chunk


def store_size_mb(db: Path) -> float:
    files = [db, db.with_name(db.name + ".wal")]
    return sum(f.stat().st_size for f in files if f.exists()) / 2**20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-objects", type=int, default=1_000_000)
    ap.add_argument("--work", default=None,
                    help="folder for the survey and the store (default: a temp folder)")
    ap.add_argument("--parquet", default=None, help="reuse this `lcdash demo --out-parquet` dataset")
    ap.add_argument("--db", default=None, help="store file (default WORK/million.duckdb)")
    ap.add_argument("--reuse-db", action="store_true",
                    help="keep a store that already holds the survey (skip the ingest)")
    ap.add_argument("--memory-limit", default=None, help="DuckDB memory limit (default: the store's)")
    ap.add_argument("--partition-size", type=int, default=10_000)
    ap.add_argument("--labels", type=int, default=100_000, help="objects in the label set")
    ap.add_argument("--stop-after", choices=["reads", "embeddings"], default=None,
                    help="stop after step 4 (reads) or 5 (embeddings)")
    ap.add_argument("--keep", action="store_true", help="keep WORK (default: delete a temp folder)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import tempfile

    from lcdash import workspace
    from lcdash.projection import SAMPLED_FIT_ABOVE, map_input_chunks, project, sampled_fit_params
    from lcdash.simulate import write_survey_parquet
    from lcdash.store import Store
    from lcdash.store import labels as label_store
    from lcdash.store.embeddings import (
        DEFAULT_ENCODER,
        get_encoder,
        iter_embeddings,
        load_embeddings,
        register_default_encoder,
        save_embeddings,
    )
    from lcdash.store.ingest_dataset import ingest_dataset
    from lcdash.store.projections import load_projection, save_projection

    tmp = None
    if args.work is None:
        tmp = tempfile.mkdtemp(prefix="million-bench-")
        work = Path(tmp)
    else:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
    db = Path(args.db) if args.db else work / "million.duckdb"
    n = args.n_objects
    b = Bench(args.json)
    b.meta = {"n_objects": n, "cores": os.cpu_count(), "load_start": os.getloadavg(), "db": str(db),
              "embeddings": "BENCH-ONLY clustered random vectors (bench_only_clustered_embeddings), "
                            "not encoder output"}
    print(f"{n:,} objects; cores {os.cpu_count()}; load average {os.getloadavg()}; store {db}", flush=True)
    try:
        # 1-2: the survey and its ingest --------------------------------------------------------
        reuse = args.reuse_db and db.exists()
        if not reuse:
            parquet = Path(args.parquet) if args.parquet else work / "parquet"
            if not (parquet / "observations").is_dir():
                res = b.step("write Parquet survey (lcdash demo --out-parquet)",
                             lambda: write_survey_parquet(parquet, n, seed=0,
                                                          objects_per_partition=args.partition_size),
                             n, "objects")
                b.meta["survey"] = res
            for p in (db, db.with_name(db.name + ".wal")):
                p.unlink(missing_ok=True)
            shutil.rmtree(db.with_name(db.name + ".tmp"), ignore_errors=True)
            store = Store(db, memory_limit=args.memory_limit)
            rep = b.step("ingest (ingest_dataset, streamed)",
                         lambda: ingest_dataset(store, parquet, set_survey=SURVEY, synthetic=True),
                         n, "objects",
                         extra=lambda r: {"observations": r.observations_new,
                                          "obs_per_s": round(r.observations_new / r.seconds)})
            print(f"  {rep.summary()}", flush=True)
            store.con.execute("CHECKPOINT")
        else:
            store = Store(db, memory_limit=args.memory_limit)
        size = store_size_mb(db)
        b.meta["store_mb"] = round(size)
        print(f"store on disk: {size:,.0f} MB ({size * 2**20 / n:,.0f} bytes per object)", flush=True)

        # 3: info, filters, SQL -------------------------------------------------------------------
        info = b.step("info()", store.info, extra=lambda i: {"objects": i["objects"],
                                                             "observations": i["observations"]})
        n = info["objects"]
        cols = ["oid", "object_id", "survey", "label", "period", "n_obs", "bands", "ra", "dec", "synthetic"]
        label = next(iter(info["classes"]))
        b.step(f"objects(survey, label={label}, period) LIMIT 1001",
               lambda: store.objects(survey=SURVEY, label=label, period=(0.2, 2.0), limit=1001, columns=cols),
               extra=lambda df: {"rows": len(df)})
        b.step(f"objects(survey, label={label}, period) all rows",
               lambda: store.objects(survey=SURVEY, label=label, period=(0.2, 2.0), columns=cols),
               extra=lambda df: {"rows": len(df)})
        b.step("objects(n_obs >= 300, band) LIMIT 1001",
               lambda: store.objects(n_obs=(300, None), band="V", limit=1001, columns=cols),
               extra=lambda df: {"rows": len(df)})
        b.step("sql: label counts + median period (objects)",
               lambda: store.sql("SELECT label, count(*) AS n, median(period) AS median_period FROM objects "
                                 "GROUP BY label ORDER BY n DESC", timeout_s=60),
               extra=lambda df: {"rows": len(df)})
        b.step("sql: per band count, avg n_obs (lightcurves)",
               lambda: store.sql("SELECT band, count(*) AS n, avg(n_obs) AS mean_obs, "
                                 "max(time[n_obs]) AS last FROM lightcurves GROUP BY band", timeout_s=60),
               extra=lambda df: {"rows": len(df)})

        # 4: reads --------------------------------------------------------------------------------
        rng = np.random.default_rng(1)
        all_oids = store.objects(columns=["oid"])["oid"].to_numpy()
        pick = rng.choice(all_oids, size=min(1024, n), replace=False)
        b.step("read_batch(1024 random objects)", lambda: store.read_batch(pick), 1024, "light curves")
        b.step("read_batch(1024 random objects), again", lambda: store.read_batch(pick), 1024, "light curves")
        b.step("lightcurve(one object)", lambda: store.lightcurve(int(pick[0])))

        if args.stop_after == "reads":
            return 0

        # 5: embeddings (bench-only vectors) ------------------------------------------------------
        enc = register_default_encoder(store) or get_encoder(store, DEFAULT_ENCODER)
        shape = (enc["n_layers"] + 1, enc["d_model"])
        gen = bench_only_clustered_embeddings(n, shape, seed=0)
        chunk = 50_000

        def write_embeddings():
            rs = np.random.default_rng(2)
            for lo in range(0, all_oids.size, chunk):
                ids = all_oids[lo:lo + chunk]
                save_embeddings(store, DEFAULT_ENCODER, ids, "V", np.ones(ids.size, np.int32),
                                gen(ids.size, rs))

        print(f"embeddings: BENCH-ONLY clustered random vectors of shape {list(shape)} "
              f"(encoder {DEFAULT_ENCODER}'s), not encoder output", flush=True)
        b.step(f"save_embeddings (bench-only vectors {shape[0]}x{shape[1]}, 50k/call)", write_embeddings,
               int(all_oids.size), "objects")
        b.step("load_embeddings(1024 objects)", lambda: load_embeddings(store, DEFAULT_ENCODER, oids=pick),
               1024, "objects")
        b.step("iter_embeddings (full scan, 50k chunks)",
               lambda: sum(len(o) for o, _, _ in iter_embeddings(store, DEFAULT_ENCODER)),
               int(all_oids.size), "objects")

        if args.stop_after == "embeddings":
            return 0

        # 6: projection ---------------------------------------------------------------------------
        holder: dict = {}

        def prepare():
            chunks = iter_embeddings(store, DEFAULT_ENCODER)
            keys, X = map_input_chunks(((o, bs), layers) for o, bs, layers in chunks)
            holder["oid"] = np.concatenate([k[0] for k in keys])
            holder["band"] = [x for k in keys for x in k[1]]
            holder["X"] = X

        b.step("projection input (map_input_chunks)", prepare, n, "objects")
        sampled = sampled_fit_params(len(holder["X"]))
        b.meta["sampled_fit"] = sampled
        b.meta["sampled_fit_above"] = SAMPLED_FIT_ABOVE
        how = "sampled fit " + json.dumps(sampled) if sampled else "full UMAP fit"
        print(f"projection: {how}", flush=True)
        last = [0.0]

        def report(done, total, message):
            if time.monotonic() - last[0] > 30:
                last[0] = time.monotonic()
                print(f"  ... {message}", flush=True)

        params = {"n_neighbors": 15, "min_dist": 0.1, "metric": "cosine", "seed": 0}
        xy = b.step("UMAP projection (project)",
                    lambda: project(holder["X"], **params, progress=report, sampled_fit=sampled), n, "points")
        del holder["X"]
        proj_params = {**params, "band": "V", **({"sampled_fit": sampled} if sampled else {})}
        proj_id = b.step("save_projection",
                         lambda: save_projection(store, DEFAULT_ENCODER, "weighted", proj_params,
                                                 holder["oid"], holder["band"], xy,
                                                 layer_weights=np.full(shape[0], 1 / shape[0])),
                         n, "points")
        holder.clear()
        b.meta["proj_id"] = proj_id
        b.step("load_projection", lambda: load_projection(store, proj_id), n, "points")
        b.step("workspace.projection_points (Explore's read)",
               lambda: workspace.projection_points(store, proj_id), n, "points")

        # 7: labels -------------------------------------------------------------------------------
        m = min(args.labels, n)
        lab_oids = store.objects(columns=["oid"], limit=m)["oid"].to_numpy()
        set_id = label_store.create_set(store, f"bench {time.time():.0f}")
        b.step(f"set_labels({m:,} objects)", lambda: label_store.set_labels(store, set_id, lab_oids, "bench"),
               m, "labels")
        b.step(f"relabel {m // 2:,} of them",
               lambda: label_store.set_labels(store, set_id, lab_oids[: m // 2], "other"), m // 2, "labels")
        b.step(f"get_labels({m:,})", lambda: label_store.get_labels(store, set_id), m, "labels")
        b.step("label_counts", lambda: label_store.label_counts(store, set_id))
        store.con.execute("CHECKPOINT")
        store.close()
        size = store_size_mb(db)
        b.meta["store_mb_end"] = round(size)
        print(f"store on disk at the end: {size:,.0f} MB", flush=True)
    finally:
        b.peak.stop()
        overall = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        b.meta["peak_rss_mb_process"] = round(overall)
        b.meta["load_end"] = os.getloadavg()
        b.save()
        print(f"process peak RSS {overall:,.0f} MB; load average at the end {os.getloadavg()}", flush=True)
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
