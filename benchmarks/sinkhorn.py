"""Sinkhorn-Knopp speed and memory: `sinkhorn_knopp` against a direct NumPy version of the official SeLa rule
(`sela_reference`: P^λ in float64, K×N, error checked every 10th iteration), on the same matrix at the same tolerance.

The matrix: P = softmax of standard-normal logits (float32, seeded), λ = 25, tol = 0.1 (the official ImageNet setting).
Each case runs in a fresh process, so that its peak resident memory (input included) is its own. The official rule gets
P as float64 (converted before its clock starts, as the official code aggregates float64); `sinkhorn_knopp` gets the
float32 P. The ImageNet-size case (1.28M × 3000) runs `sinkhorn_knopp` alone, on float32 logits with `inplace=True`:
the official rule's float64 K×N matrix alone would be 30.7 GB, more than this machine has.

    python3 dev.py bench sinkhorn [--cases 100000x1000 100000x3000 1000000x1000] [--imagenet] [--max-iter 400]

Writes benchmarks/results/sinkhorn.csv and sinkhorn.md.
"""
import argparse, multiprocessing as mp, resource, time
from pathlib import Path
import numpy as np
import pandas as pd
from common import run_info, md_table

OUT = Path(__file__).parent/'results'
LAM, TOL = 25., 0.1


def _logits(N, K, seed=0):
    "Seeded standard-normal logits, float32, made in chunks (no second N×K copy at ImageNet size)"
    import torch
    g = torch.Generator().manual_seed(seed)
    x = torch.empty(N, K)
    for s in range(0, N, 65536): x[s:s+65536] = torch.randn(min(65536, N-s), K, generator=g)
    return x


def _child(method, N, K, max_iter, q):
    from labelcb.sinkhorn import sinkhorn_knopp, sela_reference
    if method == 'official':
        P = _logits(N, K).softmax(1).numpy().astype(np.float64)
        t = time.perf_counter(); labels, n, err = sela_reference(P, LAM, TOL, copy=False); secs = time.perf_counter() - t
    else:
        inplace = method == 'ours (in place, logits)'
        x = _logits(N, K) if inplace else _logits(N, K).softmax(1)
        t = time.perf_counter()
        res = sinkhorn_knopp(x, LAM, inputs='logits' if inplace else 'probs', tol=TOL, inplace=inplace, max_iter=max_iter)
        secs = time.perf_counter() - t
        labels, n, err = res.labels.numpy(), res.n_iter, res.err
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/2**20
    sizes = np.bincount(labels, minlength=K)
    q.put(dict(labels=labels, seconds=secs, n_iter=n, err=err, peak_rss_gb=peak_gb, min_size=int(sizes.min()), max_size=int(sizes.max())))


def run_case(method, N, K, max_iter):
    ctx = mp.get_context('spawn'); q = ctx.Queue()
    p = ctx.Process(target=_child, args=(method, N, K, max_iter, q)); p.start()
    res = q.get(); p.join()
    print(f'{N}x{K} {method}: {res["seconds"]:.1f} s, {res["n_iter"]} iterations, err {res["err"]:.3g}, '
          f'peak RSS {res["peak_rss_gb"]:.1f} GB', flush=True)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--cases', nargs='+', default=['100000x1000', '100000x3000', '1000000x1000'])
    ap.add_argument('--imagenet', action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument('--max-iter', type=int, default=400, help='cap for the ImageNet-size run')
    a = ap.parse_args()
    cmd, machine = run_info('sinkhorn')
    rows = []
    for case in a.cases:
        N, K = map(int, case.split('x'))
        off = run_case('official', N, K, 0)
        ours = run_case('ours', N, K, 10_000)
        agree = float((off['labels'] == ours['labels']).mean())
        for name, r in (('official rule (NumPy, float64)', off), ('sinkhorn_knopp (float32 kernel)', ours)):
            rows.append(dict(N=N, K=K, method=name, seconds=round(r['seconds'], 2), iterations=r['n_iter'], err=round(r['err'], 4),
                             peak_rss_gb=round(r['peak_rss_gb'], 2), cluster_sizes=f"{r['min_size']}–{r['max_size']}",
                             speedup=round(off['seconds']/r['seconds'], 2), identical_labels=round(agree, 5)))
    if a.imagenet:
        N, K = 1_281_167, 3000
        r = run_case('ours (in place, logits)', N, K, a.max_iter)
        rows.append(dict(N=N, K=K, method=f'sinkhorn_knopp (float32 kernel, inplace=True, max_iter={a.max_iter})',
                         seconds=round(r['seconds'], 2), iterations=r['n_iter'], err=round(r['err'], 4),
                         peak_rss_gb=round(r['peak_rss_gb'], 2), cluster_sizes=f"{r['min_size']}–{r['max_size']}",
                         speedup=None, identical_labels=None))
    df = pd.DataFrame(rows)
    OUT.mkdir(exist_ok=True); df.to_csv(OUT/'sinkhorn.csv', index=False)
    md = [f'# Sinkhorn-Knopp: speed and memory\n', f'Command: `{cmd}`  \nMachine: {machine}\n',
          f'P = softmax of standard-normal logits, λ = {LAM:g}, tol = {TOL:g}; each case in its own process; '
          'peak RSS includes the input. speedup = official seconds / these seconds; identical_labels = share of items '
          'with the same label as the official rule.\n', md_table(df), '']
    (OUT/'sinkhorn.md').write_text('\n'.join(md))
    print('\n'.join(md))


if __name__ == '__main__': main()
