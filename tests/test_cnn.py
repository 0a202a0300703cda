"""Aguirre et al. 2019 CNN: parameter count, inputs, augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from lcdash.models import cnn


@pytest.mark.parametrize("n_classes", [4, 9])
def test_parameter_count_matches_the_paper(n_classes):
    net = cnn.build_cnn(n_classes)
    n = sum(p.numel() for p in net.parameters())
    assert n == 867_168 + 129 * n_classes  # "about 867k"
    assert 860_000 < n < 870_000


def test_towers_share_weights_and_output_shape():
    import torch

    net = cnn.build_cnn(3).eval()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv1d)]
    assert len(convs) == 2  # one tower for dt and dm
    assert net(torch.zeros(4, 2, cnn.SEQ_LEN)).shape == (4, 3)


def test_input_sequences_pad_and_truncate():
    t = np.array([2.0, 0.0, 1.0, 4.0])
    m = np.array([12.0, 10.0, 11.0, 14.0])
    dt, dm = cnn.sequences(t, m)
    np.testing.assert_array_equal(dt, [0, 1, 1, 2])
    np.testing.assert_array_equal(dm, [0, 1, 1, 2])
    long = (np.arange(700.0), np.zeros(700))
    x = cnn.input_array([(t, m), long])
    assert x.shape == (2, 2, cnn.SEQ_LEN)
    np.testing.assert_allclose(x[0, 0, :4], np.log1p([0, 1, 1, 2]), rtol=1e-6)
    assert not x[0, :, 4:].any()  # zero padding
    np.testing.assert_allclose(x[1, 0, 1:], np.log1p(1.0), rtol=1e-6)  # truncated to 500


def test_augmentation_balances_with_at_most_five_copies():
    rng = np.random.default_rng(0)
    curves = [(np.arange(50.0) + i, np.zeros(50)) for i in range(23)]
    y = np.array(["a"] * 20 + ["b"] * 3)
    out, yy = cnn.augment(curves, y, rng)
    counts = dict(zip(*np.unique(yy, return_counts=True), strict=True))
    assert counts == {"a": 20, "b": 15}  # 3 stars x 5 copies at most
    b = [c for c, lab in zip(out, yy, strict=True) if lab == "b"]
    originals = {float(c[0][0]) for c in curves[20:]}
    # copy k keeps every 1st or 2nd point after dropping 0..k leading ones: a subsequence of a star
    for t, _ in b:
        step = np.diff(t)
        assert len(set(step.tolist())) == 1 and step[0] in (1.0, 2.0)
        assert any(t[0] - o in range(0, 5) for o in originals)
