"PLC in the situations users put it in: other callbacks, other data, save/resume, export, bad input."
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from fastai.vision.all import (BCEWithLogitsLossFlat, CutMix, DataBlock, ImageBlock, ImageDataLoaders, Learner, MixUp,
                               PILImage, RegressionBlock, Resize, accuracy, load_learner, set_seed)
from labelcb.test_utils import small_digits, tiny_learner, tiny_model
from labelcb.all import PLC, LabelTable, digits_dls, multi_digits_df, multi_digits_path, noisy_digits_df


def small(rate=0.4, kind='symmetric', n_train=256, n_valid=64):
    return small_digits(noisy_digits_df(rate, kind), n_train, n_valid)


def fit(df, cbs, epochs=4, seed=0, **kw):
    learn = tiny_learner(df, cbs, seed=seed, metrics=accuracy, **kw)
    learn.fit_one_cycle(epochs, 1e-2)
    return learn


@pytest.mark.parametrize('mix', [MixUp, CutMix])
def test_mixing_callbacks_do_not_corrupt_labels(mix):
    "With MixUp/CutMix, PLC's per-batch corrections come from un-mixed predictions: as right as without mixing"
    df = small()
    truth = df[df.split == 'train'].true_label.values
    plc = lambda: PLC(warmup=1, theta=0., average=False)
    plain_plc = fit(df, [plc()], epochs=5).progressive_label_correction.table.repair_scores(truth)
    mixed = fit(df, [plc(), mix()], epochs=5)
    p = mixed.progressive_label_correction
    assert p._mixing
    s = p.table.repair_scores(truth)
    assert s['changed'] > 0
    # predictions on mixed images would flip labels to the other image's class: far below the unmixed precision
    assert s['precision'] > 0.75*plain_plc['precision'], (s, plain_plc)


@pytest.mark.parametrize('mix', [MixUp, CutMix])
def test_mixing_averaged_window_holds_unmixed_predictions(mix):
    "With MixUp/CutMix, the window PLC averages holds the softmax of the un-mixed batch, item by item"
    from fastai.callback.core import Callback
    class Spy(Callback):
        order = PLC.order + 1  # after PLC hands over the batch, before MixUp/CutMix (order 0) mixes it
        def before_fit(self): self.checked = 0
        def before_batch(self):
            if self.training:
                with torch.no_grad(): self.p = torch.softmax(self.model(*self.xb), -1)
        def after_batch(self):
            if not self.training: return
            plc = self.progressive_label_correction
            torch.testing.assert_close(plc._window[plc._slot, plc.idx], self.p, atol=1e-5, rtol=0)
            self.checked += 1
    learn = Learner(digits_dls(small(), size=16, bs=32), nn.Sequential(nn.Flatten(), nn.Linear(768, 10)),
                    cbs=[PLC(warmup=1, theta=0.), Spy(), mix()])
    learn.fit(2, 1e-2)
    assert learn.spy.checked == 2*len(learn.dls.train)


def test_regression_target_is_refused():
    df = small()
    dblock = DataBlock(blocks=(ImageBlock, RegressionBlock), get_x=lambda r: PILImage.create(np.zeros((16, 16, 3), np.uint8)),
                       get_y=lambda r: float(r.label), splitter=lambda items: (list(range(256)), list(range(256, 320))))
    learn = Learner(dblock.dataloaders(df, bs=32), nn.Sequential(nn.Flatten(), nn.Linear(768, 1)), cbs=PLC())
    with pytest.raises(TypeError, match='regression'): learn.fit(1)


def test_lr_find_get_preds_tta_export(tmp_path):
    df = small()
    set_seed(0)
    learn = Learner(digits_dls(df, size=16, bs=32), tiny_model(), cbs=PLC(warmup=1, theta=0.), path=tmp_path)
    learn.lr_find(num_it=10, show_plot=False)
    p = learn.progressive_label_correction
    assert p.table is None and p.history == []       # lr_find trains nothing into the labels
    learn.fit_one_cycle(3, 1e-2)
    n = len(p.corrections)
    assert n > 0
    learn.get_preds(); learn.tta(n=1); learn.validate()
    assert len(p.corrections) == n                   # inference corrects nothing
    learn.export('m.pkl')
    e = load_learner(tmp_path/'m.pkl')
    assert e.progressive_label_correction.table is None and e.progressive_label_correction._window is None
    assert len(p.corrections) == n


