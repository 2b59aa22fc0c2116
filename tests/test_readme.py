"Every Python example of the README runs as written, each on its own, offline, in a fresh process (issue 29): they cannot drift."
import os, re, subprocess, sys
from pathlib import Path
import pytest

README = Path(__file__).resolve().parent.parent/'README.md'
BLOCKS = re.findall(r'```python\n(.*?)```', README.read_text(encoding='utf-8'), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 6
    for b in BLOCKS: assert 'from labelcb.all import *' in b, b[:80]  # each self-contained: its own imports


@pytest.mark.parametrize('i', range(len(BLOCKS)))
def test_readme_example_runs(i, tmp_path):
    env = dict(os.environ, MPLBACKEND='Agg')
    if not os.environ.get('LABELCB_EXPECT_INSTALLED'):  # the dev lane tests the checkout; the latest lane the installed wheel
        env['PYTHONPATH'] = os.pathsep.join([str(README.parent)] + [p for p in [os.environ.get('PYTHONPATH')] if p])
    r = subprocess.run([sys.executable, '-c', BLOCKS[i]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f'README example {i} fails:\n{BLOCKS[i]}\n--- stderr ---\n{r.stderr[-3000:]}'
