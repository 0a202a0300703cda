"""Models: the encoders of this store; import official weights, pretrain or fine-tune, compute
embeddings. Every action is a background job (lcdash.tasks); its progress shows here and in the
sidebar, and survives page switches and refreshes because the job lives in the store."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from lcdash import tasks
from lcdash.jobstates import ACTIVE_STATES
from lcdash.models.astromer import AstromerConfig
from lcdash.projection import embedding_knn
from lcdash.scale import default_workers
from lcdash.store.embeddings import get_encoder, list_encoders
from lcdash.weights import OFFICIAL
from pages import _ui

KINDS = ["embed", "embed_catalog", "pretrain", "finetune", "import_weights"]
ALL = "(all)"

st.title("Models")
store, jm = _ui.store(), _ui.jobs()


def describe(job) -> str:
    """What a job works on, in a few words."""
    p = job.params
    if job.kind == "embed":
        return f"encoder {p.get('encoder')}" + (f", band {p['band']}" if p.get("band") else "")
    if job.kind == "embed_catalog":
        where = p.get("scheduler") or f"{p.get('workers')} local workers"
        band = f", band {p['band']}" if p.get("band") else ""
        return f"encoder {p.get('encoder')} on Dask ({where}){band}"
    if job.kind in ("pretrain", "finetune"):
        return f"new encoder {p.get('name')}" + (f" from {p['base']}" if p.get("base") else "")
    return f"encoder {p.get('name')} from {p.get('official') or p.get('path')}"


def outcome(job) -> str:
    r = job.result or {}
    if job.kind in ("embed", "embed_catalog"):
        rate = f", {r['lc_per_s']:.0f} light curves/s" if r.get("lc_per_s") else ""
        failed = r.get("failed") or {}
        lost = f"; {len(failed)} partition(s) failed: {', '.join(sorted(failed))}" if failed else ""
        return f"{r.get('rows', 0):,} embeddings stored{rate}{lost}"
    if job.kind in ("pretrain", "finetune"):
        rmse = r.get("best_val_rmse")
        return f"best validation RMSE {rmse:.4f} at epoch {r.get('best_epoch')}" if rmse is not None else ""
    return f"{r.get('arch', '')} {r.get('n_params') or '?'} parameters"


def submit(kind: str, params: dict) -> None:
    """Start a job; errors found while preparing it (bad name, no data) show as st.error."""
    with _ui.guard(f"Starting the {kind} job"), st.spinner("Preparing the job ..."):
        job_id = jm.submit(kind, params)
        st.toast(f"{kind} job queued ({job_id})")
        st.rerun()


# --- encoders ---------------------------------------------------------------------------------

encoders = pd.DataFrame()
with _ui.guard("Listing encoders"):
    encoders = list_encoders(store)
if encoders.empty:
    st.info("No encoder yet: import official weights or pretrain one below.")
else:
    table = encoders.assign(
        embeddings=[
            f"{n:,} ({', '.join(b)})" if n else "none"
            for n, b in zip(encoders["n_embeddings"], encoders["bands"], strict=True)
        ]
    )[["name", "arch", "n_layers", "d_model", "source", "embeddings", "created_at", "path"]]
    st.dataframe(
        table,
        hide_index=True,
        key="models_encoders",
        column_config={"n_layers": st.column_config.NumberColumn("layers")},
    )
names = list(encoders["name"]) if not encoders.empty else []


@st.cache_data(max_entries=16, show_spinner="Measuring kNN accuracy on the store's labels ...")
def knn_on_labels(path: str, encoder: str, n_embeddings: int, _store) -> dict:
    """kNN(10) accuracy of the encoder's map input on the labelled objects (`n_embeddings` keys
    the cache)."""
    return embedding_knn(_store, encoder)


def encoder_card(enc: dict, n_embeddings: int) -> None:
    """What an encoder is and how good its map is: variant, lineage, training data and time,
    validation RMSE against the window-mean baseline, kNN accuracy on the store's labels."""
    meta = enc.get("config") or {}
    cfg, train = meta.get("config") or {}, meta.get("training") or {}
    variant = AstromerConfig.variant_of({"arch": enc["arch"], **cfg})
    kind = "lcdash's period-aware variant" if variant != enc["arch"] else "as published"
    lines = [f"**{enc['name']}**: {variant} ({kind}), {cfg.get('n_layers')} blocks x d_model "
             f"{cfg.get('d_model')}, window {cfg.get('window', 200)}",
             f"- source: {enc.get('source') or meta.get('source') or 'unknown'}"]
    if train:
        secs = train.get("train_seconds")
        lines.append(f"- trained on {train.get('n_train', 0):,} light curves ({train.get('n_val', 0):,} "
                     f"for validation), best epoch {train.get('best_epoch')}"
                     + (f", {secs / 60:.0f} min of training" if secs else ""))
        if train.get("best_val_rmse") is not None and train.get("baseline_val_rmse"):
            gain = 1 - train["best_val_rmse"] / train["baseline_val_rmse"]
            lines.append(f"- validation RMSE {train['best_val_rmse']:.3f} mag against "
                         f"{train['baseline_val_rmse']:.3f} for predicting each window's mean "
                         f"({gain:.0%} below)")
    else:
        lines.append("- official or imported weights: no training record in this store")
    if n_embeddings:
        knn = knn_on_labels(str(store.path), enc["name"], int(n_embeddings), store)
        if knn["knn"] is not None:
            lines.append(f"- kNN(10) accuracy of its map on the store's labels: {knn['knn']:.2f} "
                         f"({knn['n_labelled']:,} labelled objects, {knn['n_classes']} classes, chance "
                         f"about {1 / knn['n_classes']:.2f})")
        else:
            lines.append("- kNN accuracy: needs more than 10 labelled, embedded objects of 2 or more classes")
    else:
        lines.append("- no embeddings yet: its map quality is measured once it has embedded the store")
    st.markdown("\n".join(lines))


