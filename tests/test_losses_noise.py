"Soft losses against torch's, and label noise on input it must refuse or preserve."
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from labelcb.losses import SoftCrossEntropyLoss, SoftBCEWithLogitsLoss
from labelcb.noise import add_label_noise


@pytest.mark.parametrize('shape', [(7, 4), (3, 5, 6)])
def test_soft_ce_matches_torch(shape):
    z = torch.randn(*shape)
    y = torch.randint(0, shape[-1], shape[:-1])
    p = torch.softmax(torch.randn(*shape), -1)
    torch.testing.assert_close(SoftCrossEntropyLoss()(z, y), F.cross_entropy(z.reshape(-1, shape[-1]), y.reshape(-1)))
    torch.testing.assert_close(SoftCrossEntropyLoss()(z, p), F.cross_entropy(z.reshape(-1, shape[-1]), p.reshape(-1, shape[-1])))


def test_soft_losses_have_gradients_towards_targets():
    z = torch.zeros(1, 3, requires_grad=True)
    SoftCrossEntropyLoss()(z, torch.tensor([[0.0, 1.0, 0.0]])).backward()
    assert z.grad[0, 1] < 0 < z.grad[0, 0]
    z = torch.zeros(1, 2, requires_grad=True)
    SoftBCEWithLogitsLoss()(z, torch.tensor([[1.0, 0.0]])).backward()
    assert z.grad[0, 0] < 0 < z.grad[0, 1]


def test_noise_keeps_input_and_index():
    s = pd.Series(np.arange(100) % 5, index=np.arange(100, 200))
    keep = s.copy()
    noisy, changed = add_label_noise(s, 0.2, 'symmetric', seed=3)
    pd.testing.assert_series_equal(s, keep)
    assert (noisy.index == s.index).all() and changed.sum() == 20


def test_noise_with_rate_zero_and_one():
    y = np.arange(40) % 4
    assert not add_label_noise(y, 0.0)[1].any()
    noisy, changed = add_label_noise(y, 1.0, 'pair')
    assert changed.all() and (noisy == (y + 1) % 4).all()
