"""The optimizer, built from the settings: AdamW on everything (optimizer='adamw'), or Muon on the 2-D
weight matrices inside the transformer blocks and AdamW on the rest (optimizer='muon').

Muon (Keller Jordan, 2024, https://kellerjordan.github.io/posts/muon/) takes SGD-momentum's update of a
weight matrix and replaces it by the nearest semi-orthogonal matrix (5 Newton-Schulz iterations), so every
direction of the update moves at the same speed. It is meant for hidden linear maps only; the embeddings,
the LM head and every vector (norm gains, biases, nGPT's scales, diff attention's lambdas) stay on AdamW.
The update itself is torch.optim.Muon (torch >= 2.9); this file only decides who gets what.

The schedule drives both: train.py sets group['lr'] = lr_at(step) * group.get('lr_scale', 1.0), and a Muon
group carries lr_scale = muon_lr / learning_rate, so warmup, cosine/WSD and decay branches shape both
learning rates identically (Muon's schedule ends at min_lr * lr_scale).
"""
import torch

OPTIMIZERS = ('adamw', 'muon')   # optimizer: one branch each in build_optimizer


def muon_params(model):
    """[(name, parameter)] that Muon trains: 2-D weights inside the blocks (decoder blocks h.*, encoder blocks
    enc.*): attention q/k/v (fused c_attn, orthogonalized as one matrix) and output projections, cross attention
    in encoder-decoder models, MLP projections. attn='diff' adds only vectors (lambda_q/k, the subln gain) and
    nGPT only scaling vectors (alpha, s_qk, s_uv): not matrices, so AdamW. nGPT's matrices are still linear maps;
    normalize_weights() puts their rows back on the sphere after Muon's step just as after AdamW's.
    Embeddings and the LM head are 2-D but not hidden maps (one row per token): AdamW, as in Keller Jordan's
    and nanochat's setups."""
    return [(n, p) for n, p in model.named_parameters()
            if p.requires_grad and p.dim() == 2 and n.startswith(('h.', 'enc.'))]


def build_optimizer(model, cfg, device_type):
    """AdamW (optimizer='adamw', the lab's original optimizer, unchanged) or Muon + AdamW (optimizer='muon')."""
    adamw_kwargs = dict(lr=cfg['learning_rate'], betas=(cfg['beta1'], cfg['beta2']))
    if device_type == 'cuda':
        adamw_kwargs['fused'] = True
    groups = model.optimizer_groups(cfg['weight_decay'])  # weight decay on matrices, not on vectors
    if cfg['optimizer'] == 'adamw':
        return torch.optim.AdamW(groups, **adamw_kwargs)
    muon_ids = {id(p) for _, p in muon_params(model)}
    adamw_groups = [{**g, 'params': [p for p in g['params'] if id(p) not in muon_ids]} for g in groups]
    # torch's Muon decays weights by lr * weight_decay per step; muon_weight_decay=0 is Keller Jordan's original
    muon = torch.optim.Muon([{'params': [p for _, p in muon_params(model)],
                              'lr_scale': cfg['muon_lr'] / cfg['learning_rate']}],
                            lr=cfg['muon_lr'], momentum=cfg['muon_momentum'], weight_decay=cfg['muon_weight_decay'])
    return MuonAdamW(muon, torch.optim.AdamW(adamw_groups, **adamw_kwargs))


class MuonAdamW:
    """Two optimizers driven as one by the training loop: step, zero_grad, param_groups (for the schedule)
    and one state dict (for checkpoints and exact resume)."""

    def __init__(self, muon, adamw):
        self.muon, self.adamw = muon, adamw

    @property
    def param_groups(self):
        return self.muon.param_groups + self.adamw.param_groups

    def step(self):
        self.muon.step()
        self.adamw.step()

    def zero_grad(self, set_to_none=True):
        self.muon.zero_grad(set_to_none=set_to_none)
        self.adamw.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return {'muon': self.muon.state_dict(), 'adamw': self.adamw.state_dict()}

    def load_state_dict(self, state):
        self.muon.load_state_dict(state['muon'])
        self.adamw.load_state_dict(state['adamw'])
