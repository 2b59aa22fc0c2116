"""PLC against plain fastai on the bundled digits with 40% symmetric and 40% pair noise in the training labels.

For each noise kind and seed, on the same noisy frame, split, seed and schedule (`fit_digits`: digits_cnn, 16 px,
fit_one_cycle, 20 epochs): plain training, PLC with the 'diff' rule and PLC with the 'ratio' rule, and plain
training on the true labels as the ceiling. Reports accuracy on the clean test labels, the precision of PLC's
corrections (changed labels that are now right), their recall (noisy labels repaired), labels broken, and the
time of each method's fit over plain fastai's. Timing is measured on its own (`--part timing`), with the methods
interleaved and repeated (median of `--timing-reps` 5-epoch fits each): the accuracy fits run in a fixed order, and
background load on a 2-core machine would bias ratios taken from them (their seconds are still in the CSV).

    python3 dev.py bench plc [--part accuracy|timing|both] [--epochs 20] [--seeds 0 1 2] [--rate 0.4]

Writes benchmarks/results/plc.csv (one row per fit) and plc.md (accuracy summary); plc_timing.md (time ratios).
"""
import argparse, warnings
from pathlib import Path
import pandas as pd

warnings.filterwarnings('ignore', category=FutureWarning, module='torch')
from common import interleaved_fit_times, instrumented_share, run_info, md_table
from labelcb.all import PLC, DEMO_METHODS, LabelCallback, fit_digits, noisy_digits_df, digits_test_accuracy

OUT = Path(__file__).parent/'results'


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--epochs', type=int, default=20)
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--rate', type=float, default=0.4)
    p.add_argument('--kinds', nargs='+', default=['symmetric', 'pair'])
    p.add_argument('--timing-reps', type=int, default=5)
    p.add_argument('--part', choices=['accuracy', 'timing', 'both'], default='both')
    args = p.parse_args(argv)
    cmd, machine = run_info('plc', argv)
    if args.part in ('timing', 'both'):
        timing = time_methods(args.timing_reps, args.rate)
        text = (f'# PLC benchmark: time over a plain fastai fit\n\nCommand: `{cmd}`  \nMachine: {machine}.\n\n'
                f'Median of {args.timing_reps} interleaved 5-epoch fits per method ({args.rate:.0%} pair noise, '
                'digits_cnn at 16 px, num_workers=0), and the ratio of medians. `LabelCallback` alone is the shared '
                'machinery (item indices, label table, soft loss) with no method on top. Wall-clock seconds.\n\n'
                + timing.to_string(index=False) + '\n')
        inst = plc_instrumented_share(args.rate)
        text += ('\nWall-clock ratios on this shared 2-core machine move by ±15% from run to run (see `runs`), more than '
                 'the overhead being measured. So the time spent in labelcb itself is also measured directly, inside one '
                 '5-epoch fit of each method: every event of the labelcb callbacks and the per-item index wrapper are '
                 'timed, and their sum is given as a share of the whole fit.\n\n' + inst.to_string(index=False) + '\n')
        (OUT/'plc_timing.md').write_text(text)
        print('\n' + text)
    if args.part == 'timing': return
    rows = []
    for kind in args.kinds:
        for seed in args.seeds:
            df = noisy_digits_df(args.rate, kind, seed=seed)
            truth = df[df.split == 'train'].true_label.values
            methods = [(n, m.cbs, m.label_col) for n, m in DEMO_METHODS.items()  # the demo's rows: the same methods, made the same way
                       if n.startswith(('plain', 'PLC')) and not m.frame]  # other methods and problems have their own benchmarks
            methods += [(f"PLC.paper('{r}')", lambda df, r=r: [PLC.paper(r)], 'label') for r in ('diff', 'ratio')]  # the paper's rules, for comparison
            for name, make, label_col in methods:
                if label_col == 'true_label' and kind != args.kinds[0]: continue  # the truth does not depend on the noise
                learn, secs = fit_digits(df, make(df), label_col, epochs=args.epochs, seed=seed)
                row = dict(noise=f'{args.rate:.0%} {kind}', seed=seed, method=name,
                           test_acc=digits_test_accuracy(learn, df), seconds=secs)
                if name.startswith('PLC'): row.update(learn.progressive_label_correction.table.repair_scores(truth))
                rows.append(row)
                print(f"{row['noise']:>14} seed {seed} {name:>20}: test {row['test_acc']:.4f}  {secs:6.1f} s"
                      + (f"  changed {row['changed']} precision {row['precision']:.3f} recall {row['recall']:.3f}" if 'changed' in row else ''),
                      flush=True)
    res = pd.DataFrame(rows)
    OUT.mkdir(exist_ok=True)
    res.to_csv(OUT/'plc.csv', index=False)
    summary = (res.groupby(['noise', 'method'], sort=False)
                  .agg(test_acc=('test_acc', 'mean'), test_acc_sd=('test_acc', 'std'), precision=('precision', 'mean'),
                       recall=('recall', 'mean'), broken=('broken', 'mean'), changed=('changed', 'mean')).reset_index())
    table = md_table(summary, floatfmt='.3f')
    text = (f'# PLC benchmark: accuracy and corrections\n\nCommand: `{cmd}`  \n'
            f'Machine: {machine}; {len(args.seeds)} seeds ({", ".join(map(str, args.seeds))}), {args.epochs} epochs of fit_one_cycle each, digits_cnn at 16 px.\n\n'
            f'Mean over seeds (test_acc_sd: standard deviation over seeds). precision: changed labels that are now right; '
            f'recall: noisy labels repaired; broken: clean labels made wrong; changed: labels changed at the end of training. '
            f'Time: see plc_timing.md.\n\n{table}\n')
    (OUT/'plc.md').write_text(text)
    print('\n' + text)


def _timed_methods(df):
    "plain fastai, the shared machinery alone, and the demo's label methods, as callback factories"
    res = {'plain': lambda: [], 'LabelCallback': lambda: [LabelCallback()]}
    res.update({n: (lambda m=m: m.cbs(df)) for n, m in DEMO_METHODS.items() if n.startswith('PLC')})
    return res


def time_methods(reps, rate, epochs=5):
    "Median fit time of each method over `reps` interleaved fits, and its ratio to plain fastai's"
    df = noisy_digits_df(rate, 'pair', seed=0)
    return interleaved_fit_times(df, _timed_methods(df), reps, epochs)


def plc_instrumented_share(rate, epochs=5):
    "Seconds spent inside labelcb code during one fit of each labelcb method, and their share of it"
    df = noisy_digits_df(rate, 'pair', seed=0)
    return instrumented_share(df, dict(list(_timed_methods(df).items())[1:]), epochs)


if __name__ == '__main__': main()
