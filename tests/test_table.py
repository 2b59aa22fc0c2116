"LabelTable and LabelCallback on the ways users build data, and their errors."
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from fastai.vision.all import (BCEWithLogitsLossFlat, Callback, CrossEntropyLossFlat, ImageDataLoaders, Learner, MixUp,
                               MSELossFlat, RegressionBlock, DataBlock, ImageBlock, PILImage, IndexSplitter, Resize,
                               accuracy_multi, vision_learner, resnet18, accuracy)
from labelcb.test_utils import small_digits
from labelcb.all import (LabelCallback, LabelTable, SoftBCEWithLogitsLoss, digits_df, digits_dls, multi_digits_df,
                         multi_digits_path, noisy_digits_df)


def test_table_ids_are_paths_for_folders(id_images):
    dls = ImageDataLoaders.from_folder(id_images, train='train', valid='valid', bs=8)
    t = LabelTable.from_dls(dls)
    assert list(t.ids) == [str(p) for p in dls.train_ds.items]
    assert [t.vocab[i] for i in t.original.tolist()] == [p.parent.name for p in dls.train_ds.items]


def test_multi_label_table_and_callback():
    df = multi_digits_df()
    df = pd.concat([df[df.split == 'train'].iloc[:96], df[df.split == 'valid'].iloc[:32]])
    dls = ImageDataLoaders.from_df(df, multi_digits_path(), fn_col='file', label_col='labels', label_delim=' ',
                                   valid_col='is_valid', item_tfms=Resize((16, 48)), bs=16)
    t = LabelTable.from_dls(dls)
    assert t.multi_label and t.targets.shape == (96, 10)
    assert t.to_df().label.tolist() == df[df.split == 'train']['labels'].tolist()
    learn = Learner(dls, nn.Sequential(nn.Flatten(), nn.Linear(3*16*48, 10)), loss_func=BCEWithLogitsLossFlat(),
                    metrics=accuracy_multi, cbs=[LabelCallback(), MixUp()])
    class Spy(Callback):
        order = 1
        def before_batch(self):
            if self.training: self.lf = type(self.learn.loss_func)
    spy = Spy()
    learn.fit(1, cbs=spy)
    assert spy.lf is SoftBCEWithLogitsLoss
    assert type(learn.loss_func).__name__ == 'BCEWithLogitsLossFlat'


def test_regression_and_bad_losses_are_refused():
    df = small_digits(n_train=200)
    dblock = DataBlock(blocks=(ImageBlock, RegressionBlock), get_x=lambda r: PILImage.create(np.zeros((4, 4, 3), np.uint8)),
                       get_y=lambda r: float(r.label), splitter=lambda items: (list(range(200)), list(range(200, 264))))
    dls = dblock.dataloaders(df, bs=16)
    with pytest.raises(TypeError, match='regression'): LabelTable.from_dls(dls)
    learn = Learner(digits_dls(df, size=8, bs=32), nn.Sequential(nn.Flatten(), nn.Linear(192, 10)),
                    loss_func=MSELossFlat(), cbs=LabelCallback())
    with pytest.raises(TypeError, match='SoftCrossEntropyLoss'): learn.fit(1)


def test_fine_tune_keeps_table_and_source_untouched():
    df = small_digits(noisy_digits_df(0.3), n_train=200)
    before = df.copy()
    dls = digits_dls(df, size=16, bs=32)
    learn = vision_learner(dls, resnet18, pretrained=False, metrics=accuracy, cbs=LabelCallback())
    tables = []
    class Grab(Callback):
        def after_train(self): tables.append(self.learn.label.table)
    learn.fine_tune(1, freeze_epochs=1, cbs=Grab())
    assert len(tables) == 2 and tables[0] is tables[1]
    pd.testing.assert_frame_equal(df, before)
    out = learn.label.table.apply_to(df, 'label')
    pd.testing.assert_frame_equal(out, before)  # nothing corrected: same labels, same dtypes
    assert out is not df


def test_resume_with_saved_table(tmp_path):
    df = small_digits(noisy_digits_df(0.3), n_train=200)
    dls = digits_dls(df, size=8, bs=32)
    learn = Learner(dls, nn.Sequential(nn.Flatten(), nn.Linear(192, 10)), cbs=LabelCallback(), path=tmp_path)
    learn.fit(1)
    t = learn.label.table
    t.update([0, 1], torch.tensor([3, 4]), why='test')
    t.save(tmp_path/'labels.pth')
    learn.save('model')
    # a new session: new learner, same data; the loaded table continues where the old one stopped
    learn2 = Learner(digits_dls(df, size=8, bs=32), nn.Sequential(nn.Flatten(), nn.Linear(192, 10)), path=tmp_path,
                     cbs=LabelCallback(LabelTable.from_dls(dls).load(tmp_path/'labels.pth')))
    learn2.load('model')
    learn2.fit(1)
    assert learn2.label.table.labels[:2].tolist() == [3, 4]
    assert len(learn2.label.table.log) == len(t.log)


def test_two_label_callbacks_share_one_table():
    df = small_digits(n_train=200)
    class Other(LabelCallback): pass
    learn = Learner(digits_dls(df, size=8, bs=32), nn.Sequential(nn.Flatten(), nn.Linear(192, 10)),
                    cbs=[LabelCallback(), Other()])
    learn.fit(1)
    assert learn.label.table is learn.other.table


