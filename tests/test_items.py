"ItemIndex: every training item's index arrives with its own image and label, for any way of building DataLoaders."
import pickle
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from fastai.vision.all import (Callback, CutMix, DataBlock, Datasets, Categorize, CategoryBlock, ColReader, ColSplitter,
                               Flip, ImageBlock, ImageDataLoaders, IndexSplitter, IntToFloatTensor, Learner, MixUp,
                               PILImage, Resize, SkipItemException, ToTensor, load_learner, set_seed)
from fastai.distributed import DistributedDL
from labelcb.items import ItemIndex, TensorItemIdx, indexed_loader
from labelcb.table import LabelCallback
from conftest import image_number


class Record(Callback):
    "Between ItemIndex and MixUp: what each training batch holds, by index"
    order = ItemIndex.order + 2
    def before_fit(self): self.epochs = getattr(self, 'epochs', [])
    def before_epoch(self): self.epochs.append([])
    def before_batch(self):
        if self.training:
            idx = self.item_index.idx.cpu() if hasattr(self.learn, 'item_index') else None
            self.epochs[-1].append((idx, image_number(self.x), self.y.as_subclass(torch.Tensor).cpu()))


def linear(n_px=48, c=3): return nn.Sequential(nn.Flatten(), nn.Linear(n_px, c))


def check(rec, number_of_item, label_of_number, n_expected):
    "Each epoch: n_expected items, each index once at most, and each index with its own image and label"
    assert rec.epochs, 'no training epoch recorded'
    for ep, n in zip(rec.epochs, n_expected if isinstance(n_expected, list) else [n_expected]*len(rec.epochs)):
        idx = torch.cat([b[0] for b in ep]); nums = torch.cat([b[1] for b in ep]); ys = torch.cat([b[2] for b in ep])
        assert len(idx) == n
        assert len(set(idx.tolist())) == len(idx)
        assert nums.tolist() == [number_of_item(i) for i in idx.tolist()]
        assert ys.tolist() == [label_of_number(n) for n in nums.tolist()]


@pytest.mark.parametrize('num_workers', [0, 2])
def test_datablock_shuffle_workers_droplast_skip_mixup(num_workers):
    skip = {5, 17}
    def get_x(i):
        if i in skip: raise SkipItemException()
        return PILImage.create(np.full((4, 4, 3), i, dtype=np.uint8))
    dblock = DataBlock(blocks=(ImageBlock, CategoryBlock), get_x=get_x, get_y=lambda i: i % 3,
                       splitter=IndexSplitter(range(50, 56)), batch_tfms=Flip(p=0.5))
    def fit(cbs):
        set_seed(0)
        dls = dblock.dataloaders(list(range(56)), bs=8, num_workers=num_workers, drop_last=True, shuffle=True)
        learn = Learner(dls, linear(), cbs=cbs)
        learn.fit(3)
        return dls, learn
    _, plain = fit([Record(), MixUp()])
    dls, learn = fit([ItemIndex(), Record(), MixUp()])
    # the same items in the same order as without ItemIndex...
    for e1, e2 in zip(plain.record.epochs, learn.record.epochs):
        assert torch.cat([b[1] for b in e1]).tolist() == torch.cat([b[1] for b in e2]).tolist()
    # ...each with its own index. With workers, each worker drops its own last partial batch (fastai's behaviour,
    # with or without labelcb), so a skipped item can cost more than the remainder of 48 // 8.
    items = list(dls.train_ds.items)
    n_arrived = [sum(len(b[1]) for b in ep) for ep in plain.record.epochs]
    if num_workers == 0: assert n_arrived == [48]*3
    check(learn.record, lambda i: items[i], lambda n: n % 3, n_arrived)
    # the indices of skipped items never arrive
    seen = {i for ep in learn.record.epochs for b in ep for i in b[0].tolist()}
    assert not seen & {items.index(s) for s in skip}
    # dls as before
    b = dls.train.one_batch()
    assert len(b) == 2 and not any(isinstance(o, TensorItemIdx) for o in b)


def test_from_folder_and_cutmix(id_images):
    dls = ImageDataLoaders.from_folder(id_images, train='train', valid='valid', bs=8, item_tfms=Resize(4), num_workers=2)
    learn = Learner(dls, linear(), cbs=[ItemIndex(), Record(), CutMix()])
    learn.fit(2)
    items = [int(Path(p).stem) for p in dls.train_ds.items]
    check(learn.record, lambda i: items[i], lambda n: dls.vocab.o2i[f'c{n % 3}'], 48)


