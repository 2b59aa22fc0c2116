"""Multi-label thresholds, test-time augmentation and progressive resizing, each against its plain counterpart.

- thresholds: the multi-digit images (2-3 digits side by side, 16x48), digits_cnn, fit_one_cycle(epochs, 1e-2). F2 (mean over
  images) on the 300 held-out test images at 0.5, at the best common threshold and at per-class thresholds, both tuned on
  the 300 validation images only.
- tta: digits at 20 px randomly cropped to 16 in training (shifts up to 2 px), fit_one_cycle(epochs, 1e-2). Clean-test
  accuracy of one plain pass vs `tta_predict(augment='fastai', n=4)` (4 random crops + the plain one; mean and max), and
  the dihedral TTA that is wrong for digits; the time of each prediction as a ratio of the plain pass (median of 3).
- dihedral: the shapes (6 classes, 32 px, 900 training images), trained with fastai's Dihedral batch transform,
  fit_one_cycle(epochs, 1e-2). Test accuracy of a plain pass vs the 8 dihedral views (mean, max) vs 4 random fastai passes.
- resize: the shapes at 64 px with Dihedral. Same total epochs: fixed 64 px; ProgressiveResize((0.5, 0.75, 1.)) in one
  fit_one_cycle; staged_fit at 32, 48, 64 px (each 1 frozen + the rest unfrozen epochs; body/head split). Test accuracy
  and fit seconds (ratio to fixed).

    python3 dev.py bench multilabel_tta_resize [--part thresholds tta dihedral resize] [--seeds 0 1 2] [--epochs 20]
                                               [--shape-epochs 25] [--resize-epochs 15] [--resize-seeds 0 1 2]

Writes benchmarks/results/multilabel_tta_resize_<part>.csv and .md, and multilabel_tta_resize.md (every part's latest section).
"""
import argparse, time, warnings
from pathlib import Path
import numpy as np
import pandas as pd

warnings.filterwarnings('ignore', category=FutureWarning, module='torch')
from common import run_info, md_table
from fastai.vision.all import Learner, accuracy, Resize, RandomCrop, Dihedral, ImageDataLoaders, set_seed, params
from labelcb.core import fit_quietly
from labelcb.all import (digits_df, digits_dls, digits_cnn, multi_digits_df, multi_digits_path, shapes_df, shapes_path,
                         multilabel_dls, fbeta_score, tune_thresholds, tta_predict, ProgressiveResize, staged_fit)

OUT = Path(__file__).parent/'results'


def quiet_fit(learn, epochs, lr=1e-2)->float:
    "fit_one_cycle(epochs, lr) without bars or logs; its seconds"
    return fit_quietly(learn, lambda l: l.fit_one_cycle(epochs, lr))


def thresholds(seeds, epochs):
    df = multi_digits_df()
    test = df[df.split == 'test']
    rows = []
    for seed in seeds:
        set_seed(seed)
        dls = multilabel_dls(df[df.split != 'test'], multi_digits_path(), item_tfms=Resize((16, 48)), bs=64, seed=seed)
        learn = Learner(dls, digits_cnn(dls.c))
        secs = quiet_fit(learn, epochs)
        with learn.no_bar(): pv, yv = learn.get_preds()  # one validation pass for both tunings
        pv = pd.DataFrame(pv.numpy(), columns=list(dls.vocab))
        th, common = tune_thresholds(pv, yv), tune_thresholds(pv, yv, per_class=False)
        with learn.no_bar(): p, _ = learn.get_preds(dl=dls.test_dl(test))
        y = test['labels'].str.get_dummies(sep=' ')[list(dls.vocab)].to_numpy()
        row = dict(seed=seed, valid_f2_at_05=th.attrs['score_at_0.5'], valid_f2_tuned=th.attrs['score'],
                   test_f2_at_05=fbeta_score(p, y, 0.5), test_f2_common=fbeta_score(p, y, common.iloc[0]),
                   test_f2_per_class=fbeta_score(p, y, th.values), common_threshold=common.iloc[0],
                   per_class_thresholds=' '.join(f'{v:.2f}' for v in th.values), fit_seconds=secs)
        print(row, flush=True); rows.append(row)
    return pd.DataFrame(rows)


