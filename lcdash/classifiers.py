"""Four classifiers behind one scikit-learn interface, so one evaluation loop runs them all.

`fit(X, y, X_val=None, y_val=None) -> self`, `predict_proba(X)`, `predict(X)`, `classes_`,
`get_params()` / `set_params()` (BaseEstimator).

- `AstromerProbe`: X = precomputed per-object per-layer mean embeddings [N, L+1, d] (encoding runs
  once, outside). Learned layer weights softmax(gamma) (Astromer 2) + the paper's MLP head, or a
  logistic-regression head; `layer_weights_` holds softmax(gamma) after fit.
- `BeckerRNN` (lcdash.models.rnn), `AguirreCNN` (lcdash.models.cnn): X = a LightCurveBatch or a
  list of (time, mag[, err]) tuples.
- `FeatureRF`: light-curve package features (lcdash.features) + a scikit-learn Random Forest; X as
  above, or a precomputed float feature matrix [N, F] (the evaluation extracts features once).

Neural models train on `lcdash.device.pick_device()` (CUDA when present) with early stopping on
the validation loss (on the training loss when no validation set is given), seeds fixed.
Every model weights classes "balanced" by default (`class_weight=None` switches it off): the
protocol caps small classes, and macro F1 counts each class equally.
"""

from __future__ import annotations

import copy
import time

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from lcdash.device import pick_device
from lcdash.errors import ModelError
from lcdash.features import extract_features
from lcdash.windows import iter_curves

MODEL_NAMES = ("probe", "rnn", "cnn", "rf", "probe+features")
POOLINGS = ("weighted", "uniform", "last")


def _curves(X) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    return [(np.asarray(t, np.float64), np.asarray(m, np.float64), e) for t, m, e in iter_curves(X)]


def _class_weights(yi: np.ndarray, n_classes: int, class_weight) -> np.ndarray | None:
    """Per-class loss weights for None or "balanced" (n / (k x count), scikit-learn's rule).

    Why balanced by default: the protocol caps small classes (60 training objects against 500), and
    macro F1 counts every class equally; an unweighted loss lets a network ignore the small ones.
    """
    if class_weight is None:
        return None
    counts = np.bincount(yi, minlength=n_classes).astype(np.float64)
    if class_weight == "balanced":
        return len(yi) / (n_classes * np.maximum(counts, 1.0))
    raise ModelError(f"class_weight must be None or 'balanced', got {class_weight!r}")


def _check_y(y, n: int) -> np.ndarray:
    y = np.asarray(y)
    if len(y) != n:
        raise ModelError(f"got {n} samples but {len(y)} labels")
    if len(y) == 0:
        raise ModelError("cannot fit on an empty training set")
    return y


