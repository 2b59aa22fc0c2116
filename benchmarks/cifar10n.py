"""Every labelcb method on CIFAR-10N: natural photographs with real human label noise, against plain fastai on the same budget.

The data is a folder in the layout of `../shared/data/cifar10n` (see its README): `labels.csv` with `file`, `split`
(train/test) and one column per label set, plus the image files. It is read in place, through fastai as a user would:
a DataFrame of files and labels -> `DataBlock` (ImageBlock, CategoryBlock), the standard CIFAR augmentation (zero-pad to
40 px and take a random 32 px crop, random horizontal flip; fastai's `CropPad`, `RandomCrop`, `FlipItem`) and per-channel
normalisation (`cifar_stats`).

One recipe for every row of a run: the same `--n-train` training images (a fixed random subset of the training split,
the same for every seed and label set), the same 1,000 held-out training images as fastai's validation set (labelled
with the run's label set, as a user's own data would be: nothing is selected on it), `cifar_resnet(--width)` (a
ResNet-9-shaped network for 32 px) from scratch, `fit_one_cycle(--epochs, --lr)`, batch size 128. Every row is scored on
the clean labels of the test split (5,000 images), never seen in training.

Rows (`--methods`; label sets with `--labels`):
  plain          plain fastai on the label set (on `clean`: the clean-label ceiling)
  plc_diff       PLC('diff') (the default; rows before wave 3, fp32, are today's PLC.paper('diff')); also: precision/recall of its corrections against `clean`, share of final labels right
  plc_ratio      PLC('ratio'); the same figures
  softlabel      --folds-fold OOF (`cross_validate`, same recipe per fold), label_audit vs cleanlab's find_label_issues on
                 the very same OOF probabilities (precision/recall of flags against the labels that differ from `clean`),
                 then a final fit with SoftLabel(oof); its time counts the fold loop
  refinery       RefineryLoop R2 trained on R1 = this seed's plain model (saved by the plain row; retrained if missing)
  partial_plain  partly labelled: `--labelled-frac` of the training images keep their `clean` label, the rest none;
                 plain fastai (the unlabelled items add nothing to the loss)
  temporal       TemporalEnsemble on the same partly labelled frame
  pimodel        PiModel on it
  sela           SelfLabelSinkhorn without labels (K=10, λ=10: the paper's CIFAR λ); NMI/ARI/Hungarian accuracy of the
                 training clusters against `clean`, linear probe on its features; k-means on pixels and a random-weights
                 network on the same images as baselines

    python3 dev.py bench cifar10n [--data DIR] [--labels worse random1] [--methods ...] [--seeds 0 1 2] [--epochs 15]
                                  [--n-train 10000] [--width 16] [--fresh] [--report-only]
    python3 dev.py bench cifar10n --rules     # PLC's rules applied once to each saved plain model (cifar10n_plc_rules.md)
    python3 dev.py bench cifar10n --timing    # each method's fit time over plain's, interleaved; run it alone (cifar10n_timing.md)

Each finished row is written at once to benchmarks/results/cifar10n.csv (or --out), keyed by (labels, method, seed,
n_train, epochs, width); rows already there are skipped, so an interrupted run resumes. `--fresh` starts the file over.
benchmarks/results/cifar10n.md is rewritten from the whole CSV after every row.
"""
import argparse, os, platform, sys, time, warnings
from pathlib import Path
import numpy as np
import pandas as pd

warnings.filterwarnings('ignore', category=FutureWarning)
sys.path.insert(0, str(Path(__file__).parent))
from common import md_table, oversample_labelled
warnings.filterwarnings('ignore', category=UserWarning, module='torch')
ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).parent/'results'
KEY = ['labels', 'method', 'seed', 'n_train', 'epochs', 'width', 'precision']
NOISY_METHODS = ['plain', 'plc_diff', 'plc_ratio', 'softlabel', 'refinery', 'elr', 'clean_drop', 'clean_weight', 'clean_relabel']
OOF_METHODS = ('softlabel', 'clean_drop', 'clean_weight', 'clean_relabel', 'clean_weight_oof15', 'clean_weight_elr_oof15')  # rows that share one OOF per seed and label set
OOF_EPOCHS = {'clean_weight_oof15': 15, 'clean_weight_elr_oof15': 15}  # rows whose OOF comes from folds of this budget, not --epochs: audit short, retrain long
PARTIAL_METHODS = ['partial_plain', 'temporal', 'pimodel']
SELA_METHODS = {'sela': (10, 1), 'sela_paper': (128, 10)}  # (K, heads); sela_paper: the paper's CIFAR setting
ALL_METHODS = NOISY_METHODS + PARTIAL_METHODS + ['sela', 'sela_paper']
PARTIAL_DIAGNOSTICS = ['temporal_w10', 'temporal_w30', 'pimodel_w30',  # consistency weights, unscaled by M/N
                       'partial_plain_os4', 'temporal_os4', 'pimodel_os4']  # labelled rows oversampled ×4: about a quarter of each batch labelled (Mean Teacher: 31 of 128)
