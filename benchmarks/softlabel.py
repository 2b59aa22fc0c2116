"""SoftLabel and the label audit on the bundled digits with symmetric noise in the training labels, against plain fastai and cleanlab.

For each noise rate and seed: 5-fold out-of-fold (OOF) probabilities of the 1077 noisy training rows (`digits_oof`: digits_cnn,
16 px, 10 epochs of fit_one_cycle per fold), timed. Then:
  * audit: labelcb's `label_audit` and cleanlab's `find_label_issues` on the same OOF probabilities, with the same two
    rules (cleanlab's default 'prune_by_noise_rate', and 'confident_learning' = labelcb's 'confident_joint'): precision
    (flags that are real errors) and recall (errors flagged) against the injected noise;
  * at the SoftLabel rate (30%): the final model trained 20 epochs (`fit_digits`) plain and with SoftLabel(oof, a=0.7),
    same split and seed; accuracy on the clean test labels.
Timing (`--part timing`): plain vs SoftLabel, median of interleaved 5-epoch fits.

    python3 dev.py bench softlabel [--part accuracy|timing|both] [--seeds 0 1 2] [--audit-seeds 0] [--rates 0.1 0.2 0.4] [--timing-reps 5]

(--seeds at the SoftLabel rate, where both SoftLabel and the audit are measured; --audit-seeds at the other rates: each
seed and rate costs one 5-fold loop, about 2.5 minutes here.)

Writes benchmarks/results/softlabel.csv (one row per seed and rate), softlabel.md (summary), softlabel_timing.md.
"""
import argparse, time, warnings
from pathlib import Path
import numpy as np
import pandas as pd

warnings.filterwarnings('ignore', category=FutureWarning, module='torch')
from common import interleaved_fit_times, run_info
from labelcb.all import (SoftLabel, digits_oof, fit_digits, noisy_digits_df, digits_test_accuracy, label_audit, audit_scores)

OUT = Path(__file__).parent/'results'


def audit_rows(res, df):
    "Precision/recall of labelcb's and cleanlab's flags on the same OOF probabilities"
    from cleanlab.filter import find_label_issues
    train = df[df.split == 'train']
    truth = train.true_label
    labels, probs = res.cleanlab_inputs()
    rows = {}
    for ours, theirs in (('prune_by_noise_rate', 'prune_by_noise_rate'), ('confident_joint', 'confident_learning')):
        t = time.perf_counter(); a = label_audit(res, method=ours); t_ours = time.perf_counter() - t
        t = time.perf_counter(); flags = find_label_issues(labels, probs, filter_by=theirs); t_cl = time.perf_counter() - t
        cl = a.copy(); cl['is_label_issue'] = pd.Series(flags, index=res.probs.index).loc[a.index].values
        so, sc = audit_scores(a, truth), audit_scores(cl, truth)
        agree = float((a.is_label_issue.sort_index().values == flags).mean())
        rows[ours] = dict(labelcb_flagged=int(a.is_label_issue.sum()), labelcb_precision=so['precision'], labelcb_recall=so['recall'],
                          cleanlab_flagged=int(flags.sum()), cleanlab_precision=sc['precision'], cleanlab_recall=sc['recall'],
                          same_flags=agree, labelcb_audit_s=t_ours, cleanlab_s=t_cl)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2], help='seeds at the SoftLabel rate')
    p.add_argument('--audit-seeds', type=int, nargs='+', default=[0], help='seeds at the other rates (audit only)')
    p.add_argument('--rates', type=float, nargs='+', default=[0.1, 0.2, 0.4], help='audit-only noise rates (the SoftLabel rate is added)')
    p.add_argument('--softlabel-rate', type=float, default=0.3)
    p.add_argument('--epochs', type=int, default=20, help='epochs of the final fits')
    p.add_argument('--fold-epochs', type=int, default=10)
    p.add_argument('--folds', type=int, default=5)
    p.add_argument('--a', type=float, default=0.7)
    p.add_argument('--timing-reps', type=int, default=5)
    p.add_argument('--part', choices=['accuracy', 'timing', 'both'], default='both')
    args = p.parse_args(argv)
    cmd, machine = run_info('softlabel', argv)
    OUT.mkdir(exist_ok=True)
    if args.part in ('timing', 'both'):
        text = timing(args, cmd, machine)
        (OUT/'softlabel_timing.md').write_text(text)
        print('\n' + text)
    if args.part == 'timing': return
    rows = []
    rates = sorted(set(args.rates) | {args.softlabel_rate})
    for rate in rates:
        for seed in (args.seeds if abs(rate - args.softlabel_rate) < 1e-9 else args.audit_seeds):
            df = noisy_digits_df(rate, 'symmetric', seed=seed)
            train = df[df.split == 'train']
            res = digits_oof(df, seed=seed, n_folds=args.folds, epochs=args.fold_epochs)
            row = dict(rate=rate, seed=seed, fold_loop_s=res.seconds,
                       oof_acc_given=res.oof_accuracy, oof_acc_true=float((res.probs.values.argmax(1) == train.true_label.values).mean()))
            for rule, r in audit_rows(res, df).items(): row.update({f'{rule}:{k}': v for k, v in r.items()})
            if abs(rate - args.softlabel_rate) < 1e-9:
                plain, s_plain = fit_digits(df, [], epochs=args.epochs, seed=seed)
                soft, s_soft = fit_digits(df, [SoftLabel(res, a=args.a)], epochs=args.epochs, seed=seed)
                row.update(plain_acc=digits_test_accuracy(plain, df), softlabel_acc=digits_test_accuracy(soft, df),
                           plain_fit_s=s_plain, softlabel_fit_s=s_soft)
            rows.append(row)
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    res = pd.DataFrame(rows)
    res.to_csv(OUT/'softlabel.csv', index=False)
    (OUT/'softlabel.md').write_text(summary(res, args, cmd, machine))
    print('\n' + (OUT/'softlabel.md').read_text())


