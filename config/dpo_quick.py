"""Offline DPO on the embedded corpus over 3 seeds (CPU minutes): brief SFT, other-document pairs, DPO, test accuracy before/after."""
# script: analysis/dpo_pipeline.py
sft = 'sft_quick'            # trains the SFT reference (300 steps) per seed unless --sft_ckpt is given
pairs_args = ['--corruption=other', '--chunk_tokens=96', '--max_per_doc=24', '--train_pairs=1500',
              '--val_pairs=96', '--test_pairs=320']
dpo_args = ['--max_iters=150', '--batch_size=8', '--learning_rate=3e-4', '--min_lr=3e-5', '--warmup_iters=10',
            '--lr_schedule=cosine', '--beta=0.1', '--weight_decay=0.0', '--eval_interval=25', '--eval_iters=12',
            '--log_interval=5']
seeds = [1, 2, 3]            # one SFT -> DPO chain per seed; the table reports mean ± std over them
jobs = 2                     # two 1-thread seed chains side by side (2-core CPU)
figure = 'figures/dpo/dpo_quick.png'