OVERSAMPLED = '_os4'
DIAGNOSTIC_METHODS = PARTIAL_DIAGNOSTICS + ['plc_diff_p3', 'plc_diff_w50', 'plc_ratio_w50', 'elr_paper', 'elr_lam1', 'elr_s50', 'elr_model', 'elr_model_p3', 'plain_trace', 'clean_weight_oof15', 'clean_weight_elr_oof15']  # plain_trace: plain, saving each epoch's training-pass softmax per item  # PLC with its correction phase starting half-way: a question, not a default
# what each row is compared with, as the md tables say it
COMPARED = dict(plain='clean-label ceiling (plain on clean)', plc_diff='plain, same labels and seed', plc_ratio='plain, same labels and seed',
                softlabel='plain, same labels and seed', refinery='plain (= its R1), same labels and seed',
                partial_plain='plain on clean (all labels)', temporal='partial_plain, same seed', pimodel='partial_plain, same seed',
                temporal_w10='partial_plain, same seed (diagnostic: w 10, not scaled by M/N)', temporal_w30='partial_plain, same seed (diagnostic: w 30, not scaled by M/N)',
                pimodel_w30='partial_plain, same seed (diagnostic: w 30, not scaled by M/N)',
                partial_plain_os4='partial_plain, same seed (diagnostic: labelled rows ×4)', temporal_os4='partial_plain_os4, same seed (labelled rows ×4 in both)',
                pimodel_os4='partial_plain_os4, same seed (labelled rows ×4 in both)',
                sela='k-means on pixels; random-weights network', sela_paper='k-means on pixels; random-weights network (K=128, 10 heads)', plain_trace='plain, same labels and seed',
                elr='plain, same labels and seed', clean_drop='plain, same labels and seed (time: + its OOF folds)',
                clean_weight='plain, same labels and seed (time: + its OOF folds)', clean_relabel='plain, same labels and seed (time: + its OOF folds)',
                elr_paper='plain, same labels and seed (diagnostic: ELR as the paper sets it)', elr_lam1='plain, same labels and seed (diagnostic: ELR λ=1)',
                elr_s50='plain, same labels and seed (diagnostic: ELR from half-way)',
                plc_diff_w50='plain, same labels and seed (diagnostic: warm-up 50%)', plc_diff_p3='plain, same labels and seed (diagnostic: ModelReady(patience=3))', elr_model='plain, same labels and seed', elr_model_p3='plain, same labels and seed (diagnostic: ModelReady(patience=3))', clean_weight_oof15='plain, same labels and seed (time: + its 15-epoch OOF folds)', clean_weight_elr_oof15='plain, same labels and seed (diagnostic: the 15-epoch audit\'s weights, then ELR(start=0.5); time: + its OOF folds)', plc_ratio_w50='plain, same labels and seed (diagnostic: warm-up 50%)')


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--data', default=str(ROOT.parent/'shared'/'data'/'cifar10n'), help='folder with labels.csv and the images')
    p.add_argument('--labels', nargs='+', default=['worse', 'random1'], help='label sets of the noisy rows (columns of labels.csv)')
    p.add_argument('--methods', nargs='+', default=ALL_METHODS, help=f'any of {ALL_METHODS}')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2], help="seeds of plain and PLC('diff') on the first label set")
    p.add_argument('--other-seeds', type=int, nargs='+', default=[0], help='seeds of every other row')
    p.add_argument('--epochs', type=int, default=15)
    p.add_argument('--n-train', type=int, default=10000)
    p.add_argument('--n-valid', type=int, default=1000)
    p.add_argument('--width', type=int, default=16, help='channels of the first block of cifar_resnet (x2, x4, x8 after)')
    p.add_argument('--lr', type=float, default=3e-3)
    p.add_argument('--bs', type=int, default=128)
    p.add_argument('--folds', type=int, default=4, help="SoftLabel's OOF folds")
    p.add_argument('--labelled-frac', type=float, default=0.08, help='partly labelled rows: fraction of training images labelled')
    p.add_argument('--precision', default='bf16', choices=['bf16', 'fp32'], help='bf16: bfloat16 autocast and channels_last on the CPU '
                   '(about 1.7x faster here, see cifar10n_precision.md); fp32: the first wave\'s recipe')
    p.add_argument('--workers', type=int, default=0, help="DataLoader workers (0: in the training process; 2 cores here)")
    p.add_argument('--out', default=str(OUT/'cifar10n.csv'))
    p.add_argument('--fresh', action='store_true', help='start the CSV over')
    p.add_argument('--no-ceiling', action='store_true', help='leave out the clean-label ceiling row that the plain rows bring')
    p.add_argument('--report-only', action='store_true', help='only rewrite the md from the CSV')
    p.add_argument('--timing', action='store_true', help='only time each method\'s fit against plain fastai, interleaved, '
                   '--timing-reps times, --timing-epochs epochs each (run it alone: writes cifar10n_timing.md)')
    p.add_argument('--timing-reps', type=int, default=3)
    p.add_argument('--timing-epochs', type=int, default=2)
    p.add_argument('--rules', action='store_true', help="only apply PLC's two rules, at several thresholds, to each saved plain model's "
                   'predictions of its training items, and score what they would flip against `clean` (writes cifar10n_plc_rules.md)')
    args = p.parse_args(argv)
    bad = [m for m in args.methods if m not in ALL_METHODS + DIAGNOSTIC_METHODS]
    if bad: p.error(f'unknown methods {bad}; known: {ALL_METHODS} (and the diagnostics {DIAGNOSTIC_METHODS})')
    data = Path(args.data)
    if not args.report_only and not (data/'labels.csv').is_file(): p.error(f'no labels.csv in {data}: --data is a folder in the cifar10n layout')
    return args


# ---------------------------------------------------------------- data and recipe
def load_frames(args):
    "(train pool frame: the n_train training rows + n_valid held-out rows with is_valid, test frame), fixed for every run"
    df = pd.read_csv(Path(args.data)/'labels.csv')
    need = {'file', 'split', 'clean'} | set(args.labels)
    if need - set(df.columns): raise SystemExit(f'labels.csv lacks the columns {sorted(need - set(df.columns))}')
    train, test = df[df.split == 'train'], df[df.split == 'test']
    if args.n_train + args.n_valid > len(train): raise SystemExit(f'--n-train + --n-valid = {args.n_train + args.n_valid} > {len(train)} training images')
    perm = np.random.default_rng(12345).permutation(len(train))  # one subset for every seed and label set
    pool = train.iloc[perm[:args.n_train + args.n_valid]].copy()
    pool['is_valid'] = False
    pool.iloc[args.n_train:, pool.columns.get_loc('is_valid')] = True
    missing = [f for f in pd.concat([pool.file, test.file]) if not (Path(args.data)/f).is_file()]
    if missing: raise SystemExit(f'{len(missing)} image files are missing, e.g. {missing[:3]}')
    return pool, test.reset_index(drop=True)


class _Decoded:
    "The images decoded once, kept in memory: fastai's PILImage, created from a file name at most once per process"
    cache = {}
    @classmethod
    def create(cls, fn, **kwargs):
        from fastai.vision.all import PILImage
        img = cls.cache.get(fn)
        if img is None:
            img = cls.cache[fn] = PILImage.create(fn, **kwargs)
            img.load()
        return img  # fastai's item transforms make new images: the cached one is never changed


def make_dls(args, frame, label_col, partial=False):
    from fastai.vision.all import (DataBlock, ImageBlock, CategoryBlock, ColReader, ColSplitter, CropPad, RandomCrop,
                                   FlipItem, Normalize, cifar_stats, PadMode)
    from labelcb.partial import PartialCategoryBlock
    block = DataBlock(blocks=(ImageBlock(_Decoded), PartialCategoryBlock if partial else CategoryBlock),
                      get_x=ColReader('file', pref=str(Path(args.data)) + os.sep), get_y=ColReader(label_col),
                      splitter=ColSplitter('is_valid'),
                      item_tfms=[CropPad(40, pad_mode=PadMode.Zeros), RandomCrop(32), FlipItem(0.5)],
                      batch_tfms=Normalize.from_stats(*cifar_stats))
    return block.dataloaders(frame, bs=args.bs, num_workers=args.workers)


def cifar_resnet(c:int=10, width:int=16):
    "A ResNet-9-shaped network for 32 px images (Page's DAWNBench design), `width` channels in its first block"
    from torch import nn
    from fastai.layers import ConvLayer
    def res(ni): return nn.Sequential(ConvLayer(ni, ni), ConvLayer(ni, ni))
    class Residual(nn.Module):
        def __init__(self, m): super().__init__(); self.m = m
        def forward(self, x): return x + self.m(x)
    w = width
    return nn.Sequential(ConvLayer(3, w), ConvLayer(w, 2*w), nn.MaxPool2d(2), Residual(res(2*w)),
                         ConvLayer(2*w, 4*w), nn.MaxPool2d(2), ConvLayer(4*w, 8*w), nn.MaxPool2d(2), Residual(res(8*w)),
                         nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(8*w, c))