def test_from_df_and_datasets(id_images):
    files = sorted(id_images.rglob('*.png'))
    df = pd.DataFrame({'fname': [str(f) for f in files], 'label': [int(f.stem) % 3 for f in files],
                       'is_valid': [f.parts[-3] == 'valid' for f in files]}).sample(frac=1, random_state=0)
    dls = ImageDataLoaders.from_df(df, '/', fn_col='fname', label_col='label', valid_col='is_valid', bs=16, item_tfms=Resize(4))
    learn = Learner(dls, linear(), cbs=[ItemIndex(), Record()])
    learn.fit(1)
    items = dls.train_ds.items
    check(learn.record, lambda i: int(Path(items.fname.iloc[i]).stem), lambda n: n % 3, 48)
    # plain Datasets, with the index of the source list
    dsets = Datasets(files, [[PILImage.create], [lambda f: int(f.stem) % 3, Categorize()]],
                     splits=ColSplitter('is_valid')(pd.DataFrame({'is_valid': [f.parts[-3] == 'valid' for f in files]})))
    dls2 = dsets.dataloaders(bs=16, after_item=[ToTensor()], after_batch=[IntToFloatTensor()], shuffle=True)
    learn2 = Learner(dls2, linear(), cbs=[ItemIndex(), Record()])
    learn2.fit(1)
    check(learn2.record, lambda i: int(dls2.train_ds.items[i].stem), lambda n: n % 3, 48)


def test_distributed_dl_shards_keep_their_indices():
    "fastai's DistributedDL makes items through the loader it wraps; broadcasting needs CUDA, so it is replaced here"
    dblock = DataBlock(blocks=(ImageBlock, CategoryBlock), get_x=lambda i: PILImage.create(np.full((4, 4, 3), i, dtype=np.uint8)),
                       get_y=lambda i: i % 3, splitter=IndexSplitter(range(40, 44)))
    dls = dblock.dataloaders(list(range(44)), bs=4, shuffle=True)
    seen = []
    for rank in (0, 1):
        ddl = DistributedDL(dls.train, rank=rank, world_size=2)
        ddl._broadcast = lambda t, rank: list(t)
        ddl.dl.rng.seed(0)
        for *b, idx in indexed_loader(ddl):
            assert isinstance(idx, TensorItemIdx)
            assert image_number(b[0]).tolist() == [dls.train_ds.items[i] for i in idx.tolist()]
            seen += idx.tolist()
    assert sorted(seen) == list(range(40))


def test_dls_unchanged_and_inference_paths_work(id_images, tmp_path):
    dls = ImageDataLoaders.from_folder(id_images, train='train', valid='valid', bs=8, item_tfms=Resize(4))
    before = dict(dls.train.__dict__)
    learn = Learner(dls, linear(), cbs=[LabelCallback(), MixUp()], path=tmp_path)
    learn.fit(1)
    assert dls.train.__dict__.keys() == before.keys() and all(dls.train.__dict__[k] is v for k, v in before.items() if k != 'rng')
    assert len(dls.train.one_batch()) == 2 and len(dls.valid.one_batch()) == 2
    preds, targs = learn.get_preds()
    assert preds.shape == (12, 3)
    tpreds, _ = learn.tta(n=2)
    assert tpreds.shape == (12, 3)
    learn.validate()
    pred_class, _, probs = learn.predict(str(next(id_images.rglob('*.png'))))
    assert pred_class in dls.vocab
    dls.show_batch(max_n=4)
    learn.export('export.pkl')
    assert learn.label.table is not None and len(learn.label.table) == 48
    exported = load_learner(tmp_path/'export.pkl')
    assert exported.label.table is None and exported.item_index.idx is None
    assert exported.predict(str(next(id_images.rglob('*.png'))))[0] == pred_class


def test_exception_mid_epoch_leaves_dls_alone(id_images):
    dls = ImageDataLoaders.from_folder(id_images, train='train', valid='valid', bs=8, item_tfms=Resize(4))
    class Boom(Callback):
        order = 5
        def after_batch(self):
            if self.training and self.iter == 2: raise KeyboardInterrupt
    learn = Learner(dls, linear(), cbs=[LabelCallback(), Boom()])
    with pytest.raises(KeyboardInterrupt): learn.fit(1)
    assert len(dls.train.one_batch()) == 2
    learn.remove_cb(learn.boom)
    learn.fit(1)  # the next fit recovers: the soft loss is put back, the dls were never changed
    assert type(learn.loss_func).__name__ == 'CrossEntropyLossFlat'


def test_unsupported_loaders_say_why():
    from fastai.data.load import DataLoader
    with pytest.raises(ValueError, match='indexed dataset'): indexed_loader(DataLoader(range(10), bs=None))
    with pytest.raises(TypeError, match='fastai DataLoaders'): indexed_loader(torch.utils.data.DataLoader(range(10)))
