"""No silent wrong results: per-item state belongs to its own items, the user's settings are kept, and a learner is left
as it was found. Each test here failed before the change it guards (issue 17)."""
import warnings
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from fastai.vision.all import (Callback, CancelFitException, CrossEntropyLossFlat, DataBlock, ImageBlock, Learner,
                               LabelSmoothingCrossEntropy, LabelSmoothingCrossEntropyFlat, PILImage, RegressionBlock,
                               SaveModelCallback, accuracy, resnet18, vision_learner)
from labelcb.test_utils import small_digits, tiny_learner
from labelcb.all import (ModelReady, PLC, LabelCallback, LabelTable, SoftCrossEntropyLoss, SoftBCEWithLogitsLoss, SoftLabel,
                         TemporalEnsemble, RefineryLoop, digits_df, digits_dls, noisy_digits_df, oversample, label_audit,
                         soft_loss_for, hide_labels, PartialCategoryBlock)
from labelcb.temporal import PiModel


def frame(df=None, start=0, n_train=96, n_valid=32): return small_digits(df, n_train, n_valid, start)


def learner(df, cbs=(), label_col='label', **kwargs):
    return tiny_learner(df, cbs, size=8, seed=None, dls_kwargs=dict(label_col=label_col), **kwargs)


class TargetSpy(Callback):
    "Records, for every training batch, the hard targets the loss sees and the labels the dataset gives those items"
    order = 50
    def before_fit(self): self.seen, self.given = [], []
    def after_loss(self):
        if not self.training: return
        pos = self.learn.item_index.idx.cpu()
        self.seen.append(self.yb[0].argmax(1).cpu())
        self.given.append(torch.stack([torch.as_tensor(self.dls.train_ds.tls[1][int(i)]) for i in pos]))
    def agreement(self): return float((torch.cat(self.seen) == torch.cat(self.given)).float().mean())


# ---- 1. a table from other items is never used
@pytest.mark.parametrize('make', [LabelCallback, lambda: PLC(warmup=0.5)])
def test_callback_reused_on_other_items_starts_a_fresh_table(make):
    cb = make()
    a, b = frame(start=0), frame(start=200)  # same sizes, other images
    learner(a, [cb]).fit(1)
    spy = TargetSpy()
    lb = learner(b, [cb, spy])
    lb.fit(1)
    assert list(cb.table.ids) == list(b[b.split == 'train'].index)
    assert spy.agreement() == 1.  # before: trained on a's labels (about chance)
    if isinstance(cb, PLC): assert len(cb.history) == 1  # a's epochs are not b's


def test_dls_replaced_by_other_dls_of_the_same_length():
    a, b = frame(start=0), frame(start=300)
    cb = LabelCallback()
    learn = learner(a, [cb])
    learn.fit(1)
    learn.dls = digits_dls(b, size=8, bs=32)
    spy = TargetSpy()
    learn.fit(1, cbs=spy)
    assert spy.agreement() == 1. and list(cb.table.ids) == list(b[b.split == 'train'].index)


def test_a_given_table_of_other_items_is_refused():
    a, b = frame(start=0), frame(start=300)
    other = LabelTable.from_dls(digits_dls(a, size=8, bs=32))
    learn = learner(b, [PLC(table=other)])
    with pytest.raises(ValueError, match='belongs to other items'): learn.fit(1)
    assert type(learn.loss_func).__name__ == 'CrossEntropyLossFlat'


