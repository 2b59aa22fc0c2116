"""Diagnostic, not a benchmark row: what TemporalEnsemble does in the CIFAR-10N 8%-labelled row, epoch by epoch (its history), and how right
its ensemble targets of the unlabelled images are. `python3 dev.py bench cifar10n_te_diagnostic` (about 7 minutes alone on 2 cores)."""
import sys; sys.path.insert(0, str(__import__('pathlib').Path(__file__).parent))
import warnings; warnings.simplefilter('ignore')
import cifar10n as B
import pandas as pd, numpy as np
from fastai.vision.all import set_seed
from labelcb.all import TemporalEnsemble, hide_labels
args = B.parse([])
pool, test = B.load_frames(args)
frame = hide_labels(pool, 'clean', frac=args.labelled_frac, rows=~pool.is_valid.values, seed=0, true_col=None)
set_seed(0)
dls = B.make_dls(args, frame, 'clean', partial=True)
te = TemporalEnsemble()
learn = B.make_learner(args, dls, [te])
B.fit(args, learn)
h = pd.DataFrame(te.history)
pl = te.pseudo_labels()
truth = pool.loc[pl.index, 'clean'].astype(str)
ok = pl.label.astype(str) == truth
lines = ['# CIFAR-10N, 8% labelled: what TemporalEnsemble does (diagnostic)', '', 'Command: `python3 dev.py bench cifar10n_te_diagnostic`', '',
         'Per training epoch: w, supervised loss, consistency loss (unweighted), items with a target.', '', '```', h.round(4).to_string(), '```', '',
         f'test accuracy {B.test_accuracy(learn, test):.4f}', '',
         f'ensemble label right on the {len(pl)} unlabelled items: {ok.mean():.4f}', '']
for q in (0.5, 0.8, 0.95):
    m = pl.confidence >= q
    lines.append(f'- confidence >= {q}: share {m.mean():.3f}, right {ok[m].mean():.3f}')
text = '\n'.join(lines) + '\n'
(B.OUT/'cifar10n_te_diagnostic.md').write_text(text)
print(text)