def _timed(f, reps=3):
    secs, out = [], None
    for _ in range(reps):
        t = time.perf_counter(); out = f(); secs.append(time.perf_counter() - t)
    return out, float(np.median(secs))


def tta(seeds, epochs):
    df = digits_df()
    test = df[df.split == 'test']
    truth = test.label.to_numpy()
    rows = []
    for seed in seeds:
        set_seed(seed)
        dls = digits_dls(df, size=20, bs=64, item_tfms=[Resize(20), RandomCrop(16)], seed=seed)
        learn = Learner(dls, digits_cnn(10), metrics=accuracy)
        quiet_fit(learn, epochs)
        tta_predict(learn, test, None, progress=False)  # warm up
        res = {}
        for name, kw in [('plain', dict(augment=None)), ('fastai n=4 mean', dict(augment='fastai', n=4)),
                         ('fastai n=4 max', dict(augment='fastai', n=4, combine='max')), ('dihedral mean (wrong for digits)', dict(augment='dihedral'))]:
            set_seed(1000 + seed)
            probs, secs = _timed(lambda: tta_predict(learn, test, progress=False, **kw))
            res[name] = (float((probs.to_numpy().argmax(1) == truth).mean()), secs)
        for name, (acc, secs) in res.items():
            row = dict(seed=seed, prediction=name, test_accuracy=acc, seconds=secs, time_vs_plain=secs/res['plain'][1])
            print(row, flush=True); rows.append(row)
    return pd.DataFrame(rows)


def shapes_dls(size, seed, bs=64):
    df = shapes_df()
    return ImageDataLoaders.from_df(df[df.split != 'test'], shapes_path(), fn_col='file', label_col='label', valid_col='is_valid',
                                    item_tfms=Resize(size), batch_tfms=[Dihedral()], bs=bs, seed=seed)


def shapes_accuracy(probs, vocab):
    test = shapes_df().query("split == 'test'")
    return float((np.array(vocab)[probs.to_numpy().argmax(1)] == test.label.to_numpy()).mean())


def dihedral(seeds, epochs):
    test = shapes_df().query("split == 'test'")
    rows = []
    for seed in seeds:
        set_seed(seed)
        dls = shapes_dls(32, seed)
        learn = Learner(dls, digits_cnn(dls.c), metrics=accuracy)
        secs = quiet_fit(learn, epochs)
        for name, kw in [('plain', dict(augment=None)), ('dihedral mean', dict(augment='dihedral')),
                         ('dihedral max', dict(augment='dihedral', combine='max')), ('fastai n=4 mean', dict(augment='fastai', n=4))]:
            set_seed(1000 + seed)
            t = time.perf_counter()
            probs = tta_predict(learn, test, progress=False, **kw)
            row = dict(seed=seed, prediction=name, test_accuracy=shapes_accuracy(probs, dls.vocab), seconds=time.perf_counter() - t, fit_seconds=secs)
            print(row, flush=True); rows.append(row)
    return pd.DataFrame(rows)


def body_head(m): return [params(m[:-3]), params(m[-3:])]