class CPUBFloat16:
    "bfloat16 autocast and channels_last on the CPU (fastai's MixedPrecision autocasts on 'cuda' only)"
    def __new__(cls):
        import torch
        from fastai.callback.core import Callback
        class _CPUBFloat16(Callback):
            order = 10  # where fastai's MixedPrecision sits
            def before_fit(self): self.learn.model.to(memory_format=torch.channels_last)
            def before_batch(self):
                self.learn.xb = tuple(x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x for x in self.xb)
                self.ac = torch.autocast('cpu', dtype=torch.bfloat16); self.ac.__enter__()
            def after_pred(self): self.learn.pred = self.pred.float()
            def after_loss(self): self._exit()
            def after_batch(self): self._exit()  # get_preds has no loss step
            def _exit(self):
                if getattr(self, 'ac', None) is not None: self.ac.__exit__(None, None, None); self.ac = None
        return _CPUBFloat16()


class CleanValidAccuracy:
    """A fastai metric: accuracy of the held-out rows against their clean labels, per epoch, in the same validation pass
    (the validation loader is not shuffled, so the i-th prediction is the i-th held-out row)"""
    def __new__(cls, dls):
        from fastai.metrics import Metric
        ds = dls.valid_ds
        items = getattr(ds, 'items', None)
        if not isinstance(items, pd.DataFrame) or 'clean' not in items: return None
        vocab = list(dls.vocab)
        import torch
        clean = torch.tensor([vocab.index(c) if c in vocab else -1 for c in items.clean])
        class _CleanAcc(Metric):
            def reset(self): self.n, self.right = 0, 0
            def accumulate(self, learn):
                if hasattr(learn, 'gather_preds') or learn.training: return
                k = len(learn.pred)
                self.right += int((learn.pred.argmax(-1).cpu() == clean[self.n:self.n + k]).sum()); self.n += k
            @property
            def value(self): return self.right/self.n if self.n == len(clean) else float('nan')  # a get_preds pass is not one
            @property
            def name(self): return 'clean_acc'
        return _CleanAcc()


class TrainTrace:
    "Each training epoch's softmax of every training item (from the training pass, as PLC sees it), in dataset order"
    def __new__(cls):
        import torch
        from fastai.callback.core import Callback
        from labelcb.all import ensure_item_index
        class _TrainTrace(Callback):
            order = 1
            def after_create(self): ensure_item_index(self.learn)
            def before_train(self):
                if self.epoch == 0: self.probs = []  # get_preds runs before_fit too: start over only with a fit's first epoch
                self.cur = torch.zeros(len(self.dls.train_ds), self.dls.c)
            def after_pred(self):
                if self.training: self.cur[self.learn.item_index.idx] = self.pred.detach().float().softmax(-1).cpu()
            def after_train(self): self.probs.append(self.cur.numpy().astype(np.float16))
        return _TrainTrace()


def make_learner(args, dls, cbs=(), metrics=True):
    from fastai.vision.all import Learner, accuracy, ProgressCallback
    cbs = list(cbs) + ([CPUBFloat16()] if getattr(args, 'precision', 'fp32') == 'bf16' else [])
    metrics = ([accuracy] + [m for m in [CleanValidAccuracy(dls)] if m is not None]) if metrics else []
    learn = Learner(dls, cifar_resnet(dls.c, args.width), metrics=metrics, cbs=cbs)
    learn.remove_cb(ProgressCallback)
    return learn


def fit(args, learn):
    "fit_one_cycle(epochs, lr) without bars or logs; the seconds it took"
    t = time.perf_counter()
    with learn.no_logging(): learn.fit_one_cycle(args.epochs, args.lr)
    return time.perf_counter() - t


def test_accuracy(learn, test):
    "Accuracy on the clean labels of the test images"
    preds, _ = learn.get_preds(dl=learn.dls.test_dl(test, with_labels=False))
    vocab = list(learn.dls.vocab)
    return float((np.array(vocab, dtype=object)[preds.argmax(1).numpy()] == test.clean.values).mean())


def truth_of(pool, table):
    "Clean label of every item of a label table, in table order (the table's ids are the frame's index)"
    return pool.loc[table.ids, 'clean'].values


def correction_scores(table, truth):
    "PLC's corrections against the clean labels: precision (changed labels now right), recall (wrong labels repaired), final labels right"
    vocab = np.array(table.vocab, dtype=object)
    now, orig, changed = vocab[table.labels.numpy()], vocab[table.original.numpy()], table.changed.numpy()
    wrong = orig != truth
    return dict(changed=int(changed.sum()), corr_precision=float((now[changed] == truth[changed]).mean()) if changed.any() else np.nan,
                corr_recall=float((now[wrong] == truth[wrong]).mean()) if wrong.any() else np.nan,
                broken=float((now[~wrong] != truth[~wrong]).mean()), labels_right_before=float((orig == truth).mean()),
                labels_right_after=float((now == truth).mean()))


def plain_weights(args, labels, seed):
    p = '' if args.precision == 'fp32' else f'_{args.precision}'
    return ROOT/'benchmarks'/'out'/'cifar10n'/f'plain_{labels}_s{seed}_n{args.n_train}_e{args.epochs}_w{args.width}{p}'


def valid_clean_accuracy(learn, pool):
    """Accuracy on the held-out training-split rows against their clean labels: what settings are chosen on (never the
    test images; CIFAR-10N gives the clean labels of its training split for this)"""
    valid = pool[pool.is_valid]
    preds, _ = learn.get_preds(dl=learn.dls.test_dl(valid, with_labels=False))
    return float((np.array(list(learn.dls.vocab), dtype=object)[preds.argmax(1).numpy()] == valid.clean.values).mean())


def oof_for(args, labels, seed, pool):
    """The k-fold OOF of the training rows for one label set and seed (`cross_validate`, the row's recipe per fold), computed
    once and shared by every row that uses it (SoftLabel, clean-then-retrain), cached under benchmarks/out"""
    import pickle
    from labelcb.all import cross_validate
    f = plain_weights(args, labels, seed).with_name(plain_weights(args, labels, seed).name.replace('plain_', f'oof{args.folds}_') + '.pkl')
    if f.is_file(): return pickle.loads(f.read_bytes())
    train = pool[~pool.is_valid].copy()
    train['fold'] = np.random.default_rng(seed).permutation(np.arange(len(train)) % args.folds)
    def fold_dls(d, k): return make_dls(args, d.assign(is_valid=d.fold == k), labels)
    res = cross_validate(train, fold_dls, lambda dls: make_learner(args, dls), fit=lambda l: l.fit_one_cycle(args.epochs, args.lr),
                         seed=seed, progress=False)
    f.parent.mkdir(parents=True, exist_ok=True); f.write_bytes(pickle.dumps(res))
    return res