# ---- 2. a saved table loads by class name
def test_load_aligns_classes_by_name(tmp_path):
    saved = LabelTable(torch.tensor([0, 1, 2, 1]), vocab=['1', '10', '2'], ids=list('wxyz'))  # '10' sorts before '2'
    saved.update([3], torch.tensor([2]), why='fix')
    saved.save(tmp_path/'t.pth')
    here = LabelTable(torch.tensor([0, 2, 1, 2]), vocab=['1', '2', '10'], ids=list('wxyz'))  # the same labels, other order
    here.load(tmp_path/'t.pth')
    assert [here.vocab[i] for i in here.labels.tolist()] == ['1', '10', '2', '2']
    assert [here.vocab[i] for i in here.original.tolist()] == ['1', '10', '2', '10']
    assert here.log.new.tolist() == ['2'] and here.log.old.tolist() == ['10']
    torch.testing.assert_close(here.targets[3], torch.tensor([0., 1., 0.]))  # column '2' of this table
    with pytest.raises(ValueError, match='other classes'):
        LabelTable(torch.tensor([0, 1, 2, 1]), vocab=['1', '2', '3'], ids=list('wxyz')).load(tmp_path/'t.pth')


def test_saved_tables_load_without_pickle(tmp_path):
    t = LabelTable(torch.tensor([0, 1]), vocab=np.array([3, 7]), ids=['a', 'b'])
    t.update([0], torch.tensor([1]), why='x', epoch=np.int64(2), p=torch.tensor([0.9]))
    t.save(tmp_path/'t.pth')
    torch.load(tmp_path/'t.pth', weights_only=True)  # no arbitrary pickle in a saved table
    assert LabelTable(torch.tensor([0, 1]), vocab=[3, 7], ids=['a', 'b']).load(tmp_path/'t.pth').labels.tolist() == [1, 1]


# ---- 3. label_audit reads labels by index and by class name
def test_label_audit_aligns_labels():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), 30)
    probs = pd.DataFrame(p, index=[f'i{k}' for k in range(30)], columns=['cat', 'dog', 'fox'])
    codes = p.argmax(1)
    names = pd.Series(np.array(['cat', 'dog', 'fox'])[codes], index=probs.index)
    ref = label_audit(probs, codes)
    shuffled = names.sample(frac=1, random_state=0)
    by_name = label_audit(probs, shuffled)  # before: read by position, so labels went to other rows
    pd.testing.assert_frame_equal(by_name.sort_index(), ref.sort_index())
    # int class values as columns: labels are class values, not positions
    iprobs = probs.set_axis([1, 2, 3], axis=1)
    vals = pd.Series(codes + 1, index=probs.index)
    assert (label_audit(iprobs, vals).sort_index().given.astype(int) == vals.sort_index()).all()
    with pytest.raises(ValueError, match='whole'): label_audit(probs, codes + 0.5)
    with pytest.raises(ValueError, match='missing'): label_audit(probs, names.where(names != 'cat'))
    with pytest.raises(ValueError, match='no items'): label_audit(probs.iloc[:0], names.iloc[:0])
    with pytest.raises(KeyError, match='no label'): label_audit(probs, names.iloc[:-1])
    with pytest.raises(ValueError, match='not classes'): label_audit(probs, names.replace('cat', 'cow'))


# ---- 4. duplicate ids that are not copies are refused before training
def test_rows_sharing_an_index_but_differing_are_refused():
    df = frame()
    bad = df.copy()
    idx = bad.index.to_numpy().copy(); idx[1] = idx[0]  # two different images, one index label
    bad.index = idx
    for cb in (LabelCallback(), PLC(), TemporalEnsemble()):
        learn = learner(bad, [cb])
        with pytest.raises(ValueError, match='reset_index'): learn.fit(1)
        assert type(learn.loss_func).__name__ == 'CrossEntropyLossFlat'


# ---- 5. oversampled copies are one item
def test_oversampled_copies_share_one_label():
    df = noisy_digits_df(0.4, seed=0)
    df = frame(df, n_train=160)
    over = oversample(df, 'label', classes=[0, 1, 2], factor=3, valid_col='is_valid')
    n_items = (~over.is_valid).sum() - over[~over.is_valid].index.duplicated().sum()
    plc = PLC(warmup=0.3, theta=0.)
    learn = learner(over, [plc])
    with warnings.catch_warnings(record=True) as caught:  # every epoch keeps the copies' table (each used to start a new one, losing the corrections)
        warnings.simplefilter('always'); learn.fit(3, 1e-2)
    assert not [w for w in caught if 'new table' in str(w.message)]
    t = plc.table
    assert len(t) == n_items and len(t.item_of) == (~over.is_valid).sum()
    assert len(plc.corrections)  # something was corrected...
    out = plc.corrected_labels(over, 'label')
    train = out[~out.is_valid]
    assert (train.groupby(level=0).label.nunique() == 1).all()  # ...and every copy of an item carries the same label
    assert (train.groupby(level=0).label.first().loc[t.ids] == np.array(t.vocab)[t.labels.numpy()]).all()


