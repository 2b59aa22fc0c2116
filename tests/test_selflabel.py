"SelfLabelSinkhorn and sinkhorn_knopp: integration with fastai's fits, guards, bad input, regressions."
import warnings
import numpy as np
import pandas as pd
import pytest
import torch
from fastai.vision.all import Learner, set_seed
from labelcb.test_utils import small_digits
from labelcb.all import digits_df, digits_dls, digits_cnn
from labelcb.selflabel import SelfLabelSinkhorn, MultiHead, cluster_scores
from labelcb.sinkhorn import sinkhorn_knopp, sela_reference


@pytest.fixture(scope='module')
def small_df(): return small_digits(n_train=300, n_valid=60)


def _learner(df, **kw):
    set_seed(0)
    return Learner(digits_dls(df, size=16, bs=32), digits_cnn(10), cbs=SelfLabelSinkhorn(seed=0, **kw), metrics=[])


def test_fine_tune_two_fits_each_get_a_schedule(small_df):
    learn = _learner(small_df, k=10, n_opts=2)
    learn.fine_tune(1, freeze_epochs=1)
    hist = pd.DataFrame(learn.self_label_sinkhorn.history)
    assert len(hist) == 4 and (hist.iteration == 0).sum() == 2  # each fit re-assigns before its first batch


def test_lr_find_get_preds_validate_do_not_relabel(small_df):
    learn = _learner(small_df, k=10)
    learn.lr_find(num_it=5, show_plot=False)
    learn.get_preds(); learn.validate()
    assert learn.self_label_sinkhorn.history == []


def test_head_replaced_before_optimizer_sees_it(small_df):
    "The head is swapped at Learner creation, so the optimizer trains the new head's weights"
    learn = _learner(small_df, k=7, heads=2)
    head = next(m for m in learn.model.modules() if isinstance(m, MultiHead))
    w0 = head.linear.weight.detach().clone()
    learn.fit(1, 1e-2)
    assert not torch.equal(w0, head.linear.weight.detach())


def test_callback_added_after_creation_rebuilds_the_optimizer(small_df):
    set_seed(0)
    learn = Learner(digits_dls(small_df, size=16, bs=32), digits_cnn(10), metrics=[])
    learn.create_opt()
    learn.add_cb(SelfLabelSinkhorn(k=5, seed=0, n_opts=1))
    head_params = {id(p) for m in learn.model.modules() if isinstance(m, MultiHead) for p in m.parameters()}
    learn.fit(1, 1e-2)
    opt_params = {id(p) for pg in learn.opt.param_lists for p in pg}
    assert head_params <= opt_params


def test_k_larger_than_training_set(small_df):
    tiny = pd.concat([small_df[~small_df.is_valid].head(12), small_df[small_df.is_valid].head(8)])
    learn = Learner(digits_dls(tiny, size=16, bs=4), digits_cnn(10), cbs=SelfLabelSinkhorn(k=13), metrics=[])
    with pytest.raises(ValueError, match='k ≤ 12'): learn.fit(1)


def test_given_labels_never_reach_the_loss(small_df):
    "Shuffling the given labels changes nothing: same seed, same clusters"
    a = _learner(small_df, k=10, n_opts=1); a.fit(1, 1e-2)
    shuffled = small_df.copy()
    shuffled['label'] = np.random.default_rng(0).permutation(shuffled.label.values)
    b = _learner(shuffled, k=10, n_opts=1); b.fit(1, 1e-2)
    assert torch.equal(a.self_label_sinkhorn.labels, b.self_label_sinkhorn.labels)


def test_cluster_scores_rejects_length_mismatch():
    with pytest.raises(ValueError, match='cluster labels'): cluster_scores([0, 1], [0, 1, 1])


def test_sinkhorn_matches_official_rule_on_moderate_problem():
    g = torch.Generator().manual_seed(3)
    P = (torch.randn(5000, 50, generator=g)*2).softmax(1)
    ref, _, _ = sela_reference(P.numpy(), 10., 0.01)
    res = sinkhorn_knopp(P, lam=10., tol=0.01)
    assert (res.labels.numpy() == ref).mean() >= 0.99
    assert res.sizes.min() >= 80 and res.sizes.max() <= 120


