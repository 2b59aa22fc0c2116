"""SelfLabelSinkhorn (SeLa) on the bundled digits, unsupervised, against k-means on raw pixels and a random-weights network.

For each K and seed: SeLa trains digits_cnn (16 px, a random shift of up to 1 px per epoch) for `--epochs` epochs of
fit_one_cycle on the 1077 training digits without their labels, K clusters, one head, λ = 25, one re-assignment per epoch
(quadratic schedule). Scored against the true labels (used for evaluation only):
- clusters of the training digits: NMI, ARI, accuracy after one-to-one Hungarian matching (`acc`) and after matching each
  cluster to its most common class (`acc_majority`, the fair one when K > 10);
- a linear probe (logistic regression) on the features before the head, fitted on the training digits, scored on the
  360 test digits.
Baselines on the same split: k-means (K clusters, 10 inits) and a linear probe on the raw 8×8 pixels; k-means and a linear
probe on the features of the same network with random weights (seed = the seed), DeepCluster's "faint signal".

    python3 dev.py bench selflabel [--ks 10 30] [--seeds 0 1 2] [--epochs 15] [--pseudo-pass eval|train] [--tag NAME]

Writes benchmarks/results/selflabel[_NAME].csv (one row per method, K and seed) and selflabel[_NAME].md (means ± std).
"""
import argparse, time, warnings
from pathlib import Path
import numpy as np
import pandas as pd

warnings.filterwarnings('ignore', category=FutureWarning, module='torch')
from common import run_info, md_table
from fastai.vision.all import Learner, Resize, RandomCrop, set_seed
from labelcb.all import digits_df, digits_dls, digits_cnn
from labelcb.selflabel import SelfLabelSinkhorn, cluster_scores, head_features, probe_accuracy

OUT = Path(__file__).parent/'results'


def kmeans_scores(x, y, k, seed):
    from sklearn.cluster import KMeans
    return cluster_scores(KMeans(k, n_init=10, random_state=seed).fit_predict(x), y)


def run(k, seed, epochs, df, pseudo_pass='train'):
    train, test = df[df.split == 'train'], df[df.split == 'test']
    rows = []
    # raw pixels
    from sklearn.datasets import load_digits
    pix = load_digits().data
    idx_tr, idx_te = train.file.str[7:11].astype(int).values, test.file.str[7:11].astype(int).values
    rows.append(dict(method='k-means on raw pixels', **kmeans_scores(pix[idx_tr], train.label.values, k, seed),
                     linear_probe=probe_accuracy(pix[idx_tr], train.label.values, pix[idx_te], test.label.values)))
    # the same network, random weights
    set_seed(seed)
    dls = digits_dls(df, size=16, bs=64, item_tfms=[Resize(18), RandomCrop(16)])
    rnd = Learner(dls, digits_cnn(10), metrics=[])
    (ftr, ytr), (fte, yte) = head_features(rnd, train), head_features(rnd, test)
    rows.append(dict(method='random-weights network + k-means', **kmeans_scores(ftr, ytr, k, seed),
                     linear_probe=probe_accuracy(ftr, ytr, fte, yte)))
    # SeLa
    set_seed(seed)
    cb = SelfLabelSinkhorn(k=k, seed=seed, pseudo_pass=pseudo_pass)
    learn = Learner(dls, digits_cnn(10), cbs=cb, metrics=[])
    t = time.perf_counter()
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, 1e-2)
    secs = time.perf_counter() - t
    (ftr, ytr), (fte, yte) = head_features(learn, train), head_features(learn, test)
    rows.append(dict(method='SelfLabelSinkhorn (its clusters)', **cb.scores(), linear_probe=probe_accuracy(ftr, ytr, fte, yte),
                     seconds=secs, relabel_seconds=sum(h['seconds'] for h in cb.history)))
    for r in rows: r.update(K=k, seed=seed)
    for r in rows: print({kk: (round(v, 4) if isinstance(v, float) else v) for kk, v in r.items()}, flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--ks', type=int, nargs='+', default=[10, 30])
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    ap.add_argument('--epochs', type=int, default=15)
    ap.add_argument('--pseudo-pass', default='train', choices=['eval', 'train'])
    ap.add_argument('--tag', default='', help='suffix of the result files, for runs beside the main one')
    a = ap.parse_args()
    stem = 'selflabel' + (f'_{a.tag}' if a.tag else '')
    cmd, machine = run_info('selflabel')
    df = digits_df()
    rows = [r for k in a.ks for s in a.seeds for r in run(k, s, a.epochs, df, a.pseudo_pass)]
    res = pd.DataFrame(rows)
    OUT.mkdir(exist_ok=True); res.to_csv(OUT/f'{stem}.csv', index=False)
    cols = ['nmi', 'ari', 'acc', 'acc_majority', 'linear_probe']
    g = res.groupby(['K', 'method'], sort=False)[cols]
    mean, std = g.mean(), g.std()
    summ = mean.combine(std, lambda m, sd: pd.Series([f'{a:.3f}' + ('' if pd.isna(b) else f' ± {b:.3f}') for a, b in zip(m, sd)], index=m.index))
    md = ['# SelfLabelSinkhorn on the digits (unsupervised)\n', f'Command: `{cmd}`  \nMachine: {machine}\n',
          f'{len(a.seeds)} seeds ({", ".join(map(str, a.seeds))}), {a.epochs} epochs of SeLa, pseudo_pass={a.pseudo_pass!r}; clusters of the 1077 training digits '
          'scored against their true labels; linear probe fitted on the training digits, scored on the 360 test digits. Mean ± std.\n',
          md_table(summ.reset_index()), '']
    sela = res[res.method.str.startswith('SelfLabel')]
    md.append(f'SeLa fit: {sela.seconds.mean():.0f} s on average, of which {sela.relabel_seconds.mean():.0f} s in the label re-assignments '
              '(the pass over the training items and Sinkhorn-Knopp).\n')
    (OUT/f'{stem}.md').write_text('\n'.join(md))
    print('\n'.join(md))


if __name__ == '__main__': main()