def test_softlabel_and_temporal_with_copies():
    df = frame(n_train=64)
    over = oversample(df, 'label', classes=[0, 1], factor=2, valid_col='is_valid')
    train = df[~df.is_valid]
    oof = pd.DataFrame(np.full((len(train), 10), 0.1), index=train.index, columns=sorted(df.label.unique()))
    sl = SoftLabel(oof, a=0.5)
    learner(over, [sl]).fit(1)
    assert len(sl.table) == len(train)
    part = hide_labels(over[~over.index.duplicated()], n_per_class=2, rows=~over[~over.index.duplicated()].is_valid.values, true_col=None)
    part = pd.concat([part, part.loc[over.index[over.index.duplicated()]]])  # the copies again, with the hidden labels
    te = TemporalEnsemble()
    learn = Learner(_partial_dls(part),
                    nn.Sequential(nn.Flatten(), nn.Linear(192, 10)), cbs=[te])
    learn.fit(2)
    assert te.n_seen.max() == 2  # the ensemble keeps both epochs (it used to restart each epoch on copies; drop_last skips a few items)
    filled = te.fill_labels(part, 'label', min_confidence=0.)  # before: a raw pandas error on the repeated index
    assert filled[~filled.is_valid].groupby(level=0).label.nunique().max() == 1


def _partial_dls(df):
    from fastai.vision.all import ImageDataLoaders, Resize
    from labelcb.all import PartialCategoryBlock, digits_path
    from fastai.vision.all import ColReader, ColSplitter
    return DataBlock(blocks=(ImageBlock, PartialCategoryBlock), get_x=ColReader('file', pref=str(digits_path()) + '/'),
                     get_y=ColReader('label'), splitter=ColSplitter('is_valid'), item_tfms=Resize(8)).dataloaders(df, bs=32)


def test_offline_refinery_with_copies():
    df = frame(n_train=64)
    over = oversample(df, 'label', classes=[0, 1], factor=2, valid_col='is_valid')
    teacher = learner(df)
    teacher.fit(1)
    rl = RefineryLoop(teacher, mode='offline')
    learner(over, [rl]).fit(1)
    assert len(rl.table) == (~df.is_valid).sum()


# ---- 6. regression targets are refused whatever the loss
def test_multi_output_regression_is_refused():
    df = frame()
    dblock = DataBlock(blocks=(ImageBlock, RegressionBlock(n_out=2)), get_x=lambda r: PILImage.create(np.zeros((4, 4, 3), np.uint8)),
                       get_y=lambda r: [float(r.label)*0.37, 1.5], splitter=lambda items: (list(range(96)), list(range(96, 128))))
    dls = dblock.dataloaders(df, bs=16)
    for lf in (None, SoftBCEWithLogitsLoss()):
        learn = Learner(dls, nn.Sequential(nn.Flatten(), nn.Linear(48, 2)), loss_func=lf, cbs=PLC())
        with pytest.raises(TypeError, match='regression'): learn.fit(1)