def test_sinkhorn_inplace_refuses_other_dtype_and_leaves_input_alone():
    x = torch.rand(100, 5).double(); x0 = x.clone()
    with pytest.raises(ValueError, match='float32'): sinkhorn_knopp(x, inplace=True)
    sinkhorn_knopp(x); assert torch.equal(x, x0)


def _skewed_logits(n=30_000, k=300, seed=5):
    "Clusters of unequal popularity: the column scalings spread far, so the truncated kernel needs more than one round"
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g) + torch.randn(k, generator=g)*0.5


def test_truncated_kernel_is_chosen_for_large_problems_and_matches_dense_and_official():
    x = _skewed_logits(); x0 = x.clone()
    res, dense = sinkhorn_knopp(x, inputs='logits'), sinkhorn_knopp(x, inputs='logits', sparse=False)
    assert res.kernel.startswith('truncated') and dense.kernel == 'dense'
    assert res.converged and res.err <= res.tol  # the bound on the dropped entries is inside err
    assert (res.labels == dense.labels).float().mean() >= 0.99
    ref, _, _ = sela_reference(x.double().softmax(1).numpy(), 25., 0.1)
    assert (res.labels.numpy() == ref).mean() >= 0.99
    assert torch.equal(x, x0)  # not inplace: the input is left alone


def test_truncated_kernel_inplace_q_and_numpy_input():
    x = _skewed_logits(20_000, 200, 6).softmax(1)
    res_np = sinkhorn_knopp(x.numpy().copy(), sparse=True)
    res = sinkhorn_knopp(x, sparse=True, inplace=True, return_q=True)
    assert res.q.data_ptr() == x.data_ptr()  # Q written into the input, no second N×K copy
    q = res.q.double()
    assert torch.allclose(q.sum(1)*20_000, torch.ones(20_000, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(q.sum(0)*200, torch.ones(200, dtype=torch.float64), atol=0.05)
    assert torch.equal(res.labels, res_np.labels)


def test_truncated_kernel_refuses_bad_rows_like_dense():
    x = torch.rand(5000, 1000); x[17] = 0
    with pytest.raises(ValueError, match='no finite'): sinkhorn_knopp(x, sparse=True)
    x = torch.rand(5000, 1000); x[3, 5] = float('nan')
    with pytest.raises(ValueError, match='NaN'): sinkhorn_knopp(x, inputs='logits', sparse=True)


def test_training_loss_is_cross_entropy_to_the_batch_pseudo_labels(small_df):
    "Regression: fastai's CastToTensor made the pseudo-labels plain tensors before the loss, which told them by type and so trained each head on its own argmax"
    import torch.nn.functional as F
    from fastai.callback.core import Callback
    gaps = []
    class Check(Callback):
        order = 50
        def after_loss(self):
            if not self.training: return
            cb = self.learn.self_label_sinkhorn
            y = cb.labels[:, self.learn.item_index.idx].T  # (B, heads) pseudo-labels of this batch's items
            logits = self.learn.pred.float().view(len(y), 2, -1)
            want = (F.cross_entropy(logits[:, 0], y[:, 0]) + F.cross_entropy(logits[:, 1], y[:, 1]))/2
            gaps.append(abs(float(self.learn.loss) - float(want)))
    learn = _learner(small_df, k=10, heads=2, n_opts=1)
    learn.add_cb(Check())
    learn.fit(1, 1e-3)
    assert len(gaps) == len(learn.dls.train) and max(gaps) < 1e-5


def test_model_fits_fixed_pseudo_labels(small_df):
    "With one assignment (n_opts=1) the labels stay fixed, and the model learns them: far above chance (0.1) on its training items"
    from labelcb.items import predict_items
    learn = _learner(small_df, k=10, n_opts=1)
    learn.fit_one_cycle(6, 1e-2)
    probs = predict_items(learn.model, learn.dls, 'eval')
    assert (probs.argmax(1) == learn.self_label_sinkhorn.labels[0]).float().mean() > 0.5