def _fmt(m, sd): return f'{m:.3f} ± {sd:.3f}'


def summary(res, args, cmd, machine):
    sl = res.dropna(subset=['plain_acc']) if 'plain_acc' in res else res.iloc[:0]
    lines = [f'# SoftLabel and label audit benchmark\n', f'Command: `{cmd}`  ',
             f'Machine: {machine}; seeds {", ".join(map(str, args.seeds))} at {args.softlabel_rate:.0%} noise, {", ".join(map(str, args.audit_seeds))} at the other rates; OOF from {args.folds} folds × {args.fold_epochs} epochs '
             f'(digits_cnn, 16 px, fit_one_cycle lr 1e-2) on the 1077 training digits with symmetric noise.\n']
    if len(sl):
        lines += [f'## SoftLabel at {args.softlabel_rate:.0%} symmetric noise\n',
                  f'Final model: {args.epochs} epochs, same split and seed for both; accuracy on the clean test labels (mean ± sd over seeds; per seed in softlabel.csv).\n',
                  '| method | clean test accuracy | per seed | fit seconds |', '|---|---|---|---|',
                  f'| plain fastai | {_fmt(sl.plain_acc.mean(), sl.plain_acc.std())} | {" ".join(f"{v:.3f}" for v in sl.plain_acc)} | {sl.plain_fit_s.mean():.1f} |',
                  f'| SoftLabel(a={args.a}) | {_fmt(sl.softlabel_acc.mean(), sl.softlabel_acc.std())} | {" ".join(f"{v:.3f}" for v in sl.softlabel_acc)} | {sl.softlabel_fit_s.mean():.1f} (+ {sl.fold_loop_s.mean():.1f} s fold loop) |',
                  '',
                  f'Fold loop: {sl.fold_loop_s.mean():.1f} s on average ({args.folds} models of {args.fold_epochs} epochs), '
                  f'{sl.fold_loop_s.mean()/sl.plain_fit_s.mean():.2f}× the plain {args.epochs}-epoch fit measured in the same run. '
                  f'OOF agreement with the given labels {sl.oof_acc_given.mean():.3f}, with the true labels {sl.oof_acc_true.mean():.3f}.\n']
    lines += ['## Label audit vs cleanlab, same OOF probabilities\n',
              'precision: flagged items whose label really was flipped; recall: flipped labels flagged. Mean over the seeds of each rate (`seeds` column). '
              '`same_flags`: share of items on which labelcb and cleanlab (' + _cleanlab_version() + ') agree.\n']
    for rule, cl in (('prune_by_noise_rate', 'prune_by_noise_rate'), ('confident_joint', 'confident_learning')):
        lines += [f'### rule: labelcb `{rule}` vs cleanlab `filter_by={cl!r}`\n',
                  '| noise | seeds | errors | labelcb flagged | labelcb precision | labelcb recall | cleanlab flagged | cleanlab precision | cleanlab recall | same flags |',
                  '|---|---|---|---|---|---|---|---|---|---|']
        for rate, g in res.groupby('rate'):
            c = lambda k: g[f'{rule}:{k}'].mean()
            lines.append(f'| {rate:.0%} | {len(g)} | {round(rate*1077)} | {c("labelcb_flagged"):.0f} | {c("labelcb_precision"):.3f} | {c("labelcb_recall"):.3f} | '
                         f'{c("cleanlab_flagged"):.0f} | {c("cleanlab_precision"):.3f} | {c("cleanlab_recall"):.3f} | {c("same_flags"):.4f} |')
        lines.append('')
    lines.append(f'OOF (fold loop) time per noise rate: ' + ', '.join(f'{r:.0%} {g.fold_loop_s.mean():.0f} s' for r, g in res.groupby('rate')) + '.\n')
    return '\n'.join(lines)


def _cleanlab_version():
    import cleanlab
    return f'cleanlab {cleanlab.__version__}'


def timing(args, cmd, machine, epochs=5):
    "Median of interleaved plain and SoftLabel fits, and their ratio"
    df = noisy_digits_df(args.softlabel_rate, 'symmetric', seed=0)
    train = df[df.split == 'train']
    rng = np.random.default_rng(0)
    oof = pd.DataFrame(rng.dirichlet(np.ones(10), len(train)), index=train.index, columns=range(10))  # any valid OOF costs the same
    tab = interleaved_fit_times(df, {'plain': lambda: [], 'SoftLabel': lambda: [SoftLabel(oof)]}, args.timing_reps, epochs)
    return (f'# SoftLabel benchmark: time over a plain fastai fit\n\nCommand: `{cmd}`  \nMachine: {machine}.\n\n'
            f'Median of {args.timing_reps} interleaved {epochs}-epoch fits per method (digits_cnn at 16 px, num_workers=0), '
            'and the ratio of medians. SoftLabel does its work once (one blend of the label table) and then costs what '
            'every label callback costs per batch: one indexed read of the table (see plc_timing.md for the instrumented '
            'share of that machinery, 3% of a fit). The fold loop that makes the OOF is timed in softlabel.md.\n\n'
            + tab.to_string(index=False) + '\n')


if __name__ == '__main__': main()
