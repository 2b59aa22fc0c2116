"""Label refinery chains on the bundled digits: clean-test accuracy per round, with and without augmentation, both modes.

For each augmentation setting and seed: `refinery_chain` with on-the-fly targets (R1 on the given labels, R2 on R1's
predictions of each augmented batch, R3 on R2's), then an offline chain refining the same R1 (`start=`: each teacher
predicts every training item once, un-augmented). digits_cnn at 16 px, fit_one_cycle(epochs, 1e-2) per round, round r
seeded with 100*seed + r - 1. Augmentation: a random shift of up to `shift` pixels (Resize(16+2*shift), RandomCrop(16)), the
shift/zoom of seed 000's Keras set-up in the form fastai's item transforms give it; the teacher labels the same crops.
Timing (`--part timing`): plain vs RefineryLoop on the fly vs offline, median of interleaved 5-epoch fits (the teacher is an
untrained digits_cnn: its forward costs what a trained one's does).

    python3 dev.py bench refinery [--part accuracy|timing|both] [--seeds 0 1 2] [--epochs 20] [--rounds 3] [--shifts 0 2]
                                  [--noise 0] [--timing-reps 5] [--tag NAME]

Writes benchmarks/results/refinery[_TAG].csv (one row per setting, seed, mode and round), refinery[_TAG].md, refinery_timing.md.
"""
import argparse, warnings
from pathlib import Path
import numpy as np
import pandas as pd

warnings.filterwarnings('ignore', category=FutureWarning, module='torch')
from common import interleaved_fit_times, run_info, md_table
from fastai.vision.all import Learner, accuracy, Resize, RandomCrop
from labelcb.all import (RefineryLoop, refinery_chain, digits_df, noisy_digits_df, digits_dls, digits_cnn, digits_test_accuracy)

OUT = Path(__file__).parent/'results'


def chains(df, seed, shift, epochs, rounds):
    "Rows of both chains (one R1) for one seed and augmentation setting"
    tfms = [Resize(16 + 2*shift), RandomCrop(16)] if shift else None
    make = lambda: Learner(digits_dls(df, size=16, bs=64, item_tfms=tfms), digits_cnn(10), metrics=accuracy)
    fit = lambda learn: learn.fit_one_cycle(epochs, 1e-2)
    otf = refinery_chain(make, rounds, fit, mode='on_the_fly', seed=100*seed, progress=False)
    off = refinery_chain(make, rounds, fit, mode='offline', seed=100*seed, start=otf.learners[0], progress=False)
    rows = []
    r1_secs = otf.rounds.seconds[0]
    for mode, ch in (('on_the_fly', otf), ('offline', off)):
        for (_, r), learn in zip(ch.rounds.iterrows(), ch.learners):
            if mode == 'offline' and r['round'] == 1: continue  # the same R1
            secs = r1_secs if r['round'] == 1 else r.seconds
            rows.append(dict(shift=shift, seed=seed, mode='—' if r['round'] == 1 else mode, round=int(r['round']),
                             test_acc=digits_test_accuracy(learn, df), valid_acc=r.accuracy, agreement=r.agreement,
                             seconds=secs, time_vs_r1=secs/r1_secs, teacher_seconds=r.teacher_seconds))
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--epochs', type=int, default=20, help='epochs of fit_one_cycle per round')
    p.add_argument('--rounds', type=int, default=3)
    p.add_argument('--shifts', type=int, nargs='+', default=[0, 2], help='augmentation settings: 0 = none, k = random shift up to k px')
    p.add_argument('--noise', type=float, default=0., help='symmetric noise rate of the training labels (0: the clean digits)')
    p.add_argument('--timing-reps', type=int, default=5)
    p.add_argument('--part', choices=['accuracy', 'timing', 'both'], default='both')
    p.add_argument('--tag', default='', help='suffix of the result files')
    args = p.parse_args(argv)
    cmd, machine = run_info('refinery', argv)
    OUT.mkdir(exist_ok=True)
    if args.part in ('timing', 'both'):
        text = timing(args, cmd, machine)
        (OUT/'refinery_timing.md').write_text(text)
        print('\n' + text)
    if args.part == 'timing': return
    df = noisy_digits_df(args.noise, 'symmetric', seed=0) if args.noise else digits_df()
    rows = [row for shift in args.shifts for seed in args.seeds for row in chains(df, seed, shift, args.epochs, args.rounds)]
    res = pd.DataFrame(rows)
    name = 'refinery' + (f'_{args.tag}' if args.tag else '')
    res.to_csv(OUT/f'{name}.csv', index=False)
    (OUT/f'{name}.md').write_text(summary(res, args, cmd, machine))
    print('\n' + (OUT/f'{name}.md').read_text())


