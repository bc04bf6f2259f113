import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

if os.environ.get('PYTEST_XDIST_WORKER'):
    # `pytest -n 2 --dist loadscope` (the README's command): one test file per core at a time (a module's fixtures,
    # e.g. a quick study, then run once), so each worker and the processes its tests start use one thread
    os.environ['OMP_NUM_THREADS'] = '1'
    import torch
    torch.set_num_threads(1)


@pytest.fixture(scope='session')
def tiny_data(tmp_path_factory):
    """data_root with a byte-level data set 'tiny' made from a few stdlib modules (train/val)."""
    import data
    import textwrap, json, difflib, argparse
    docs = [open(m.__file__, encoding='utf-8').read() for m in (textwrap, json.decoder, difflib, argparse)]
    root = tmp_path_factory.mktemp('data')
    data.write_lm_dataset(str(root / 'tiny'), {'train': docs[:3], 'val': docs[3:][0][:20000:].split('\n\n')},
                          data.get_tokenizer({'kind': 'byte'}))
    return str(root)


# The slowest test files first (measured with --durations): `-n 2 --dist loadscope` hands out whole files in
# collection order, so a slow file collected last would leave one core idle at the end while the other finishes
# it. Longest first lets the short files fill the gaps, and both workers end together.
SLOW_FIRST = ['test_encdec.py', 'test_dpo.py', 'test_muon.py', 'test_train.py', 'test_diffinput.py', 'test_hf.py',
              'test_variants.py', 'test_fsdp.py', 'test_reliability.py', 'test_pe_lengen.py', 'test_ngpt_context.py',
              'test_pe_study.py', 'test_numeric.py', 'test_decay_branches.py', 'test_attention_explorer.py',
              'test_mqar.py']


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(os.path.basename(str(item.fspath)), len(rank)))  # stable: order kept within