def test_save_and_resume_continue_with_corrected_labels(tmp_path):
    df = small()
    learn = fit(df, [PLC(warmup=1, theta=0.)], epochs=3, path=tmp_path)
    p = learn.progressive_label_correction
    p.table.save(tmp_path/'labels.pth'); learn.save('m')
    labels = p.table.labels.clone()
    set_seed(1)
    dls = digits_dls(df, size=16, bs=32)
    resumed = Learner(dls, tiny_model(), path=tmp_path, cbs=PLC(warmup=1, theta=1.0, table=LabelTable.from_dls(dls).load(tmp_path/'labels.pth')))
    resumed.load('m')
    resumed.fit(2, 1e-3)  # θ = 1 corrects nothing more: the labels must be exactly the saved ones
    assert torch.equal(resumed.progressive_label_correction.table.labels, labels)
    pd.testing.assert_frame_equal(resumed.progressive_label_correction.corrections, p.corrections)


def test_multi_label_per_tag_rule_end_to_end():
    df = multi_digits_df()
    df = pd.concat([df[df.split == 'train'].iloc[:200], df[df.split == 'valid'].iloc[:40]])
    set_seed(0)
    dls = ImageDataLoaders.from_df(df, multi_digits_path(), fn_col='file', label_col='labels', label_delim=' ',
                                   valid_col='is_valid', item_tfms=Resize((16, 48)), bs=20)
    learn = Learner(dls, nn.Sequential(nn.Flatten(), nn.Linear(3*16*48, 10)), loss_func=BCEWithLogitsLossFlat(),
                    cbs=PLC(theta=0.2, min_tag_count=1000))
    learn.fit_one_cycle(3, 1e-2)
    assert len(learn.progressive_label_correction.corrections) == 0  # every tag has fewer positives than 1000
    learn = Learner(dls, nn.Sequential(nn.Flatten(), nn.Linear(3*16*48, 10)), loss_func=BCEWithLogitsLossFlat(),
                    cbs=PLC(warmup=1, theta=0.0, min_tag_count=1))
    learn.fit_one_cycle(3, 1e-2)
    p = learn.progressive_label_correction
    assert len(p.corrections) > 0 and 'tags_flipped' in p.corrections
    with pytest.raises(ValueError, match="single-label"):
        Learner(dls, nn.Sequential(nn.Flatten(), nn.Linear(3*16*48, 10)), loss_func=BCEWithLogitsLossFlat(), cbs=PLC('ratio')).fit(1)


def test_schedules_and_errors():
    from fastai.callback.schedule import SchedCos
    assert PLC(theta=(0.5, 0.1), theta_sched=SchedCos).theta_fn(1.0) == pytest.approx(0.1)
    assert PLC(theta=0.2).theta_fn(0.7) == pytest.approx(0.2)
    with pytest.raises(ValueError, match=r'\[0, 1\]'): PLC(theta=lambda pos: 2*pos)
    with pytest.raises(ValueError, match='warmup'): PLC(warmup=-1)
    with pytest.raises(ValueError, match='window'): PLC('ratio', window=0)


def test_show_corrections_titles_are_original_to_current_labels():
    "Regression: titles once showed floats ('1 → 1.0') and items corrected back to their original label"
    df = small()
    learn = fit(df, [PLC(warmup=1, theta=0.)], epochs=4)
    p = learn.progressive_label_correction
    fig = p.show_corrections(max_n=6)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles
    changed = set(np.flatnonzero(p.table.changed.numpy()))
    pairs = {f'{p.table.vocab[p.table.original[i]]} → {p.table.vocab[p.table.labels[i]]}' for i in changed}
    for t in titles:
        old, new = t.split(' → ')
        assert old != new and '.' not in t and t in pairs
    p.plot()


def test_per_epoch_figures_in_fastais_progress_table(tmp_path):
    "PLC's corrections and threshold, ELR's λ and agreement, TemporalEnsemble's w reach the recorder and CSVLogger; the user's metrics are left as they were (issue 29)"
    from fastai.vision.all import CSVLogger, accuracy
    from labelcb.all import PLC, ELR
    from labelcb.test_utils import tiny_learner
    for cb, cols in ((PLC(warmup=1), ['plc_corrections', 'plc_threshold']), (ELR(), ['elr_lam', 'elr_agree'])):
        learn = tiny_learner(cbs=[cb, CSVLogger(fname=str(tmp_path/'h.csv'))], metrics=accuracy)
        mets = list(learn.metrics)
        learn.fit(3, 1e-2)
        log = pd.read_csv(tmp_path/'h.csv')
        assert list(log.columns[4:6]) == cols, log.columns
        h = pd.DataFrame(cb.history)
        assert np.allclose(log[cols[0]].astype(float), h[cols[0].split('_', 1)[1]].astype(float), equal_nan=True)
        assert list(learn.metrics) == mets  # the figures were added for the fit only