class _TorchClassifier(ClassifierMixin, BaseEstimator):
    """Shared training loop: Adam, minibatches, optional step decay and gradient clipping,
    early stopping on the validation loss with the best weights restored."""

    # subclasses define: _prepare_fit(X, y) (fit scalers), _inputs(X) -> tuple of np arrays,
    # _build(n_classes) -> nn.Module, _forward(module, *tensors) -> logits
    _decay_every: int | None = None
    _decay: float = 1.0
    _clip: float | None = None
    _min_steps_per_epoch: int = 16

    def _device(self):
        return pick_device(self.device)

    def _slice(self, arrays, idx):
        return tuple(a[idx] for a in arrays)

    def fit(self, X, y, X_val=None, y_val=None):
        import torch

        t0 = time.perf_counter()
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        X, y = self._augment(X, y, rng)
        y = _check_y(y, self._n(X))
        self.classes_ = np.unique(y)
        self._prepare_fit(X, y)
        index = {c: i for i, c in enumerate(self.classes_)}
        yi = np.array([index[c] for c in y], dtype=np.int64)
        train = self._inputs(X)
        has_val = X_val is not None and y_val is not None and len(y_val) > 0
        if has_val:
            known = np.isin(np.asarray(y_val), self.classes_)
            val = self._slice(self._inputs(X_val), known)
            yv = np.array([index[c] for c in np.asarray(y_val)[known]], dtype=np.int64)
            has_val = len(yv) > 0
        device = self._device()
        module = self._build(len(self.classes_)).to(device)
        opt = torch.optim.Adam(self._param_groups(module), lr=self.lr)
        sched = (
            torch.optim.lr_scheduler.StepLR(opt, self._decay_every, gamma=self._decay)
            if self._decay_every
            else None
        )
        weight = _class_weights(yi, len(self.classes_), self.class_weight)
        self._weight = None if weight is None else torch.as_tensor(weight, dtype=torch.float32)
        loss_fn = torch.nn.CrossEntropyLoss(
            weight=None if self._weight is None else self._weight.to(device)
        )
        best, best_state, bad, n = np.inf, None, 0, len(yi)
        # at least ~16 minibatches per epoch: on few-shot sets one step per epoch leaves early
        # stopping (patience counted in epochs) and epoch caps too few updates to learn anything;
        # smaller batches cost about the same compute per epoch on these small models
        batch_size = int(min(self.batch_size, max(8, int(np.ceil(n / self._min_steps_per_epoch)))))
        self.history_ = []
        for epoch in range(self.max_epochs):
            module.train()
            total = 0.0
            for idx in self._minibatches(train, rng.permutation(n), batch_size, rng):
                tensors = self._to_device(self._slice(train, idx), device)
                target = torch.as_tensor(yi[idx], device=device)
                loss = loss_fn(self._forward(module, *tensors), target)
                opt.zero_grad()
                loss.backward()
                if self._clip:
                    torch.nn.utils.clip_grad_value_(module.parameters(), self._clip)
                opt.step()
                if sched is not None:
                    sched.step()
                total += float(loss.detach()) * len(idx)
            train_loss = total / n
            monitor = self._loss(module, val, yv, device) if has_val else train_loss
            self.history_.append((epoch, train_loss, monitor))
            if monitor < best - 1e-6:
                best, bad = monitor, 0
                best_state = copy.deepcopy(module.state_dict())
            else:
                bad += 1
                if bad >= self.patience:
                    break
        if best_state is not None:
            module.load_state_dict(best_state)
        module.eval()
        self.module_ = module
        self.n_epochs_ = len(self.history_)
        self.best_loss_ = float(best)
        self.fit_seconds_ = time.perf_counter() - t0
        self._after_fit()
        return self

    def _to_device(self, arrays, device):
        import torch

        return tuple(torch.as_tensor(a, device=device) for a in arrays)

    def _logits(self, module, arrays, device, batch_size=1024):
        import torch

        outs = []
        with torch.no_grad():
            for lo in range(0, len(arrays[0]), batch_size):
                idx = np.arange(lo, min(lo + batch_size, len(arrays[0])))
                outs.append(
                    self._forward(module, *self._to_device(self._slice(arrays, idx), device)).float().cpu()
                )
        return torch.cat(outs) if outs else torch.zeros((0, len(self.classes_)))

    def _loss(self, module, arrays, yv, device) -> float:
        import torch

        module.eval()
        logits = self._logits(module, arrays, device)
        # the validation loss is weighted like the training loss: early stopping then tracks the
        # balanced objective, not the large classes alone
        return float(torch.nn.functional.cross_entropy(logits, torch.as_tensor(yv), weight=self._weight))

    def predict_proba(self, X) -> np.ndarray:
        import torch

        if not hasattr(self, "module_"):
            raise ModelError(f"{type(self).__name__} is not fitted yet")
        self.module_.eval()
        logits = self._logits(self.module_, self._inputs(X), next(self.module_.parameters()).device)
        return torch.softmax(logits, 1).numpy()

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), 1)]

    # hooks
    def _param_groups(self, module):
        return [{"params": list(module.parameters())}]

    def _augment(self, X, y, rng):
        return X, y

    def _minibatches(self, arrays, order, batch_size, rng):
        return [order[lo : lo + batch_size] for lo in range(0, len(order), batch_size)]

    def _after_fit(self):
        pass

    def _n(self, X) -> int:
        return len(X) if not hasattr(X, "length") else len(X.length)


