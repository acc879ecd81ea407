"""Random values for the parameters transformers initializes to constants (norm scales 1, biases 0),
so that every parameter of a fixture is random: a norm applied in the wrong place, or a bias dropped
or misapplied, then changes the outputs a parity test compares."""

from __future__ import annotations

import torch


def randomize_constants(module: torch.nn.Module, seed: int, bias_std: float = 0.1) -> None:
    """In place: each parameter of `module` that holds a single repeated value is redrawn, scales (all
    equal to a non-zero value v) from v * U(0.5, 1.5), zeros from N(0, bias_std)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            first = p.flatten()[0]
            if p.numel() < 2 or not bool((p == first).all()):
                continue
            if float(first) == 0.0:
                p.copy_(torch.randn(p.shape, generator=generator) * bias_std)
            else:
                p.mul_(torch.rand(p.shape, generator=generator) + 0.5)


def constant_parameters(module: torch.nn.Module) -> list[str]:
    """Names of the parameters that hold a single repeated value (none, after `randomize_constants`)."""
    return [name for name, p in module.named_parameters() if p.numel() > 1 and bool((p == p.flatten()[0]).all())]