# ---------------------------------------------------------------- rows
def run_noisy(args, method, labels, seed, pool, test):
    from fastai.vision.all import set_seed
    from labelcb.all import PLC, SoftLabel, RefineryLoop, label_audit, ELR, ModelReady
    row = {}
    frame = pool
    if method in OOF_METHODS:  # k-fold OOF on the training rows, same recipe per fold, shared by these rows
        train = pool[~pool.is_valid]
        res = oof_for(argparse.Namespace(**{**vars(args), 'epochs': OOF_EPOCHS[method]}) if method in OOF_EPOCHS else args, labels, seed, pool)
        row.update(prep_seconds=res.seconds, oof_acc_given=res.oof_accuracy,
                   oof_acc_clean=float((np.array(res.vocab, dtype=object)[res.probs.values.argmax(1)] == train.loc[res.probs.index, 'clean'].values).mean()))
        row.update(audit_rows(res, train))
        oof = res
        if method.startswith('clean_'):  # the second stage: a copy of the frame, flagged items dropped / down-weighted / relabelled
            from labelcb.all import clean_labels
            mode = method.split('_')[1]
            frame = clean_labels(pool, res, labels, mode=mode, audit=label_audit(res))
            kept = frame[~frame.is_valid]
            row.update(n_train_kept=len(kept), labels_right_after=float((kept[labels] == kept.clean).mean()),
                       labels_right_before=float((train[labels] == train.clean).mean()))
    set_seed(seed)
    dls = make_dls(args, frame, labels)
    if method == 'plain': cbs = []
    elif method == 'plain_trace': cbs = [TrainTrace()]
    elif method == 'plc_diff': cbs = [PLC('diff')]
    elif method == 'plc_ratio': cbs = [PLC('ratio')]
    elif method == 'plc_diff_w50': cbs = [PLC('diff', warmup=0.5)]
    elif method == 'plc_diff_p3':
        cbs = [PLC('diff', ready=ModelReady(patience=3))]  # readiness after 3 level epochs, not 2
    elif method == 'plc_ratio_w50': cbs = [PLC('ratio', warmup=0.5)]
    elif method == 'softlabel': cbs = [SoftLabel(oof)]
    elif method in ('clean_drop', 'clean_relabel'): cbs = []
    elif method.startswith('clean_weight'):
        from labelcb.all import ItemWeights
        cbs = [ItemWeights(frame['weight'])] + ([ELR(start=0.5)] if '_elr' in method else [])  # _elr: the audit's weights, then ELR on top
    elif method == 'elr': cbs = [ELR()]
    elif method == 'elr_paper': cbs = [ELR(lam=3., start=0)]
    elif method == 'elr_lam1': cbs = [ELR(lam=1., start=0)]
    elif method == 'elr_s50': cbs = [ELR(start=0.5)]
    elif method == 'elr_model': cbs = [ELR(start='model')]
    elif method == 'elr_model_p3': cbs = [ELR(start='model', ready=ModelReady(patience=3))]  # the start PLC() has: 3 level epochs after the learning rate's peak
    elif method == 'refinery':
        w = plain_weights(args, labels, seed)
        r1 = make_learner(args, dls)
        if w.with_suffix('.pth').is_file(): r1.load(w, with_opt=False); row['prep_seconds'] = 0.
        else:
            set_seed(seed); row['prep_seconds'] = fit(args, r1)
        row['r1_test_acc'] = test_accuracy(r1, test)
        row.update({f'r1_{k}': v for k, v in memorisation(r1, pool, labels).items()})  # R1 is this seed's plain model
        set_seed(seed)
        dls = make_dls(args, pool, labels)
        cbs = [RefineryLoop(r1)]
    learn = make_learner(args, dls, cbs)
    secs = fit(args, learn)
    row['valid_curve'] = ' '.join(f'{v[2]:.3f}' for v in learn.recorder.values)  # before get_preds rewrites the recorder
    row['valid_clean_curve'] = ' '.join(f'{v[3]:.3f}' for v in learn.recorder.values if len(v) > 3)
    row.update(test_acc=test_accuracy(learn, test), seconds=secs, valid_clean_acc=valid_clean_accuracy(learn, pool))
    if getattr(cbs[0] if cbs else None, 'ready', None) is not None:  # PLC, ELR(start='model'): each epoch's held-out accuracy on the given labels, * once ready
        row['ready_log'] = ' '.join(f"{o['acc']:.3f}{'*' if o['ready'] else ''}" for o in cbs[0].ready.log)
    elr = next((cb for cb in cbs if isinstance(cb, ELR)), None)
    if elr is not None:  # per epoch: λ/penalty/targets naming the given label; at the end, targets naming the clean label
        row['per_epoch'] = ' '.join(f'{h["epoch"]}:{h["lam"]:.1f}/{h["reg"]:.2f}/{h["agree"]:.2f}' for h in elr.history)
        t = elr.table
        row['elr_target_right'] = float((np.array(t.vocab, dtype=object)[t.state['elr'].argmax(1).cpu().numpy()] == truth_of(pool, t)).mean())
    row.update(memorisation(learn, pool, labels))
    if method == 'plain_trace':  # for judging correction rules offline, on the training labels only
        t = plain_weights(args, labels, seed).with_name(plain_weights(args, labels, seed).name.replace('plain_', 'trace_') + '.npz')
        np.savez_compressed(t, probs=np.stack(cbs[0].probs), valid_acc=np.array(row['valid_curve'].split(), dtype=float),
                            items=dls.train_ds.items.index.values)
    if method == 'plain':
        w = plain_weights(args, labels, seed); w.parent.mkdir(parents=True, exist_ok=True)
        learn.save(w, with_opt=False)  # the refinery row's R1
    if method.startswith('plc'):
        plc = cbs[0]
        truth = truth_of(pool, plc.table)
        row.update(correction_scores(plc.table, truth))
        # what it did when: per epoch, the threshold, the corrections, and the share of them that went to the clean label
        log = plc.table.log
        right = log.new.values == pd.Series(truth, index=plc.table.ids).loc[log.item].values
        per = pd.DataFrame(plc.history).set_index('epoch').join(pd.Series(right, index=log.epoch.values).groupby(level=0).mean().rename('right'))
        row['per_epoch'] = ' '.join(f'{e}:{r.corrections}@{r.threshold:.2f}/{r.right:.2f}' if r.corrections else f'{e}:0@{r.threshold:.2f}'
                                    for e, r in per.iterrows())
    return row


def memorisation(learn, pool, labels):
    "On the training items whose given label is wrong: the share the final model predicts as given (memorised) and as clean"
    train = pool[~pool.is_valid]
    wrong = train[train[labels] != train.clean]
    if not len(wrong): return {}
    preds, _ = learn.get_preds(dl=learn.dls.test_dl(wrong, with_labels=False))
    pred = np.array(list(learn.dls.vocab), dtype=object)[preds.argmax(1).numpy()]
    return dict(wrong_items_predicted_as_given=float((pred == wrong[labels].values).mean()),
                wrong_items_predicted_clean=float((pred == wrong.clean.values).mean()))


def audit_rows(res, train):
    "labelcb's label_audit and cleanlab's find_label_issues on the same OOF probabilities: precision/recall of their flags"
    from cleanlab.filter import find_label_issues
    from labelcb.all import label_audit
    wrong = pd.Series(train.loc[res.probs.index, 'clean'].values != res.given.values, index=res.probs.index)
    labels, probs = res.cleanlab_inputs()
    a = label_audit(res)
    ours = a.is_label_issue.loc[res.probs.index].values
    theirs = find_label_issues(labels, probs, filter_by='prune_by_noise_rate')
    def pr(flags):
        f, w = np.asarray(flags, bool), wrong.values
        return (float(w[f].mean()) if f.any() else np.nan), float(f[w].mean()) if w.any() else np.nan
    (p1, r1), (p2, r2) = pr(ours), pr(theirs)
    return dict(noisy_share=float(wrong.mean()), audit_flagged=int(ours.sum()), audit_precision=p1, audit_recall=r1,
                cleanlab_flagged=int(theirs.sum()), cleanlab_precision=p2, cleanlab_recall=r2, audit_same_flags=float((ours == theirs).mean()))


