"""Distributed training (issue 21): every label callback in two processes, on the CPU with the gloo backend.

fastai's `DistributedDL` broadcasts its shuffled order through a CUDA tensor (NCCL needs one); the workers here replace that one
method with a CPU broadcast, which gloo takes. That override lives in this test only: the library runs fastai's code as it is.
All jobs run in one pair of processes (importing fastai twice per test would cost more than the jobs); each test reads what the
two ranks saved."""
import os, socket
import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD, N_TRAIN, BS, EPOCHS = 2, 256, 32, 3  # 256 = 2 ranks x 4 batches x 32: every item in exactly one full batch per epoch


def _cpu_broadcast():
    import fastai.distributed as fd
    def _broadcast(self, t, rank):  # fastai's puts t on a CUDA device for NCCL; gloo broadcasts CPU tensors
        t = torch.LongTensor(t)
        dist.broadcast(t, rank)
        return t.tolist()
    fd.DistributedDL._broadcast = _broadcast


def _learner(cbs, df=None, workers=0, **dls_kwargs):
    from labelcb.test_utils import tiny_learner, small_digits
    from labelcb.data import noisy_digits_df
    df = small_digits(noisy_digits_df(0.3, 'symmetric'), n_train=N_TRAIN) if df is None else df
    # shuffled and drop_last (fastai's training defaults); `workers` loader processes in each rank. Only the PLC job uses
    # workers: in this CPU/gloo setup plain fastai, with no labelcb callback at all, hangs when a later learner's loader
    # starts its workers (both ranks wait on a live worker that sends nothing), so the other jobs load in the main process
    return tiny_learner(df, cbs=cbs, bs=BS, dls_kwargs=dict(num_workers=workers, **dls_kwargs))


class _Spy:
    "Per epoch: the training positions this rank saw, its table before the epoch, and what it wrote before the epoch's sync"
    def __init__(self):
        from fastai.callback.core import Callback
        from labelcb.table import LabelTable
        spy = self
        self.seen, self.start, self.pending = [], [], []
        class SeenCallback(Callback):
            order = 0  # after ItemIndex (-20) and the label callbacks (-19)
            def before_train(self): spy.seen.append([])
            def before_batch(self):
                if not self.training: return
                spy.seen[-1] += self.learn.item_index.idx.tolist()
                t = next((cb.table for cb in self.learn.cbs if getattr(cb, 'table', None) is not None and hasattr(cb.table, 'targets')), None)
                if t is not None and len(spy.start) < len(spy.seen): spy.start.append(t.targets.clone())
        self.cb = SeenCallback()
        orig = LabelTable.sync
        def sync(table):
            if table._pending is not None: spy.pending.append([(i.clone(), r.clone()) for i, r, _ in table._pending])
            return orig(table)
        LabelTable.sync = sync