# ---- 7, 8. the user's loss settings are carried, label smoothing included
def test_loss_settings_are_carried():
    w = torch.rand(10)
    soft = soft_loss_for(CrossEntropyLossFlat(reduction='sum', weight=w, label_smoothing=0.1))
    assert soft.reduction == 'sum' and soft.label_smoothing == 0.1 and soft.weight is w
    logits, y = torch.randn(6, 10), torch.randint(0, 10, (6,))
    torch.testing.assert_close(soft(logits, y), torch.nn.functional.cross_entropy(logits, y, weight=w, reduction='sum', label_smoothing=0.1))
    for lf in (LabelSmoothingCrossEntropy(eps=0.2), LabelSmoothingCrossEntropyFlat(eps=0.2)):
        s = soft_loss_for(lf)
        torch.testing.assert_close(s(logits, y), lf(logits, y))
    assert soft_loss_for(CrossEntropyLossFlat(reduction='none')).reduction == 'none'
    with pytest.raises(ValueError, match='ignore_index'): soft_loss_for(CrossEntropyLossFlat(ignore_index=3))
    from fastai.vision.all import BCEWithLogitsLossFlat
    assert soft_loss_for(BCEWithLogitsLossFlat(reduction='sum'), multi_label=True).reduction == 'sum'


def test_smoothing_keeps_unlabelled_rows_empty():
    logits = torch.randn(3, 4)
    targ = torch.tensor([[0., 1, 0, 0], [0, 0, 0, 0], [0.5, 0.5, 0, 0]])
    l = SoftCrossEntropyLoss(label_smoothing=0.2, reduction='none')(logits, targ)
    assert l[1] == 0
    sm = torch.tensor([[0.05, 0.85, 0.05, 0.05]])
    torch.testing.assert_close(l[0], -(sm*torch.log_softmax(logits[:1], -1)).sum())


def test_label_smoothing_trains_under_plc():
    df = frame()
    learn = learner(df, [PLC()], loss_func=LabelSmoothingCrossEntropyFlat())
    seen = []
    class Spy(Callback):
        order = 50
        def after_loss(self):
            if self.training: seen.append(self.learn.loss_func.label_smoothing)
    learn.fit(1, cbs=Spy())
    assert seen and set(seen) == {0.1}
    assert isinstance(learn.loss_func, LabelSmoothingCrossEntropyFlat)


# ---- 9. the user's loss comes back on every way out of a fit
class Boom(Callback):
    order = 60
    def __init__(self, event, exc): self.event, self.exc = event, exc
    def _maybe(self, event):
        if event == self.event and self.training: raise self.exc
    def before_train(self): self._maybe('before_train')
    def after_pred(self): self._maybe('after_pred')
    def after_loss(self): self._maybe('after_loss')


def _callbacks():
    return [LabelCallback(), PLC(), TemporalEnsemble(), PiModel()]


@pytest.mark.parametrize('event', ['before_train', 'after_pred', 'after_loss'])
@pytest.mark.parametrize('exc', [RuntimeError('x'), KeyboardInterrupt(), CancelFitException()])
def test_user_loss_restored_on_every_way_out(event, exc):
    df = frame(n_train=64)
    for cb in _callbacks():
        lf = CrossEntropyLossFlat()
        learn = learner(df, [cb], loss_func=lf)
        try: learn.fit(1, cbs=Boom(event, exc))
        except (RuntimeError, KeyboardInterrupt): pass
        assert learn.loss_func is lf, (type(cb).__name__, event, type(exc).__name__)
        assert '_do_epoch' not in learn.__dict__
        learn.remove_cb(cb)
        learn.fit(1)  # a plain fit afterwards (before: IndexError after TemporalEnsemble)
        assert learn.loss_func is lf


def test_a_label_callbacks_own_error_restores_the_loss():
    df = frame(n_train=64)
    part = hide_labels(df, n_per_class=2, rows=~df.is_valid.values, true_col=None)
    learn = Learner(_partial_dls(part), nn.Sequential(nn.Flatten(), nn.Linear(192, 10)), cbs=[PLC()])  # PLC needs every label
    lf = learn.loss_func
    with pytest.raises(ValueError, match='needs a label'): learn.fit(1)
    assert learn.loss_func is lf


