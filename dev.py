#!/usr/bin/env python3
"""labelcb's developer commands. Each one creates the environment it needs when it is missing, then runs.

    python3 dev.py demo [labelcb demo options]   # the main job: `labelcb demo` on the bundled digits
    python3 dev.py test                          # every check CI runs (.ci/run calls this)
    python3 dev.py docs                          # only nbdev's doc processing of every notebook (what quarto renders)
    python3 dev.py bench NAME [options]          # run benchmarks/NAME.py (writes benchmarks/results/NAME.*)
    python3 dev.py readme                        # write README.md from nbs/index.ipynb
    python3 dev.py tutorial                      # run nbs/tutorial_kaggle.ipynb in full (slow cells too), saving its outputs
    python3 dev.py outputs NAME [NAME ...]       # run nbs/NAME.ipynb in full (slow cells too), saving its outputs for the docs
    python3 dev.py env                           # only create/refresh the environments

Two environments, kept outside the checkout so clones and CI runs share them (`LABELCB_ENVS`, default
`~/.cache/labelcb/envs`), each named by a hash of its requirements so a change of requirements makes a new one:
- `dev-*`: the nbdev toolchain (nbdev 2.4.14 needs fastcore<2 and execnb<0.2, hence fastai 2.8.6-2.8.7);
- `latest-*`: the newest fastai/fastcore/torch from the registry, refreshed weekly; it gets labelcb from a wheel
  built here and installed offline (`--no-index`), the way a Kaggle notebook without internet would.
Only the standard library is used here: this file must run on a machine with nothing but Python and git.
"""
import configparser, datetime, hashlib, os, re, shlex, shutil, subprocess, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ENVS = Path(os.environ.get('LABELCB_ENVS', Path.home()/'.cache'/'labelcb'/'envs'))


def settings():
    cfg = configparser.ConfigParser(delimiters=['='])
    cfg.read(ROOT/'settings.ini', encoding='utf-8')
    return cfg['DEFAULT']


def say(msg): print(f'\n=== {msg}', flush=True)


def run(*cmd, env=None, cwd=ROOT, check=True):
    print('$', ' '.join(shlex.quote(str(c)) for c in cmd), flush=True)
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env)
    if check and res.returncode: raise SystemExit(f'failed ({res.returncode}): {" ".join(map(str, cmd))}')
    return res.returncode


def _prune(prefix, keep):
    "Remove older environments of one lane, keeping the newest two, so the cache does not grow without end."
    olds = sorted((p for p in ENVS.glob(prefix + '-*') if p != keep and p.is_dir()), key=lambda p: p.stat().st_mtime)
    for p in olds[:-1]: shutil.rmtree(p, ignore_errors=True)


def ensure_env(lane):
    "Path of the `lane` ('dev' or 'latest') environment, created first if missing or incomplete."
    if sys.version_info < (3, 10): raise SystemExit('labelcb needs Python 3.10 or newer')
    cfg = settings()
    reqs = shlex.split(cfg['requirements']) + shlex.split(cfg['test_requirements'])
    # the latest lane runs the notebooks with execnb's own runner, nbdev 2 being unable to run there
    reqs += shlex.split(cfg['dev_requirements']) if lane == 'dev' else ['fastai', 'fastcore', 'execnb']
    reqs = list(dict.fromkeys(reqs))
    # the latest lane re-resolves once a week, so it follows the newest releases
    key = ' '.join(sorted(reqs)) + sys.version + (datetime.date.today().strftime('%G-%V') if lane == 'latest' else '')
    env = ENVS/f'{lane}-{hashlib.sha256(key.encode()).hexdigest()[:12]}'
    done = env/'.labelcb-complete'
    if not done.exists():
        ENVS.mkdir(parents=True, exist_ok=True)
        with _locked(ENVS/f'.{env.name}.lock'):  # two dev.py commands at once: one builds, the other waits for it
            if not done.exists(): _create_env(env, lane, reqs, key, done)
    if lane == 'dev':  # a stable name for editors and the before-stop hook
        link = ROOT/'.venv'
        if link.is_symlink() or not link.exists():
            if link.is_symlink(): link.unlink()
            link.symlink_to(env)
    return env


