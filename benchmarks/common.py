"What the benchmark scripts share: timing methods against plain fastai, interleaved."
import pandas as pd
from labelcb.all import fit_digits


def interleaved_fit_times(df, makers:dict, reps:int, epochs:int=5, **fit_kwargs)->pd.DataFrame:
    """Median seconds of `reps` `fit_digits` fits per method, the methods interleaved so background load hits them alike.
    `makers`: name -> function returning a fresh list of callbacks; one must be 'plain'. Adds the ratio of medians to plain.
    `fit_kwargs` go to every `fit_digits`."""
    fit_digits(df, [], epochs=1, **fit_kwargs)  # warm the file cache and the allocator
    secs = {m: [] for m in makers}
    for r in range(reps):
        for m, make in makers.items():
            secs[m].append(fit_digits(df, make(), epochs=epochs, seed=r, **fit_kwargs)[1])
            print(f'timing rep {r} {m:>14}: {secs[m][-1]:.2f} s', flush=True)
    med = {m: float(pd.Series(v).median()) for m, v in secs.items()}
    return pd.DataFrame([dict(method=m, median_seconds=round(med[m], 2), time_vs_plain=round(med[m]/med['plain'], 3),
                              runs=' '.join(f'{v:.2f}' for v in secs[m])) for m in makers])
