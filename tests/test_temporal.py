"TemporalEnsemble and PiModel on partly labelled data as users build it: targets follow items, other callbacks, export, bad input."
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from fastai.vision.all import (CutMix, DataBlock, ImageBlock, ImageDataLoaders, Learner, MixUp, ColReader, ColSplitter,
                               Resize, accuracy, load_learner, set_seed, vision_learner, resnet18)
from labelcb.test_utils import small_digits, tiny_model
from labelcb.all import (PLC, PartialCategoryBlock, PiModel, RandomTranslate, SoftLabel, TemporalEnsemble, UNLABELLED,
                         digits_df, digits_dls, digits_path, hide_labels, multi_digits_df, multi_digits_path)
from conftest import image_number


def partial_small(n_train=256, n_valid=64, per_class=5, seed=0):
    df = small_digits(n_train=n_train, n_valid=n_valid)
    return hide_labels(df, n_per_class=per_class, rows=df.split == 'train', seed=seed)


def lin(c=10): return tiny_model(c, dropout=0.2)


def fit(df, cbs, epochs=3, model=None, **kw):
    "Train on a partly labelled digits frame; `model`: a function making the model, after the seed is set"
    set_seed(0)
    learn = Learner(digits_dls(df, size=16, bs=32, y_block=PartialCategoryBlock), (model or lin)(), metrics=accuracy, cbs=cbs, **kw)
    learn.fit(epochs, 1e-2)
    return learn


class IdLogits(nn.Module):
    "Logits that depend only on the image's own number (id images): what an item's target must be, whoever shares its batch"
    def __init__(self, c): super().__init__(); self.c, self.w = c, nn.Parameter(torch.zeros(1))
    def forward(self, x):
        n = image_number(x).float()[:, None]
        return torch.cos(n*torch.arange(1, self.c + 1, device=x.device)) + 0*self.w


def test_targets_follow_items_through_shuffled_batches(id_images):
    files = sorted(id_images.glob('*/*/*.png'))
    df = pd.DataFrame({'file': [str(f) for f in files], 'label': [f.parent.name for f in files],
                       'valid': [f.parts[-3] == 'valid' for f in files]})
    df.loc[df.index[~df.valid][::2], 'label'] = None        # half the training items unlabelled
    dls = ImageDataLoaders.from_df(df, '/', fn_col='file', label_col='label', valid_col='valid', y_block=PartialCategoryBlock, bs=8)
    learn = Learner(dls, IdLogits(dls.c), cbs=TemporalEnsemble())
    learn.fit(3, 1e-3)
    te = learn.temporal_ensemble
    assert (te.n_seen > 0).all()
    numbers = torch.tensor([int(np.array(dls.train_ds[i][0])[0, 0, 0]) for i in range(len(dls.train_ds))])
    expected = torch.softmax(torch.cos(numbers[:, None].float()*torch.arange(1, dls.c + 1)), -1)
    got = te._targets(torch.arange(len(numbers)))[:, :dls.c]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)   # bias-corrected EMA of a constant is the constant


def test_vision_learner_and_datablock_with_string_labels():
    df = partial_small()
    names = np.array(['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine'], dtype=object)
    df['name'] = [names[int(v)] if pd.notna(v) else '' for v in df.label]
    db = DataBlock(blocks=(ImageBlock, PartialCategoryBlock), get_x=ColReader('file', pref=f'{digits_path()}/'),
                   get_y=ColReader('name'), splitter=ColSplitter('is_valid'), item_tfms=Resize(32))
    dls = db.dataloaders(df, bs=32)
    assert sorted(dls.vocab) == sorted(names)
    learn = vision_learner(dls, resnet18, pretrained=False, metrics=accuracy, cbs=[TemporalEnsemble()])
    learn.fit(2, 1e-3)
    pl = learn.temporal_ensemble.pseudo_labels()
    assert len(pl) == 256 - 50 and set(pl.label) <= set(names)


def test_cutmix_and_pi_model_with_mixup_train():
    df = partial_small()
    learn = fit(df, [TemporalEnsemble(), CutMix()], epochs=3)
    h = pd.DataFrame(learn.temporal_ensemble.history)
    assert np.isfinite(h[['sup_loss', 'unsup_loss']].values).all() and h.unsup_loss.iloc[-1] > 0
    learn = fit(df, [PiModel(augment=RandomTranslate(1)), MixUp()], epochs=3)
    assert learn.pi_model.history[-1]['unsup_loss'] > 0


