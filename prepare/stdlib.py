"""The embedded default data set: the Python standard library's own sources and docs.

Every Python installation has it on disk, so the quickstart needs no network. Files (*.py, *.txt,
*.rst; no site-packages/dist-packages) are split into train/val by a stable hash of their path, a
BPE is trained on the train files only, and each file is followed by <|endoftext|>.

    python prepare/stdlib.py                      # -> data/stdlib (bpe, vocab 4096)
    python prepare/stdlib.py --tokenizer=byte --out_dir=data/stdlib_byte
    python prepare/stdlib.py --source=path/to/folder --include_tests=False
"""
import os
import sys
import sysconfig
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import configurator  # noqa: E402
from configurator import OneOf, Range, Text  # noqa: E402
import data  # noqa: E402

out_dir: Text('output folder') = 'data/stdlib'
tokenizer: OneOf(data.TOKENIZERS) = 'bpe'  # bpe: trained here on the train split
vocab_size: Range(data.MIN_BPE_VOCAB) = 4096  # bpe only; includes the 3 special tokens
val_fraction: Range(0, 1, hi_open=True) = 0.05  # of files, chosen by a hash of the relative path
shard_tokens: Range(1) = 10_000_000
include_tests: bool = True  # the stdlib's test suites are about 19 MB of the 31 MB
seed: Range(0) = 1337  # mixed into the split hash
source: Text('folder of .py/.txt/.rst files') = ''  # '' = this interpreter's stdlib folder; else any folder
force: bool = False  # rebuild out_dir (only a data set prepare/ made)

EXTENSIONS = ('.py', '.txt', '.rst')
SKIP_DIRS = {'site-packages', 'dist-packages', '__pycache__'}
TEST_DIRS = {'test', 'tests', 'idle_test'}


def collect_files(root, include_tests):
    """Sorted relative paths of the text files under root."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        skip = SKIP_DIRS if include_tests else SKIP_DIRS | TEST_DIRS
        dirnames[:] = sorted(d for d in dirnames if d not in skip)
        for f in filenames:
            if f.endswith(EXTENSIONS):
                files.append(os.path.relpath(os.path.join(dirpath, f), root))
    return sorted(files)


def main():
    config = configurator.configure(globals())
    print(config)
    if data.check_existing(out_dir, config, force):
        print(f"{out_dir} already prepared with these settings (use --force=True to rebuild)")
        return
    t0 = time.time()
    root = source or sysconfig.get_paths()['stdlib']
    if not os.path.isdir(root):
        raise data.DataError(f"--source '{root}' is not a folder: pass a folder of .py/.txt/.rst files")
    files = collect_files(root, include_tests)
    if not files:
        raise data.DataError(f"no .py/.txt/.rst files under '{root}': pass a folder that has some")
    texts = {}
    for f in files:
        with open(os.path.join(root, f), 'rb') as fh:  # a file may not be UTF-8 (lib2to3 test data)
            texts[f] = fh.read().decode('utf-8', errors='replace')
    labels = data.assign_splits(files, val_fraction, seed)
    splits = {'train': [texts[f] for f, s in zip(files, labels) if s == 'train'],
              'val': [texts[f] for f, s in zip(files, labels) if s == 'val']}
    if not any(splits['train']):
        raise data.DataError(f"the files under '{root}' hold no text for the train split: pass a larger folder")
    print(f"{len(files):,} files, {sum(map(len, texts.values())) / 1e6:.1f} M characters "
          f"({len(splits['train'])} train / {len(splits['val'])} val); tokenizer {tokenizer}")
    tok = data.build_tokenizer(tokenizer, vocab_size, splits['train'])
    meta = data.write_lm_dataset(out_dir, splits, tok, shard_tokens=shard_tokens, meta_extra={
        'source': source or 'python stdlib (sysconfig stdlib path)',
        'stdlib_path': root, 'python': sys.version.split()[0], 'files': len(files),
        'val_files': len(splits['val']), 'config': config})
    data.print_summary(out_dir, meta, len(files), time.time() - t0)


if __name__ == '__main__':
    configurator.run_main(main)
