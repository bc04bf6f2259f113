# tests/test_muon.py puts this folder on PYTHONPATH: torch.optim.Muon's Newton-Schulz in float32 instead of
# bfloat16, so DDP vs accumulation (fp32-rounding-different gradients) can be compared at fp32 tolerance
import torch.optim._muon as _m


def _ns_fp32(grad, ns_coefficients, ns_steps, eps):
    a, b, c = ns_coefficients
    x = grad.float()
    if grad.size(0) > grad.size(1):
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(ns_steps):
        g = x @ x.T
        x = a * x + (b * g + c * g @ g) @ x
    return x.T if grad.size(0) > grad.size(1) else x


_m._zeropower_via_newtonschulz = _ns_fp32