class _locked:
    "An exclusive lock on `path` for the `with` block (a no-op where fcntl is missing)"
    def __init__(self, path): self.path = path
    def __enter__(self):
        self.f = open(self.path, 'w')
        try:
            import fcntl
            fcntl.flock(self.f, fcntl.LOCK_EX)
        except ImportError: pass
    def __exit__(self, *exc): self.f.close()


def _create_env(env, lane, reqs, key, done):
    "Build the environment `env` from scratch and mark it complete."
    say(f'creating the {lane} environment in {env} (first run only: several minutes, about 6 GB)')
    shutil.rmtree(env, ignore_errors=True)
    run(sys.executable, '-m', 'venv', env)
    pip = [env/'bin'/'python', '-m', 'pip', 'install', '--disable-pip-version-check', '-q']
    run(*pip, '--upgrade', 'pip', 'setuptools', 'wheel')
    run(*pip, *(['--upgrade', '--upgrade-strategy', 'eager'] if lane == 'latest' else []), *reqs)
    run(env/'bin'/'python', '-c', 'import torch, torchvision, fastai; from torchvision.ops import nms; '
        'print("torch", torch.__version__, "torchvision", torchvision.__version__, "fastai", fastai.__version__)')
    done.write_text(key)
    _prune(lane, env)


def dev_environ(env):
    "Environment variables for running the checkout's own `labelcb` with `env`'s Python."
    e = dict(os.environ, PATH=f"{env/'bin'}{os.pathsep}{os.environ.get('PATH', '')}", VIRTUAL_ENV=str(env))
    e['PYTHONPATH'] = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get('PYTHONPATH')] if p])
    e.setdefault('MPLBACKEND', 'Agg')
    return e


def readme_text():
    "README.md made from nbs/index.ipynb: markdown cells as they are, code cells as python blocks; `#| hide` cells left out; the CIFAR-10N headline table from the benchmark's file"
    import json
    nb = json.loads((ROOT/'nbs'/'index.ipynb').read_text(encoding='utf-8'))
    parts = ['<!-- Generated from nbs/index.ipynb by `python3 dev.py readme`: edit the notebook, not this file. -->']
    for cell in nb['cells']:
        lines = ''.join(cell['source']).splitlines()
        directives = [l for l in lines if l.startswith('#|')]
        if any(d.split()[1:2] == ['hide'] for d in directives): continue
        src = '\n'.join(l for l in lines if not l.startswith('#|')).strip()
        if src: parts.append(src if cell['cell_type'] == 'markdown' else f'```python\n{src}\n```')
    text = '\n\n'.join(parts) + '\n'
    # the headline table is the one the CIFAR-10N benchmark writes from its CSV, so the README cannot drift from the figures
    return splice_headline(text)


HEADLINE = ROOT/'benchmarks'/'results'/'cifar10n_headline.md'
HEADLINE_MARKS = ('<!-- cifar10n_headline: written by benchmarks/cifar10n.py -->', '<!-- /cifar10n_headline -->')


def splice_headline(text:str)->str:
    "`text` with the CIFAR-10N headline table between its marks replaced by the one the benchmark wrote from its CSV"
    start, end = HEADLINE_MARKS
    if start not in text or not HEADLINE.exists(): return text
    head, rest = text.split(start, 1)
    return head + start + '\n' + HEADLINE.read_text(encoding='utf-8').strip() + '\n' + end + rest.split(end, 1)[1]


def cmd_readme():
    "README.md from nbs/index.ipynb, whose CIFAR-10N table is first brought up to date with the benchmark's"
    import json
    nbp = ROOT/'nbs'/'index.ipynb'
    nb = json.loads(nbp.read_text(encoding='utf-8'))
    for cell in nb['cells']:
        src = ''.join(cell['source'])
        if cell['cell_type'] == 'markdown' and HEADLINE_MARKS[0] in src and splice_headline(src) != src:
            cell['source'] = splice_headline(src).splitlines(keepends=True)
            nbp.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n', encoding='utf-8')
            print('updated the CIFAR-10N table in nbs/index.ipynb')
    (ROOT/'README.md').write_text(readme_text(), encoding='utf-8')
    print('wrote README.md')


