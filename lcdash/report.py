"""An evaluation's report: report.md (mean +- std tables, per-class F1, sampling, wall times) and PNG
plots (macro F1 against samples per class per model; confusion matrices), matplotlib Agg backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lcdash import scores
from lcdash.evaluation import EvalResult, cross_survey_table


def merge_results(results):
    """One EvalResult from several runs of the same protocol on the same selection (e.g. the probe
    run separately from the supervised models, or the largest spc with other epoch caps): records
    are concatenated, models / spc united, each run's config and timings kept under "runs"."""
    if not results:
        raise ValueError("nothing to merge")
    first = results[0]
    keys = ("folds", "test_per_class", "val_fraction", "seed", "scoring")
    for r in results[1:]:
        diff = [k for k in keys if r.config.get(k) != first.config.get(k)]
        if diff or r.selection.get("classes") != first.selection.get("classes"):
            raise ValueError(f"runs differ in protocol settings {diff or ['classes']}: not comparable")
    config = dict(first.config)
    config["models"] = list(dict.fromkeys(m for r in results for m in r.config.get("models", [])))
    config["spc"] = sorted({int(v) for r in results for v in r.config.get("spc", [])})
    config["runs"] = [{k: v for k, v in r.config.items() if k not in ("runs",)} for r in results]
    for r in results:
        if r.config.get("encoder"):
            config["encoder"] = r.config["encoder"]
    selection = dict(first.selection)
    sampling: dict = {}
    for r in results:
        for c, rep in (r.selection.get("sampling") or {}).items():
            cur = sampling.setdefault(c, {**rep, "train": {}, "val": {}})
            cur["train"].update(rep.get("train", {}))
            cur["val"].update(rep.get("val", {}))
            cur["capped"] = cur.get("capped", False) or rep.get("capped", False)
    selection["sampling"] = sampling
    selection["capped_classes"] = sorted({c for r in results for c in r.selection.get("capped_classes", [])})
    prep: dict = {}
    for r in results:
        prep.update(r.timings.get("prepare_seconds") or {})
    timings = {
        "total_seconds": sum(r.timings.get("total_seconds", 0.0) for r in results),
        "run_seconds": [r.timings.get("total_seconds") for r in results],
        "prepare_seconds": prep,
        "cancelled": any(r.timings.get("cancelled") for r in results),
    }
    order = {m: i for i, m in enumerate(scores.MODEL_TITLES)}  # tables list models in one fixed order
    records = sorted((rec for r in results for rec in r.records),
                     key=lambda rec: order.get(rec["model"].partition(" [")[0], 99))
    return EvalResult(records, config, selection, timings, first.versions)