# ---- 10. checkpoints carry the labels
def test_save_load_and_save_model_callback_carry_the_table(tmp_path):
    df = frame(noisy_digits_df(0.4), n_train=96)
    plc = PLC(warmup=0.3, theta=0.)
    learn = learner(df, [plc], path=tmp_path)
    learn.fit(3, 1e-2)
    assert plc.table.changed.any()
    want = plc.table.labels.clone()
    learn.save('ckpt')
    assert (tmp_path/'models'/'ckpt.labels.pth').exists()
    fresh = PLC(warmup=0.3)
    learn2 = learner(df, [fresh], path=tmp_path)
    learn2.load('ckpt')  # before: the corrections were lost, training restarted from the noisy labels
    assert torch.equal(fresh.table.labels, want)
    spy = TargetSpy()
    learn2.fit(1, cbs=spy)
    assert spy.agreement() < 1.  # it trains on the corrected labels, not on the dataset's
    # SaveModelCallback's checkpoints carry them too: at the end it loads the best model and its labels
    plc3 = PLC(warmup=0.3, theta=0.)
    learn3 = learner(df, [plc3], path=tmp_path, metrics=accuracy)
    learn3.fit(3, 1e-2, cbs=SaveModelCallback(monitor='accuracy', fname='best'))
    assert (tmp_path/'models'/'best.labels.pth').exists()


@pytest.mark.parametrize('start', ['epochs', 'model'])
def test_resumed_plc_goes_on_where_it_stopped(tmp_path, start):
    "A PLC that resumes from a checkpoint keeps the saved epochs' warm-up, readiness and threshold (before: the warm-up restarted)"
    df = frame(noisy_digits_df(0.4), n_train=96)
    make = (lambda: PLC(warmup=2, theta=0.)) if start == 'epochs' else (lambda: PLC(theta=0., ready=ModelReady(patience=1, min_gain=1., min_margin=-1.)))  # a model this small is weak: the test is the resume
    plc = make()
    learn = learner(df, [plc], path=tmp_path)
    learn.fit(2, 1e-2)
    assert not plc.history[-1]['correcting']  # epochs: two warm-up epochs; model: ready after epoch 1's validation
    assert start == 'epochs' or plc.ready.ready, plc.ready.log
    learn.save('ckpt')
    fresh = make()
    learn2 = learner(df, [fresh], path=tmp_path)
    learn2.load('ckpt')
    learn2.fit(1, 1e-2)
    assert fresh.history[0]['epoch'] == 2 and fresh.history[0]['correcting'] and fresh.history[0]['corrections'] > 0


# ---- 11. a warm-up in epochs works with fine_tune
def test_warmup_in_epochs_with_fine_tune():
    df = frame(noisy_digits_df(0.4), n_train=96)
    plc = PLC(warmup=2, theta=0.)
    learn = vision_learner(digits_dls(df, size=16, bs=32), resnet18, pretrained=False, n_out=10, cbs=[plc])
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # the frozen fit is in warm-up: no warning for it
        learn.fine_tune(2, freeze_epochs=1)  # before: ValueError in the frozen one-epoch fit
    h = pd.DataFrame(plc.history)
    assert h.epoch.tolist() == [0, 1, 2]
    assert h.corrections.iloc[:2].sum() == 0 and h.corrections.iloc[2] > 0  # epochs 0 and 1 warm up, across both fits


def test_warmup_longer_than_training_warns():
    df = frame(n_train=64)
    with pytest.warns(UserWarning, match='warm-up'): learner(df, [PLC(warmup=5)]).fit(2)


# ---- clear errors where there was a traceback or nothing
def test_option_errors():
    with pytest.raises(ValueError, match='delta_step'): PLC(delta_step=-0.1)
    with pytest.raises(ValueError, match='dry'): PLC(dry=-1)
    with pytest.raises(ValueError, match='min_tag_count'): PLC(min_tag_count=-2)
    assert PLC(warmup=np.int64(2)).warmup == 2 and isinstance(PLC(warmup=np.int64(2)).warmup, int)
    PLC(window=np.int64(3))
    bad = PLC(theta=lambda pos: 0.2 + 8*pos*(1 - pos))  # in [0, 1] at both ends, not in the middle
    df = frame(n_train=64)
    with pytest.raises(ValueError, match='θ must stay'): learner(df, [bad]).fit(2)
    te = TemporalEnsemble()
    with pytest.raises(ValueError, match='min_confidence'): te.fill_labels(df, 'label', min_confidence=1.5)