def test_table_input_errors():
    with pytest.raises(ValueError, match='class indices'): LabelTable(torch.tensor([0, 1]), vocab=['a'])
    with pytest.raises(ValueError, match='class names'): LabelTable(torch.eye(2), vocab=['a', 'b', 'c'])
    with pytest.raises(ValueError, match='ids'): LabelTable(torch.tensor([0, 1]), ids=['x'])
    t = LabelTable(torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match='rows'): t.update([0, 1], torch.rand(2, 5), why='x')
    df = pd.DataFrame({'label': [0, 1]}, index=[10, 11])
    with pytest.raises(KeyError, match='not in the frame'): t.apply_to(df, 'label')


def _corrected_learner(tmp_path, df=None):
    "A learner whose label table has some labels changed, saving under tmp_path"
    from labelcb.test_utils import tiny_learner
    cb = LabelCallback()
    learn = tiny_learner(df, cbs=[cb])
    learn.path = tmp_path
    learn.fit(1, 0)
    cb.table.update(range(10), torch.zeros(10), why='test')
    return learn, cb


def test_checkpoint_labels_belong_to_their_checkpoint(tmp_path):
    "A checkpoint saved by a learner without a table leaves no older table behind to come back with it (issue 28, 2)"
    from labelcb.test_utils import tiny_learner
    learn, cb = _corrected_learner(tmp_path)
    learn.save('m')
    assert (tmp_path/'models'/'m.labels.pth').exists()
    plain = tiny_learner()
    plain.path = tmp_path
    plain.save('m')  # the same name, no label callback: the old labels must go
    assert not (tmp_path/'models'/'m.labels.pth').exists()
    again = tiny_learner(cbs=[LabelCallback()]); again.path = tmp_path
    again.load('m')
    assert again.label.table is None  # nothing resurrected: the next fit starts from the data's labels


def test_checkpoint_names_and_file_objects(tmp_path):
    import io
    learn, cb = _corrected_learner(tmp_path)
    learn.save('ckpt')
    with pytest.raises(ValueError, match="not ending in '.labels'"): learn.save('ckpt.labels')
    assert torch.equal(LabelTable.from_dls(learn.dls).load(tmp_path/'models'/'ckpt.labels.pth').labels, cb.table.labels)  # ckpt's table untouched
    buf = io.BytesIO()
    with pytest.warns(UserWarning, match='not saved with a file object'): learn.save(buf)  # fastai accepts file objects
    buf.seek(0)
    learn.load(buf, with_opt=False)


def test_load_refuses_other_items_before_replacing_weights(tmp_path):
    from labelcb.test_utils import tiny_learner
    learn, cb = _corrected_learner(tmp_path)
    learn.save('m')
    other = tiny_learner(small_digits(start=300), cbs=[LabelCallback()], seed=1)
    other.path = tmp_path
    before = [p.detach().clone() for p in other.model.parameters()]
    with pytest.raises(ValueError, match='other items'): other.load('m')
    assert all(torch.equal(a, b) for a, b in zip(before, other.model.parameters()))  # refused before anything was replaced


def test_exported_learner_loads_weights_and_says_the_labels_stay_behind(tmp_path):
    from fastai.vision.all import load_learner
    learn, cb = _corrected_learner(tmp_path)
    learn.save('m')
    learn.export(tmp_path/'e.pkl')
    inf = load_learner(tmp_path/'e.pkl')
    inf.path = tmp_path
    with pytest.warns(UserWarning, match='no training set'): inf.load('m', with_opt=False)
    assert all(torch.equal(a, b) for a, b in zip(inf.model.parameters(), learn.model.parameters()))


def _reset(df):
    "A frame indexed 0..n-1, as df.reset_index(drop=True) makes it"
    return df.reset_index(drop=True)


def test_an_item_is_what_it_is_not_its_index(tmp_path):
    "Two frames with the same index but other images: a reused callback starts afresh, a saved table is refused (issue 28, 1)"
    import warnings
    from labelcb.test_utils import tiny_learner
    a, b = _reset(small_digits()), _reset(small_digits(start=300))
    cb = LabelCallback()
    learn = tiny_learner(a, cbs=[cb]); learn.path = tmp_path
    learn.fit(1, 0)
    cb.table.update(range(50), torch.zeros(50), why='test')
    learn.save('a')
    first = cb.table
    with pytest.warns(UserWarning, match='other items under the same ids'):
        tiny_learner(b, cbs=[cb]).fit(1, 0)  # the same callback on b
    assert cb.table is not first
    given_b = [cb.table.vocab.index(v) for v in b[b.split == 'train'].label]
    assert cb.table.labels.tolist() == given_b  # trains on b's own labels, none of a's corrections
    other = tiny_learner(b, cbs=[LabelCallback()]); other.path = tmp_path
    with pytest.raises(ValueError, match='other items'): other.load('a')


def test_fixed_labels_start_a_new_table():
    "The user fixes labels and replaces learn.dls (same index, same files): the old noisy table is not kept (issue 28, 1)"
    from labelcb.test_utils import tiny_learner
    from labelcb.all import digits_dls
    df = small_digits(noisy_digits_df(0.4, seed=0))
    cb = LabelCallback()
    learn = tiny_learner(df, cbs=[cb])
    learn.fit(1, 0)
    fixed = df.assign(label=df.true_label)
    learn.dls = digits_dls(fixed, size=16, bs=32)
    with pytest.warns(UserWarning, match='other given labels'): learn.fit(1, 0)
    assert cb.table.labels.tolist() == [cb.table.vocab.index(v) for v in fixed[fixed.split == 'train'].label]
