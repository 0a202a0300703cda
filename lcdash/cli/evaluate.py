"""`python -m lcdash evaluate`: the few-shot protocol for probe / RNN / CNN / RF on a store.

The run goes through the jobs layer (lcdash.jobs + the "evaluate" kind of lcdash.tasks): the store
exports the selection into a job folder, a worker process fits the models, and this process mirrors
its progress into a tqdm bar, stores the run (eval_runs / eval_results) and writes DIR/results.json,
DIR/report.md and the PNG plots.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from lcdash.classifiers import MODEL_NAMES as MODELS
from lcdash.errors import JobError, LcdashError, ValidationError
from lcdash.progress import TqdmProgress


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="few-shot comparison of the probe, Becker RNN, Aguirre CNN and feature RF",
        description=(
            "Stratified folds, a test set of N objects per class, training sets of spc objects per class, "
            "validation ceil(0.2 x spc) per class; macro F1 etc. per model x spc x fold."
        ),
    )
    p.add_argument("--db", required=True, help="store file")
    p.add_argument("--out", required=True, help="output folder for results.json, report.md and plots")
    p.add_argument("--models", default="probe,rnn,cnn,rf",
                   help=f"comma-separated subset of {','.join(MODELS)}")
    p.add_argument("--spc", type=int, nargs="+", default=[20, 100, 500], help="training samples per class")
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--test-per-class", type=int, default=100)
    p.add_argument(
        "--encoder", default=None, help="encoder for the probe (default: the shipped demo encoder)"
    )
    p.add_argument("--labels", default="catalogue", help="label source: catalogue or a label-set name")
    p.add_argument("--classes", nargs="+", default=None, help="only these classes (default: all)")
    p.add_argument("--survey", default=None, help="only objects of this survey")
    p.add_argument("--band", default=None, help="this band (default: the only band, or each object's first)")
    p.add_argument(
        "--max-epochs",
        nargs="+",
        default=None,
        metavar="N|MODEL=N",
        help="cap the neural models' epochs: one number for all, or e.g. cnn=15 rnn=30 probe=300",
    )
    p.add_argument("--patience", type=int, default=None, help="override the early-stopping patience")
    p.add_argument("--probe-pooling", choices=["weighted", "uniform", "last"], default="weighted",
                   help="the probe's embedding: learned layer weights (Astromer 2), uniform ones, or the "
                        "last layer (the ablation)")
    p.add_argument("--scoring", choices=["object", "window"], default="object")
    p.add_argument(
        "--sequence-input",
        choices=["raw", "folded"],
        default="raw",
        help="what the RNN and CNN read: raw dt/dm (the papers) or curves folded at their period "
        "(see --periods)",
    )
    p.add_argument(
        "--periods",
        choices=["catalogue", "found"],
        default="catalogue",
        help="where every fold's period comes from (folded RNN / CNN input, folded encoders): the "
        "catalogue, found from the light curve where it has none; or 'found': the light curve alone "
        "(lcdash.periods), as for a survey without a catalogue",
    )
    p.add_argument(
        "--class-weight",
        choices=["balanced", "none"],
        default="balanced",
        help="class weights of every model's loss (balanced: each class counts equally, as macro F1 does)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--max-per-class",
        type=int,
        default=None,
        help="subsample larger classes to this many objects first (default: what the protocol needs)",
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch and feature extraction")
    p.add_argument(
        "--no-embed",
        action="store_true",
        help="fail instead of computing missing probe embeddings into the store",
    )
    p.add_argument("--title", default=None, help="report title")
    g = p.add_argument_group(
        "training across surveys (Aguirre et al. 2019)",
        "train on A+B and score on each (per-survey scores), train on A and score on B, or train and "
        "score on B; spc is per class per training survey; --band picks the band of surveys that have it",
    )
    g.add_argument("--train-surveys", nargs="+", default=None, metavar="SURVEY", help="surveys to train on")
    g.add_argument("--score-surveys", nargs="+", default=None, metavar="SURVEY", help="surveys to score on")
    g.add_argument(
        "--label-map",
        default="default",
        metavar="NAME|FILE",
        help="labels -> common classes: 'default' (Catalina RR Lyrae types -> RRLyrae, EW/EA -> EB, "
        "Cepheid types -> Cepheid, LPV -> Mira, Rot/HADS_dScuti dropped), 'none', or a JSON file "
        "{label: class or null}; an unmapped label is an error",
    )
    p.set_defaults(func=cmd_evaluate)

    p = subparsers.add_parser(
        "evaluate-report",
        help="write report.md + plots from results.json files or stored runs (merged when several)",
    )
    p.add_argument("results", nargs="*",
                   help="results.json files written by `evaluate`; PATH::TAG shows that run's models as "
                        "'model [TAG]' (e.g. the probe of two encoders side by side)")
    p.add_argument("--db", default=None, help="store holding the runs given with --run")
    p.add_argument("--run", nargs="+", default=[], help="run ids in --db")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--title", default="lcdash evaluation")
    p.set_defaults(func=cmd_report)


def _epochs(values: list[str] | None):
    """--max-epochs: None, one int for every model, or {model: int}."""
    if not values:
        return None
    try:
        if len(values) == 1 and "=" not in values[0]:
            return int(values[0])
        caps = dict(v.split("=", 1) for v in values)
        return {m: int(n) for m, n in caps.items() if m in _models(m)}
    except ValueError:
        raise ValidationError(f"--max-epochs takes N or MODEL=N ..., got {' '.join(values)}") from None


def _models(text: str) -> list[str]:
    models = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in models if m not in MODELS]
    if bad or not models:
        raise ValidationError(f"unknown models {bad}: choose from {', '.join(MODELS)}")
    return models


def _ensure_embeddings(store, args, encoder: str) -> None:
    """Compute the probe's missing embeddings into the store (or explain which command does)."""
    import numpy as np

    from lcdash.store.embeddings import load_embeddings
    from lcdash.store.labels import load_labels

    if args.train_surveys:  # across surveys: each survey in its own band
        from lcdash.tasks import survey_band

        for survey in dict.fromkeys([*args.train_surveys, *args.score_surveys]):
            band = survey_band(store, survey, args.band)
            _ensure_embeddings(store, argparse.Namespace(**{**vars(args), "train_surveys": None,
                                                            "survey": survey, "band": band,
                                                            "classes": None}), encoder)  # fmt: skip
        return
    oids, labels = load_labels(store, args.labels, args.survey)
    if args.classes:
        oids = oids[np.isin(labels, args.classes)]
    have, _, _ = load_embeddings(store, encoder, oids=oids, band=args.band)
    missing = np.setdiff1d(oids, have)
    if len(missing) == 0:
        return
    command = f"python -m lcdash embed --db {args.db} --model {encoder}" + (
        f" --band {args.band}" if args.band else ""
    )
    if args.no_embed:
        raise LcdashError(f"{len(missing)} labelled objects have no {encoder!r} embeddings: run `{command}`")
    from lcdash.embed import embed_store

    print(
        f"computing {encoder!r} embeddings of {len(missing)} objects (as `{command}` would)", file=sys.stderr
    )
    bar = TqdmProgress(f"embed ({encoder})", "fit")
    try:
        embed_store(store, encoder, band=args.band, oids=missing, progress=bar)
    finally:
        bar.close()