# ---- the command line: a clear message, not a traceback, before anything is trained
def _cli(*args, cwd=None):
    import subprocess, sys
    return subprocess.run([sys.executable, '-m', 'labelcb', *args], capture_output=True, text=True, cwd=cwd)


def test_cli_errors(tmp_path):
    r = _cli('audit', '--csv', str(tmp_path))
    assert r.returncode != 0 and 'is a folder' in r.stderr and 'Traceback' not in r.stderr
    (tmp_path/'empty.csv').write_text('')
    r = _cli('audit', '--csv', str(tmp_path/'empty.csv'))
    assert 'is empty' in r.stderr and 'Traceback' not in r.stderr
    (tmp_path/'header.csv').write_text('file,label\n')
    assert 'no rows' in _cli('audit', '--csv', str(tmp_path/'header.csv')).stderr
    from PIL import Image
    rows = []
    for i in range(60):
        f = f'{i}.png'
        if i < 55: Image.new('RGB', (4, 4)).save(tmp_path/f)  # images 55..59 are missing: after row 50
        rows.append(f'{f},{i % 2}')
    (tmp_path/'l.csv').write_text('file,label\n' + '\n'.join(rows) + '\n')
    r = _cli('audit', '--csv', str(tmp_path/'l.csv'))
    assert '5 of the 60 images are not found' in r.stderr and 'Traceback' not in r.stderr
    r = _cli('demo', '--methods', 'nope', '--out', str(tmp_path/'d'))
    assert r.returncode != 0 and "unknown --methods ['nope']" in r.stderr and 'Traceback' not in r.stderr


def test_numpy_integers_are_ints():
    from labelcb.all import SelfLabelSinkhorn, sinkhorn_knopp
    assert TemporalEnsemble(rampup=np.int64(2)).rampup == 2 and isinstance(TemporalEnsemble(rampup=np.int64(2)).rampup, int)
    s = SelfLabelSinkhorn(k=np.int64(4), heads=np.int32(2), n_opts=np.int64(3))
    assert (s.k, s.heads, s.n_opts) == (4, 2, 3)
    sinkhorn_knopp(torch.randn(20, 4).softmax(1), lam=np.int64(10))
    SoftLabel(pd.DataFrame(np.full((2, 2), 0.5)), a=np.int64(1))


def test_labels_go_back_only_where_they_came_from():
    "Training and validation rows sharing index labels (pd.concat of two reset_index frames): write-back refuses, never rewrites validation rows (issue 28, 3)"
    from labelcb.all import PLC
    from labelcb.test_utils import small_digits, tiny_learner
    df = small_digits()
    both = pd.concat([df[df.split == 'train'].reset_index(drop=True), df[df.split == 'valid'].reset_index(drop=True)])
    cb = PLC(warmup=1, theta=0.)
    learn = tiny_learner(both, cbs=[cb])
    learn.fit(2, 1e-2)
    before = both.copy()
    with pytest.raises(ValueError, match='cannot be told apart'): cb.corrected_labels(both, 'label')
    pd.testing.assert_frame_equal(both, before)


