"""PLC's start on the bundled digits with ModelReady(patience=2) and (patience=3), the same runs otherwise.

The plc benchmark's recipe (40% symmetric and pair noise, `fit_digits`: digits_cnn, 16 px, 20 epochs of fit_one_cycle),
`PLC('diff', ready=ModelReady(patience=p))` for each p and seed. Clean-test accuracy and the corrections' precision,
recall and broken share. Made to check that waiting for a third level epoch (the default since it held PLC back from
CIFAR-10N's one-cycle dip) costs the digits nothing.

    python3 dev.py bench plc_patience [--seeds 0 1 2] [--epochs 20]

Writes benchmarks/results/plc_patience.csv and plc_patience.md.
"""
import argparse, warnings
from pathlib import Path
import pandas as pd

warnings.filterwarnings('ignore', category=FutureWarning, module='torch')
from common import run_info, md_table
from labelcb.all import PLC, ModelReady, fit_digits, noisy_digits_df, digits_test_accuracy

OUT = Path(__file__).parent/'results'


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--epochs', type=int, default=20)
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--patience', type=int, nargs='+', default=[2, 3])
    args = p.parse_args(argv)
    cmd, machine = run_info('plc_patience', argv)
    rows = []
    for kind in ('symmetric', 'pair'):
        for seed in args.seeds:
            df = noisy_digits_df(0.4, kind, seed=seed)
            truth = df[df.split == 'train'].true_label.values
            for pat in args.patience:
                learn, secs = fit_digits(df, [PLC('diff', ready=ModelReady(patience=pat))], 'label', epochs=args.epochs, seed=seed)
                plc = learn.progressive_label_correction
                rows.append(dict(noise=f'40% {kind}', seed=seed, patience=pat, test_acc=digits_test_accuracy(learn, df),
                                 ready_after_epoch=next((i for i, o in enumerate(plc.ready.log) if o['ready']), None),
                                 **plc.table.repair_scores(truth)))
                print(rows[-1], flush=True)
    res = pd.DataFrame(rows)
    OUT.mkdir(exist_ok=True)
    res.to_csv(OUT/'plc_patience.csv', index=False)
    summary = res.groupby(['noise', 'patience']).agg(test_acc=('test_acc', 'mean'), test_acc_sd=('test_acc', 'std'),
                                                     precision=('precision', 'mean'), recall=('recall', 'mean'),
                                                     changed=('changed', 'mean')).reset_index()
    (OUT/'plc_patience.md').write_text(
        f'# PLC on the digits: ModelReady patience 2 against 3\n\nCommand: `{cmd}`  \nMachine: {machine}; seeds {args.seeds}, '
        f'{args.epochs} epochs.\n\nMean over seeds:\n\n{md_table(summary, floatfmt=".3f")}\n\nPer run:\n\n{md_table(res, floatfmt=".3f")}\n')


if __name__ == '__main__': main()
