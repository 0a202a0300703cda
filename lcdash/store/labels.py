"""Named few-shot label sets made in the app (catalogue labels stay in objects.label).

A set is addressed by its integer ``set_id`` or by its name (every function accepts either). Labels
are (set, oid) -> label with upsert semantics, so labelling the current selection again simply
relabels it. A *label source* is "catalogue" (objects.label) or a set's name: `load_labels` reads
either. Which objects to label next is `lcdash.suggest`'s business.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from lcdash.errors import LcdashError, ValidationError


def _clean_name(name) -> str:
    name = str(name or "").strip()
    if not name:
        raise LcdashError("a label set needs a non-empty name")
    return name


def _set_id(cur, set_ref) -> int:
    """The set_id of a set given by id or name; unknown sets raise."""
    if isinstance(set_ref, (int, np.integer)) and not isinstance(set_ref, bool):
        rows = cur.execute("SELECT set_id FROM label_sets WHERE set_id = ?", [int(set_ref)]).fetchall()
    else:
        rows = cur.execute("SELECT set_id FROM label_sets WHERE name = ?", [str(set_ref)]).fetchall()
    if not rows:
        raise LcdashError(f"no label set {set_ref!r} in the store")
    return int(rows[0][0])


def _oids(oids) -> np.ndarray:
    return np.unique(np.asarray(list(oids) if not isinstance(oids, np.ndarray) else oids,
                                dtype=np.int64).reshape(-1))


def create_set(store, name: str, description: str = "") -> int:
    """Create an empty label set; returns its set_id. Names are unique."""
    name = _clean_name(name)
    with store.transaction() as cur:
        if cur.execute("SELECT 1 FROM label_sets WHERE name = ?", [name]).fetchall():
            raise LcdashError(f"a label set named {name!r} already exists")
        set_id = cur.execute("SELECT nextval('label_set_seq')").fetchall()[0][0]
        cur.execute("INSERT INTO label_sets (set_id, name, description) VALUES (?, ?, ?)",
                    [set_id, name, description or ""])
    return int(set_id)


def list_sets(store) -> pd.DataFrame:
    """set_id, name, description, created_at, n_labels, n_classes; oldest first."""
    cur = store.cursor()
    try:
        return cur.execute(
            "SELECT s.set_id, s.name, s.description, s.created_at, count(l.oid) AS n_labels, "
            "count(DISTINCT l.label) AS n_classes "
            "FROM label_sets s LEFT JOIN labels l USING (set_id) GROUP BY ALL ORDER BY s.set_id"
        ).df()
    finally:
        cur.close()


def get_set(store, set_ref) -> dict:
    """One set's row of `list_sets` as a dict."""
    cur = store.cursor()
    try:
        set_id = _set_id(cur, set_ref)
    finally:
        cur.close()
    sets = list_sets(store)
    return sets[sets["set_id"] == set_id].iloc[0].to_dict()


def rename_set(store, set_ref, new_name: str, description: str | None = None) -> None:
    """Rename a set (and optionally replace its description)."""
    new_name = _clean_name(new_name)
    with store.transaction() as cur:
        set_id = _set_id(cur, set_ref)
        clash = cur.execute("SELECT set_id FROM label_sets WHERE name = ?", [new_name]).fetchall()
        if clash and int(clash[0][0]) != set_id:
            raise LcdashError(f"a label set named {new_name!r} already exists")
        cur.execute("UPDATE label_sets SET name = ? WHERE set_id = ?", [new_name, set_id])
        if description is not None:
            cur.execute("UPDATE label_sets SET description = ? WHERE set_id = ?", [description, set_id])


def delete_set(store, set_ref) -> None:
    """Delete a set and all its labels."""
    with store.transaction() as cur:
        set_id = _set_id(cur, set_ref)
        cur.execute("DELETE FROM labels WHERE set_id = ?", [set_id])
        cur.execute("DELETE FROM label_sets WHERE set_id = ?", [set_id])