def summary(res, args, cmd, machine):
    labels = f'{args.noise:.0%} symmetric noise in the training labels' if args.noise else 'the clean labels'
    g = res.groupby(['shift', 'mode', 'round'], sort=False)
    tab = g.agg(seeds=('seed', 'nunique'), test_acc=('test_acc', 'mean'), test_sd=('test_acc', 'std'),
                agreement=('agreement', 'mean'), seconds=('seconds', 'mean'), time_vs_r1=('time_vs_r1', 'mean'),
                teacher_seconds=('teacher_seconds', 'mean')).reset_index()
    tab['per_seed'] = [' '.join(f'{v:.3f}' for v in grp.test_acc) for _, grp in g]
    r1 = res[res['round'] == 1].set_index(['shift', 'seed']).test_acc
    deltas = []
    for _, t in tab.iterrows():
        sub = res[(res['shift'] == t['shift']) & (res['mode'] == t['mode']) & (res['round'] == t['round'])].set_index(['shift', 'seed'])
        d = sub.test_acc - r1.loc[sub.index]
        deltas.append(f'{d.mean():+.3f} ({int((d > 0).sum())}/{len(d)} seeds up)' if t['round'] > 1 else '')
    tab['vs_R1'] = deltas
    tab['augmentation'] = ['none' if s == 0 else f'shift ≤ {s} px' for s in tab['shift']]
    tab['test accuracy'] = [f'{m:.3f} ± {sd:.3f}' for m, sd in zip(tab.test_acc, tab.test_sd.fillna(0))]
    for c in ('agreement', 'time_vs_r1'): tab[c] = tab[c].map(lambda v: '' if pd.isna(v) else f'{v:.3f}')
    for c in ('seconds', 'teacher_seconds'): tab[c] = tab[c].map(lambda v: f'{v:.1f}')
    out = tab[['augmentation', 'mode', 'round', 'seeds', 'test accuracy', 'per_seed', 'vs_R1', 'agreement', 'seconds', 'time_vs_r1', 'teacher_seconds']]
    return '\n'.join([
        '# Label refinery on the digits\n', f'Command: `{cmd}`  ', f'Machine: {machine}.\n',
        f'digits_cnn at 16 px trained on the 1077 training digits with {labels}, fit_one_cycle({args.epochs}, 1e-2) per round; '
        f'accuracy on the 360 clean test digits, mean ± sd over seeds {", ".join(map(str, args.seeds))} (per seed in the csv). '
        'R1 trains on the given labels and is the plain fastai baseline (one R1 per seed serves both modes); R2 trains a fresh '
        'model on R1\'s softmax, R3 on R2\'s. `vs_R1`: mean change of test accuracy from the same seed\'s R1. `agreement`: '
        'validation predictions equal to the previous round\'s. `time_vs_r1`: the round\'s fit over R1\'s fit, same run; '
        '`teacher_seconds`: the offline pass over the training set (inside the fit\'s time).\n',
        md_table(out), ''])


def timing(args, cmd, machine, epochs=5):
    "Median of interleaved plain and refinery fits, and their ratio"
    df = digits_df()
    teacher = digits_cnn(10)
    tab = interleaved_fit_times(df, {'plain': lambda: [], 'on the fly': lambda: [RefineryLoop(teacher)],
                                     'offline': lambda: [RefineryLoop(teacher, mode='offline')]}, args.timing_reps, epochs)
    return (f'# Label refinery benchmark: time over a plain fastai fit\n\nCommand: `{cmd}`  \nMachine: {machine}.\n\n'
            f'Median of {args.timing_reps} interleaved {epochs}-epoch fits per method (digits_cnn at 16 px, bs 64, num_workers=0, '
            'no augmentation), and the ratio of medians. On the fly costs one no-grad teacher forward per training batch '
            '(target ≤ 1.4×); offline costs one pass over the training set before the first epoch, then one indexed read of '
            'the label table per batch.\n\n' + tab.to_string(index=False) + '\n')


if __name__ == '__main__': main()