if names:
    card = st.selectbox("Encoder card", names, key="models_card")
    with _ui.guard("Reading the encoder"):
        row = encoders.set_index("name").loc[card]
        encoder_card(get_encoder(store, card), int(row["n_embeddings"]))

# --- jobs of this page ------------------------------------------------------------------------

active = []
with _ui.guard("Reading jobs"):
    active = jm.list(states=ACTIVE_STATES, kinds=KINDS)
for job in active:
    st.markdown(f"**{job.kind}** {describe(job)} `{job.job_id}`")
    _ui.watch_job(job.job_id, key="models")


@st.fragment(run_every=2.0)
def training_curves() -> None:
    """Train and validation RMSE per epoch of the training jobs that are running (their progress
    history: one entry per report, the epoch-end ones carry val_rmse)."""
    for job in jm.list(states=["running"], kinds=["pretrain", "finetune"]):
        hist = pd.DataFrame(job.history)
        if "val_rmse" not in hist.columns:
            continue
        epochs = hist.dropna(subset=["val_rmse"]).assign(epoch=lambda d: d["epoch"].fillna(0))
        epochs = epochs.drop_duplicates("epoch", keep="last")
        cols = [c for c in ("train_rmse", "val_rmse") if c in epochs.columns]
        if len(epochs):
            st.caption(f"{job.params.get('name')}: RMSE per epoch")
            st.line_chart(epochs.set_index("epoch")[cols], height=200)


if any(j.kind in ("pretrain", "finetune") for j in active):
    training_curves()

embed_tab, import_tab, train_tab, history_tab = st.tabs(
    ["Compute embeddings", "Import official weights", "Pretrain / fine-tune", "Recent jobs"]
)

# --- embeddings -------------------------------------------------------------------------------

with embed_tab:
    if not names:
        st.caption("Register an encoder first.")
    else:
        c1, c2, c3 = st.columns([2, 1, 1])
        enc_name = c1.selectbox("Encoder", names, key="models_embed_encoder")
        band = c2.selectbox("Band", [ALL, *store.bands()], key="models_embed_band")
        survey = c3.selectbox("Survey", [ALL, *store.surveys()], key="models_embed_survey")
        overwrite = st.checkbox(
            "Recompute objects that already have embeddings", key="models_embed_overwrite"
        )
        st.caption(
            "Per object and band: the mean over 200-observation windows and valid steps of every "
            "layer's output (layer 0 = input embedding). Objects already embedded are skipped."
        )
        where = st.radio("Run on", ["One worker process", "Dask cluster"], horizontal=True,
                         key="models_embed_where",
                         help="A Dask cluster splits the store into partitions embedded in parallel: "
                              "a local cluster of worker processes, or an existing cluster's scheduler.")
        cluster: dict = {}
        if where == "Dask cluster":
            d1, d2 = st.columns(2)
            cluster["workers"] = d1.number_input("Local workers", 1, 64, default_workers(),
                                                 key="models_embed_workers")
            cluster["scheduler"] = d2.text_input("or scheduler address", "", key="models_embed_scheduler",
                                                 placeholder="tcp://host:8786") or None
            st.caption("Every light curve of the selection is embedded again on the cluster.")
        if st.button("Compute embeddings", key="models_embed_go", type="primary"):
            params = {
                "encoder": enc_name,
                "band": None if band == ALL else band,
                "survey": None if survey == ALL else survey,
            }
            if cluster:
                submit("embed_catalog", {**params, **cluster})
            else:
                submit("embed", {**params, "overwrite": overwrite})

# --- import -----------------------------------------------------------------------------------