def set_labels(store, set_ref, oids, label: str) -> int:
    """Give every object in ``oids`` the label ``label`` in the set (insert or relabel).

    Returns the number of objects labelled. Unknown oids raise and nothing is written.
    """
    label = str(label or "").strip()
    if not label:
        raise LcdashError("a label must be a non-empty name")
    oids = _oids(oids)
    if oids.size == 0:
        return 0
    with store.transaction() as cur:
        set_id = _set_id(cur, set_ref)
        cur.register("_new", pa.table({"oid": oids}))
        missing = cur.execute(
            "SELECT n.oid FROM _new n ANTI JOIN objects o USING (oid) ORDER BY n.oid LIMIT 5"
        ).fetchall()
        if missing:
            cur.unregister("_new")
            raise LcdashError(f"cannot label unknown objects (oid {', '.join(str(r[0]) for r in missing)})")
        cur.execute(
            "INSERT INTO labels (set_id, oid, label, updated_at) "
            f"SELECT {set_id}, oid, ?, current_timestamp FROM _new "
            "ON CONFLICT (set_id, oid) DO UPDATE "
            "SET label = excluded.label, updated_at = excluded.updated_at",
            [label],
        )
        cur.unregister("_new")
    return int(oids.size)


def remove_labels(store, set_ref, oids) -> int:
    """Unlabel ``oids`` in the set; returns how many labels were removed."""
    oids = _oids(oids)
    with store.transaction() as cur:
        set_id = _set_id(cur, set_ref)
        if oids.size == 0:
            return 0
        cur.register("_gone", pa.table({"oid": oids}))
        n = cur.execute(
            "SELECT count(*) FROM labels WHERE set_id = ? AND oid IN (SELECT oid FROM _gone)", [set_id]
        ).fetchall()[0][0]
        cur.execute("DELETE FROM labels WHERE set_id = ? AND oid IN (SELECT oid FROM _gone)", [set_id])
        cur.unregister("_gone")
    return int(n)


def get_labels(store, set_ref) -> pd.DataFrame:
    """oid, object_id, label, updated_at, survey of every labelled object in the set, by oid."""
    cur = store.cursor()
    try:
        set_id = _set_id(cur, set_ref)
        return cur.execute(
            "SELECT l.oid, o.object_id, l.label, l.updated_at, o.survey "
            "FROM labels l JOIN objects o USING (oid) WHERE l.set_id = ? ORDER BY l.oid",
            [set_id],
        ).df()
    finally:
        cur.close()


def label_counts(store, set_ref) -> pd.Series:
    """Objects per label in the set (largest first; ties by name)."""
    df = get_labels(store, set_ref)
    counts = df.groupby("label").size().rename("count")
    return counts.sort_index().sort_values(ascending=False, kind="stable")


def export_labels(store, set_ref, path=None):
    """The set keyed by the user's (survey, object_id), so it stands outside the store: survey,
    object_id, label, label_set, updated_at.

    ``path`` ending in .csv or .parquet/.pq: written there and the path returned; None: the
    DataFrame itself (for a download button).
    """
    suffix = None if path is None else Path(path).suffix.lower()
    if suffix not in (None, ".csv", ".parquet", ".pq"):
        raise LcdashError(f"{path}: export labels to a .csv or .parquet file")
    info = get_set(store, set_ref)
    df = get_labels(store, info["set_id"])
    out = pd.DataFrame({
        "survey": df["survey"], "object_id": df["object_id"], "label": df["label"],
        "label_set": info["name"], "updated_at": df["updated_at"],
    })
    if path is None:
        return out
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        out.to_csv(path, index=False)
    else:
        out.to_parquet(path, index=False)
    return path


def label_sources(store) -> list[str]:
    """ "catalogue" plus every label set's name (what the Probe / Compare pages offer)."""
    return ["catalogue", *(str(n) for n in list_sets(store)["name"])]


def load_labels(store, source: str, survey: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(oid int64[N], label str[N]) of a label source: catalogue labels or a label set's."""
    if not source or source == "catalogue":
        df = store.objects(survey=survey or None, labelled=True, columns=["oid", "label"])
    else:
        df = get_labels(store, source)
        if survey:
            keep = store.objects(survey=survey, oids=df["oid"].to_numpy(np.int64), columns=["oid"])["oid"]
            df = df[df["oid"].isin(keep)]
    if len(df) == 0:
        where = f" in survey {survey!r}" if survey else ""
        raise ValidationError(f"no labelled objects{where} for label source {source!r}")
    return df["oid"].to_numpy(np.int64), np.asarray(df["label"].astype(str), dtype=str)


def source_counts(store, source: str, survey: str | None = None) -> dict[str, int]:
    """Objects per class of a label source (largest first), for choosing the classes to train on."""
    _, labels = load_labels(store, source, survey)
    names, counts = np.unique(labels, return_counts=True)
    return dict(sorted(zip(names.tolist(), counts.tolist(), strict=True), key=lambda kv: (-kv[1], kv[0])))