def run_partial(args, method, seed, pool, test):
    from fastai.vision.all import set_seed
    from labelcb.all import TemporalEnsemble, PiModel, hide_labels
    frame = hide_labels(pool, 'clean', frac=args.labelled_frac, rows=~pool.is_valid.values, seed=seed, true_col=None)
    if method.endswith(OVERSAMPLED):  # every labelled training row four times (copies share the item: one ensemble target each)
        frame = oversample_labelled(frame, 'clean', 4, training=~frame.is_valid)
        method = method[:-len(OVERSAMPLED)]
    set_seed(seed)
    dls = make_dls(args, frame, 'clean', partial=True)
    cbs = {'partial_plain': lambda: [], 'temporal': lambda: [TemporalEnsemble()], 'pimodel': lambda: [PiModel()],
           'temporal_w10': lambda: [TemporalEnsemble(w_max=10., scale_w=False)], 'temporal_w30': lambda: [TemporalEnsemble(w_max=30., scale_w=False)],
           'pimodel_w30': lambda: [PiModel(w_max=30., scale_w=False)]}[method]()  # only this row's callback is made
    learn = make_learner(args, dls, cbs)
    secs = fit(args, learn)
    row = dict(valid_curve=' '.join(f'{v[2]:.3f}' for v in learn.recorder.values))  # held-out rows, clean labels: what settings are chosen on
    if cbs:  # the consistency term against the supervised one, per epoch: does it matter?
        h = pd.DataFrame(cbs[0].history)
        row['unsup_over_sup'] = ' '.join(f'{r:.3f}' for r in (h.w*h.unsup_loss/h.sup_loss.clip(lower=1e-12)))
    if isinstance(cbs[0] if cbs else None, TemporalEnsemble) and not isinstance(cbs[0], PiModel):
        pl = cbs[0].pseudo_labels()  # the unlabelled training items' ensemble targets against their clean labels
        row['targets_right'] = float((pl.label.values == pool.loc[pl.index, 'clean'].values).mean())
    row.update(test_acc=test_accuracy(learn, test), seconds=secs, valid_clean_acc=valid_clean_accuracy(learn, pool),
               n_labelled=int(frame.loc[~frame.is_valid, 'clean'].dropna().index.nunique()))  # items, not oversampled copies
    return row


def run_sela(args, seed, pool, test, k=10, heads=1):
    """SeLa on the training images (labels unused), scored against `clean`: head 0's clusters (NMI, ARI, matched accuracy) and a
    linear probe on the features before the heads; k-means on pixels and a random network of the same shape as baselines, at K=10
    and, if `k` differs, at K=k too (NMI grows with the number of clusters)"""
    from fastai.vision.all import set_seed
    from sklearn.cluster import KMeans
    from labelcb.selflabel import SelfLabelSinkhorn, cluster_scores, head_features, probe_accuracy
    train = pool[~pool.is_valid]
    set_seed(seed)
    dls = make_dls(args, pool, 'clean')
    row = dict(sela_k=k, sela_heads=heads)
    ks = [10] + ([k] if k != 10 else [])
    # baselines: raw pixels, and a random-weights network of the same shape
    t = time.perf_counter()
    from PIL import Image
    def pixels(frame): return np.stack([np.asarray(Image.open(Path(args.data)/f), dtype=np.float32).ravel()/255 for f in frame.file])
    ptr = pixels(train)
    for kk in ks:
        sfx = '' if kk == 10 else f'_k{kk}'
        km = cluster_scores(KMeans(kk, n_init=3, random_state=seed).fit_predict(ptr), train.clean.values)
        row.update({f'kmeans_pixels_{m}{sfx}': km[m] for m in ('nmi', 'ari', 'acc')})
    row['kmeans_seconds'] = time.perf_counter() - t
    set_seed(seed)
    rnd = make_learner(args, dls)
    ftr, ytr = head_features(rnd, train); fte, yte = head_features(rnd, test.assign(is_valid=True))
    for kk in ks:
        sfx = '' if kk == 10 else f'_k{kk}'
        kr = cluster_scores(KMeans(kk, n_init=3, random_state=seed).fit_predict(ftr), train.clean.values)
        row.update({f'random_net_{m}{sfx}': kr[m] for m in ('nmi', 'ari', 'acc')})
    row['random_net_probe'] = probe_accuracy(ftr, ytr, fte, yte)
    set_seed(seed)
    sela = SelfLabelSinkhorn(k=k, heads=heads, lam=10., seed=seed)
    from fastai.callback.core import Callback
    class PerEpoch(Callback):  # where along the fit the clusters improve: head 0's NMI against `clean` after each epoch
        order = sela.order + 1
        def before_fit(self): self.nmi = []
        def after_epoch(self): self.nmi.append(sela.scores()['nmi'])
    track = PerEpoch()
    learn = make_learner(args, dls, [sela, track], metrics=False)  # clusters are not classes (and several heads are not one output)
    secs = fit(args, learn)
    h = pd.DataFrame(sela.history)
    h0 = h[h['head'] == 0]
    row.update(nmi_curve=' '.join(f'{v:.3f}' for v in track.nmi), relabel_changed=' '.join(f'{v:.3f}' for v in h0.changed),
               relabel_seconds=float(h.seconds.sum()),  # the pass over the training items and every head's Sinkhorn-Knopp, per re-assignment, added up
               sizes_head0=' '.join(map(str, np.bincount(sela.labels[0].cpu().numpy(), minlength=k)[:20])))
    s = sela.scores()  # head 0 against the labels of the training items (clean here: the DataLoaders were made on `clean`)
    row.update({f'sela_{m}': s[m] for m in ('nmi', 'ari', 'acc')}, seconds=secs)
    ftr, ytr = head_features(learn, train); fte, yte = head_features(learn, test.assign(is_valid=True))
    row['sela_probe'] = probe_accuracy(ftr, ytr, fte, yte)
    preds, _ = learn.get_preds(dl=learn.dls.test_dl(test, with_labels=False))
    p0 = preds if preds.ndim == 2 else preds[:, 0]  # head 0
    row['test_acc'] = float(cluster_scores(p0.argmax(-1).numpy(), test.clean.values)['acc'])  # clusters matched to classes
    return row


