"The Plant Pathology 2020 pipeline's five breaks (issue 20), each on a small replica of the competition's files"
import shutil
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from fastai.vision.all import Resize
from labelcb.all import (digits_df, digits_path, digits_cnn, multilabel_dls, image_oof, kfold, cross_validate, write_submission,
                         labels_of)
from labelcb.test_utils import tiny_model
from labelcb.cli import main

CLASSES = ['healthy', 'multiple_diseases', 'rust', 'scab']


@pytest.fixture(scope='module')
def plant(tmp_path_factory):
    "Plant Pathology 2020's layout: images/Train_<i>.png (digits 0-3 stand in for the leaves), train.csv with image_id and one-hot columns"
    root = tmp_path_factory.mktemp('plant')
    (root/'images').mkdir()
    d = digits_df().query("split == 'train' and label < 4").head(96).reset_index(drop=True)
    ids = [f'Train_{i}' for i in range(len(d))]
    for i, f in zip(ids, d.file): shutil.copy(digits_path()/f, root/'images'/f'{i}.png')
    train = pd.DataFrame({'image_id': ids, **{c: (d.label == k).astype(int) for k, c in enumerate(CLASSES)}})
    train.to_csv(root/'train.csv', index=False)
    return root, train


def test_one_hot_columns_with_one_1_per_row_are_single_label(plant):
    root, train = plant
    codes, classes = labels_of(train, CLASSES)
    assert codes.ndim == 1 and classes == CLASSES
    dls = multilabel_dls(train.assign(file=train.image_id + '.png', is_valid=train.index % 4 == 0), root/'images', label_col=CLASSES,
                         item_tfms=Resize(16), bs=16)
    assert type(dls.loss_func).__name__ == 'CrossEntropyLossFlat' and list(dls.vocab) == CLASSES
    assert dls.one_batch()[1].ndim == 1
    # several 1s in a row (Plant Pathology 2021): multi-label, as before
    two = train.assign(rust=1)
    assert labels_of(two, CLASSES)[0].ndim == 2
    folds = kfold(train, 4, CLASSES)  # stratified by the one class of each row
    per = folds.groupby('fold')[CLASSES].sum()
    assert (per.max() - per.min()).max() <= 1


def test_image_oof_reads_one_hot_columns(plant):
    root, train = plant
    df = train.assign(file=train.image_id + '.png')
    res = image_oof(df, root/'images', label_col=CLASSES, n_folds=2, epochs=1, size=16, model=digits_cnn, progress=False)
    assert res.vocab == CLASSES and not res.multi_label
    assert list(res.probs.index) == list(df.index)
    np.testing.assert_array_equal(res.targets, labels_of(df, CLASSES)[0])


def test_oof_score_in_the_competitions_metric_and_a_blend(plant):
    root, train = plant
    df = kfold(train.assign(file=train.image_id + '.png'), 3, CLASSES)
    test = df.head(10)
    mk = lambda d, f: multilabel_dls(d.assign(is_valid=d.fold == f), root/'images', label_col=CLASSES, item_tfms=Resize(16), bs=16)
    from fastai.vision.all import Learner
    from labelcb.crossval import blend
    res = cross_validate(df, mk, lambda dls: Learner(dls, tiny_model(4)), fit=1, test_df=test, test_id_col='image_id', progress=False)
    s = res.score('roc_auc')
    assert list(s.index) == [0, 1, 2, 'oof']
    onehot = df[CLASSES].to_numpy()
    assert s['oof'] == pytest.approx(roc_auc_score(onehot, res.probs.to_numpy(), average='macro'))
    f0 = (res.folds == 0).to_numpy()
    assert s[0] == pytest.approx(roc_auc_score(onehot[f0], res.probs.to_numpy()[f0], average='macro'))
    assert res.score()['oof'] == pytest.approx(res.oof_accuracy)
    assert list(res.test_probs.index) == list(test.image_id)  # keyed by the competition's id, not the row number
    other = res.test_probs*0 + 0.25
    b = blend([res.test_probs, other], [3, 1])
    np.testing.assert_allclose(b.to_numpy(), 0.75*res.test_probs.to_numpy() + 0.25*0.25)
    with pytest.raises(ValueError, match='other items'): blend([res.test_probs, other.iloc[::-1]])