def test_temporal_carries_label_smoothing_and_refuses_sum():
    "TemporalEnsemble and PiModel carry the user's label smoothing and refuse reduction='sum' by name (issue 28, 4)"
    from labelcb.all import TemporalEnsemble, PartialCategoryBlock, hide_labels
    df = small_digits()
    df = hide_labels(df, n_per_class=5, rows=df.split == 'train')
    for cls in (TemporalEnsemble, PiModel):
        seen = []
        class Grab(Callback):
            order = 60
            def after_loss(self):
                if self.training: seen.append(self.learn.loss_func.ce.label_smoothing)
        learn = tiny_learner(df, cbs=[cls(), Grab()], dls_kwargs=dict(y_block=PartialCategoryBlock),
                             loss_func=CrossEntropyLossFlat(label_smoothing=0.1))
        learn.fit(1, 1e-3)
        assert seen and all(s == 0.1 for s in seen), (cls, seen[:3])
        learn = tiny_learner(df, cbs=[cls()], dls_kwargs=dict(y_block=PartialCategoryBlock), loss_func=CrossEntropyLossFlat(reduction='sum'))
        with pytest.raises(ValueError, match="reduction='sum' has no counterpart"): learn.fit(1, 1e-3)


# ---- issue 28 §6: state left behind
@pytest.mark.parametrize('make', [PLC, TemporalEnsemble, LabelCallback])
def test_a_fit_with_a_label_callback_leaves_the_callbacks_as_they_were(make):
    df = frame()
    if make is TemporalEnsemble: df = df.assign(label=df.label.astype(object).where(np.arange(len(df)) % 3 > 0))  # partly labelled
    learn = learner(df) if make is not TemporalEnsemble else tiny_learner(df, (), size=8, seed=None, dls_kwargs=dict(y_block=PartialCategoryBlock))
    before = [type(c) for c in learn.cbs]
    learn.fit(1, cbs=[make()])
    assert [type(c) for c in learn.cbs] == before  # before: ItemIndex (and PLC's HeldOutAccuracy) stayed
    cb = make(); learn.add_cb(cb); learn.fit(1)
    learn.remove_cb(cb)
    assert [type(c) for c in learn.cbs] == before


# ---- issue 28 §7: clear errors, before training
def test_cli_refuses_unusable_labels_and_options_before_training(tmp_path):
    from PIL import Image
    rows = []
    for i in range(12):
        Image.new('RGB', (4, 4)).save(tmp_path/f'{i}.png'); rows.append((f'{i}.png', 'ab'[i % 2]))
    def csv(name, lines): (tmp_path/name).write_text('file,label\n' + '\n'.join(f'{f},{l}' for f, l in lines) + '\n'); return str(tmp_path/name)
    cases = {csv('empty.csv', [(f, '' if i == 3 else l) for i, (f, l) in enumerate(rows)]): "1 rows of",
             csv('one.csv', [(f, 'z' if i == 0 else l) for i, (f, l) in enumerate(rows)]): "classes ['z'] have a single row",
             csv('few.csv', rows[:3]): 'too few for 5 folds'}
    for path, msg in cases.items():
        r = _cli('audit', '--csv', path, '--epochs', '1')
        assert r.returncode != 0 and msg in r.stderr and 'Traceback' not in r.stderr, (path, r.stderr[-300:])
    ok = csv('ok.csv', rows)
    for args, msg in [(('audit', '--csv', ok, '--arch', 'nope'), "--arch: arch 'nope'"), (('audit', '--csv', ok, '--out', ok), '--out is a folder'),
                      (('demo', '--seed', '-1'), '--seed must be at least 0'), (('demo', '--out', ok), '--out is a folder')]:
        r = _cli(*args)
        assert r.returncode != 0 and msg in r.stderr and 'Traceback' not in r.stderr, (args, r.stderr[-300:])


