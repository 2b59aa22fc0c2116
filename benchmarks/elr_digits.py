"""ELR's start on the bundled digits: plain fastai, `ELR()` (the paper's: from the first epoch), `ELR(start='model')` (from
when the model is ready, as `PLC()`) and `ELR(start=0.5)`, the same runs otherwise.

One noisy frame per noise kind (`noisy_digits_df(0.4, kind, seed=0)`: 40% symmetric, or pair: each class flipped to the
next), the ELR notebook's recipe (`fit_digits`: digits_cnn, 16 px, 20 epochs of fit_one_cycle), training seeds 0, 1, 2.
Clean-test accuracy, and the epoch from which λ > 0. Made to weigh the model's start against the paper's on data where the
small model memorises early, beside the CIFAR-10N rows where it does not in 15 epochs. Each finished fit is written at once; a rerun
skips the rows already in the CSV.

    python3 dev.py bench elr_digits [--seeds 0 1 2] [--epochs 20] [--methods plain elr elr_model elr_s50]

Writes benchmarks/results/elr_digits.csv and elr_digits.md.
"""
import argparse, warnings
from pathlib import Path
import pandas as pd

warnings.filterwarnings('ignore', category=FutureWarning, module='torch')
from common import run_info, md_table
from labelcb.all import ELR, fit_digits, noisy_digits_df, digits_test_accuracy

OUT = Path(__file__).parent/'results'
METHODS = dict(plain=('plain fastai', lambda: []), elr=('`ELR()`', lambda: [ELR()]),
               elr_model=("`ELR(start='model')`", lambda: [ELR(start='model')]), elr_s50=('`ELR(start=0.5)`', lambda: [ELR(start=0.5)]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--epochs', type=int, default=20, help='each budget has its own rows: run again with another to add a budget')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--methods', nargs='+', default=list(METHODS), choices=list(METHODS))
    args = p.parse_args(argv)
    cmd, machine = run_info('elr_digits', argv)
    path = OUT/'elr_digits.csv'
    done = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=['noise', 'method', 'seed', 'epochs'])
    for kind in ('symmetric', 'pair'):
        df = noisy_digits_df(0.4, kind, seed=0)
        for seed in args.seeds:
            for m in args.methods:
                key = dict(noise=f'40% {kind}', method=m, seed=seed, epochs=args.epochs)
                if ((done[list(key)] == pd.Series(key)).all(axis=1)).any(): continue
                with warnings.catch_warnings():
                    warnings.simplefilter('ignore')  # ELR(start='model') may say it held its penalty: the row records when it started
                    learn, secs = fit_digits(df, METHODS[m][1](), epochs=args.epochs, seed=seed)
                elr = getattr(learn, 'elr', None)
                start = next((h['epoch'] for h in elr.history if h['lam'] > 0), None) if elr is not None else None
                row = dict(**key, test_acc=digits_test_accuracy(learn, df), penalty_from_epoch=start, seconds=secs, machine=machine)
                done = pd.concat([done, pd.DataFrame([row])], ignore_index=True) if len(done) else pd.DataFrame([row])
                done.to_csv(path, index=False)
                print(row, flush=True)
    g = done.sort_values(['epochs'], kind='stable')
    summary = (g.groupby(['epochs', 'noise', 'method'], sort=False)
                .agg(seeds=('seed', 'nunique'), test_acc=('test_acc', 'mean'), sd=('test_acc', 'std'), penalty_from_epoch=('penalty_from_epoch', 'mean'))
                .reset_index())
    summary['method'] = summary.method.map(lambda m: METHODS[m][0])
    text = (f'# ELR\'s start on the bundled digits\n\n`{cmd}`\n\n{machine}\n\n' + __doc__.split('\n\n')[1].replace('\n', ' ') + '\n\n'
            + md_table(summary.round(3)) + '\n\nPer seed:\n\n' + md_table(g.drop(columns=['machine']).round(4)) + '\n')
    (OUT/'elr_digits.md').write_text(text)
    print(text)


if __name__ == '__main__': main()