def test_probability_submission(tmp_path):
    probs = pd.DataFrame([[0.7, 0.1, 0.1, 0.1], [0.2, 0.2, 0.5, 0.1]], columns=CLASSES, index=pd.Index(['Test_0', 'Test_1'], name='image_id'))
    sub = write_submission(probs, tmp_path/'sub.csv', id_col='image_id', kind='probs')
    back = pd.read_csv(tmp_path/'sub.csv')
    assert list(back.columns) == ['image_id'] + CLASSES and list(back.image_id) == ['Test_0', 'Test_1']
    np.testing.assert_allclose(back[CLASSES].to_numpy(), probs.to_numpy())
    with pytest.raises(ValueError, match="kind='probs'"): write_submission(probs, tmp_path/'t.csv')  # softmax rows are not tags
    with pytest.raises(ValueError, match='twice'): write_submission(probs, tmp_path/'t.csv', ids=['a', 'a'], kind='probs')


def test_audit_command_reads_the_competitions_csv(plant, tmp_path, capsys):
    root, train = plant
    main(['audit', '--csv', str(root/'train.csv'), '--folder', 'images', '--suffix', '.png', '--fn-col', 'image_id',
          '--label-col', ','.join(CLASSES), '--arch', 'digits_cnn', '--size', '16', '--folds', '2', '--epochs', '1',
          '--out', str(tmp_path/'out')])
    res = pd.read_csv(tmp_path/'out'/'label_audit.csv', index_col=0)
    assert len(res) == len(train) and set(res.given) <= set(CLASSES)
    assert set(res.image_id) == set(train.image_id)  # the competition's ids, not the made-up file names
    with pytest.raises(SystemExit, match='--suffix'):
        main(['audit', '--csv', str(root/'train.csv'), '--folder', 'images', '--fn-col', 'image_id', '--label-col', ','.join(CLASSES)])


def test_oof_with_tta_is_the_augmented_prediction(plant):
    "Seed 002 takes its OOF predictions with TTA: `tta` applies to the OOF rows as to the test rows, not to the test rows only"
    from fastai.vision.all import Learner
    from labelcb.tta import tta_predict
    root, train = plant
    df = kfold(train.assign(file=train.image_id + '.png'), 2, CLASSES)
    mk = lambda d, f: multilabel_dls(d.assign(is_valid=d.fold == f), root/'images', label_col=CLASSES, item_tfms=Resize(16), bs=16)
    res = cross_validate(df, mk, lambda dls: Learner(dls, tiny_model(4)), fit=1, tta='dihedral', keep_learners=True, progress=False)
    for k, learn in enumerate(res.learners):
        rows = df[df.fold == k]
        want = tta_predict(learn, rows, augment='dihedral', progress=False)
        plain = tta_predict(learn, rows, augment=None, progress=False)
        np.testing.assert_allclose(res.probs.loc[rows.index].to_numpy(), want.to_numpy(), atol=1e-6)
        assert not np.allclose(want.to_numpy(), plain.to_numpy(), atol=1e-4)  # the views do differ: the check can tell


def test_replicas_write_the_competitions_files(tmp_path):
    "The tutorial's replicas: the competitions' folders, CSV columns and ids (Plant Pathology 2020, Planet)"
    from labelcb.data import plant_pathology_replica, planet_replica, PLANT_CLASSES
    from labelcb.multilabel import check_submission
    plant = plant_pathology_replica(tmp_path/'plant')
    train, sample = pd.read_csv(plant/'train.csv'), pd.read_csv(plant/'sample_submission.csv')
    assert list(train.columns) == ['image_id', *PLANT_CLASSES] and not train.image_id.str.contains(r'\.').any()
    assert all((plant/'images'/f'{i}.jpg').exists() for i in list(train.image_id) + list(sample.image_id))
    check_submission(sample, plant/'sample_submission.csv')
    planet = planet_replica(tmp_path/'planet', n_train=20, n_test=5)
    tv = pd.read_csv(planet/'train_v2.csv')
    assert list(tv.columns) == ['image_name', 'tags'] and all((planet/'train-jpg'/f'{n}.jpg').exists() for n in tv.image_name)