# ---- issue 28 §4: fill_labels -> CSV -> the next round keeps the classes
def test_filled_labels_round_trip_through_a_csv(tmp_path):
    df = frame()
    part = df.assign(label=df.label.astype(object).where((np.arange(len(df)) % 4 == 0) | (df.split != 'train')))
    learn = tiny_learner(part, [TemporalEnsemble()], size=8, seed=0, dls_kwargs=dict(y_block=PartialCategoryBlock))
    learn.fit(4, 1e-2)
    conf = learn.temporal_ensemble.pseudo_labels().confidence
    filled = learn.temporal_ensemble.fill_labels(part, 'label', min_confidence=float(conf.median()))  # about half filled
    assert filled.label.isna().any() and filled.label.notna().sum() > part.label.notna().sum()  # some filled, some still empty
    filled.to_csv(tmp_path/'round2.csv')
    back = pd.read_csv(tmp_path/'round2.csv', index_col=0)  # an int column with NaN reads back as floats
    dls2 = digits_dls(back, size=8, bs=32, y_block=PartialCategoryBlock)
    assert list(dls2.vocab) == list(learn.dls.vocab) and all(isinstance(v, int) for v in dls2.vocab)  # 3, not '3.0'
    mixed = back.assign(label=back.label.map(lambda v: v if pd.isna(v) else (str(int(v)) if v % 2 else int(v))))
    with pytest.raises(TypeError, match='mix text and numbers'): digits_dls(mixed, size=8, bs=32, y_block=PartialCategoryBlock)


class LossSpy(Callback):
    "Records every training batch's logits, targets, item weights and loss"
    order = 50
    def __init__(self, weights): self.weights, self.seen = weights, []
    def after_loss(self):
        if self.training: self.seen.append((self.pred.detach().float(), self.yb[0].detach(), self.weights._w[self.weights.idx].clone(), self.loss.item()))


@pytest.mark.parametrize('weights_first', [True, False])
def test_item_weights_under_elr_in_either_order(weights_first):
    "Clean-then-retrain's weights with ELR: each batch's loss is the weighted soft cross-entropy plus ELR's penalty (the weights were ignored with ItemWeights first, and ELR failed with it second)"
    from labelcb.all import ELR, ItemWeights
    from labelcb.elr import elr_regulariser
    df = frame()
    w = pd.Series(np.where(np.arange(len(df)) % 3 == 0, 0., 1.), index=df.index)
    iw, elr = ItemWeights(w), ELR(start=0)
    spy = LossSpy(iw)
    learn = learner(df, [iw, elr, spy] if weights_first else [elr, iw, spy])
    learn.fit(2, 1e-3)
    c = learn.dls.c
    for pred, y, bw, loss in spy.seen:
        p = torch.softmax(pred, -1)
        ce = -(y[:, :c]*torch.log_softmax(pred, -1)).sum(1)
        direct = (ce*bw).sum()/bw.sum() + elr.lam*elr_regulariser(p, y[:, c:]).mean()
        assert loss == pytest.approx(direct.item(), rel=1e-4, abs=1e-5)
    assert any((bw == 0).any() for _, _, bw, _ in spy.seen)  # some items weigh nothing


@pytest.mark.parametrize('other', ['ItemWeights', 'ELR'])
@pytest.mark.parametrize('temporal_first', [True, False])
def test_temporal_refuses_losses_it_would_drop(other, temporal_first):
    "TemporalEnsemble trains on a loss of its own: with ItemWeights or ELR on the same learner, a clear error in either order (the weights went unused, ELR's penalty was dropped or failed on tensor sizes)"
    from labelcb.all import ItemWeights, ELR
    df = frame()
    cb, te = (ItemWeights(pd.Series(1., index=df.index)) if other == 'ItemWeights' else ELR(start=0)), TemporalEnsemble()
    learn = learner(df, [te, cb] if temporal_first else [cb, te])
    user = learn.loss_func
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # every item is labelled here: TemporalEnsemble says so
        with pytest.raises(ValueError, match='without the callback that put it in'): learn.fit(1, 1e-3)
    assert learn.loss_func is user


def test_item_weights_refuse_a_loss_that_left_them_unused():
    "A callback of the user's that puts its own loss in after ItemWeights: an error at the first batch, not weights silently unused"
    from labelcb.all import ItemWeights
    class OwnLoss(Callback):
        order = 0
        def before_train(self): self.learn.loss_func = nn.MSELoss()
        def after_train(self): self.learn.loss_func = CrossEntropyLossFlat()
    df = frame()
    learn = learner(df, [ItemWeights(pd.Series(1., index=df.index)), OwnLoss()])
    with pytest.raises(ValueError, match='did not use the item weights'): learn.fit(1, 1e-3)
