"k-fold, SoftLabel, oversampling and the audit where users put them: re-indexed frames, shuffled batches, other label callbacks, the command line."
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from fastai.vision.all import Callback, ImageDataLoaders, Learner, Resize, accuracy, set_seed
from labelcb.test_utils import tiny_model
from labelcb.all import (PLC, SoftLabel, KFoldResult, audit_images, cross_validate, digits_df, digits_path, ensemble_predict,
                         image_oof, kfold, label_audit, noisy_digits_df, oversample, sampling_weights, digits_cnn)
from labelcb.cli import main
from conftest import image_number


def frame_dls(df, fold, **kw):
    return ImageDataLoaders.from_df(df.assign(is_valid=df.fold == fold), digits_path(), fn_col='file', label_col='label',
                                    valid_col='is_valid', item_tfms=Resize(16), bs=32, **kw)


def test_soft_targets_follow_the_item_through_shuffled_batches(id_images):
    "Regression (Plant Pathology winner): each batch row's target is its own item's OOF row, found by id, not by position"
    from fastai.vision.all import ImageDataLoaders as IDL
    dls = IDL.from_folder(id_images, train='train', valid='valid', bs=8, shuffle=True)
    files = [str(f) for f in dls.train_ds.items]
    n = np.array([int(f[-7:-4]) for f in files])
    p = np.stack([np.roll([0.5, 0.3, 0.2], k) for k in n % 3 + n // 3 % 2])  # distinct rows, a function of the image's number
    oof = pd.DataFrame(p, index=files, columns=dls.vocab).iloc[::-1]  # given in another order
    expected = {int(k): torch.tensor(r, dtype=torch.float32) for k, r in zip(n, p)}
    seen = []
    class Check(Callback):
        order = 50
        def before_batch(self):
            if not self.training: return
            for num, row in zip(image_number(self.xb[0]).tolist(), self.yb[0].cpu()):
                assert torch.allclose(row, expected[num], atol=1e-6), (num, row, expected[num])
                seen.append(num)
    learn = Learner(dls, nn.Sequential(nn.Flatten(), nn.Linear(48, 3)), cbs=[SoftLabel(oof, a=0.), Check()])
    learn.fit(2)
    assert sorted(set(seen)) == sorted(n.tolist())


def test_cross_validate_keys_oof_by_item_when_make_dls_reindexes():
    "make_dls may reset or shuffle its copy of the frame: OOF rows still belong to the user's items"
    df = kfold(digits_df().query("split == 'train'").head(240), 3, 'label')
    def reindexed(d, fold):
        d = d.sample(frac=1, random_state=0).reset_index(drop=True)
        return frame_dls(d, fold)
    with pytest.raises(ValueError, match='must validate on exactly'):  # a re-indexed frame cannot be checked: refused, explained
        cross_validate(df, reindexed, lambda dls: Learner(dls, tiny_model()), fit=1, progress=False)
    res = cross_validate(df, lambda d, f: frame_dls(d.sample(frac=1, random_state=1), f), lambda dls: Learner(dls, tiny_model()), fit=1, progress=False)
    assert (res.probs.index == df.index).all()
    assert (res.targets == df.label.values).all()


def test_oversampling_inside_the_fold_loop_never_touches_validation():
    df = kfold(digits_df().query("split == 'train'").head(300), 3, 'label')
    calls = []
    def make_dls(d, fold):
        o = oversample(d, 'label', classes=[1, 7], factor=3, fold=fold)
        calls.append((fold, len(o) - len(d)))
        return frame_dls(o, fold)
    res = cross_validate(df, make_dls, lambda dls: Learner(dls, tiny_model()), fit=1, progress=False)
    assert all(extra > 0 for _, extra in calls)
    assert len(res) == len(df)
    for fold in range(3):
        o = oversample(df, 'label', classes=[1, 7], factor=3, fold=fold)
        assert not o[o.fold == fold].index.duplicated().any()
        assert len(o[o.fold == fold]) == (df.fold == fold).sum()


def test_sampling_weights_are_aligned_with_the_source_rows():
    df = kfold(digits_df().query("split == 'train'"), 5, 'label').sample(frac=1, random_state=0)  # any row order
    w = sampling_weights(df, 'label', classes=[0], factor=4, fold=2)
    assert (w.index == df.index).all()
    tr = df.fold != 2
    assert np.allclose(w[tr & (df.label == 0)].values / w[tr & (df.label == 1)].values[0], 4)
    assert (w[~tr] == 0).all()


def test_softlabel_composes_with_plc_on_one_table():
    df = noisy_digits_df(0.3)
    oof = pd.DataFrame(np.full((1077, 10), 0.1), index=df.index[df.split == 'train'], columns=range(10))
    from labelcb.all import digits_dls
    set_seed(0)
    learn = Learner(digits_dls(df, size=16, bs=64), tiny_model(), metrics=accuracy, cbs=[SoftLabel(oof), PLC(warmup=1, theta=0.)])
    learn.fit_one_cycle(3, 1e-2)
    assert learn.soft_label.table is learn.progressive_label_correction.table
    assert len(learn.soft_label.table.log.query("why == 'soft label'")) == 0


def test_audit_matches_cleanlab_on_real_oof():
    cleanlab = pytest.importorskip('cleanlab')
    from cleanlab.filter import find_label_issues
    df = noisy_digits_df(0.2, seed=1)
    train = df[df.split == 'train'].head(400)
    res = image_oof(train, digits_path(), n_folds=3, epochs=3, size=16, model=digits_cnn, progress=False)
    labels, probs = res.cleanlab_inputs()
    ours = label_audit(res).is_label_issue.loc[res.probs.index].values
    theirs = find_label_issues(labels, probs)
    assert (ours == theirs).mean() >= 0.99, (ours != theirs).sum()
    assert ours.sum() > 0 and train.is_noisy.values[ours].mean() > 0.5  # flags are mostly the injected errors


def test_audit_command_on_a_csv(tmp_path, capsys):
    df = digits_df().query("split == 'train'").head(120).copy()
    df['label'] = df.label.map(lambda v: f'digit{v}')
    df.loc[df.index[:10], 'label'] = 'digit9'
    df['file'] = [str(digits_path()/f) for f in df.file]  # absolute paths, images folder irrelevant
    csv = tmp_path/'train.csv'
    df.to_csv(csv, index=False)
    before = csv.read_bytes()
    main(['audit', '--csv', str(csv), '--images', '/', '--arch', 'digits_cnn', '--size', '16', '--folds', '2', '--epochs', '1',
          '--out', str(tmp_path/'out')])
    assert csv.read_bytes() == before
    res = pd.read_csv(tmp_path/'out'/'label_audit.csv', index_col=0)
    assert len(res) == 120 and set(res.columns) >= {'file', 'given', 'predicted', 'is_label_issue', 'label_quality'}
    assert 'flagged' in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no column 'labels'"):
        main(['audit', '--csv', str(csv), '--label-col', 'labels'])


def test_audit_command_writes_the_oof_and_a_cleaned_csv(tmp_path):
    "The command line's second stage: oof_probs.csv and cleaned.csv (flagged rows dropped) beside the report; the CSV untouched"
    df = digits_df().query("split == 'train'").head(400).copy()
    df.loc[df.index[:40], 'label'] = 9
    df['file'] = [str(digits_path()/f) for f in df.file]
    csv = tmp_path/'train.csv'
    df.to_csv(csv, index=False)
    before = csv.read_bytes()
    main(['audit', '--csv', str(csv), '--images', '/', '--arch', 'digits_cnn', '--size', '16', '--folds', '3', '--epochs', '8',
          '--out', str(tmp_path/'out'), '--clean', 'drop'])
    assert csv.read_bytes() == before
    audit = pd.read_csv(tmp_path/'out'/'label_audit.csv', index_col=0)
    oof = pd.read_csv(tmp_path/'out'/'oof_probs.csv', index_col=0)
    cleaned = pd.read_csv(tmp_path/'out'/'cleaned.csv')
    assert len(oof) == 400 and np.allclose(oof.sum(1), 1, atol=1e-4)
    assert 0 < audit.is_label_issue.sum() < 200  # a model good enough to judge
    assert sorted(cleaned.file) == sorted(audit.file[~audit.is_label_issue])  # exactly the flagged rows are gone
    with pytest.raises(SystemExit, match='single-label'):
        main(['audit', '--csv', str(csv), '--label-col', 'label', '--label-delim', ' ', '--clean', 'drop'])


def test_ensemble_refuses_learners_with_different_classes():
    df = kfold(digits_df().query("split == 'train'").head(200), 2, 'label')
    a = Learner(frame_dls(df, 0), tiny_model())
    b = Learner(frame_dls(df[df.label < 5], 0), tiny_model(5))
    with pytest.raises(ValueError, match='different classes'): ensemble_predict([a, b], df.head(4))


def test_kfold_multilabel_with_groups_is_balanced_and_grouped():
    from labelcb.all import multi_digits_df
    m = multi_digits_df().assign(group=lambda d: np.arange(len(d)) // 5)
    f = kfold(m, 4, 'labels', label_delim=' ', group_col='group', seed=2)
    assert f.groupby('group').fold.nunique().max() == 1
    sizes = f.fold.value_counts()
    assert sizes.max() - sizes.min() <= 10  # whole groups of 5 items: within two groups of even
    per_tag = pd.DataFrame([[str(d) in s.split() for d in range(10)] for s in f.labels]).groupby(f.fold.values).sum()
    assert (per_tag.max() - per_tag.min()).max() <= 10, per_tag


def test_resumed_softlabel_does_not_blend_twice(tmp_path):
    "learn.save after a SoftLabel fit, then a new learner loads it: the targets are the saved ones, not blended a second time (issue 28, 2)"
    from labelcb.test_utils import tiny_learner, small_digits
    df = small_digits()
    tr = df[df.split == 'train']
    oof = pd.DataFrame(np.full((len(tr), 10), 0.1), index=tr.index, columns=list(range(10)))
    learn = tiny_learner(df, cbs=[SoftLabel(oof, a=0.5)]); learn.path = tmp_path
    learn.fit(1, 1e-3)
    saved = learn.soft_label.table.targets.clone()
    learn.save('s')
    again = tiny_learner(df, cbs=[SoftLabel(oof, a=0.5)]); again.path = tmp_path
    again.load('s')
    again.fit(1, 1e-3)
    assert torch.allclose(again.soft_label.table.targets, saved)