def plot_f1_vs_spc(result, path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    s = result.summary()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for model, g in s.groupby("model", sort=False):
        g = g.sort_values("spc")
        ax.errorbar(g["spc"], 100 * g["macro_f1_mean"], yerr=100 * g["macro_f1_std"], marker="o", capsize=3,
                    label=scores.title(model))  # fmt: skip
    n_classes = len(result.selection.get("classes", [])) or 1
    ax.axhline(100 / n_classes, color="grey", lw=0.8, ls=":", label="chance (1 / classes)")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # only the spc values as labels
    ax.set_xticks(sorted(s["spc"].unique()), [str(v) for v in sorted(s["spc"].unique())])
    ax.set_xlabel("training samples per class")
    ax.set_ylabel("macro F1 (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_confusion(classes, matrix, title, path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = matrix.sum(1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if matrix[i, j]:
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")  # fmt: skip
    ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def _epoch_cap(cfg: dict, model: str, spc: int):
    """max_epochs the model ran under at this spc (merged results keep each run's config)."""
    base = model.removesuffix("-folded")  # a folded run's config names the model without the suffix
    folded = base != model
    for run in cfg.get("runs") or [cfg]:
        if (run.get("sequence_input") == "folded") != folded:
            continue
        if base in run.get("models", []) and int(spc) in [int(x) for x in run.get("spc", [])]:
            return ((run.get("model_params") or {}).get(base) or {}).get("max_epochs")
    return None


def _plain_list(values) -> str:
    """Class names as plain text ("RRab, EA"): never a Python list repr or numpy's np.str_('RRab'),
    whether `values` is a list, an array or a {class: count} mapping."""
    if isinstance(values, dict):
        return ", ".join(f"{k} ({v})" for k, v in values.items())
    return ", ".join(str(v) for v in values)


def write_report(result, out_dir, title: str = "lcdash evaluation") -> Path:
    """Write report.md and the PNGs into out_dir; returns the report's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = result.frame()
    cfg, sel, tim = result.config, result.selection, result.timings
    lines = [f"# {title}", ""]
    lines += [
        f"- classes ({len(sel.get('classes', []))}): {_plain_list(sel.get('classes', []))}",
        f"- objects: {sel.get('n_objects')}; scoring: {sel.get('scoring', cfg.get('scoring'))}; "
        f"band: {sel.get('band') or cfg.get('band') or 'first band of each object'}",
        f"- protocol: {cfg.get('folds')} folds, test {cfg.get('test_per_class')} objects per class, "
        f"validation ceil({cfg.get('val_fraction')} x spc) per class, seed {cfg.get('seed')}",
    ]
    lines.append(f"- class weights: {cfg.get('class_weight', 'none (runs before class weighting)')}")
    if cfg.get("sequence_input") == "folded":
        src = sel.get("periods") or {}
        lines.append(
            "- RNN / CNN input: light curves folded at their period (time -> phase x period); periods "
            f"from the catalogue for {src.get('catalogue', '?')} objects, found from the light curve "
            f"(lcdash.periods) for {src.get('found', src.get('lomb_scargle', '?'))}"
        )
    if cfg.get("encoder"):
        enc = cfg["encoder"]
        lines.append(
            f"- encoder: {enc.get('name')} ({enc.get('arch', '?')}, {enc.get('source') or 'unknown source'})"
        )
    if sel.get("dropped_small_classes"):
        lines.append(f"- dropped (too few objects): {_plain_list(sel['dropped_small_classes'])}")
    if sel.get("capped_classes"):
        lines.append(
            f"- capped (fewer test or training objects than asked): {_plain_list(sel['capped_classes'])}"
        )
    if tim.get("run_seconds"):
        runs = ", ".join(f"{t:.0f}" for t in tim["run_seconds"] if t is not None)
        lines.append(f"- wall time of the merged runs: {runs} s (sum {tim['total_seconds']:.0f} s)")
    elif tim.get("total_seconds") is not None:
        lines.append(
            f"- total wall time: {tim['total_seconds']:.0f} s"
            + (" (cancelled)" if tim.get("cancelled") else "")
        )
    lines.append("")
    if df.empty:
        lines.append("No finished fits.")
        path = out / "report.md"
        path.write_text("\n".join(lines) + "\n")
        return path

    s = result.summary()
    spcs = sorted(s["spc"].unique())
    models = list(dict.fromkeys(s["model"]))
    lines += ["## Macro F1 (%), mean ± std over folds", ""]
    lines += ["| model | " + " | ".join(f"spc {v}" for v in spcs) + " |", "|---" * (len(spcs) + 1) + "|"]
    for m in models:
        cells = []
        for v in spcs:
            r = s[(s["model"] == m) & (s["spc"] == v)]
            cells.append(scores.pm(r["macro_f1_mean"].iloc[0], r["macro_f1_std"].iloc[0]) if len(r) else "-")
        lines.append(f"| {scores.title(m)} | " + " | ".join(cells) + " |")
    lines += ["", "## All metrics (%), mean ± std; wall times", ""]
    lines += [
        "| model | spc | folds | macro F1 | macro precision | macro recall | accuracy | train s / fit | "
        "inference lc/s | epochs (cap) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    epochs = {}
    for (m, v), g in df.groupby(["model", "spc"], sort=False):
        e = [x.get("epochs") for x in g["extra"] if isinstance(x, dict) and x.get("epochs") is not None]
        cap = _epoch_cap(cfg, m, v)
        epochs[(m, v)] = f"{np.mean(e):.0f}" + (f" ({cap})" if cap else "") if e else "-"
    for r in s.itertuples(index=False):
        lines.append(
            f"| {scores.title(r.model)} | {r.spc} | {r.folds} | "
            f"{scores.pm(r.macro_f1_mean, r.macro_f1_std)} | "
            f"{scores.pm(r.macro_precision_mean, r.macro_precision_std)} | "
            f"{scores.pm(r.macro_recall_mean, r.macro_recall_std)} | "
            f"{scores.pm(r.accuracy_mean, r.accuracy_std)} | "
            f"{r.train_seconds_mean:.1f} | {r.infer_lc_per_s_mean:,.0f} | "
            f"{epochs.get((r.model, r.spc), '-')} |"
        )
    includes = {}
    for r in result.records:
        inc = (r.get("extra") or {}).get("infer_includes")
        if inc:
            includes.setdefault(r["model"], inc)
    if includes:
        said = "; ".join(f"{scores.title(m)}: {v}" for m, v in includes.items())
        lines += ["", f"Inference speed counts: {said}."]
    if "extra" in df and cfg.get("scoring") == "window":
        lines += ["", "Window scoring; object-level macro F1 from mean window probabilities:", ""]
        obj = df.assign(obj=df["extra"].map(lambda e: (e or {}).get("object_macro_f1")))
        for (m, v), g in obj.groupby(["model", "spc"], sort=False):
            lines.append(f"- {scores.title(m)} @ {v}: {scores.pm(g['obj'].mean(), g['obj'].std(ddof=0))}")

    lines += ["", f"## Per-class F1 (%), mean over folds, spc {spcs[-1]}", ""]
    top = df[df["spc"] == spcs[-1]]
    classes = sel.get("classes") or list(top.iloc[0]["per_class"])
    lines += ["| class | " + " | ".join(scores.title(m) for m in models) + " |",
              "|---" * (len(models) + 1) + "|"]  # fmt: skip
    for c in classes:
        cells = []
        for m in models:
            g = top[top["model"] == m]
            vals = [pc[c]["f1"] for pc in g["per_class"] if c in pc]
            cells.append(f"{100 * np.mean(vals):.1f}" if vals else "-")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")

    sampling = sel.get("sampling") or {}
    if sampling:
        lines += ["", "## Sampling per class (per fold: test; per spc: train / validation)", ""]
        lines += ["| class | objects | test | " + " | ".join(f"spc {v}" for v in spcs) + " |",
                  "|---" * (len(spcs) + 3) + "|"]  # fmt: skip
        for c, rep in sampling.items():
            cells = []
            for v in spcs:
                tr = rep["train"].get(str(v), rep["train"].get(v, []))
                va = rep["val"].get(str(v), rep["val"].get(v, []))
                cells.append(f"{min(tr) if tr else '-'} / {min(va) if va else '-'}")
            lines.append(
                f"| {c} | {rep['n']} | {min(rep['test']) if rep['test'] else '-'} | "
                + " | ".join(cells)
                + " |"
            )

    weights = [
        (r["model"], r["spc"], r["extra"]["layer_weights"])
        for r in result.records
        if isinstance(r.get("extra"), dict) and r["extra"].get("layer_weights")
    ]
    if weights:
        lines += ["", "## Probe layer weights softmax(gamma), mean over folds", ""]
        by = {}
        for _, v, w in weights:
            by.setdefault(v, []).append(w)
        for v, ws in sorted(by.items()):
            lines.append(f"- spc {v}: " + ", ".join(f"{x:.3f}" for x in np.mean(ws, 0)))

    plots = [
        "",
        "## Plots",
        "",
        f"![macro F1 against spc]({plot_f1_vs_spc(result, out / 'f1_vs_spc.png').name})",
    ]
    for (m, v), g in df.groupby(["model", "spc"], sort=False):
        if v != spcs[-1] and v != spcs[0]:
            continue
        cls, mat = scores.summed_confusion(g)
        p = plot_confusion(cls, mat, f"{scores.title(m)}, spc {v} (rows normalised, folds summed)",
                           out / f"confusion_{m}_spc{v}.png")  # fmt: skip
        plots.append(f"![{m} spc {v}]({p.name})")
    lines += plots

    prep = tim.get("prepare_seconds") or {}
    if prep:
        lines += ["", "## Preparation wall time (s)", ""]
        lines += [f"- {scores.title(m)}: {sec:.1f}" for m, sec in prep.items()]
    if result.versions:
        lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in result.versions.items())]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def cross_survey_markdown(results: list[EvalResult]) -> str:
    """Markdown tables of cross_survey_table: per scored survey, macro F1 (%) (mean ± std when there
    are several folds), one row per model x spc, one column per set of training surveys: transfer
    from the other surveys first, then training on several, then on the scored survey alone."""
    df = cross_survey_table(results)
    if df.empty:
        return "No finished fits.\n"
    order = {m: i for i, m in enumerate(scores.MODEL_TITLES)}
    lines = []
    for survey, part in df.groupby("scored on", sort=False):
        sets = list(dict.fromkeys(part["trained on"]))
        trained = sorted(sets, key=lambda t: (survey in t.split(" + "), -len(t.split(" + "))))
        n_test = ", ".join(sorted({str(n) for n in part["n_test"]}))
        lines += [f"### Scored on {survey} ({n_test} test objects per fold)", ""]
        lines += ["| model | spc | " + " | ".join(f"trained on {t}" for t in trained) + " |",
                  "|---|---|" + "---|" * len(trained)]  # fmt: skip
        groups = sorted(
            part.groupby(["model", "spc"], sort=False), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1])
        )
        for (model, spc), g in groups:
            cells = []
            for t in trained:
                r = g[g["trained on"] == t]
                if not len(r):
                    cells.append("-")
                elif int(r["folds"].iloc[0]) == 1:
                    cells.append(f"{100 * r['macro_f1_mean'].iloc[0]:.1f}")
                else:
                    cells.append(scores.pm(r["macro_f1_mean"].iloc[0], r["macro_f1_std"].iloc[0])
                                 + f" ({int(r['folds'].iloc[0])} folds)")  # fmt: skip
            lines.append(f"| {scores.title(model)} | {spc} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("Macro F1 (%) over the classes the scored survey has test objects of.")
    return "\n".join(lines) + "\n"