def _jobs(rank, out):
    from fastai.vision.all import load_learner
    from labelcb.all import ModelReady, ELR, PLC, SoftLabel, TemporalEnsemble, SelfLabelSinkhorn, RefineryLoop, PartialCategoryBlock, hide_labels, predict_items
    from labelcb.test_utils import small_digits
    import labelcb.selflabel as selflabel
    res = {}

    # PLC, 'diff' rule per batch (the paper's): corrections batch by batch, shared at each epoch's end
    spy = _Spy()
    cb = PLC(warmup=1, theta=0.05, average=False)
    learn = _learner([cb, spy.cb], workers=2)  # two loader workers in each process: the items still reach the table once
    dls, loss, model = learn.dls, learn.loss_func, learn.model
    loaders = list(dls.loaders)
    with learn.distrib_ctx():
        with learn.no_bar(), learn.no_logging(): learn.fit(EPOCHS, 0.05)
    res['plc'] = dict(targets=cb.table.targets.clone(), log=cb.corrections, history=pd.DataFrame(cb.history), seen=spy.seen,
                      start=spy.start, pending=spy.pending,
                      restored=dict(dls=learn.dls is dls and list(learn.dls.loaders) == loaders, loss=learn.loss_func is loss,
                                    model=learn.model is model))
    learn.export(out/'plc.pkl')  # fastai writes from rank 0 only
    dist.barrier()
    res['plc']['exported'] = type(load_learner(out/'plc.pkl').loss_func).__name__  # load_learner has a barrier: every rank calls it

    # PLC, 'ratio' rule: every rank's softmax outputs gathered, then the same rule everywhere
    cb = PLC(rule='ratio', warmup=1, delta=0.5)
    learn = _learner([cb])
    with learn.distrib_ctx():
        with learn.no_bar(), learn.no_logging(): learn.fit(EPOCHS, 0.05)
    res['ratio'] = dict(targets=cb.table.targets.clone(), window=cb._window.clone(), seen=cb._seen.clone(), log=cb.corrections,
                        history=pd.DataFrame(cb.history))

    # PLC's default: its start follows the held-out accuracy of both ranks' validation shards; decisions from the gathered window
    cb = PLC(theta=0.05, ready=ModelReady(patience=1, min_gain=1., min_margin=0.))  # min_gain 1: every epoch after the first is stale
    learn = _learner([cb])
    with learn.distrib_ctx():
        with learn.no_bar(), learn.no_logging(): learn.fit(EPOCHS, 0.05)
    res['model'] = dict(targets=cb.table.targets.clone(), ready=pd.DataFrame(cb.ready.log), log=cb.corrections, history=pd.DataFrame(cb.history))

    # TemporalEnsemble on partly labelled digits
    spy = _Spy()
    df = small_digits(n_train=N_TRAIN)
    df = hide_labels(df, n_per_class=5, rows=df.split == 'train')
    cb = TemporalEnsemble(rampup=1)
    learn = _learner([cb, spy.cb], df=df, y_block=PartialCategoryBlock)
    loss = learn.loss_func
    with learn.distrib_ctx():
        with learn.no_bar(), learn.no_logging(): learn.fit(EPOCHS, 0.05)
    res['te'] = dict(ensemble=cb.ensemble.clone(), n_seen=cb.n_seen.clone(), history=pd.DataFrame(cb.history), seen=spy.seen,
                     loss=learn.loss_func is loss)

    # SelfLabelSinkhorn: each rank predicts its share, rank 0 solves, every rank takes its labels
    got = []
    orig = selflabel.sinkhorn_knopp
    def spy_sinkhorn(logits, *args, **kwargs):
        got.append(logits.clone())
        return orig(logits, *args, **kwargs)
    selflabel.sinkhorn_knopp = spy_sinkhorn
    cb = SelfLabelSinkhorn(k=4, n_opts=2, pseudo_pass='eval')
    learn = _learner([cb])
    with learn.distrib_ctx():
        with learn.no_bar(), learn.no_logging(): learn.fit(2, 0.05)
    selflabel.sinkhorn_knopp = orig
    w, b = cb.head.head_params(0)
    res['sela'] = dict(labels=cb.labels.clone(), logits=got[-1] if got else None,
                       unsharded=predict_items(learn.model, learn.dls, 'eval', at=cb.head, shard=False) @ w.float().T + b.float(),
                       sharded=predict_items(learn.model, learn.dls, 'eval', at=cb.head) @ w.float().T + b.float())

    # RefineryLoop offline: the teacher's pass over every item, split between the ranks
    teacher = _learner([])
    with teacher.no_bar(), teacher.no_logging(): teacher.fit(1, 0.05)
    cb = RefineryLoop(teacher, mode='offline', a=0.5)
    learn = _learner([cb])
    with learn.distrib_ctx():
        with learn.no_bar(), learn.no_logging(): learn.fit(1, 0.05)
    alone = predict_items(teacher.model, learn.dls, 'eval', augment=False, shard=False).softmax(1)
    res['refinery'] = dict(targets=cb.table.targets.clone(), alone=alone, given=cb.table.original.clone())

    # SoftLabel: nothing to share (the OOF is the same everywhere); the tables agree all the same
    oof = pd.DataFrame(np.full((N_TRAIN, 10), 0.1), index=learn.dls.train_ds.items.index, columns=list(learn.dls.vocab))
    cb = SoftLabel(oof)
    learn = _learner([cb])
    with learn.distrib_ctx():
        with learn.no_bar(), learn.no_logging(): learn.fit(1, 0.05)
    res['softlabel'] = dict(targets=cb.table.targets.clone())

    # ELR: each rank updates the running targets of its items; at each epoch's end every rank holds every item's.
    # At learning rate 0 the model does not move, so after E epochs each target is (1 - β^E) × the item's own prediction
    spy = _Spy()
    cb = ELR(beta=0.7)
    learn = _learner([cb, spy.cb])
    with learn.distrib_ctx():
        with learn.no_bar(), learn.no_logging(): learn.fit(EPOCHS, 0.)
    alone = predict_items(learn.model, learn.dls, 'eval', augment=False, shard=False).softmax(1)
    res['elr'] = dict(targets=cb.targets.clone(), alone=alone, history=pd.DataFrame(cb.history), seen=spy.seen)
    torch.save(res, out/f'rank{rank}.pt')


