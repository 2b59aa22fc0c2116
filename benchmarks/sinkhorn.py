"""Sinkhorn-Knopp speed and memory: `sinkhorn_knopp` against a direct NumPy version of the official SeLa rule
(`sela_reference`: P^λ in float64, K×N, error checked every 10th iteration), on the same matrix at the same tolerance.

The matrices: P = softmax of standard-normal logits (float32, seeded); with `:skew`, each cluster's logits also get a
seeded offset of standard deviation 0.5, so that clusters differ in popularity and the scalings spread over e^38 (the case
the truncated kernel needs several rounds for). λ = 25, tol = 0.1 (the official ImageNet setting).
Each run is a fresh process, so that its peak resident memory (input included) is its own. The official rule gets P as
float64 (converted before its clock starts, as the official code aggregates float64); `sinkhorn_knopp` gets the float32 P,
once as it chooses (the truncated kernel at these sizes) and once with `sparse=False` (the dense float32 kernel).
The ImageNet-size case (1.28M × 3000) runs `sinkhorn_knopp` alone, on float32 logits: the official rule's float64 K×N
matrix alone would be 30.7 GB, more than this machine has.

    python3 dev.py bench sinkhorn [--cases 100000x1000 100000x1000:skew 100000x3000 1000000x1000] [--no-imagenet] [--no-dense]

Writes benchmarks/results/sinkhorn.csv and sinkhorn.md.
"""
import argparse, multiprocessing as mp, resource, time
from pathlib import Path
import numpy as np
import pandas as pd
from common import run_info, md_table

OUT = Path(__file__).parent/'results'
LAM, TOL = 25., 0.1


def _logits(N, K, skew=False, seed=0):
    "Seeded standard-normal logits, float32, made in chunks (no second N×K copy at ImageNet size); `skew`: plus per-cluster offsets"
    import torch
    g = torch.Generator().manual_seed(seed)
    x = torch.empty(N, K)
    for s in range(0, N, 65536): x[s:s+65536] = torch.randn(min(65536, N-s), K, generator=g)
    if skew: x += torch.randn(K, generator=g)*0.5
    return x


def _child(method, N, K, skew, q):
    import torch
    from labelcb.sinkhorn import sinkhorn_knopp, sela_reference
    kernel = ''
    if method == 'official':
        P = _logits(N, K, skew).softmax(1).numpy().astype(np.float64)
        t = time.perf_counter(); labels, n, err = sela_reference(P, LAM, TOL, copy=False); secs = time.perf_counter() - t
    else:
        logits_in = method == 'ours, logits'
        x = _logits(N, K, skew)
        if not logits_in: x = x.softmax(1)
        t = time.perf_counter()
        res = sinkhorn_knopp(x, LAM, inputs='logits' if logits_in else 'probs', tol=TOL, sparse=False if method == 'ours, dense' else None)
        secs = time.perf_counter() - t
        labels, n, err, kernel = res.labels.numpy(), res.n_iter, res.err, res.kernel
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/2**20
    sizes = np.bincount(labels, minlength=K)
    q.put(dict(labels=labels, seconds=secs, n_iter=n, err=err, peak_rss_gb=peak_gb, min_size=int(sizes.min()),
               max_size=int(sizes.max()), kernel=kernel))


def run_case(method, N, K, skew):
    ctx = mp.get_context('spawn'); q = ctx.Queue()
    p = ctx.Process(target=_child, args=(method, N, K, skew, q)); p.start()
    res = q.get(); p.join()
    print(f'{N}x{K}{" skewed" if skew else ""} {method}: {res["seconds"]:.1f} s, {res["n_iter"]} iterations, err {res["err"]:.3g}, '
          f'peak RSS {res["peak_rss_gb"]:.1f} GB {res["kernel"]}', flush=True)
    return res


NAMES = {'official': 'official rule (NumPy, float64)', 'ours': 'sinkhorn_knopp', 'ours, dense': 'sinkhorn_knopp(sparse=False)',
         'ours, logits': 'sinkhorn_knopp (logits in)'}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--cases', nargs='+', default=['100000x1000', '100000x1000:skew', '100000x3000', '1000000x1000'])
    ap.add_argument('--imagenet', action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument('--dense', action=argparse.BooleanOptionalAction, default=True, help='also time the dense float32 kernel')
    a = ap.parse_args()
    cmd, machine = run_info('sinkhorn')
    rows = []
    def row(N, K, skew, method, r, off=None):
        rows.append(dict(N=N, K=K, matrix='skewed' if skew else 'random', method=NAMES[method], kernel=r['kernel'],
                         seconds=round(r['seconds'], 2), iterations=r['n_iter'], err=round(r['err'], 4),
                         peak_rss_gb=round(r['peak_rss_gb'], 2), cluster_sizes=f"{r['min_size']}–{r['max_size']}",
                         speedup=None if off is None else round(off['seconds']/r['seconds'], 2),
                         identical_labels=None if off is None else round(float((off['labels'] == r['labels']).mean()), 5)))
    for case in a.cases:
        size, _, kind = case.partition(':')
        N, K = map(int, size.split('x')); skew = kind == 'skew'
        off = run_case('official', N, K, skew)
        row(N, K, skew, 'official', off, off)
        for method in ('ours', 'ours, dense') if a.dense else ('ours',):
            row(N, K, skew, method, run_case(method, N, K, skew), off)
    if a.imagenet:
        N, K = 1_281_167, 3000
        row(N, K, False, 'ours, logits', run_case('ours, logits', N, K, False))
    df = pd.DataFrame(rows)
    OUT.mkdir(exist_ok=True); df.to_csv(OUT/'sinkhorn.csv', index=False)
    md = [f'# Sinkhorn-Knopp: speed and memory\n', f'Command: `{cmd}`  \nMachine: {machine}\n',
          f'P = softmax of standard-normal logits (skewed: plus per-cluster offsets of sd 0.5), λ = {LAM:g}, tol = {TOL:g}; '
          'each run in its own process; peak RSS includes the input. speedup = official seconds / these seconds; '
          'identical_labels = share of items with the same label as the official rule.\n', md_table(df), '']
    (OUT/'sinkhorn.md').write_text('\n'.join(md))
    print('\n'.join(md))


if __name__ == '__main__': main()