def plc_rules(args, cmd):
    """What PLC's rules would do with a finished plain model: for each label set and seed with saved plain weights, apply the
    'diff' rule (p_ŷ − p_y > θ) and the 'ratio' rule (p_y/p_ŷ < δ) to its eval-mode predictions of the training items, and
    score the flips against `clean`. A model that is right where it is confident makes precise flips at a high threshold."""
    pool, test = load_frames(args)
    train, rows = pool[~pool.is_valid], []
    for labels in args.labels:
        for seed in sorted(set(args.seeds) | set(args.other_seeds)):
            w = plain_weights(args, labels, seed)
            if not w.with_suffix('.pth').is_file(): continue
            dls = make_dls(args, pool, labels)
            learn = make_learner(args, dls)
            learn.load(w, with_opt=False)
            p, _ = learn.get_preds(dl=dls.test_dl(train, with_labels=False))
            vocab = list(dls.vocab)
            y, c = np.array([vocab.index(v) for v in train[labels]]), np.array([vocab.index(v) for v in train.clean])
            p = p.numpy(); yhat = p.argmax(1); pmax = p.max(1); py = p[np.arange(len(p)), y]
            base = dict(labels=labels, seed=seed, model_right_vs_given=(yhat == y).mean(), model_right_vs_clean=(yhat == c).mean())
            for rule, thr, flip in [('diff', t, (yhat != y) & (pmax - py > t)) for t in (0.05, 0.1, 0.2, 0.3, 0.5, 0.7)] + \
                                   [('ratio', d, (yhat != y) & (py/pmax < d)) for d in (0.1, 0.2, 0.3, 0.5)]:
                wrong = y != c
                rows.append(dict(base, rule=rule, threshold=thr, flipped=int(flip.sum()),
                                 precision=float((yhat[flip] == c[flip]).mean()) if flip.any() else np.nan,
                                 fixed=int((flip & (yhat == c)).sum()), broken=int((flip & ~wrong).sum()),
                                 labels_right_after=float((np.where(flip, yhat, y) == c).mean()), labels_right_before=float((y == c).mean())))
    df = pd.DataFrame(rows)
    text = ('# What PLC\'s rules would do with a finished plain model\n\nCommand: `' + cmd + '`\n\n' + plc_rules.__doc__.strip() +
            '\n\nfixed: flipped to the clean label; broken: a clean label flipped away.\n\n' + md_table(df.round(3)) + '\n')
    (OUT/'cifar10n_plc_rules.md').write_text(text)
    print(text)


def timing(args, cmd):
    """Seconds of each method's fit next to plain fastai's, on the same data and schedule, the methods interleaved and repeated
    so that background load hits them alike; the ratio of medians. What a method costs before its fit (SoftLabel's fold
    loop, the refinery's R1) is a whole number of plain fits and is not in these ratios."""
    from labelcb.all import PLC, SoftLabel, RefineryLoop, TemporalEnsemble, PiModel, hide_labels
    from labelcb.selflabel import SelfLabelSinkhorn
    pool, test = load_frames(args)
    partial = hide_labels(pool, 'clean', frac=args.labelled_frac, rows=~pool.is_valid.values, seed=0, true_col=None)
    train = pool[~pool.is_valid]
    lab = args.labels[0]
    vocab = sorted(pool[lab].unique())
    flat = pd.DataFrame(np.full((len(train), len(vocab)), 1/len(vocab)), index=train.index, columns=vocab)  # SoftLabel's per-batch cost does not depend on the values
    make = {'plain': (lab, False, lambda dls: []), 'plc_diff': (lab, False, lambda dls: [PLC('diff')]),
            'plc_ratio': (lab, False, lambda dls: [PLC('ratio')]), 'softlabel': (lab, False, lambda dls: [SoftLabel(flat)]),
            'refinery': (lab, False, lambda dls: [RefineryLoop(make_learner(args, dls).model)]),
            'temporal': ('clean', True, lambda dls: [TemporalEnsemble()]), 'pimodel': ('clean', True, lambda dls: [PiModel()]),
            'sela': ('clean', False, lambda dls: [SelfLabelSinkhorn(k=10, lam=10.)])}
    make = {k: v for k, v in make.items() if k == 'plain' or k in args.methods}
    secs = {m: [] for m in make}
    e = args.epochs; args.epochs = args.timing_epochs
    try:
        for r in range(args.timing_reps):
            for m, (col, part, cbs) in make.items():
                dls = make_dls(args, partial if part else pool, col, partial=part)
                secs[m].append(fit(args, make_learner(args, dls, cbs(dls))))
                print(f'rep {r} {m:>10}: {secs[m][-1]:.1f} s', flush=True)
    finally: args.epochs = e
    med = {m: float(np.median(v)) for m, v in secs.items()}
    df = pd.DataFrame([dict(method=m, median_seconds=round(med[m], 1), time_vs_plain=round(med[m]/med['plain'], 3),
                            runs=' '.join(f'{v:.1f}' for v in secs[m])) for m in make])
    import torch
    text = (f'# CIFAR-10N: time of each method\'s fit over plain fastai\'s\n\nCommand: `{cmd}`  \nMachine: {platform.machine()}, '
            f'{torch.get_num_threads()} torch threads, torch {torch.__version__}.\n\n' + timing.__doc__.strip() +
            f'\n\n{args.timing_reps} reps of {args.timing_epochs}-epoch fits on {args.n_train} images.\n\n' + md_table(df) + '\n')
    (OUT/'cifar10n_timing.md').write_text(text)
    print(text)


# ---------------------------------------------------------------- bookkeeping
def done_rows(path:Path)->pd.DataFrame:
    if not (path.is_file() and path.stat().st_size): return pd.DataFrame(columns=KEY)
    df = pd.read_csv(path)
    df['precision'] = df['precision'].fillna('fp32') if 'precision' in df else 'fp32'  # the first wave's rows: float32
    return df


def append_row(path:Path, row:dict):
    import fcntl
    with open(path.with_suffix('.lock'), 'w') as lock:  # two benchmark processes (one per core) append to one CSV
        fcntl.flock(lock, fcntl.LOCK_EX)
        df = done_rows(path)
        df = pd.concat([df, pd.DataFrame([row])], ignore_index=True) if len(df) else pd.DataFrame([row])
        tmp = path.with_suffix('.tmp'); df.to_csv(tmp, index=False); tmp.replace(path)  # a stop mid-write leaves the old file


def plan(args):
    """Rows to run, most informative first: the ceiling; plain and PLC('diff') on each label set; PLC('ratio') on the first;
    the other seeds of plain and PLC('diff') on the first label set; the other noisy-label methods; partly labelled; no labels"""
    first, s0 = args.labels[0], args.other_seeds[0]
    rows = [('clean', 'plain', s0)] if 'plain' in args.methods and not args.no_ceiling else []
    core = [m for m in ('plain', 'plc_diff') if m in args.methods]
    rows += [(lab, m, s0) for lab in args.labels for m in core]
    rows += [(first, 'plc_ratio', s0)] if 'plc_ratio' in args.methods else []  # the official rule next to the paper's
    rows += [(first, m, s) for s in args.seeds for m in core]
    rows += [(lab, m, s) for s in args.other_seeds for lab in args.labels for m in NOISY_METHODS if m in args.methods and m not in core]
    rows += [(f'clean_{args.labelled_frac:.0%}', m, s) for s in args.other_seeds for m in PARTIAL_METHODS + PARTIAL_DIAGNOSTICS if m in args.methods]
    rows += [('none', m, s) for s in args.other_seeds for m in SELA_METHODS if m in args.methods]
    rows += [(lab, m, s) for s in args.other_seeds for lab in args.labels for m in DIAGNOSTIC_METHODS if m in args.methods and m not in PARTIAL_DIAGNOSTICS]
    return list(dict.fromkeys(rows))  # each row once


