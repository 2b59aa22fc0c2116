"What the benchmark scripts share: timing methods against plain fastai, interleaved, and timing labelcb's own code inside a fit."
import platform, sys, time
import pandas as pd
import torch
from labelcb.all import fit_digits, ItemIndex, LabelCallback, oversample


def run_info(name:str, argv=None)->tuple:
    "The command that reproduces this run (as the results files quote it) and a line about the machine"
    cmd = (f'python3 dev.py bench {name} ' + ' '.join(sys.argv[1:] if argv is None else argv)).strip()
    return cmd, f'{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}'


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


def instrumented_share(df, makers:dict, epochs:int=5, loss_types=(), **fit_kwargs)->pd.DataFrame:
    """Seconds spent inside labelcb code during one `fit_digits` fit per method, and their share of the fit: every event of
    the labelcb callbacks (ItemIndex included), the per-item index wrapper, and the `forward` of `loss_types` (a labelcb loss
    that replaces the user's: all of it is counted, the cross-entropy plain fastai computes too, so this is an upper bound)."""
    import labelcb.items as items
    spent = [0.0]
    def timed(f):
        def g(*a, **k):
            t = time.perf_counter()
            try: return f(*a, **k)
            finally: spent[0] += time.perf_counter() - t
        return g
    events = ['before_fit', 'before_train', 'before_batch', 'after_pred', 'after_loss', 'after_batch', 'after_train', 'after_fit']
    orig_call = items._AppendItemIdx.__call__
    orig_fwd = {t: t.forward for t in loss_types}
    def index_only(self, s):  # time the wrapper's own work, not the item it wraps
        item = self.do_item(s)
        t = time.perf_counter()
        res = None if item is None else (*item, torch.tensor(s).as_subclass(items.TensorItemIdx))
        spent[0] += time.perf_counter() - t
        return res
    class Instrument(ItemIndex.__base__):
        order = -100
        def before_fit(self):  # wrap the events of every labelcb callback, ItemIndex included
            for cb in self.learn.cbs:
                if isinstance(cb, (LabelCallback, ItemIndex)) and not getattr(cb, '_timed', False):
                    for e in events:
                        if hasattr(type(cb), e): setattr(cb, e, timed(getattr(cb, e)))
                    cb._timed = True
    rows = []
    for name, make in makers.items():
        spent[0] = 0.0
        items._AppendItemIdx.__call__ = index_only
        for t in loss_types: t.forward = timed(orig_fwd[t])
        try: learn, secs = fit_digits(df, make() + [ItemIndex(), Instrument()], epochs=epochs, seed=0, **fit_kwargs)
        finally:
            items._AppendItemIdx.__call__ = orig_call
            for t in loss_types: t.forward = orig_fwd[t]
        rows.append(dict(method=name, fit_seconds=round(secs, 2), labelcb_seconds=round(spent[0], 3), labelcb_share=f'{spent[0]/secs:.2%}'))
        print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def oversample_labelled(df:pd.DataFrame, label_col:str, factor:int, training)->pd.DataFrame:
    "Every labelled row among the `training` ones (a boolean mask) `factor` times, with `oversample`: partly labelled data, labels seen more often"
    flagged = df.assign(_not_training=~pd.Series(training, index=df.index).astype(bool))
    return oversample(flagged, label_col, classes=sorted(df[label_col].dropna().unique()), factor=factor, valid_col='_not_training').drop(columns='_not_training')


def md_table(df, **kw)->str:
    "A markdown table (pandas' to_markdown needs tabulate, which the dev environment may lack: plain text then)"
    try: return df.to_markdown(index=False, **kw)
    except ImportError: return '```\n' + df.to_string(index=False) + '\n```'
