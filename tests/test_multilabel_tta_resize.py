"Multi-label DataLoaders with the label callbacks, TTA over ensembles, progressive resizing with export and staged fits: integration, bad input, regressions."
import warnings
import numpy as np
import pandas as pd
import pytest
import torch
from fastai.vision.all import Learner, Resize, accuracy, load_learner, set_seed, params, MixUp
from labelcb.all import (multilabel_dls, tune_thresholds, fbeta_score, decode_tags, write_submission, FBeta, tta_predict,
                         ensemble_predict, ProgressiveResize, staged_fit, PLC, SoftLabel, RefineryLoop, SoftBCEWithLogitsLoss,
                         multi_digits_df, multi_digits_path, digits_df, digits_dls, digits_cnn)

warnings.filterwarnings('ignore', category=FutureWarning)


@pytest.fixture(scope='module')
def frames():
    df = multi_digits_df()
    small = pd.concat([df[df.split == 'train'].iloc[:256], df[df.split == 'valid'].iloc[:64]])
    onehot = pd.concat([small, small['labels'].str.get_dummies(sep=' ').add_prefix('d')], axis=1)
    return small, onehot, [f'd{i}' for i in range(10)]


def make_dls(frames, fmt):
    small, onehot, cols = frames
    if fmt == 'tags': return multilabel_dls(small, multi_digits_path(), item_tfms=Resize((16, 48)), bs=32, seed=0)
    return multilabel_dls(onehot, multi_digits_path(), label_col=cols, item_tfms=Resize((16, 48)), bs=32, seed=0)


@pytest.mark.parametrize('fmt', ['tags', 'onehot'])
@pytest.mark.parametrize('method', ['PLC', 'SoftLabel', 'RefineryLoop'])
def test_label_callbacks_train_on_multilabel_dls(frames, fmt, method):
    set_seed(0)
    dls = make_dls(frames, fmt)
    small, onehot = frames[0], frames[1]
    train_ids = (small if fmt == 'tags' else onehot).index[~(small if fmt == 'tags' else onehot).is_valid]
    if method == 'PLC': cb = PLC(warmup=0, theta=0.0, min_tag_count=1)
    elif method == 'SoftLabel': cb = SoftLabel(pd.DataFrame(np.full((len(train_ids), 10), 0.5), index=train_ids, columns=list(dls.vocab)), a=0.5)
    else: cb = RefineryLoop(Learner(dls, digits_cnn(10, width=8)), mode='offline')  # offline writes the teacher's sigmoids to the table
    learn = Learner(dls, digits_cnn(10, width=8), metrics=FBeta(), cbs=[cb])
    orig = learn.loss_func
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3, cbs=[])
    t = cb.table.targets
    assert t.shape == (len(dls.train_ds), 10) and t.dtype.is_floating_point
    if method == 'SoftLabel': assert torch.allclose(t[t != 0.25].unique(), torch.tensor([0.75]))  # 0.5*0/1 + 0.5*0.5
    if method == 'RefineryLoop': assert ((t > 0) & (t < 1)).float().mean() > 0.9  # the teacher's sigmoids
    if method == 'PLC': assert set(t.unique().tolist()) <= {0., 1.}  # PLC flips whole tags
    assert learn.loss_func is orig  # the soft BCE was only swapped in for training
    assert 0 <= learn.validate()[1] <= 1


def test_threshold_tuning_rejects_single_label_learners():
    learn = Learner(digits_dls(size=16), digits_cnn(10, width=8))
    with pytest.raises(ValueError, match='multi-label'): learn.tune_thresholds()


def test_missing_tags_are_images_without_tags(frames):
    small = frames[0].copy()
    small.loc[small.index[:3], 'labels'] = np.nan
    small.loc[small.index[3], 'labels'] = ''
    before = small.copy()
    dls = multilabel_dls(small, multi_digits_path(), item_tfms=Resize((16, 48)), bs=32)
    pd.testing.assert_frame_equal(small, before)
    rows = {i: dls.train_ds[i][1] for i in range(len(dls.train_ds))}
    ids = dls.train_ds.items.index
    for k in range(4): assert rows[list(ids).index(small.index[k])].sum() == 0


