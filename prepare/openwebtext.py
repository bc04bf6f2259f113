"""OpenWebText (Skylion007/openwebtext: 8M web documents, about 9B GPT-2 tokens) -> data/openwebtext.

On the hub it is a script data set, which datasets >= 4 refuses (karpathy/nanoGPT issue 633); the one
hub loader (data.load_hub) then reads the hub's parquet conversion, which holds the first 5 GB of a split
that large: a part of OpenWebText. For all of it, pass --source= local parquet/jsonl files of a full copy.

The reference data set of the nGPT / Differential Transformer launcher problems. Loading (hub id or
local .jsonl/.parquet/.txt with a `text` field), the stable-hash validation split, tokenizing with
tqdm progress and the atomic shard writing are prepare/text.py's (through data.write_lm_dataset);
this script only fixes the source, GPT-2 tokens and nanoGPT's 0.05% validation split as defaults.

    python prepare/openwebtext.py                              # the hub (see above)
    python prepare/openwebtext.py --source=owt/ --max_docs=100000   # local parquet/jsonl shards of it
    python prepare/openwebtext.py --source=sample.jsonl --tokenizer=byte --out_dir=data/owt_byte
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import text  # noqa: E402  (prepare/text.py: its settings are this script's, with other defaults)

text.source = 'Skylion007/openwebtext'
text.out_dir = 'data/openwebtext'
text.tokenizer = 'gpt2'
text.val_fraction = 0.0005       # the hub set has only a train split; nanoGPT's val share
text.shard_tokens = 100_000_000  # 200 MB uint16 shards: about 90 of them

if __name__ == '__main__':
    text.configurator.run_main(text.main)