class AstromerProbe(_TorchClassifier):
    """Frozen-encoder probe on per-layer mean embeddings [N, L+1, d] (Astromer 2, section 1 of MODELS.md).

    Inputs are standardised per (layer, dimension) with training-set statistics (layers differ in
    scale by orders of magnitude; the layer weights then compare like with like).
    `pooling="weighted"`: z = 1/(L+1) sum softmax(gamma)_l x_l with gamma learned (LayerWeightedPooling);
    `pooling="last"`: the last layer only; `pooling="uniform"`: gamma frozen at its uniform start
    (the ablation). `head="mlp"`: Dense(1024, relu) -> Dense(512, relu) -> Dense(256, relu) ->
    LayerNorm -> Dense(n_classes); `head="logreg"`: one linear layer.

    gamma has its own learning rate `gamma_lr`: with the head's 1e-3, Adam moves each gamma by at
    most ~1e-3 a step, and early stopping ends few-shot fits after a few hundred steps, so softmax(gamma)
    stayed at 1/(L+1) +- 0.01 (measured on Catalina). `gamma_lr=None` uses `lr` (the paper's setting).
    Early-stopping patience is 10 epochs, not the paper's 40: the best epoch (whose weights are kept)
    came before epoch 20 in every demo and Catalina fit measured, so the same model is returned
    about twice as fast (`patience=40` reproduces the paper).
    """

    # big minibatches: on a CPU a step of 1024 rows costs little more than one of 256 (measured 3.7x
    # less CPU per epoch), and an MLP head on a few thousand rows needs no more than ~4 steps an epoch
    _min_steps_per_epoch = 16

    def __init__(
        self,
        *,
        head="mlp",
        pooling="weighted",
        lr=1e-3,
        gamma_lr=1e-2,
        max_epochs=500,
        patience=10,
        batch_size=1024,
        class_weight="balanced",
        device=None,
        seed=0,
    ):
        self.head = head
        self.pooling = pooling
        self.lr = lr
        self.gamma_lr = gamma_lr
        self.max_epochs = max_epochs
        self.patience = patience
        self.batch_size = batch_size
        self.class_weight = class_weight
        self.device = device
        self.seed = seed

    def _check_layers(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 3:
            raise ModelError(f"AstromerProbe needs per-layer embeddings [N, L+1, d], got shape {X.shape}")
        return X

    def _n(self, X) -> int:
        return len(X)

    def _prepare_fit(self, X, y):
        if self.head not in ("mlp", "logreg"):
            raise ModelError(f"unknown probe head {self.head!r}: use 'mlp' or 'logreg'")
        if self.pooling not in POOLINGS:
            raise ModelError(f"unknown probe pooling {self.pooling!r}: use one of {', '.join(POOLINGS)}")
        X = self._check_layers(X)
        self.mean_ = X.mean(0)
        std = X.std(0)
        self.std_ = np.where(std > 1e-8, std, 1.0).astype(np.float32)
        self.n_states_, self.d_ = X.shape[1], X.shape[2]

    def _inputs(self, X):
        X = self._check_layers(X)
        if hasattr(self, "n_states_") and X.shape[1:] != (self.n_states_, self.d_):
            raise ModelError(
                f"probe was fitted on [*, {self.n_states_}, {self.d_}] embeddings, got {X.shape}"
            )
        return (((X - self.mean_) / self.std_).astype(np.float32),)

    def _build(self, n_classes):
        import torch
        from torch import nn

        from lcdash.models.astromer import LayerWeightedPooling

        d, pooling = self._head_width(), self.pooling
        if self.head == "mlp":
            head = nn.Sequential(
                nn.Linear(d, 1024),
                nn.ReLU(),
                nn.Linear(1024, 512),
                nn.ReLU(),
                nn.Linear(512, 256),
                nn.ReLU(),
                nn.LayerNorm(256),
                nn.Linear(256, n_classes),
            )
        else:
            head = nn.Linear(d, n_classes)

        class ProbeNet(nn.Module):
            def __init__(self, n_states):
                super().__init__()
                self.pool = LayerWeightedPooling(n_states) if pooling != "last" else None
                if pooling == "uniform":
                    self.pool.gamma.requires_grad_(False)
                self.head = head

            def forward(self, x, extra=None):  # x [B, L+1, d]; extra [B, F] (HybridProbe's features)
                z = self.pool(x) if self.pool is not None else x[:, -1]  # [B, d]
                return self.head(z if extra is None else torch.cat([z, extra], 1))

        return ProbeNet(self.n_states_)

    def _head_width(self) -> int:
        return self.d_

    def _param_groups(self, module):
        pool = [p for p in (module.pool.parameters() if module.pool is not None else []) if p.requires_grad]
        groups = [{"params": list(module.head.parameters())}]
        if pool:
            groups.append({"params": pool, "lr": self.gamma_lr or self.lr})
        return groups

    def _forward(self, module, x):
        return module(x)

    def _after_fit(self):
        import torch

        if self.module_.pool is not None:
            self.layer_weights_ = torch.softmax(self.module_.pool.gamma.detach().cpu(), 0).numpy()
        else:
            self.layer_weights_ = np.eye(self.n_states_, dtype=np.float32)[-1]


class HybridProbe(AstromerProbe):
    """`probe+features`: the probe's pooled embedding concatenated with the Random Forest's
    light-curve features (lcdash.features), one head over both. X = (layers [N, L+1, d],
    features [N, F]). Features are median-imputed and standardised with training statistics.

    Why: embeddings and hand-made features see different things (shapes and local structure vs
    periodogram peaks and global statistics); the head can use both."""

    def _check(self, X):
        try:
            layers, feats = X
        except (TypeError, ValueError):
            raise ModelError("probe+features needs X = (per-layer embeddings [N, L+1, d], features [N, F])") \
                from None
        layers = self._check_layers(layers)
        feats = np.asarray(feats, dtype=np.float32)
        if feats.ndim != 2 or len(feats) != len(layers):
            raise ModelError(f"features must be [N, F] with N = {len(layers)}, got shape {feats.shape}")
        return layers, feats

    def _n(self, X) -> int:
        return len(self._check(X)[0])

    def _prepare_fit(self, X, y):
        layers, feats = self._check(X)
        AstromerProbe._prepare_fit(self, layers, y)
        with np.errstate(all="ignore"):
            med = np.nanmedian(np.where(np.isfinite(feats), feats, np.nan), 0)
        self.feature_median_ = np.nan_to_num(med).astype(np.float32)
        f = self._impute(feats)
        self.feature_mean_, std = f.mean(0), f.std(0)
        self.feature_std_ = np.where(std > 1e-8, std, 1.0).astype(np.float32)
        self.n_features_ = feats.shape[1]

    def _impute(self, feats):
        return np.where(np.isfinite(feats), feats, self.feature_median_[None, :]).astype(np.float32)

    def _inputs(self, X):
        layers, feats = self._check(X)
        if hasattr(self, "n_features_") and feats.shape[1] != self.n_features_:
            raise ModelError(
                f"probe+features was fitted on {self.n_features_} features, got {feats.shape[1]}")
        f = (self._impute(feats) - self.feature_mean_) / self.feature_std_
        return AstromerProbe._inputs(self, layers) + (np.clip(f, -10, 10).astype(np.float32),)

    def _head_width(self) -> int:
        return self.d_ + self.n_features_

    def _forward(self, module, x, f):
        return module(x, f)


class BeckerRNN(_TorchClassifier):
    """Becker et al. 2020 GRU on dt/dm windows (lcdash.models.rnn). Adam lr 1e-2, x0.98 every 1000
    steps, gradients clipped to +-5."""

    _decay_every = 1000
    _decay = 0.98
    _clip = 5.0

    def __init__(
        self,
        w=4,
        s=2,
        hidden=25,
        n_layers=2,
        dropout=0.4,
        lr=1e-2,
        max_epochs=200,
        patience=20,
        batch_size=128,
        max_steps=1000,
        class_weight="balanced",
        device=None,
        seed=0,
    ):
        self.w = w
        self.s = s
        self.hidden = hidden
        self.n_layers = n_layers
        self.dropout = dropout
        self.lr = lr
        self.max_epochs = max_epochs
        self.patience = patience
        self.batch_size = batch_size
        self.max_steps = max_steps
        self.class_weight = class_weight
        self.device = device
        self.seed = seed

    def _prepare_fit(self, X, y):
        from lcdash.models import rnn

        self.dt_scale_, self.dm_scale_ = rnn.fit_scales([rnn.differences(t, m) for t, m, _ in _curves(X)])

    def _inputs(self, X):
        from lcdash.models import rnn

        diffs = [rnn.differences(t, m) for t, m, _ in _curves(X)]
        return rnn.step_sequences(diffs, self.w, self.s, self.dt_scale_, self.dm_scale_, self.max_steps)

    def _slice(self, arrays, idx):
        x, lengths = arrays
        lengths = lengths[idx]
        return x[idx, : max(int(lengths.max()), 1) if len(lengths) else 1], lengths

    def _minibatches(self, arrays, order, batch_size, rng):
        """Length bucketing: within chunks of 20 batches of the shuffled order, sort by sequence
        length, cut into batches and shuffle those; padding (wasted GRU steps) drops by about a third."""
        lengths = arrays[1]
        out = []
        chunk = 20 * batch_size
        for lo in range(0, len(order), chunk):
            part = order[lo : lo + chunk]
            part = part[np.argsort(lengths[part], kind="stable")]
            out += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
        return [out[i] for i in rng.permutation(len(out))]

    def _build(self, n_classes):
        from lcdash.models.rnn import build_gru

        return build_gru(n_classes, self.w, self.hidden, self.n_layers, self.dropout)

    def _forward(self, module, x, lengths):
        return module(x, lengths)

    # -- incremental update (Becker et al. 2020: new observations at a low cost) ------------------
    # The stream reads every step: unlike predict_proba it has no max_steps cap (a training memory
    # bound that keeps the first 1,000 steps, i.e. curves up to 2,004 observations with w=4, s=2), so
    # it equals predict_proba with max_steps=None; the inputs' scales are the fixed training ones.

    def stream_states(self, X, batch_size: int = 512):
        """Read whole light curves from scratch -> lcdash.models.rnn.StreamState."""
        from lcdash.models.rnn import StreamState

        curves = []
        for t, m, _ in _curves(X):  # sorted, first of duplicate times kept: as rnn.differences reads them
            order = np.argsort(t, kind="stable")
            t, m = t[order], m[order]
            keep = np.ones(len(t), dtype=bool)
            keep[1:] = np.diff(t) > 0
            curves.append((t[keep], m[keep]))
        empty = StreamState.empty(len(curves), self.n_layers, self.hidden, len(self._classes()))
        return self.update_stream(empty, curves, batch_size)

    def update_stream(self, state, new, batch_size: int = 512):
        """Continue each curve's read with its new observations `new` [(time, mag), ...] (times
        after the curve's last read time) -> a new StreamState; costs O(new observations)."""
        import torch

        from lcdash.models import rnn

        if not hasattr(self, "module_"):
            raise ModelError("BeckerRNN is not fitted yet")
        if len(new) != len(state):
            raise ModelError(f"{len(state)} saved states but {len(new)} sets of new observations")
        out = rnn.StreamState.empty(len(state), self.n_layers, self.hidden, len(self.classes_))
        module = self.module_.eval()
        device = next(module.parameters()).device
        for lo in range(0, len(state), batch_size):
            rows = range(lo, min(lo + batch_size, len(state)))
            diffs, tails = [], []
            for i in rows:
                t = np.concatenate([state.tail_time[i], np.asarray(new[i][0], np.float64)])
                m = np.concatenate([state.tail_mag[i], np.asarray(new[i][1], np.float64)])
                if len(t) > 1 and not (np.diff(t) > 0).all():
                    raise ModelError(
                        f"row {i}: new observations must come after the last one read "
                        f"({state.tail_time[i][-1] if len(state.tail_time[i]) else '-'}); recompute it"
                    )
                tails.append((t, m))
                diffs.append((np.diff(t), np.diff(m)))
            k = np.array([int(rnn.n_steps(len(t), self.w, self.s)) for t, _ in tails], np.int64)
            x, _ = rnn.step_sequences(diffs, self.w, self.s, self.dt_scale_, self.dm_scale_, None)
            h0 = torch.as_tensor(state.hidden[lo : lo + len(rows)], device=device).transpose(0, 1)
            with torch.no_grad():
                h = module.advance(torch.as_tensor(x, device=device), k, h0.contiguous())
                logits = module.classify(h[-1])
                never = np.flatnonzero(state.n_steps[lo : lo + len(rows)] + k == 0)
                if len(never):  # too short for one step: forward reads the curve as one padded step
                    xs = torch.as_tensor(x[never], device=device)
                    logits[never] = module(xs, torch.ones(len(never), dtype=torch.int64))
                proba = torch.softmax(logits.float(), 1).cpu().numpy()
            out.hidden[lo : lo + len(rows)] = h.transpose(0, 1).cpu().numpy()
            out.proba[lo : lo + len(rows)] = proba
            for j, i in enumerate(rows):
                t, m = tails[j]
                out.n_steps[i] = state.n_steps[i] + k[j]
                out.n_obs[i] = state.n_obs[i] + len(new[i][0])
                keep = int(k[j]) * self.s
                out.tail_time[i], out.tail_mag[i] = t[keep:], m[keep:]
        return out

    def _classes(self):
        if not hasattr(self, "classes_"):
            raise ModelError("BeckerRNN is not fitted yet")
        return self.classes_

    def save(self, folder):
        """model.safetensors (GRU + head) and config.json (parameters, classes, input scales)."""
        import json
        from pathlib import Path

        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._classes()
        save_file({k: v.detach().cpu().contiguous() for k, v in self.module_.state_dict().items()},
                  str(folder / "model.safetensors"))  # fmt: skip
        params = {k: v for k, v in self.get_params().items() if k != "device"}
        meta = {"model": "becker-rnn", "params": params, "classes": [str(c) for c in self.classes_],
                "dt_scale": self.dt_scale_, "dm_scale": self.dm_scale_}  # fmt: skip
        (folder / "config.json").write_text(json.dumps(meta, indent=1))
        return folder

    @classmethod
    def load(cls, folder, device=None) -> BeckerRNN:
        """A fitted BeckerRNN from `save`'s folder (safetensors: nothing is unpickled)."""
        import json
        from pathlib import Path

        from safetensors.torch import load_file

        folder = Path(folder)
        try:
            meta = json.loads((folder / "config.json").read_text())
            weights = load_file(str(folder / "model.safetensors"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{folder}: not a saved Becker RNN ({exc})") from None
        if meta.get("model") != "becker-rnn":
            raise ModelError(f"{folder}: not a saved Becker RNN (config.json model={meta.get('model')!r})")
        est = cls(**meta["params"], device=device)
        est.classes_ = np.asarray(meta["classes"])
        est.dt_scale_, est.dm_scale_ = float(meta["dt_scale"]), float(meta["dm_scale"])
        module = est._build(len(est.classes_))
        module.load_state_dict(weights)
        est.module_ = module.to(est._device()).eval()
        return est


class AguirreCNN(_TorchClassifier):
    """Aguirre et al. 2019 CNN on dt/dm sequences of 500 (lcdash.models.cnn), with its class-balancing
    augmentation (`augment=True`). Adam lr 1e-3."""

    def __init__(
        self,
        augment=True,
        lr=1e-3,
        max_epochs=200,
        patience=20,
        batch_size=128,
        class_weight="balanced",
        device=None,
        seed=0,
    ):
        self.augment = augment
        self.lr = lr
        self.max_epochs = max_epochs
        self.patience = patience
        self.batch_size = batch_size
        self.class_weight = class_weight
        self.device = device
        self.seed = seed

    def _augment(self, X, y, rng):
        curves = [(t, m) for t, m, _ in _curves(X)]
        if not self.augment:
            return curves, y
        from lcdash.models.cnn import augment

        return augment(curves, _check_y(y, len(curves)), rng)

    def _prepare_fit(self, X, y):
        from lcdash.models import cnn

        self.dt_scale_, self.dm_scale_ = cnn.fit_scales(X)

    def _inputs(self, X):
        from lcdash.models import cnn

        curves = X if isinstance(X, list) and X and len(X[0]) == 2 else [(t, m) for t, m, _ in _curves(X)]
        return (cnn.input_array(curves, self.dt_scale_, self.dm_scale_),)

    def _build(self, n_classes):
        from lcdash.models.cnn import build_cnn

        return build_cnn(n_classes)

    def _forward(self, module, x):
        return module(x)


class FeatureRF(ClassifierMixin, BaseEstimator):
    """Random Forest on light-curve features (lcdash.features): the classical baseline.

    X: light curves, or a precomputed feature matrix [N, F] (float, 2-D). NaN / inf features are
    replaced by the training medians. The validation set is not used (no early stopping).
    """

    def __init__(
        self,
        n_estimators=500,
        max_features="sqrt",
        min_samples_leaf=1,
        class_weight="balanced",
        n_jobs=None,
        seed=0,
    ):
        self.n_estimators = n_estimators
        self.class_weight = class_weight
        self.max_features = max_features
        self.min_samples_leaf = min_samples_leaf
        self.n_jobs = n_jobs
        self.seed = seed

    def features(self, X) -> np.ndarray:
        """The feature matrix of X (X itself when it already is one)."""
        if isinstance(X, np.ndarray) and X.ndim == 2 and X.dtype.kind == "f":
            return X
        return extract_features(X, n_jobs=self.n_jobs)

    def _clean(self, F):
        F = np.where(np.isfinite(F), F, np.nan)
        return np.where(np.isnan(F), self.fill_[None, :], F)

    def fit(self, X, y, X_val=None, y_val=None):
        from sklearn.ensemble import RandomForestClassifier

        t0 = time.perf_counter()
        F = self.features(X)
        y = _check_y(y, len(F))
        with np.errstate(all="ignore"):
            fill = np.nanmedian(np.where(np.isfinite(F), F, np.nan), 0)
        self.fill_ = np.where(np.isfinite(fill), fill, 0.0)
        self.forest_ = RandomForestClassifier(
            n_estimators=self.n_estimators,
            max_features=self.max_features,
            min_samples_leaf=self.min_samples_leaf,
            class_weight=self.class_weight,
            n_jobs=self.n_jobs,
            random_state=self.seed,
        ).fit(self._clean(F), y)
        self.classes_ = self.forest_.classes_
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def predict_proba(self, X) -> np.ndarray:
        if not hasattr(self, "forest_"):
            raise ModelError("FeatureRF is not fitted yet")
        return self.forest_.predict_proba(self._clean(self.features(X)))

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), 1)]


def make_classifier(name: str, **params):
    """A classifier by its short name (MODEL_NAMES); unknown params are ignored."""
    classes = {"probe": AstromerProbe, "rnn": BeckerRNN, "cnn": AguirreCNN, "rf": FeatureRF,
               "probe+features": HybridProbe}
    if name not in classes:
        raise ModelError(f"unknown model {name!r}: choose from {', '.join(MODEL_NAMES)}")
    cls = classes[name]
    valid = cls().get_params()
    # None means "the model's default", except for class_weight, where None switches weighting off
    return cls(
        **{k: v for k, v in params.items() if k in valid and (v is not None or k == "class_weight")}
    )