def _worker(rank, port, out):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank),
                      ACCELERATE_USE_CPU='true', OMP_NUM_THREADS='1')
    torch.set_num_threads(1)
    # loader workers forked from a process whose gloo group runs threads hang at shutdown here; forkserver starts them clean
    mp.set_start_method('forkserver', force=True)
    if os.environ.get('LABELCB_DIST_DEBUG'):  # seconds: then each rank writes where it is to its own file and exits (a hang's post-mortem)
        import faulthandler; faulthandler.dump_traceback_later(int(os.environ['LABELCB_DIST_DEBUG']), exit=True, file=open(out/f'stack{rank}.txt', 'w'))
    dist.init_process_group('gloo', rank=rank, world_size=WORLD)
    try:
        _cpu_broadcast()
        _jobs(rank, out)
    finally: dist.destroy_process_group()


@pytest.fixture(scope='module')
def ranks(tmp_path_factory):
    pytest.importorskip('accelerate')  # fastai's distrib_ctx needs it
    out = tmp_path_factory.mktemp('distributed')
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, out), nprocs=WORLD)
    return [torch.load(out/f'rank{r}.pt', weights_only=False) for r in range(WORLD)], out


def _same(a, b): return torch.equal(a, b)


def test_every_item_seen_once_per_epoch(ranks):
    (r0, r1), _ = ranks
    for job in ('plc', 'te'):
        for e in range(EPOCHS):
            both = sorted(r0[job]['seen'][e] + r1[job]['seen'][e])
            assert both == list(range(N_TRAIN)), (job, e)


def test_plc_tables_and_logs_identical(ranks):
    (r0, r1), _ = ranks
    assert _same(r0['plc']['targets'], r1['plc']['targets'])
    pd.testing.assert_frame_equal(r0['plc']['log'], r1['plc']['log'])
    pd.testing.assert_frame_equal(r0['plc']['history'], r1['plc']['history'])
    # both ranks corrected something, and the log lists each rank's corrections once
    assert all(len(r['plc']['pending']) == EPOCHS for r in (r0, r1))  # one exchange per epoch
    mine = [sum(len(i) for i, _ in r['plc']['pending'][e]) for r in (r0, r1) for e in range(EPOCHS)]
    assert sum(mine[:EPOCHS]) > 0 and sum(mine[EPOCHS:]) > 0, mine
    assert r0['plc']['history'].corrections.sum() == len(r0['plc']['log'])
    log = r0['plc']['log']
    assert not log.duplicated(['index', 'epoch', 'iteration']).any()


def test_rank1_correction_visible_on_rank0_next_epoch(ranks):
    (r0, r1), _ = ranks
    checked = 0
    for e in range(EPOCHS - 1):
        start0 = r0['plc']['start'][e + 1]  # rank 0's table when its next epoch starts
        for idx, rows in r1['plc']['pending'][e]:
            assert torch.equal(start0[idx], rows)
            checked += len(idx)
        # and rank 0 had not seen those items that epoch: the change can only have come from rank 1
        assert not set(sum([i.tolist() for i, _ in r1['plc']['pending'][e]], [])) & set(r0['plc']['seen'][e])
    assert checked > 0