def _snapshot(paths):
    res = {}
    for p in paths:
        for f in sorted(Path(ROOT/p).rglob('*')):
            if f.is_file() and '.ipynb_checkpoints' not in f.parts and '__pycache__' not in f.parts:
                res[str(f.relative_to(ROOT))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return res


def _changed(before, after): return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


# Run in an environment's Python (this file itself uses the standard library only).
# nbdev's doc processing (what `nbdev_docs` does before quarto): it executes export cells, cells with an import and show_doc
# cells, so a notebook whose import cell uses state from a test cell breaks the site. Every notebook, all failures listed.
DOCS_CHECK = r"""
import os, sys, tempfile, warnings
from pathlib import Path
from nbdev.serve_drv import exec_nb
from nbdev.processors import FilterDefaults
warnings.simplefilter('ignore')
os.environ['IN_TEST'] = '1'
failed = []
for nb in sorted(Path('nbs').resolve().glob('*.ipynb')):
    with tempfile.TemporaryDirectory() as d:
        try: exec_nb(nb, Path(d)/nb.name, FilterDefaults)
        except Exception as e: failed.append(nb.name); print(f'FAILED {nb.name}: {e}', flush=True)
        else: print(f'ok {nb.name}', flush=True)
if failed: sys.exit(f'doc processing fails on {len(failed)} notebooks: {failed}')
"""

# The notebooks under the newest fastai, with execnb's runner: as nbdev_test does, cells flagged slow or `eval: false`
# and nbdev_export() calls are skipped; each notebook in a process of its own, from its folder; labelcb is the installed wheel.
NOTEBOOK_RUN = r"""
import os, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

def skip(cell):
    if cell.cell_type != 'code' or 'nbdev_export' + '(' in cell.source: return True
    flags = [l[2:].strip().split() for l in cell.source.splitlines() if l.startswith('#|')]
    return any(f and (f[0] == 'slow' or (f[0] == 'eval:' and f[1:2] == ['false'])) for f in flags)

def run_one(path):
    "Run one notebook here; an exception exits non-zero"
    try: from execnb.nbio import read_nb
    except ImportError: from fastcore.nbio import read_nb  # execnb 0.3 moved it to fastcore
    from execnb.shell import CaptureShell
    os.environ['IN_TEST'] = '1'
    os.chdir(Path(path).parent)
    CaptureShell(path).run_all(read_nb(path), exc_stop=True, preproc=skip)

def run(path):
    "Each notebook in a process of its own: IPython's shell takes over the process's __main__"
    start = time.time()
    r = subprocess.run([sys.executable, __file__, path], capture_output=True, text=True)
    err = None if r.returncode == 0 else ((r.stderr.strip().splitlines() or ['exit status %d' % r.returncode])[-1])
    return path, time.time() - start, err

if __name__ == '__main__':
    if len(sys.argv) > 1: run_one(sys.argv[1]); sys.exit(0)
    nbs = sorted(str(p.resolve()) for p in Path('nbs').glob('*.ipynb'))
    with ThreadPoolExecutor(2) as ex: results = list(ex.map(run, nbs))
    for path, secs, err in results: print(f'{"FAILED" if err else "ok"} {Path(path).name} ({secs:.0f} s)' + (f': {err}' if err else ''))
    failed = [Path(p).name for p, _, err in results if err]
    if failed: sys.exit(f'{len(failed)} notebooks fail under the newest fastai: {failed}')
"""

# The Kaggle tutorial in full (its `slow` cells too: the CIFAR-10N replica, about 25 minutes on 2 cores), outputs saved
# in the notebook for the docs. Needs ../shared/data/cifar10n.
NOTEBOOK_OUTPUTS = r"""
import os, sys, time
from pathlib import Path
from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell
os.environ['MPLBACKEND'] = 'module://matplotlib_inline.backend_inline'  # figures saved as outputs, as in Jupyter
paths = [Path('nbs', n if n.endswith('.ipynb') else n + '.ipynb').resolve() for n in sys.argv[1:]]  # before any chdir
for path in paths:
    os.chdir(path.parent)
    nb, start = read_nb(path), time.time()
    skip = lambda c: 'nbdev_export' + '(' in c.source or any(l.replace(' ', '') == '#|eval:false' for l in c.source.splitlines())  # as nbdev
    CaptureShell(path).run_all(nb, exc_stop=True, preproc=skip)
    write_nb(nb, path)
    print(f'ran {path.name} in full in {time.time() - start:.0f} s; outputs saved in it (review, then commit)', flush=True)
"""


# Saved outputs are what a reader sees on GitHub and in the docs: console progress bars (fastprogress outside Jupyter draws
# them with carriage returns), third-party deprecation notices and the outputs of hidden test cells are noise there.
_BAR = r'\|[\u2588X-]+\| *\d+(\.\d+)?% \['  # a fastprogress console bar: |██---| 40.00% [2/5 ...
_NOTICES = ('FutureWarning: `torch.jit', 'Pandas4Warning')

def _tidy_text(text:str, stderr:bool)->str:
    "Drop progress-bar redraws; on stderr also drop third-party deprecation notices (a warning line and its indented source line)"
    lines, out, skip_next = text.replace('\r\n', '\n').split('\n'), [], False
    for line in lines:
        if skip_next and line.startswith(' '): skip_next = False; continue
        skip_next = False
        line = line.split('\r')[-1]  # a redrawn line: keep what was drawn last
        if re.search(_BAR, line) or line.strip() == '\u2588': continue
        if stderr and any(m in line for m in _NOTICES): skip_next = True; continue
        out.append(line)
    return '\n'.join(out)

def tidy_outputs(path:Path):
    "Tidy the saved outputs of one notebook in place (stdlib only: runs here, not in the notebook's environment)"
    import json
    nb = json.loads(path.read_text(encoding='utf-8'))
    for cell in nb['cells']:
        if cell['cell_type'] != 'code': continue
        src = ''.join(cell['source'])
        if src.lstrip().startswith('#| hide'): cell['outputs'] = []; continue  # a hidden cell's tests: nothing to read
        kept = []
        for o in cell.get('outputs', []):
            if o.get('output_type') == 'stream':
                text = _tidy_text(''.join(o['text']), o.get('name') == 'stderr')
                if not text.strip(): continue
                o['text'] = text.splitlines(keepends=True)
            kept.append(o)
        cell['outputs'] = kept
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n', encoding='utf-8')


def run_script(python, script:str, env, *args)->int:
    "Run `script` (one of the texts above) with `python`, from a file, so the log shows its name rather than its text"
    with tempfile.TemporaryDirectory() as d:
        f = Path(d)/'labelcb_check.py'
        f.write_text(script)
        return run(python, f, *args, env=env, check=False)


def docs_check(env, e)->bool:
    "nbdev's doc processing of every notebook; True if all pass"
    return not run_script(env/'bin'/'python', DOCS_CHECK, e)


def cmd_test(args):
    t0 = datetime.datetime.now()
    env = ensure_env('dev')
    e = dev_environ(env)
    failures = []

    say('1/5 nbdev hygiene: notebooks clean, library exported, README made from nbs/index.ipynb')
    before = _snapshot(['nbs', 'labelcb']) | {'README.md': hashlib.sha256((ROOT/'README.md').read_bytes()).hexdigest()}
    run(env/'bin'/'nbdev_clean', env=e)
    run(env/'bin'/'nbdev_export', env=e)
    after = _snapshot(['nbs', 'labelcb']) | {'README.md': hashlib.sha256(readme_text().encode()).hexdigest()}
    if changed := _changed(before, after):
        failures.append('hygiene')
        print('These files are not what nbdev_clean/nbdev_export/dev.py readme make of the notebooks '
              '(they have now been rewritten; run `python3 dev.py readme` for README.md, review and commit):')
        for c in changed: print('   ', c)

    say('2/5 nbdev_test on the notebooks (cells flagged `slow` are skipped)')
    if run(env/'bin'/'nbdev_test', '--do_print', '--timing', env=e, check=False): failures.append('nbdev_test')

    say("3/5 nbdev's doc processing of every notebook (the step before quarto renders the site)")
    if not docs_check(env, e): failures.append('doc processing')

    say('4/5 pytest tests/ (dev environment, fastai 2.8.7, the checkout itself)')
    if run(env/'bin'/'python', '-m', 'pytest', '-q', 'tests', env=e, check=False): failures.append('pytest (dev)')

    say('5/5 the newest fastai, labelcb installed offline from a wheel: pytest tests/, then the notebooks')
    latest = ensure_env('latest')
    with tempfile.TemporaryDirectory() as wheels:
        run(env/'bin'/'python', '-m', 'pip', 'wheel', '-q', '--disable-pip-version-check', '--no-deps', '-w', wheels, '.', env=e)
        whl = next(Path(wheels).glob('labelcb-*.whl'))
        run(latest/'bin'/'python', '-m', 'pip', 'install', '-q', '--disable-pip-version-check', '--no-index',
            '--no-deps', '--force-reinstall', whl)
    le = dict(os.environ, LABELCB_EXPECT_INSTALLED='1', MPLBACKEND='Agg')
    le.pop('PYTHONPATH', None)
    run(latest/'bin'/'python', '-c', 'import fastai, fastcore, torch; print("latest lane: fastai", fastai.__version__, '
        '"fastcore", fastcore.__version__, "torch", torch.__version__)', env=le)
    # the pytest script (not `python -m pytest`) keeps the checkout off sys.path, so the installed wheel is tested
    if run(latest/'bin'/'pytest', '-q', '-p', 'no:cacheprovider', 'tests', env=le, check=False):
        failures.append('pytest (latest fastai)')
    if run_script(latest/'bin'/'python', NOTEBOOK_RUN, le): failures.append('notebooks (latest fastai)')

    secs = (datetime.datetime.now() - t0).total_seconds()
    if failures:
        print(f'\nFAILED: {", ".join(failures)} ({secs:.0f} s)')
        raise SystemExit(1)
    print(f'\nall checks passed ({secs:.0f} s)')


def main(argv):
    if not argv or argv[0] in ('-h', '--help', 'help'): print(__doc__); return
    cmd, args = argv[0], argv[1:]
    if cmd == 'demo':
        env = ensure_env('dev')
        raise SystemExit(run(env/'bin'/'python', '-m', 'labelcb', 'demo', *args, env=dev_environ(env), check=False))
    if cmd == 'bench':
        if not args or not (ROOT/'benchmarks'/f'{args[0]}.py').exists():
            raise SystemExit(f"name a benchmark: {', '.join(sorted(p.stem for p in (ROOT/'benchmarks').glob('*.py')))}")
        env = ensure_env('dev')
        raise SystemExit(run(env/'bin'/'python', ROOT/'benchmarks'/f'{args[0]}.py', *args[1:], env=dev_environ(env), check=False))
    if cmd == 'test': return cmd_test(args)
    if cmd == 'readme': return cmd_readme()
    if cmd == 'docs':
        env = ensure_env('dev')
        raise SystemExit(0 if docs_check(env, dev_environ(env)) else 1)
    if cmd in ('tutorial', 'outputs'):
        env = ensure_env('dev')
        names = ['tutorial_kaggle'] if cmd == 'tutorial' else args
        if not names: raise SystemExit('name the notebooks to run, e.g. python3 dev.py outputs elr audit')
        code = run_script(env/'bin'/'python', NOTEBOOK_OUTPUTS, dev_environ(env), *names)
        for n in names: tidy_outputs(ROOT/'nbs'/(n if n.endswith('.ipynb') else n + '.ipynb'))  # what did run is tidied too
        if not code: run(env/'bin'/'nbdev_clean', env=dev_environ(env))  # outputs stay; ids and metadata as the hygiene check wants them
        raise SystemExit(code)
    if cmd == 'env': ensure_env('dev'); ensure_env('latest'); return
    raise SystemExit(f'unknown command {cmd!r}\n{__doc__}')


if __name__ == '__main__': main(sys.argv[1:])