def test_export_and_predict(tmp_path):
    df = partial_small()
    learn = fit(df, [TemporalEnsemble()], epochs=2, path=tmp_path)
    learn.export('te.pkl')
    again = load_learner(tmp_path/'te.pkl')
    assert again.temporal_ensemble.ensemble is None
    dec, idx, probs = again.predict(str(digits_path()/df.file.iloc[0]))
    assert 0 <= int(idx) < 10 and abs(float(probs.sum()) - 1) < 1e-5


def test_sup_norm_changes_only_the_supervised_scale():
    df = partial_small()
    a = fit(df, [TemporalEnsemble(w_max=0.)], epochs=1).temporal_ensemble.history[0]['sup_loss']
    b = fit(df, [TemporalEnsemble(w_max=0., sup_norm='labelled')], epochs=1).temporal_ensemble.history[0]['sup_loss']
    assert b > 3*a  # ~50 labelled of 256: per labelled item the loss is ~5× the per-batch average


def test_w_max_zero_is_plain_fastai_on_the_labelled_items():
    "With w = 0 and sup_norm='labelled', the loss is fastai's own cross-entropy, which ignores UNLABELLED: the same fit"
    df = partial_small()
    det = lambda: nn.Sequential(nn.Flatten(), nn.Linear(3*16*16, 10))  # no dropout: the two fits draw the same numbers
    plain = fit(df, [], epochs=2, model=det)
    te = fit(df, [TemporalEnsemble(w_max=0., sup_norm='labelled')], epochs=2, model=det)
    torch.testing.assert_close(plain.model[1].weight, te.model[1].weight, atol=1e-5, rtol=1e-4)


def test_bad_input():
    df = partial_small()
    with pytest.raises(ValueError, match='TemporalEnsemble'): fit(df, [PLC()], epochs=1)     # PLC needs every label
    oof = pd.DataFrame(np.full((256, 10), 0.1), index=df.index[df.split == 'train'], columns=range(10))
    with pytest.raises(ValueError, match='every training item'): fit(df, [SoftLabel(oof)], epochs=1)
    m = multi_digits_df()
    m = pd.concat([m[m.split == 'train'].iloc[:64], m[m.split == 'valid'].iloc[:16]])
    dls = ImageDataLoaders.from_df(m, multi_digits_path(), fn_col='file', label_col='labels', label_delim=' ',
                                   valid_col='is_valid', item_tfms=Resize((16, 48)), bs=16)
    with pytest.raises(ValueError, match='single-label'):
        Learner(dls, nn.Sequential(nn.Flatten(), nn.Linear(3*16*48, 10)), cbs=TemporalEnsemble()).fit(1)
    with pytest.raises(ValueError, match='no training item has a label'):
        digits_dls(df.assign(label=np.nan), size=16, y_block=PartialCategoryBlock)
    with pytest.raises(KeyError, match='not in the frame'):
        fit(df, [TemporalEnsemble()], epochs=1).temporal_ensemble.fill_labels(df.iloc[:10], 'label')


def test_user_frame_untouched_and_fill_labels():
    df = partial_small()
    before = df.copy()
    learn = fit(df, [TemporalEnsemble()], epochs=3)
    filled = learn.temporal_ensemble.fill_labels(df, 'label', min_confidence=0.)
    pd.testing.assert_frame_equal(df, before)
    assert filled[filled.split == 'train'].label.notna().all()
    assert (filled.label[df.label.notna()] == df.label[df.label.notna()]).all()   # given labels are kept


def test_pi_model_consistency_is_part_of_the_loss_function():
    "Π's consistency term is in the loss the learner calls, as temporal ensembling's: `loss_grad` is what `loss_func` returned, "
    "so a callback reading or scaling the loss after it (GradientAccumulation, a loss logger) sees the whole loss"
    from fastai.callback.core import Callback
    class Spy(Callback):
        order = -30  # before PiModel (order -19) ends the batch's second pass in its after_loss
        def before_fit(self): self.gaps, self.unsup = [], []
        def after_loss(self):
            if not self.training: return
            lf = self.learn.loss_func
            with torch.no_grad(): again = lf(self.pred, *self.yb)
            self.gaps.append(abs(float(again) - float(self.learn.loss_grad))); self.unsup.append(float(lf.unsup_value))
    df = partial_small()
    set_seed(0)
    det = lambda: nn.Sequential(nn.Flatten(), nn.Linear(3*16*16, 10))  # no dropout: only the second pass's shift differs
    spy = Spy()
    learn = fit(df, [PiModel(rampup=1), spy], epochs=2, model=det)
    assert max(spy.unsup) > 0               # the term was on (epoch 1)
    assert max(spy.gaps) < 1e-5             # and the loss function returned it: nothing added behind fastai's back
