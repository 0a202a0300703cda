"""Becker et al. 2020 RNN: differences, dt/dm step windows, step count, and that it learns."""

from __future__ import annotations

import numpy as np
import pytest

from lcdash.models import rnn


@pytest.mark.parametrize("L,w,s", [(10, 4, 2), (11, 4, 2), (200, 4, 2), (5, 4, 2), (50, 6, 3), (9, 2, 1)])
def test_step_count_formula(L, w, s):
    t = np.arange(L, dtype=float)
    diffs = [rnn.differences(t, np.sin(t))]
    steps, lengths = rnn.step_sequences(diffs, w=w, s=s)
    expected = (L - 1 - w + s) // s
    assert int(rnn.n_steps(L, w, s)) == expected
    assert lengths[0] == expected and steps.shape == (1, expected, 2 * w)


def test_differences_sort_and_drop_duplicate_times():
    t = np.array([3.0, 1.0, 2.0, 2.0, 5.0])
    m = np.array([30.0, 10.0, 20.0, 99.0, 50.0])
    dt, dm = rnn.differences(t, m)
    np.testing.assert_array_equal(dt, [1.0, 1.0, 2.0])
    np.testing.assert_array_equal(dm, [10.0, 10.0, 20.0])


def test_step_content_is_dt_then_dm_windows():
    t = np.array([0.0, 1.0, 3.0, 6.0, 10.0, 15.0, 21.0])
    m = np.arange(7, dtype=float) ** 2
    dt, dm = rnn.differences(t, m)
    steps, lengths = rnn.step_sequences([(dt, dm)], w=4, s=2)
    assert lengths[0] == 2
    np.testing.assert_allclose(steps[0, 1, :4], np.log1p(dt[2:6]), rtol=1e-6)  # dt is log1p-scaled
    np.testing.assert_allclose(steps[0, 1, 4:], dm[2:6], rtol=1e-6)


def test_short_curve_gets_one_padded_step_and_padding_is_ignored():
    import torch

    diffs = [rnn.differences(np.arange(3.0), np.zeros(3)), rnn.differences(np.arange(40.0), np.ones(40))]
    steps, lengths = rnn.step_sequences(diffs, w=4, s=2)
    assert lengths.tolist() == [1, 18]
    torch.manual_seed(0)
    net = rnn.build_gru(3).eval()
    x = torch.as_tensor(steps)
    full = net(x, torch.as_tensor(lengths))
    alone = net(x[:1, :1], torch.as_tensor(lengths[:1]))
    torch.testing.assert_close(full[:1], alone)  # trailing padding does not change the result


def test_gru_shapes_and_params():
    net = rnn.build_gru(5, w=4, hidden=25, n_layers=2)
    n = sum(p.numel() for p in net.parameters())
    gru = 3 * (25 * 8 + 25 * 25 + 2 * 25) + 3 * (25 * 25 + 25 * 25 + 2 * 25)
    head = (25 * 50 + 50) + (50 * 5 + 5)
    assert n == gru + head