def resize(seeds, epochs):
    test = shapes_df().query("split == 'test'")
    rows = []
    per_stage = (1, epochs//3 - 1)
    for seed in seeds:
        for method in ('fixed 64 px', 'ProgressiveResize 32-48-64', 'staged_fit 32-48-64'):
            set_seed(seed)
            dls = shapes_dls(64, seed)
            learn = Learner(dls, digits_cnn(dls.c), metrics=accuracy, splitter=body_head,
                            cbs=[ProgressiveResize((0.5, 0.75, 1.))] if method.startswith('Progressive') else [])
            t = time.perf_counter()
            if method.startswith('staged'):
                staged_fit(learn, lambda s: shapes_dls(s, seed), sizes=(32, 48, 64), epochs=per_stage, lr=1e-2, quiet=True)
                n = 3*sum(per_stage)
            else:
                quiet_fit(learn, epochs); n = epochs
            secs = time.perf_counter() - t
            probs = tta_predict(learn, test, None, progress=False)
            row = dict(seed=seed, method=method, epochs=n, test_accuracy=shapes_accuracy(probs, learn.dls.vocab), fit_seconds=secs)
            print(row, flush=True); rows.append(row)
    res = pd.DataFrame(rows)
    res['time_vs_fixed'] = res.fit_seconds/res.seed.map(res[res.method == 'fixed 64 px'].set_index('seed').fit_seconds)
    return res


def summary(part, res):
    if part == 'thresholds':
        cols = ['valid_f2_at_05', 'valid_f2_tuned', 'test_f2_at_05', 'test_f2_common', 'test_f2_per_class', 'common_threshold']
        s = res[cols].agg(['mean', 'std']).T.round(4).reset_index().rename(columns={'index': 'figure'})
        s['per seed'] = [' '.join(f'{v:.4f}' for v in res[c]) for c in cols]
        return s
    key = 'method' if part == 'resize' else 'prediction'
    agg = dict(test_accuracy=('test_accuracy', 'mean'), std=('test_accuracy', 'std'),
               per_seed=('test_accuracy', lambda v: ' '.join(f'{x:.3f}' for x in v)))
    if 'time_vs_plain' in res: agg['time_vs_plain'] = ('time_vs_plain', 'median')
    if 'time_vs_fixed' in res: agg['time_vs_fixed'] = ('time_vs_fixed', 'median')
    if 'seconds' in res: agg['seconds'] = ('seconds', 'median')
    if 'fit_seconds' in res and part == 'resize': agg['fit_seconds'] = ('fit_seconds', 'median')
    return res.groupby(key, sort=False).agg(**agg).round(4).reset_index()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--part', nargs='+', default=['thresholds', 'tta', 'dihedral', 'resize'], choices=['thresholds', 'tta', 'dihedral', 'resize'])
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    ap.add_argument('--epochs', type=int, default=20)
    ap.add_argument('--shape-epochs', type=int, default=25)
    ap.add_argument('--resize-epochs', type=int, default=15)
    ap.add_argument('--resize-seeds', type=int, nargs='+', default=[0, 1, 2])
    a = ap.parse_args()
    cmd, machine = run_info('multilabel_tta_resize')
    OUT.mkdir(exist_ok=True)
    runs = dict(thresholds=lambda: thresholds(a.seeds, a.epochs), tta=lambda: tta(a.seeds, a.epochs),
                dihedral=lambda: dihedral(a.seeds, a.shape_epochs), resize=lambda: resize(a.resize_seeds, a.resize_epochs))
    for part in a.part:
        t = time.perf_counter()
        res = runs[part]()
        res.to_csv(OUT/f'multilabel_tta_resize_{part}.csv', index=False)
        section = f'## {part}\n\nCommand: `{cmd}`\n\nMachine: {machine}; {time.perf_counter() - t:.0f} s\n\n' + md_table(summary(part, res)) + '\n'
        (OUT/f'multilabel_tta_resize_{part}.md').write_text(section)
        print('\n' + section, flush=True)
    # the combined page: every part's latest section, whichever run made it
    parts = [OUT/f'multilabel_tta_resize_{p}.md' for p in ('thresholds', 'tta', 'dihedral', 'resize')]
    (OUT/'multilabel_tta_resize.md').write_text('# Multi-label thresholds, TTA and progressive resizing\n\n' +
                                               '\n'.join(f.read_text() for f in parts if f.exists()))

if __name__ == '__main__':
    main()