def test_tags_only_in_validation_are_classes(frames):
    small = frames[0].copy()
    val = small.index[small.is_valid][0]
    small.loc[val, 'labels'] = small.loc[val, 'labels'] + ' rare'
    with pytest.warns(UserWarning, match="'rare'"): dls = multilabel_dls(small, multi_digits_path(), item_tfms=Resize((16, 48)), bs=32)
    assert 'rare' in dls.vocab and dls.valid_ds[list(dls.valid_ds.items.index).index(val)][1].sum() >= 3


def test_submission_bad_input(tmp_path):
    probs = pd.DataFrame(np.random.rand(4, 3), columns=list('abc'))
    with pytest.raises(ValueError, match='ids'): write_submission(probs, tmp_path/'s.csv', ids=['x'])
    with pytest.warns(UserWarning, match='row numbers'): write_submission(probs, tmp_path/'s.csv')
    with pytest.raises(KeyError, match="'c'"): decode_tags(probs, pd.Series({'a': .5, 'b': .5}))
    with pytest.raises(ValueError, match='3 classes but 2'): decode_tags(probs, [0.5, 0.5])
    with pytest.raises(ValueError, match="average"): fbeta_score(probs, probs > .5, average='weighted')


def test_ensemble_predict_is_tta_predict():
    set_seed(0)
    df = digits_df(); test = df[df.split == 'test'].iloc[:50]
    learners = [Learner(digits_dls(df, size=16), digits_cnn(10, width=8)) for _ in range(2)]
    a = ensemble_predict(learners, test, tta='dihedral')
    b = tta_predict(learners, test, 'dihedral', progress=False)
    pd.testing.assert_frame_equal(a, b)
    files = list(test.file.map(lambda f: str(digits_dls().path/f)))
    c = ensemble_predict(learners, files)
    assert list(c.index) == files and np.allclose(c.to_numpy(), tta_predict(learners, test, None, progress=False).to_numpy(), atol=1e-5)


def test_progressive_resize_exports_and_predicts_at_full_size(tmp_path):
    set_seed(0)
    dls = digits_dls(size=32, bs=64)
    learn = Learner(dls, digits_cnn(10, width=8), metrics=accuracy, cbs=[ProgressiveResize((0.5, 1.)), MixUp()])
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(2, 3e-3)
    learn.export(tmp_path/'m.pkl')
    loaded = load_learner(tmp_path/'m.pkl')
    seen = []
    h = loaded.model[0].register_forward_pre_hook(lambda m, i: seen.append(tuple(i[0].shape[-2:])))
    loaded.predict(str(dls.path/digits_df().file[0]))
    h.remove()
    assert seen == [(32, 32)]


def test_interrupted_fit_leaves_nothing_resized():
    "An exception in the middle of a small-size epoch: the next get_preds still sees full-size images"
    from fastai.callback.core import Callback
    class Boom(Callback):
        def after_batch(self):
            if self.training and self.iter == 2: raise KeyboardInterrupt
    dls = digits_dls(size=32, bs=64)
    learn = Learner(dls, digits_cnn(10, width=8), cbs=[ProgressiveResize((0.5, 1.))])
    with pytest.raises(KeyboardInterrupt), learn.no_bar(), learn.no_logging(): learn.fit(1, cbs=[Boom()])
    seen = []
    h = learn.model[0].register_forward_pre_hook(lambda m, i: seen.append(tuple(i[0].shape[-2:])))
    with learn.no_bar(): learn.get_preds()
    h.remove()
    assert set(seen) == {(32, 32)}


def test_staged_fit_leaves_the_model_unfrozen_and_checks_arguments():
    def body_head(m): return [params(m[:-3]), params(m[-3:])]
    learn = Learner(digits_dls(size=16), digits_cnn(10, width=8), splitter=body_head)
    staged_fit(learn, lambda s: digits_dls(size=s), sizes=(16,), epochs=1, quiet=True)
    assert all(p.requires_grad for p in learn.model.parameters())
    with pytest.raises(ValueError, match='schedule'): staged_fit(learn, lambda s: digits_dls(size=s), schedule='cosine')
    with pytest.raises(TypeError, match='make_dls'): staged_fit(learn, digits_dls(size=16))
