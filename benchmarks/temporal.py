"""TemporalEnsemble and the Π-model against plain fastai on the bundled digits with few labels.

For each labelled fraction (`--per-class` labels per class kept among the 1077 training digits, the rest emptied with
`hide_labels`) and seed, on the same frame, split, seed, network and schedule (`fit_digits`: digits_cnn with Gaussian
input noise σ=0.15, 16 px with a random shift of up to 1 px per epoch, fit_one_cycle): plain fastai, which trains on the
labelled items only (`PartialCategoryBlock` labels the others -100, which the cross-entropy ignores); TemporalEnsemble();
PiModel(augment=RandomTranslate(1)). Accuracy on the test labels (360 digits). Timing (`--part timing`): plain vs
TemporalEnsemble, median of interleaved 5-epoch fits.

    python3 dev.py bench temporal [--part accuracy|timing|both] [--per-class 10 3] [--seeds 0 1 2] [--epochs 30] [--labelled-factor 4]

`--labelled-factor 4`: each labelled training row four times (`oversample`), for every method alike.

Writes benchmarks/results/temporal.csv (one row per fit), temporal.md (summary) and temporal_timing.md.
"""
import argparse, warnings
from pathlib import Path
import pandas as pd

warnings.filterwarnings('ignore', category=FutureWarning, module='torch')
from common import interleaved_fit_times, instrumented_share, oversample_labelled, run_info
from labelcb.all import (DEMO_METHODS, ConsistencyLoss, TemporalEnsemble, PiModel, RandomTranslate, digits_df, digits_test_accuracy, fit_digits, hide_labels)

OUT = Path(__file__).parent/'results'
SEMI = DEMO_METHODS['TemporalEnsemble'].fit_kwargs  # the demo's semi-supervised recipe: data, augmentation, input noise
METHODS = {'plain fastai (labelled items only)': lambda: [],
           'TemporalEnsemble()': lambda: [TemporalEnsemble()],
           'PiModel(augment=RandomTranslate(1))': lambda: [PiModel(augment=RandomTranslate(1))]}


def frame(per_class, seed):
    df = digits_df()
    return hide_labels(df, n_per_class=per_class, rows=df.split == 'train', seed=seed)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--per-class', type=int, nargs='+', default=[10, 3])
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--epochs', type=int, default=30)
    p.add_argument('--lr', type=float, default=1e-2)
    p.add_argument('--methods', nargs='+', default=list(METHODS))
    p.add_argument('--timing-reps', type=int, default=5)
    p.add_argument('--part', choices=['accuracy', 'timing', 'both'], default='both')
    p.add_argument('--labelled-factor', type=int, default=1, help='each labelled training row this many times (oversample); '
                   'results go to temporal_labelled_x<factor>.csv/.md, beside the plain-sampling ones')
    args = p.parse_args(argv)
    cmd, machine = run_info('temporal', argv)
    OUT.mkdir(exist_ok=True)
    if args.part in ('timing', 'both'):
        tab = interleaved_fit_times(frame(10, 0), {'plain': lambda: [], 'TemporalEnsemble': lambda: [TemporalEnsemble()]},
                                    args.timing_reps, 5, **SEMI)
        text = (f'# TemporalEnsemble benchmark: time over a plain fastai fit\n\nCommand: `{cmd}`  \nMachine: {machine}.\n\n'
                f'Median of {args.timing_reps} interleaved 5-epoch fits per method on the digits with 10 labels per class '
                '(digits_cnn with input noise, 16 px, random 1-px shift, num_workers=0), and the ratio of medians. '
                'TemporalEnsemble adds no forward pass: per batch it reads its items\' rows of the ensemble and writes back '
                'their softmax; once per epoch it updates the ensemble of the items seen.\n\n' + tab.to_string(index=False) + '\n')
        inst = instrumented_share(frame(10, 0), {'TemporalEnsemble': lambda: [TemporalEnsemble()]}, 5, (ConsistencyLoss,), **SEMI)
        text += ('\nWall-clock ratios on this shared 2-core machine move by ±15% from run to run (see `runs`), more than the '
                 'overhead being measured. So the time spent in labelcb itself is also measured inside one 5-epoch fit: every '
                 'event of the labelcb callbacks, the per-item index wrapper and the whole of `ConsistencyLoss.forward` (which '
                 'includes the cross-entropy a plain fit computes anyway, so this overstates the overhead).\n\n'
                 + inst.to_string(index=False) + '\n')
        (OUT/'temporal_timing.md').write_text(text)
        print('\n' + text)
    if args.part == 'timing': return
    rows = []
    for k in args.per_class:
        for seed in args.seeds:
            df = frame(k, seed)
            train_df = df if args.labelled_factor == 1 else oversample_labelled(df, 'label', args.labelled_factor, training=df.split == 'train')
            for name in args.methods:
                learn, secs = fit_digits(train_df, METHODS[name](), epochs=args.epochs, seed=seed, lr=args.lr, **SEMI)
                rows.append(dict(per_class=k, labels=int(df[df.split == 'train'].label.notna().sum()), seed=seed, method=name,
                                 test_accuracy=digits_test_accuracy(learn, df), seconds=secs))
                print(rows[-1], flush=True)
    res = pd.DataFrame(rows)
    stem = 'temporal' if args.labelled_factor == 1 else f'temporal_labelled_x{args.labelled_factor}'  # the ×k results beside, never over, the plain-sampling ones
    res.to_csv(OUT/f'{stem}.csv', index=False)
    (OUT/f'{stem}.md').write_text(summary(res, args, cmd, machine))
    print('\n' + (OUT/f'{stem}.md').read_text())


def summary(res, args, cmd, machine):
    lines = ['# TemporalEnsemble / Π-model benchmark\n', f'Command: `{cmd}`  ',
             f'Machine: {machine}. Digits: 1077 training images, of which `labels` keep their label; 360 validation and 360 test '
             f'images, all labelled. {args.epochs} epochs of fit_one_cycle (lr {args.lr}), batch 64, same frame, seed and network '
             'for every method. Accuracy on the test labels, mean ± sd over seeds (per seed in the CSV beside this file).'
             + (f' Every labelled training row {args.labelled_factor} times (`oversample`), for every method alike; plain sampling: temporal.md.'
                if args.labelled_factor > 1 else '') + '\n',
             '| labels | method | test accuracy | per seed | gain over plain | fit seconds |', '|---|---|---|---|---|---|']
    for k, g in res.groupby('per_class', sort=False):
        base = g[g.method == args.methods[0]].set_index('seed').test_accuracy
        for name in args.methods:
            m = g[g.method == name].set_index('seed')
            gain = (m.test_accuracy - base.loc[m.index]).mean()
            lines.append(f'| {int(m.labels.iloc[0])} ({k}/class) | {name} | {m.test_accuracy.mean():.3f} ± {m.test_accuracy.std():.3f} | '
                         f'{" ".join(f"{v:.3f}" for v in m.test_accuracy)} | {gain:+.3f} | {m.seconds.mean():.0f} |')
    lines.append('\nFit seconds come from fits run one after another while other work may share the 2 cores; '
                 'the time ratio is measured on its own in temporal_timing.md.\n')
    return '\n'.join(lines)


if __name__ == '__main__': main()
