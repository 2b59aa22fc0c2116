"RefineryLoop and refinery_chain: integration with fastai's fits, augmentation, workers and mixing; export; bad input; regressions."
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from fastai.vision.all import (Learner, Callback, CutMix, Resize, RandomCrop, ImageDataLoaders, accuracy, accuracy_multi,
                               load_learner, set_seed)
from labelcb.test_utils import small_digits
from labelcb.all import digits_df, digits_dls, digits_cnn, multi_digits_df, multi_digits_path, PartialCategoryBlock
from labelcb.refinery import RefineryLoop, refinery_chain


@pytest.fixture(scope='module')
def small_df(): return small_digits(n_train=300, n_valid=60)


@pytest.fixture(scope='module')
def teacher(small_df):
    set_seed(0)
    learn = Learner(digits_dls(small_df, size=16, bs=32), digits_cnn(10), metrics=accuracy)
    learn.fit_one_cycle(2, 1e-2)
    return learn


class Record(Callback):
    "The inputs and targets of every training batch, as the loss sees them"
    order = 50
    def __init__(self): self.batches = []
    def after_batch(self):
        if self.training: self.batches.append((self.xb[0].clone(), self.yb[0].clone()))


def test_on_the_fly_labels_the_same_augmented_crops_with_workers(small_df, teacher):
    "Random crops made in two worker processes: each target is the teacher's softmax of that very crop"
    dls = digits_dls(small_df, size=16, bs=32, item_tfms=[Resize(20), RandomCrop(16)], num_workers=2)
    rec = Record()
    learn = Learner(dls, digits_cnn(10), cbs=[RefineryLoop(teacher), rec])
    learn.fit(1)
    teacher.model.eval()
    with torch.no_grad():
        for x, y in rec.batches: torch.testing.assert_close(y, F.softmax(teacher.model(x), -1), atol=1e-5, rtol=1e-4)
    assert len(rec.batches) == len(dls.train)


def test_fine_tune_shares_one_frozen_teacher(small_df, teacher):
    learn = Learner(digits_dls(small_df, size=16, bs=32), digits_cnn(10), cbs=RefineryLoop(teacher))
    seen = []
    class Frozen(Callback):
        order = 60
        def before_train(self): seen.append(id(self.learn.refinery_loop._frozen))
    learn.fine_tune(1, freeze_epochs=1, cbs=Frozen())
    assert len(seen) == 2 and len(set(seen)) == 1


def test_cutmix_mixes_teacher_targets(small_df, teacher):
    rec = Record()
    learn = Learner(digits_dls(small_df, size=16, bs=32), digits_cnn(10), cbs=[RefineryLoop(teacher), CutMix(1.), rec])
    learn.fit(1)
    y = rec.batches[0][1]
    assert y.shape == (32, 10) and torch.allclose(y.sum(1), torch.ones(32), atol=1e-5)
    assert np.isfinite(learn.recorder.losses[-1].item())


def test_teacher_module_left_as_it_was(small_df, teacher):
    "A bare nn.Module teacher: its mode, weights and requires_grad are untouched, even with teacher_mode='train'"
    model = teacher.model
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    Learner(digits_dls(small_df, size=16, bs=32), digits_cnn(10), cbs=RefineryLoop(model, teacher_mode='train')).fit(1)
    assert not model.training and all(p.requires_grad for p in model.parameters())
    for k, v in model.state_dict().items(): assert torch.equal(v, before[k])


def test_unlabelled_items_are_refused(small_df, teacher):
    df = small_df.copy()
    df.loc[df.index[:5], 'label'] = np.nan
    dls = digits_dls(df, size=16, bs=32, y_block=PartialCategoryBlock)
    with pytest.raises(ValueError, match='needs a label on every training item'):
        Learner(dls, digits_cnn(10), cbs=RefineryLoop(teacher)).fit(1)


def test_chain_rows_exports_and_train_loss(small_df, tmp_path):
    "The R1 row is the plain fit's (fastai's validate rewrites recorder.values: the row is read before it); every round exports"
    make = lambda: Learner(digits_dls(small_df, size=16, bs=32), digits_cnn(10), metrics=accuracy)
    chain = refinery_chain(make, rounds=2, fit=1, export_to=tmp_path, progress=False)
    set_seed(0)
    plain = make(); plain.fit_one_cycle(1)
    assert chain.rounds.train_loss[0] == pytest.approx(float(plain.recorder.values[-1][0]))
    assert chain.rounds.accuracy[0] == pytest.approx(float(plain.validate()[1]))
    assert list(chain.rounds.columns[:5]) == ['round', 'teacher', 'train_loss', 'valid_loss', 'accuracy']
    for r in (1, 2):
        back = load_learner(tmp_path/f'round_{r}.pkl')
        assert not hasattr(back, 'refinery_loop')
    assert chain.last is chain.learners[-1]


def test_multi_label_chain():
    mdf = multi_digits_df()
    mdf = pd.concat([mdf[mdf.split == 'train'].head(300), mdf[mdf.split == 'valid'].head(60)])
    make = lambda: Learner(ImageDataLoaders.from_df(mdf, multi_digits_path(), fn_col='file', label_col='labels', label_delim=' ',
                                                    valid_col='is_valid', item_tfms=Resize((16, 48)), bs=32),
                           digits_cnn(10), metrics=accuracy_multi)
    chain = refinery_chain(make, rounds=2, fit=1, mode='offline', progress=False)
    assert 'accuracy_multi' in chain.rounds and 0 <= chain.rounds.agreement[1] <= 1
    assert np.isfinite(chain.rounds.valid_loss).all()


@pytest.mark.parametrize('kwargs, match', [
    (dict(rounds=0), 'rounds is the number of models'),
    (dict(rounds=2.5), 'rounds is the number of models'),
    (dict(rounds=True), 'rounds is the number of models'),
    (dict(a=-0.1), 'a is a weight'),
    (dict(teacher_mode='frozen'), 'teacher_mode is'),
])
def test_chain_bad_arguments_fail_before_training(kwargs, match):
    calls = []
    with pytest.raises(ValueError, match=match): refinery_chain(lambda: calls.append(1), **kwargs)
    assert calls == []  # nothing was built or trained
