"""The one hub loader (data.load_hub) through the prepare scripts, offline: only datasets.load_dataset's
network calls are replaced; files laid out as the hub's parquet conversion (refs/convert/parquet:
<config>/<split>/0000.parquet) are read by the real datasets library."""
import importlib.util
import json
import os
import sys

import pytest

import data as datalib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT_REFUSAL = "Dataset scripts are no longer supported, but found openwebtext.py"


def write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def fake_hub(monkeypatch, hub_id, conversion=None, main=None, gone=''):
    """datasets.load_dataset where `hub_id` is a script data set (main=None), a parquet set stored at `main`,
    or refused as DatasetNotFoundError(gone) (404, or gated); revision refs/convert/parquet reads the local
    folder `conversion`. Returns the call log."""
    import datasets
    real = datasets.load_dataset
    calls = []

    def load_dataset(path, *args, **kw):
        if path != hub_id:
            return real(path, *args, **kw)
        calls.append(kw.get('revision'))
        if gone:
            raise datasets.exceptions.DatasetNotFoundError(gone)
        if kw.get('revision') == datalib.PARQUET_REVISION:
            if conversion is None:
                raise FileNotFoundError(f"{hub_id}: no parquet conversion")
            return real(conversion, *args, **{k: v for k, v in kw.items() if k != 'revision'})
        if main is None:
            raise RuntimeError(SCRIPT_REFUSAL)
        return real(main, *args, **kw)
    monkeypatch.setattr(datasets, 'load_dataset', load_dataset)
    return calls


def run_script(name, args, monkeypatch):
    """A prepare script's main() under configurator.run_main, in this process (fresh module: default settings)."""
    spec = importlib.util.spec_from_file_location(f'{name}_under_test', os.path.join(ROOT, 'prepare', f'{name}.py'))
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.syspath_prepend(os.path.join(ROOT, 'prepare'))
    spec.loader.exec_module(mod)
    target = mod.text.main if name == 'openwebtext' else mod.main  # openwebtext.py runs prepare/text.py's main
    monkeypatch.setattr(sys, 'argv', [f'{name}.py'] + args)
    import configurator
    configurator.run_main(target)


def test_script_dataset_falls_back_to_parquet_conversion(tmp_path, monkeypatch, capsys):
    docs = [{'text': f'document {i} ' + 'words ' * (i % 7 + 3)} for i in range(40)]
    conv = tmp_path / 'conversion'
    write_parquet(str(conv / 'plain_text' / 'train' / '0000.parquet'), docs)
    calls = fake_hub(monkeypatch, 'Skylion007/openwebtext', conversion=str(conv))
    out = tmp_path / 'owt'
    run_script('openwebtext', [f'--out_dir={out}', '--tokenizer=byte', '--val_fraction=0.1'], monkeypatch)
    err = capsys.readouterr().err
    assert calls == [None, datalib.PARQUET_REVISION]  # the script set first, then its conversion
    notes = [l for l in err.splitlines() if 'parquet conversion' in l]
    assert len(notes) == 1 and 'script data set' in notes[0] and 'refs/convert/parquet' in notes[0]
    meta = json.load(open(out / 'meta.json'))
    assert meta['documents'] == 40 and meta['source'] == 'Skylion007/openwebtext'
    train = sum(len(s) for s in datalib.open_split(str(out), 'train'))
    val = sum(len(s) for s in datalib.open_split(str(out), 'val'))
    total_bytes = sum(len(d['text'].encode()) for d in docs)
    assert train + val == total_bytes + 40  # every byte of every document, plus one <|endoftext|> each


def test_fallback_picks_the_config_folder_and_streams(tmp_path, monkeypatch):
    conv = tmp_path / 'conversion'
    write_parquet(str(conv / 'sample-10BT' / 'train' / '0000.parquet'), [{'text': 'a'}, {'text': 'b'}])
    write_parquet(str(conv / 'other' / 'train' / '0000.parquet'), [{'text': 'not this config'}])
    fake_hub(monkeypatch, 'someone/script-set', conversion=str(conv))
    ds = datalib.load_hub('someone/script-set', 'sample-10BT', split='train', streaming=True)
    assert [r['text'] for r in ds] == ['a', 'b']


def test_gone_source_is_one_line_naming_local_alternatives(tmp_path, monkeypatch, capsys):
    calls = fake_hub(monkeypatch, 'Samsung/samsum',
                     gone="Dataset 'Samsung/samsum' doesn't exist on the Hub or cannot be accessed.")
    out = tmp_path / 'samsum'
    with pytest.raises(SystemExit) as e:
        run_script('samsum', ['--source=Samsung/samsum', f'--out_dir={out}', '--tokenizer=byte'], monkeypatch)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and calls == [None]  # gone: no conversion to try
    assert len(err.splitlines()) == 1 and err.startswith("error: cannot load 'Samsung/samsum'")
    assert 'gone' in err and '--source=' in err and 'dialogue, summary' in err and '.parquet/.jsonl' in err
    assert not out.exists()


def test_gated_source_says_how_to_get_access(tmp_path, monkeypatch, capsys):
    fake_hub(monkeypatch, 'nampdn-ai/tiny-textbooks', gone="Dataset 'nampdn-ai/tiny-textbooks' is a gated dataset "
             "on the Hub. You must be authenticated to access it.")
    with pytest.raises(SystemExit) as e:
        run_script('tiny_textbooks', [f'--out_dir={tmp_path / "t"}', '--tokenizer=byte'], monkeypatch)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1
    assert 'gated dataset' in err and 'hf auth login' in err and '--source=' in err and 'textbook' in err


def test_script_set_without_conversion_is_one_line(tmp_path, monkeypatch, capsys):
    fake_hub(monkeypatch, 'Skylion007/openwebtext', conversion=None)
    with pytest.raises(SystemExit) as e:
        run_script('openwebtext', [f'--out_dir={tmp_path / "o"}', '--tokenizer=byte'], monkeypatch)
    err = [l for l in capsys.readouterr().err.splitlines() if l.startswith('error:')]
    assert e.value.code == 2 and len(err) == 1
    assert 'parquet conversion did not load either' in err[0] and '--source=' in err[0]
    assert not (tmp_path / 'o').exists()


def test_samsum_default_source_loads_with_its_fields(tmp_path, monkeypatch, capsys):
    """The default (knkarthick/samsum: id, dialogue, summary; train/validation/test) as a parquet set."""
    hub = tmp_path / 'knkarthick_samsum'
    for split, n in (('train', 30), ('validation', 4), ('test', 5)):
        write_parquet(str(hub / 'data' / f'{split}-00000-of-00001.parquet'),
                      [{'id': f'{split}{i}', 'dialogue': f'Ann: hi {i}\r\nBob: bye', 'summary': f'They greet {i}.'}
                       for i in range(n)])
    calls = fake_hub(monkeypatch, 'knkarthick/samsum', main=str(hub))
    out = tmp_path / 'samsum'
    run_script('samsum', [f'--out_dir={out}', '--tokenizer=byte'], monkeypatch)
    assert calls == [None]  # loads directly: no fallback needed
    meta = json.load(open(out / 'meta.json'))
    assert meta['source'] == 'knkarthick/samsum' and meta['documents'] == {'train': 30, 'val': 4, 'test': 5}
    recs = datalib.open_seq2seq(str(out), 'val')
    tok = datalib.get_tokenizer(meta['tokenizer'])
    assert tok.decode(recs[0]['src']) == 'Ann: hi 0\nBob: bye' and tok.decode(recs[0]['tgt']) == 'They greet 0.'
