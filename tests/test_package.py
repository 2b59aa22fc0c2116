"The package as users get it: imports, the command, and (in the newest-fastai lane) the installed wheel."
import os, subprocess, sys
import pytest
import labelcb


def test_all_gives_every_public_name_and_nothing_else():
    import labelcb.all as a
    public = {n for n in dir(a) if not n.startswith('_')}
    expected = {'ItemIndex', 'TensorItemIdx', 'indexed_loader', 'ensure_item_index', 'LabelTable', 'LabelCallback',
                'SoftCrossEntropyLoss', 'SoftBCEWithLogitsLoss', 'soft_loss_for', 'add_label_noise', 'digits_path',
                'digits_df', 'noisy_digits_df', 'digits_dls', 'digits_test_accuracy', 'digits_cnn', 'multi_digits_path',
                'multi_digits_df', 'labelcb_cache', 'run_demo', 'plot_demo', 'DemoMethod', 'DEMO_METHODS', 'predict_items',
                'RefineryLoop', 'refinery_chain', 'RefineryChain', 'shapes_path', 'shapes_df', 'multilabel_dls', 'fbeta_score',
                'FBeta', 'tune_thresholds', 'decode_tags', 'write_submission', 'tta_predict', 'dihedral_views',
                'ProgressiveResize', 'staged_fit', 'cluster_test_accuracy'}
    assert expected <= public
    assert not {'torch', 'np', 'pd', 'F', 'nn', 'Path', 'warnings'} & public  # no re-exported libraries


def test_installed_from_the_wheel_when_asked():
    if not os.environ.get('LABELCB_EXPECT_INSTALLED'): pytest.skip('only in the newest-fastai lane')
    assert 'site-packages' in labelcb.__file__, labelcb.__file__


def test_command_line_version():
    out = subprocess.run([sys.executable, '-m', 'labelcb', '--version'], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f'labelcb {labelcb.__version__}'


def test_demo_runs_one_epoch(tmp_path):
    from labelcb.demo import run_demo
    res = run_demo(noise_kind='pair', noise_rate=0.2, epochs=1, methods='all', out=tmp_path, verbose=False)
    from labelcb.demo import DEMO_METHODS, DEMO_QUICK
    assert list(res.method) == list(DEMO_METHODS) and 'SoftLabel' in list(res.method) and 'ELR' in list(res.method)
    assert set(DEMO_QUICK) <= set(DEMO_METHODS)
    assert res.setup_seconds[res.method == 'SoftLabel'].iloc[0] > 0  # its 5 fold models, timed apart from the fit
    assert res.setup_seconds[res.method == 'RefineryLoop (R2)'].iloc[0] > 0  # its R1
    sela = res[res.method == 'SelfLabelSinkhorn'].iloc[0]  # no labels: a clustering, scored after matching clusters to classes
    assert sela.training_labels.startswith('none') and 0 <= sela.clean_test_accuracy <= 1
    assert (tmp_path/'demo.png').exists() and (tmp_path/'demo.csv').exists()


def test_readme_headline_is_the_benchmarks_table():
    "The CIFAR-10N table of the README and of nbs/index.ipynb is the one benchmarks/cifar10n.py wrote from its CSV (python3 dev.py readme copies it)"
    import json
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    table = (root/'benchmarks'/'results'/'cifar10n_headline.md').read_text(encoding='utf-8').strip()
    nb = json.loads((root/'nbs'/'index.ipynb').read_text(encoding='utf-8'))
    md = '\n'.join(''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'markdown')
    assert table in md, 'nbs/index.ipynb has another CIFAR-10N table than the benchmark wrote: run python3 dev.py readme'
    assert table in (root/'README.md').read_text(encoding='utf-8')
