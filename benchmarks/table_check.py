"""What a label table's check against the training set costs, next to a plain fastai epoch on the same data.

Every label callback checks, at the start of a fit, that its table belongs to the training set (`LabelTable.why_not_for`:
the items' ids, what they are, and every given label, read through the label pipeline). Until this wave the check ran at
the start of every epoch; now once a fit (and again if the DataLoaders change mid-fit). This measures the check (median of
`--reps`) and one epoch of plain `fit_digits` on the same frame, in one run, so their ratio is the per-epoch overhead the
old placement cost. Data: the bundled digits repeated `--copies` times under new index labels (distinct items).

    python3 dev.py bench table_check [--copies 10] [--reps 5]

Writes benchmarks/results/table_check.md.
"""
import argparse, time, warnings
from pathlib import Path
import pandas as pd

warnings.filterwarnings('ignore', category=FutureWarning, module='torch')
from common import run_info
from labelcb.all import LabelTable, digits_df, fit_digits

OUT = Path(__file__).parent/'results'


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--copies', type=int, default=10)
    p.add_argument('--reps', type=int, default=5)
    args = p.parse_args(argv)
    cmd, machine = run_info('table_check', argv)
    df = digits_df()
    big = pd.concat([df]*args.copies, ignore_index=True)  # every row its own item
    fit_digits(big, [], epochs=1)  # warm the file cache and the allocator
    epochs = [fit_digits(big, [], epochs=1, seed=r)[1] for r in range(args.reps)]
    learn = fit_digits(big, [], epochs=1)[0]
    ds, table = learn.dls.train_ds, LabelTable.from_dls(learn.dls)
    checks = []
    for _ in range(args.reps):
        t = time.perf_counter(); assert table.why_not_for(ds) is None; checks.append(time.perf_counter() - t)
    check, epoch = float(pd.Series(checks).median()), float(pd.Series(epochs).median())
    text = (f'# The label table\'s check against the training set\n\nCommand: `{cmd}`  \nMachine: {machine}.\n\n'
            f'{len(ds):,} training items (the digits ×{args.copies}), 16 px, `digits_cnn`. Medians of {args.reps}.\n\n'
            '| what | seconds |\n|---|---|\n'
            f'| one check (`LabelTable.why_not_for`) | {check:.3f} |\n| one plain fastai epoch (`fit_digits(epochs=1)`) | {epoch:.3f} |\n\n'
            f'The check is {check/epoch:.0%} of a plain epoch: what every epoch of every label callback paid while it ran per epoch; '
            'it now runs once a fit. Runs: checks ' + ' '.join(f'{c:.3f}' for c in checks) + '; epochs ' + ' '.join(f'{e:.2f}' for e in epochs) + '.\n')
    OUT.mkdir(exist_ok=True)
    (OUT/'table_check.md').write_text(text)
    print(text)


if __name__ == '__main__': main()