def test_ratio_rule_sees_every_item(ranks):
    (r0, r1), _ = ranks
    for k in ('targets', 'window', 'seen'): assert _same(r0['ratio'][k], r1['ratio'][k]), k
    assert r0['ratio']['seen'].any(0).all()  # every item's softmax output reached both ranks
    pd.testing.assert_frame_equal(r0['ratio']['log'], r1['ratio']['log'])
    assert len(r0['ratio']['log']) > 0


def test_plc_default_start_and_corrections_identical(ranks):
    "The held-out accuracy ModelReady reads is both ranks' shards together: the same start, the same corrections"
    (r0, r1), _ = ranks
    pd.testing.assert_frame_equal(r0['model']['ready'], r1['model']['ready'])
    assert _same(r0['model']['targets'], r1['model']['targets'])
    pd.testing.assert_frame_equal(r0['model']['log'], r1['model']['log'])
    assert r0['model']['history'].correcting.tolist() == [False, False, True] and len(r0['model']['log']) > 0


def test_temporal_ensemble_identical_each_item_once(ranks):
    (r0, r1), _ = ranks
    assert _same(r0['te']['ensemble'], r1['te']['ensemble']) and _same(r0['te']['n_seen'], r1['te']['n_seen'])
    assert (r0['te']['n_seen'] == EPOCHS).all()  # each item entered the ensemble once per epoch
    pd.testing.assert_frame_equal(r0['te']['history'], r1['te']['history'])
    assert r0['te']['loss']


def test_sela_labels_are_one_sinkhorn_on_gathered_predictions(ranks):
    (r0, r1), _ = ranks
    from labelcb.sinkhorn import sinkhorn_knopp
    assert _same(r0['sela']['labels'], r1['sela']['labels'])
    assert r1['sela']['logits'] is None  # rank 1 never solves: it takes rank 0's labels
    logits = r0['sela']['logits']
    assert logits is not None and len(logits) == N_TRAIN
    # the gathered shares are every item's prediction, as one process makes them
    torch.testing.assert_close(r0['sela']['sharded'], r0['sela']['unsharded'])
    assert _same(r0['sela']['sharded'], r1['sela']['sharded'])
    assert _same(sinkhorn_knopp(logits, 25., inputs='logits', tol=0.1).labels, r0['sela']['labels'][0])


def test_offline_refinery_split_pass(ranks):
    (r0, r1), _ = ranks
    assert _same(r0['refinery']['targets'], r1['refinery']['targets'])
    given = torch.nn.functional.one_hot(r0['refinery']['given'], 10).float()
    torch.testing.assert_close(r0['refinery']['targets'], 0.5*given + 0.5*r0['refinery']['alone'])


def test_softlabel_identical(ranks):
    (r0, r1), _ = ranks
    assert _same(r0['softlabel']['targets'], r1['softlabel']['targets'])


def test_user_objects_restored_and_export_from_rank0(ranks):
    (r0, r1), _ = ranks
    for r in (r0, r1): assert all(r['plc']['restored'].values()), r['plc']['restored']
    assert r0['plc']['exported'] == 'CrossEntropyLossFlat'


def test_elr_targets_identical_and_each_item_once(ranks):
    (r0, r1), _ = ranks
    assert _same(r0['elr']['targets'], r1['elr']['targets'])
    for e in range(EPOCHS): assert sorted(r0['elr']['seen'][e] + r1['elr']['seen'][e]) == list(range(N_TRAIN))
    p = r0['elr']['alone'].clamp(1e-4, 1 - 1e-4)
    torch.testing.assert_close(r0['elr']['targets'], (1 - 0.7**EPOCHS)*p/p.sum(1, keepdim=True), atol=1e-5, rtol=1e-4)
    pd.testing.assert_frame_equal(r0['elr']['history'], r1['elr']['history'])
