"""DPO on TinyStories: prepare, train the SFT reference (unless --sft_ckpt), shuffled-sentence pairs, DPO, test accuracy."""
# script: analysis/dpo_pipeline.py
# Offline on a local file: --prepare="['prepare/tinystories.py', '--build_pairs=False', '--source=stories.txt']"
sft = 'sft_tinystories'      # also gives the DPO run its model flags
prepare = ['prepare/tinystories.py', '--build_pairs=False']  # LM shards; the pairs come from step 3
pairs_args = ['--corruption=shuffle', '--train_pairs=20000', '--val_pairs=500', '--test_pairs=1000']
dpo_args = ['--max_iters=1000', '--batch_size=32', '--learning_rate=2e-5', '--min_lr=2e-6', '--warmup_iters=50',
            '--lr_schedule=cosine', '--beta=0.1', '--eval_interval=100', '--eval_iters=16', '--log_interval=10',
            '--weight_decay=0.0']
figure = 'figures/dpo/dpo_tinystories.png'