with import_tab:
    supported = {k: v for k, v in OFFICIAL.items() if not v.get("unsupported")}
    how = st.radio(
        "Source",
        ["Download official weights", "Upload an archive", "Path on this machine"],
        horizontal=True,
        key="models_import_how",
    )
    params: dict = {}
    if how == "Download official weights":
        official = st.selectbox(
            "Weights",
            list(supported),
            key="models_import_official",
            format_func=lambda k: f"{k}: {supported[k]['about']}",
        )
        params = {"official": official}
        default_name = official
    elif how == "Upload an archive":
        upload = st.file_uploader(
            "Official archive (.zip / .tar.gz) or Keras .h5",
            type=["zip", "gz", "tgz", "h5"],
            key="models_import_upload",
        )
        params = {"upload": upload}
        default_name = upload.name.split(".")[0] if upload else ""
    else:
        path = st.text_input(
            "Archive, extracted folder, .index checkpoint or .h5 file", key="models_import_path"
        )
        params = {"path": path.strip()}
        default_name = path.strip().rstrip("/").split("/")[-1].split(".")[0] if path.strip() else ""
    name = st.text_input("Encoder name", value=default_name, key=f"models_import_name_{how}_{default_name}")
    if st.button("Import", key="models_import_go", type="primary"):
        if params.get("upload") is not None:
            with _ui.guard("Saving the upload"):
                params = {
                    "path": str(tasks.save_upload(store, params["upload"].name, params["upload"].getvalue()))
                }
        elif "upload" in params:
            st.error("Choose a file to upload first.")
            params = {}
        if params:
            submit("import_weights", {"name": name.strip(), **params})

# --- pretrain / fine-tune ---------------------------------------------------------------------

with train_tab:
    mode = st.radio(
        "Mode", ["Fine-tune an encoder", "Pretrain a new encoder"], horizontal=True, key="models_train_mode"
    )
    finetune = mode.startswith("Fine")
    c1, c2 = st.columns(2)
    new_name = c1.text_input("New encoder name", key="models_train_name")
    if finetune:
        base = c2.selectbox("Start from", names, key="models_train_base") if names else None
    else:
        base_opt = c2.selectbox("Start from", ["(random initialisation)", *names], key="models_train_init")
        base = None if base_opt.startswith("(") else base_opt
    c1, c2, c3 = st.columns(3)
    survey = c1.selectbox("Survey", [ALL, *store.surveys()], key="models_train_survey")
    band = c2.selectbox("Band", [ALL, *store.bands()], key="models_train_band")
    max_objects = c3.number_input(
        "At most this many light curves (0 = all)", min_value=0, value=2000, step=500, key="models_train_max"
    )
    c1, c2, c3, c4 = st.columns(4)
    epochs = c1.number_input("Epochs", min_value=1, value=20, key="models_train_epochs")
    batch_size = c2.number_input("Batch size", min_value=8, value=256, step=32, key="models_train_bs")
    patience = c3.number_input("Early-stopping patience", min_value=1, value=5, key="models_train_patience")
    minutes = c4.number_input(
        "Time budget [min] (0 = none)", min_value=0.0, value=10.0, key="models_train_min"
    )
    model: dict | None = None
    if not finetune and base is None:
        c1, c2, c3 = st.columns(3)
        arch = c1.selectbox("Architecture", ["astromer2", "astromer1"], key="models_train_arch")
        n_layers = c2.number_input(
            "Attention blocks",
            min_value=1,
            max_value=12,
            value=6 if arch == "astromer2" else 2,
            key=f"models_train_layers_{arch}",
        )
        d_model = c3.selectbox("Width (d_model)", [64, 128, 256], index=2, key="models_train_width")
        model = {
            "arch": arch,
            "n_layers": int(n_layers),
            "d_model": int(d_model),
            "d_ff": int(d_model) if arch == "astromer2" else 128,
        }
    st.caption(
        "Masked-magnitude objective (Astromer): 50% of each window's steps probed, early stopping on "
        "the validation RMSE (10% of the light curves). Fine-tuning uses lr 1e-5."
    )
    if st.button("Start training", key="models_train_go", type="primary"):
        train = {
            "epochs": int(epochs),
            "batch_size": int(batch_size),
            "patience": int(patience),
            "max_minutes": float(minutes) or None,
        }
        params = {
            "name": new_name.strip(),
            "base": base,
            "survey": None if survey == ALL else survey,
            "band": None if band == ALL else band,
            "max_objects": int(max_objects) or None,
            "train": train,
        }
        if model:
            params["model"] = model
        submit("finetune" if finetune else "pretrain", params)

# --- history ----------------------------------------------------------------------------------

with history_tab:
    recent = jm.list(kinds=KINDS, limit=20)
    if not recent:
        st.caption("No jobs yet.")
    for job in recent:
        line = f"**{job.kind}** {describe(job)}: {job.state} · `{job.job_id}`"
        if job.state == "failed":
            st.error(f"{line}\n\n{job.error}")
        elif job.state == "done":
            st.success(f"{line}\n\n{outcome(job)}")
        else:
            st.write(line + (f" ({job.message})" if job.message else ""))