def main(argv=None):
    args = parse(argv)
    path = Path(args.out); path.parent.mkdir(parents=True, exist_ok=True)
    cmd = 'python3 dev.py bench cifar10n ' + ' '.join(sys.argv[1:] if argv is None else argv)
    if args.fresh and path.exists(): path.unlink()
    if args.report_only: return report(path, cmd)
    if args.rules: return plc_rules(args, cmd)
    if args.timing: return timing(args, cmd)
    import torch
    pool, test = load_frames(args)
    for labels, method, seed in plan(args):
        key = dict(labels=labels, method=method, seed=seed, n_train=args.n_train, epochs=args.epochs, width=args.width, precision=args.precision)
        done = done_rows(path)
        if len(done) and (done[KEY].astype(str) == pd.Series({k: str(v) for k, v in key.items()})).all(axis=1).any():
            print(f'skip (done): {key}', flush=True); continue
        print(f'run: {key}', flush=True)
        t = time.perf_counter()
        if method in PARTIAL_METHODS + PARTIAL_DIAGNOSTICS: r = run_partial(args, method, seed, pool, test)
        elif method in NOISY_METHODS + DIAGNOSTIC_METHODS: r = run_noisy(args, method, labels, seed, pool, test)
        else: r = run_sela(args, seed, pool, test, *SELA_METHODS[method])
        row = dict(**key, **r, total_seconds=time.perf_counter() - t, compared_with=COMPARED[method],
                   machine=f'{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}',
                   finished=time.strftime('%Y-%m-%d %H:%M'))
        append_row(path, row)
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
        report(path, cmd)


HEADLINE_METHODS = dict(plain='plain fastai', elr='`ELR()`', clean_drop="clean, then retrain ('drop')",
                        clean_weight="clean, then retrain ('weight')",
                        clean_weight_oof15="clean, then retrain ('weight', from the 15-epoch audit)", clean_weight_elr_oof15="clean, then retrain ('weight', from the 15-epoch audit) with `ELR(start=0.5)`",
                        clean_relabel="clean, then retrain ('relabel')",
                        softlabel='`SoftLabel` (k-fold OOF)', refinery='`RefineryLoop` R2', plc_diff_p3="`PLC()` (from when the model is ready: 3 level epochs)", plc_diff="`PLC(ready=ModelReady(patience=2))` (the default until 3)", plc_ratio="`PLC('ratio')`",
                        elr_paper='`ELR()` (the default: the paper\'s λ = 3 from the first epoch)', elr_s50='`ELR(start=0.5)`',
                        elr_model="`ELR(start='model')` (measured with ModelReady(patience=2))",
                        elr_model_p3="`ELR(start='model')` (from when the model is ready: 3 level epochs)")


def headline(df:pd.DataFrame, n_train=10000, width=16, precision='bf16')->str:
    """The README's headline table from the CSV: per label set and method, clean-test accuracy (mean ± sd over seeds), the gain
    over plain fastai paired by seed (mean ± sd), and the time over plain's fit counting fold fits and R1"""
    every = df[(df.n_train == n_train) & (df.width == width) & (df.precision == precision)]
    if not len(every): return ''
    rows = []
    for (lab, epochs) in [(lab, e) for e in sorted(every.epochs.unique()) for lab in ('worse', 'random1', 'clean')]:
        g = every[every.epochs == epochs]
        base = g[(g.labels == lab) & (g.method == 'plain')].set_index('seed')
        for m, name in HEADLINE_METHODS.items():
            if lab == 'clean' and m == 'plain': continue  # the ceiling, in the table's last rows; a method on clean labels: what it costs when there is nothing to fix
            h = g[(g.labels == lab) & (g.method == m)].set_index('seed')
            if not len(h): continue
            acc = h.test_acc
            cell = f'{acc.mean():.3f}' + (f' ± {acc.std():.3f}' if len(acc) > 1 else '')
            gain = (acc - base.test_acc).dropna()
            prep = h.prep_seconds.fillna(0) if 'prep_seconds' in h else 0
            ratio = ((h.seconds + prep)/base.seconds).dropna()
            rows.append(dict(labels=f'`{lab}`', budget=f'{epochs} epochs', method=name, seeds=len(acc), test_acc=cell,
                             gain='' if m == 'plain' else (f'{gain.mean():+.3f}' + (f' ± {gain.std():.3f}' if len(gain) > 1 else '')
                                                           + f' ({int((gain > 0).sum())}/{len(gain)} seeds up)' if len(gain) else 'no plain row'),
                             time='' if m == 'plain' else (f'{ratio.mean():.1f}×' if len(ratio) else '')))
    clean = every[(every.labels == 'clean') & (every.method == 'plain')]
    t = pd.DataFrame(rows)
    head = '| label set | budget | method | seeds | clean-test accuracy | gain over plain (paired by seed) | time over plain |\n|---|---|---|---|---|---|---|\n'
    body = ''.join(f'| {r.labels} | {r.budget} | {r.method} | {r.seeds} | {r.test_acc} | {r.gain} | {r.time} |\n' for r in t.itertuples())
    foot = ''.join(f'| `clean` | {e} epochs | plain fastai (the ceiling) | {len(a)} | {a.mean():.3f} |  |  |\n'
                   for e, a in clean.groupby('epochs').test_acc)
    return head + body + foot


PARTIAL_CURVE_NOTE = ('800 of the 10,000 training images labelled (clean labels, 8%), the rest unlabelled; clean-test accuracy per budget '
                      '(epochs of fit_one_cycle), mean over the seeds run, bf16; gain: over plain fastai on the same budget and sampling, paired by seed '
                      '(it trains on the labelled images, the same steps; `_os4`: every labelled row four times); valid: the 1,000 held-out training-split images (clean labels), what settings are chosen on.')


def partial_base(method:str)->str:
    "The plain row a partly labelled row is compared with: plain on the same sampling; plain on the oversampled frame is compared with plain"
    return 'partial_plain' + (OVERSAMPLED if method.endswith(OVERSAMPLED) and method != 'partial_plain' + OVERSAMPLED else '')


def partial_curve(df:pd.DataFrame, n_train=10000, width=16, precision='bf16')->pd.DataFrame:
    "Partly labelled rows as a budget curve: one row per method and budget, with the gain over plain on that budget"
    g = df[df.method.isin(PARTIAL_METHODS + PARTIAL_DIAGNOSTICS) & (df.n_train == n_train) & (df.width == width) & (df.precision == precision)]
    rows = []
    for (m, e), h in g.groupby(['method', 'epochs'], sort=False):
        base = g[(g.method == partial_base(m)) & (g.epochs == e) & g.seed.isin(h.seed)].set_index('seed')
        gain = (h.set_index('seed').test_acc - base.test_acc).dropna()
        vgain = (h.set_index('seed').valid_clean_acc - base.valid_clean_acc).dropna() if 'valid_clean_acc' in h else pd.Series(dtype=float)
        rows.append(dict(method=m, epochs=int(e), seeds=len(h), test_acc=round(h.test_acc.mean(), 3),
                         gain='' if m == 'partial_plain' else (f'{gain.mean():+.3f}' if len(gain) else 'no plain row'),
                         valid_acc=round(h.valid_clean_acc.mean(), 3) if 'valid_clean_acc' in h and h.valid_clean_acc.notna().any() else '',
                         valid_gain='' if m == 'partial_plain' or not len(vgain) else f'{vgain.mean():+.3f}',
                         targets_right=round(h.targets_right.mean(), 3) if 'targets_right' in h and h.targets_right.notna().any() else '',
                         time_vs_plain='' if m == 'partial_plain' or not len(base) else f'{(h.set_index("seed").seconds/base.seconds).mean():.2f}x'))
    if not rows: return pd.DataFrame()
    return pd.DataFrame(rows).sort_values(['method', 'epochs'], key=lambda c: c.map({'partial_plain': 0, 'temporal': 1, 'pimodel': 2}).fillna(3) if c.name == 'method' else c)