def cmd_evaluate(args: argparse.Namespace) -> int:
    models = _models(args.models)
    if args.threads:  # the worker is a fresh interpreter: OpenMP/torch read this at start-up
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    from lcdash.evaluation import EvalResult
    from lcdash.jobs import JobManager
    from lcdash.report import write_report
    from lcdash.store import Store
    from lcdash.tasks import KINDS

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    params = {
        "models": models, "spc": args.spc, "folds": args.folds, "test_per_class": args.test_per_class,
        "labels": args.labels, "classes": args.classes, "survey": args.survey, "band": args.band,
        "max_epochs": _epochs(args.max_epochs), "patience": args.patience, "scoring": args.scoring,
        "class_weight": args.class_weight, "sequence_input": args.sequence_input, "periods": args.periods,
        "probe_pooling": args.probe_pooling,
        "seed": args.seed,
        "max_per_class": args.max_per_class, "threads": args.threads, "n_jobs": args.threads,
    }  # fmt: skip
    if args.train_surveys or args.score_surveys:
        if not (args.train_surveys and args.score_surveys):
            raise ValidationError("give both --train-surveys and --score-surveys")
        from lcdash.evaluation import load_label_map

        params.update(train_surveys=args.train_surveys, score_surveys=args.score_surveys,
                      label_map=load_label_map(args.label_map))  # fmt: skip
    with Store(args.db) as store:
        if {"probe", "probe+features"} & set(models):
            from lcdash.cli.models import _resolve_encoder
            from lcdash.store.embeddings import DEFAULT_ENCODER, get_encoder

            params["encoder"] = _resolve_encoder(store, args.encoder or DEFAULT_ENCODER, None)
            folded = bool(get_encoder(store, params["encoder"])["config"].get("config", {}).get("fold"))
            if not (folded and args.periods == "found"):  # else the job embeds at the found periods
                _ensure_embeddings(store, args, params["encoder"])
        jm = JobManager(store, kinds=KINDS)
        job_id = jm.submit("evaluate", {k: v for k, v in params.items() if v is not None})
        print(f"job {job_id} ({jm.folder(job_id)})", file=sys.stderr)
        bar = TqdmProgress("evaluate", "fit")
        try:
            job = jm.wait(job_id, on_progress=bar)
        finally:
            bar.close()
        if job.state != "done":
            tail = job.log_tail(15) if job.state == "failed" else ""
            raise JobError(
                f"evaluation job {job_id} {job.state}: {job.error or job.message or ''}\n{tail}".strip()
            )
        folder = jm.folder(job_id)
        result = EvalResult.from_json(folder / "evaluation.json")
        run_id = (job.result or {}).get("run_id")
    result.config["run_id"] = run_id
    (out / "results.json").write_text(json.dumps({"run_id": run_id, "job_id": job_id, **result.to_dict()},
                                                 indent=1, default=str))  # fmt: skip
    title = args.title or f"lcdash evaluation: {Path(args.db).name}" + (
        f", {args.survey}" if args.survey else ""
    )
    report = write_report(result, out, title=title)
    if result.config.get("train_surveys"):
        _write_cross_survey([result], out)
    summary = result.summary()
    if len(summary):
        table = summary[["model", "spc", "folds", "macro_f1_mean", "macro_f1_std", "train_seconds_mean",
                         "infer_lc_per_s_mean"]].round(3)  # fmt: skip
        print(table.to_string(index=False))
    print(json.dumps({"run_id": run_id, "results": str(out / "results.json"), "report": str(report),
                      "seconds": round(result.timings.get("total_seconds", 0.0), 1)}))  # fmt: skip
    return 0


