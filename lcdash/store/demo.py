"""A synthetic demo store, so the app and the tests have data without any download."""

from __future__ import annotations

from pathlib import Path

from lcdash.io import prepare
from lcdash.simulate import simulate_survey
from lcdash.store import Store


def create_demo_store(
    path: str | Path,
    n_objects: int = 2000,
    seed: int = 0,
    bands: tuple[str, ...] | None = None,
    progress=None,
) -> Store:
    """Simulate a survey (`lcdash.simulate.simulate_survey`) and ingest it into the store at `path`.

    Objects are marked synthetic=true and their survey name contains "synthetic", so nobody takes
    them for real data. Ingest is idempotent: calling this again with the same arguments adds nothing.
    """
    kwargs = {"bands": tuple(bands)} if bands else {}
    observations, objects = simulate_survey(n_objects=n_objects, seed=seed, **kwargs)
    survey = str(objects["survey"].iloc[0]) if "survey" in objects.columns and len(objects) else "demo"
    if "synthetic" not in survey.lower():
        survey = f"{survey} (synthetic)"
    objects = objects.assign(survey=survey)
    obs, objs, report = prepare(observations, objects=objects, name="simulated survey")
    report.raise_if_errors()
    store = Store(path)
    try:
        store.ingest(obs, objs, survey=survey, synthetic=True, validation=report, progress=progress)
    except BaseException:
        store.close()
        raise
    return store