def _mean_sd(s): return f'{s.mean():.3f}' + (f' ± {s.std():.3f} (n={len(s)})' if len(s) > 1 else ' (n=1)')


def report(path:Path, cmd:str):
    "benchmarks/results/cifar10n.md from the whole CSV"
    df = done_rows(path)
    if not len(df): return
    lines = ['# CIFAR-10N: every method on real human label noise\n',
             'Commands: `python3 dev.py bench cifar10n` makes every row of the default plan (it resumes where it stopped); the '
             "diagnostic rows (`plc_*_w50`) come from `python3 dev.py bench cifar10n --methods plc_diff_w50 plc_ratio_w50`; "
             '`--report-only` rewrites this file from the CSV. Last writer: `' + cmd + '`.  ',
             f'Machine: {df.machine.iloc[-1]} (each row\'s machine and torch threads are in the CSV). Rows finished: {len(df)}; '
             'see the CSV for every figure.\n']
    for (n, e, w, prec), g in df.groupby(['n_train', 'epochs', 'width', 'precision']):
        lines.append(f'## {n} training images, {e} epochs, cifar_resnet(width={w}), {prec}\n')
        ceiling = g[(g.labels == 'clean') & (g.method == 'plain')]
        if len(ceiling): lines.append(f'Clean-label ceiling (plain fastai on `clean`): {_mean_sd(ceiling.test_acc)} clean-test accuracy.\n')
        noisy = g[g.method.isin(NOISY_METHODS + DIAGNOSTIC_METHODS) & ~g.method.isin(PARTIAL_DIAGNOSTICS) & (g.labels != 'clean')]  # partly labelled rows: their own table
        if len(noisy):
            rows = []
            for (lab, m), h in noisy.groupby(['labels', 'method'], sort=False):
                base = noisy[(noisy.labels == lab) & (noisy.method == 'plain') & noisy.seed.isin(h.seed)]
                gain = (h.set_index('seed').test_acc - base.set_index('seed').test_acc).dropna()
                hs = h.set_index('seed')
                prep = hs.prep_seconds.fillna(0) if 'prep_seconds' in hs else 0
                ratio = (hs.seconds + prep)/base.set_index('seed').seconds
                r = dict(labels=lab, method=m, test_acc=_mean_sd(h.test_acc),
                         gain_over_plain='' if m == 'plain' else (f'{gain.mean():+.3f}' if len(gain) else 'no plain row'),
                         time_vs_plain='' if m == 'plain' else (f'{ratio.dropna().mean():.2f}x' if ratio.notna().any() else ''))
                for c in ('corr_precision', 'corr_recall', 'labels_right_before', 'labels_right_after', 'r1_test_acc'):
                    if c in h and h[c].notna().any(): r[c] = f'{h[c].mean():.3f}'
                rows.append(r)
            lines += ['### Noisy labels\n', 'Clean-test accuracy; gain and time over plain fastai on the same labels and seeds '
                      '(time of SoftLabel and RefineryLoop includes their fold loop / R1 fit). The time ratios are of fits that ran '
                      'while other work shared the 2 cores (tests, a second benchmark process), so they say little; time a method '
                      'alone before quoting it. corr_precision: PLC\'s changed labels that are now the clean label; corr_recall: '
                      'wrong labels that are now clean; labels_right: share of training labels equal to `clean` before/after.\n',
                      md_table(pd.DataFrame(rows).fillna('')), '']
            mem = noisy[noisy.get('wrong_items_predicted_as_given', pd.Series(dtype=float)).notna()] if 'wrong_items_predicted_as_given' in noisy else noisy.iloc[:0]
            if len(mem):
                lines += ['Memorisation: on the training items whose given label is wrong, the share the final model predicts as '
                          'given (memorised) and as the clean label. valid_curve: accuracy on the held-out rows (noisy labels) per epoch.\n',
                          md_table(mem[['labels', 'method', 'seed', 'wrong_items_predicted_as_given', 'wrong_items_predicted_clean', 'valid_curve']].round(3)), '']
            per = noisy[noisy.get('per_epoch', pd.Series(dtype=object)).notna()] if 'per_epoch' in noisy else noisy.iloc[:0]
            if len(per):
                lines += ["PLC per training epoch, `epoch:corrections@threshold/share of them to the clean label` (θ for 'diff', δ for 'ratio'):\n"]
                lines += [f'- {r.labels} {r.method} seed {r.seed}: {r.per_epoch}' for r in per.itertuples()] + ['']
        audit = noisy[noisy.method == 'softlabel']
        if len(audit):
            cols = ['labels', 'seed', 'noisy_share', 'oof_acc_given', 'oof_acc_clean', 'audit_flagged', 'audit_precision', 'audit_recall',
                    'cleanlab_flagged', 'cleanlab_precision', 'cleanlab_recall', 'audit_same_flags']
            lines += ['### Label audit on the OOF probabilities (labelcb `label_audit` vs cleanlab `find_label_issues`, both prune_by_noise_rate)\n',
                      'Precision: flagged items whose label differs from `clean`; recall: such items flagged.\n',
                      md_table(audit[cols].round(3)), '']
        part = g[g.method.isin(PARTIAL_METHODS + PARTIAL_DIAGNOSTICS)]
        if len(part):
            rows = []
            for m, h in part.groupby('method', sort=False):
                base = part[(part.method == partial_base(m)) & part.seed.isin(h.seed)].set_index('seed')
                rows.append(dict(labels=h.labels.iloc[0], method=m, n_labelled=int(h.n_labelled.iloc[0]), test_acc=_mean_sd(h.test_acc),
                                 gain_over_plain='' if m == 'partial_plain' else f'{(h.set_index("seed").test_acc - base.test_acc).mean():+.3f}',
                                 time_vs_plain='' if m == 'partial_plain' else f'{(h.set_index("seed").seconds/base.seconds).mean():.2f}x'))
            lines += ['### Partly labelled\n', md_table(pd.DataFrame(rows)), '']
        sela = g[g.method.isin(list(SELA_METHODS))]
        if len(sela):
            cols = [c for c in sela.columns if c.startswith(('sela_', 'kmeans_pixels_', 'random_net_'))] + ['test_acc', 'seconds']
            lines += ['### No labels (SelfLabelSinkhorn, λ=10: `sela` K=10, one head; `sela_paper` K=128, 10 heads, scored on head 0)\n', 'NMI/ARI/acc (Hungarian) of the training clusters '
                      'against `clean`; probe: logistic regression on the features before the head, test accuracy; test_acc: '
                      "SeLa's test clusters matched to classes.\n", md_table(sela[['method', 'seed'] + cols].round(3)), '']
    curve = partial_curve(df)
    if len(curve): lines += ['## Partly labelled: the budget curve\n', f'{PARTIAL_CURVE_NOTE}\n', md_table(curve), '']
    (path.with_suffix('.md')).write_text('\n'.join(lines) + '\n')
    hl = headline(df)
    if hl: path.with_name(path.stem + '_headline.md').write_text(hl)


if __name__ == '__main__': main()