def _write_cross_survey(results, out: Path, title: str = "Training across surveys") -> None:
    """cross_survey.md: macro F1 per scored survey (each on its own test objects), and print it."""
    from lcdash.report import cross_survey_markdown

    first = results[0]
    text = cross_survey_markdown(results)
    (out / "cross_survey.md").write_text(
        f"# {title}\n\n"
        f"- label map: `{json.dumps(first.config.get('label_map'))}`\n"
        f"- bands: {first.selection.get('band')}; classes: {', '.join(first.selection.get('classes', []))}\n"
        f"- protocol: {first.config.get('folds')} fold(s), {first.config.get('test_per_class')} test objects "
        "per class per scored survey, spc per class per training survey\n\n"
        f"{text}"
    )
    print(text)


def cmd_report(args: argparse.Namespace) -> int:
    from lcdash.evaluation import EvalResult
    from lcdash.report import merge_results, write_report

    results = []
    for spec in args.results:
        path, _, tag = spec.partition("::")  # PATH::TAG names the run's models "model [TAG]"
        if not Path(path).exists():
            raise LcdashError(f"{path}: no such results file")
        result = EvalResult.from_json(path)
        if tag:
            for rec in result.records:
                rec["model"] = f"{rec['model']} [{tag}]"
            result.config["models"] = [f"{m} [{tag}]" for m in result.config.get("models", [])]
        results.append(result)
    if args.run:
        if not args.db:
            raise ValidationError("--run needs --db")
        from lcdash.evaluation import EvalResult
        from lcdash.store import Store
        from lcdash.store.results import load_run

        with Store(args.db, read_only=True) as store:
            results += [EvalResult.from_run(*load_run(store, run_id)) for run_id in args.run]
    if not results:
        raise ValidationError("give results.json files or --db with --run")
    if all(r.config.get("train_surveys") for r in results):  # modes differ: one table, no merge
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        _write_cross_survey(results, out, args.title)
        (out / "results.json").write_text(json.dumps({"runs": [r.to_dict() for r in results]}, default=str))
        return 0
    try:
        result = merge_results(results) if len(results) > 1 else results[0]
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result.to_json(out / "results.json")
    print(write_report(result, out, title=args.title))
    return 0
