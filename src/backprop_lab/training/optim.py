"""Plain SGD, w <- w - lr * g, rounded as the seeds round it.

torch.optim.SGD updates with ``p.add_(g, alpha=-lr)``, which rounds ``p + (-lr) * g`` differently
from the seeds' hand-written ``w.data - lr * w.grad``; over seed 004's 300 float32 steps the two
drift ~1e-5 apart. This optimiser computes the product and the difference as the seeds do, so
``model=X`` reproduces their printed numbers. ``optimizer=torch_sgd`` selects PyTorch's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer


class SGD(Optimizer):
    """v <- momentum * v + (g + weight_decay * w);  w <- w - lr * v  (v = g without momentum)."""

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 0.01,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        if lr <= 0:
            raise ValueError(f"optimizer.lr must be > 0, got {lr}")
        if momentum < 0 or weight_decay < 0:
            raise ValueError("optimizer.momentum and optimizer.weight_decay must be >= 0")
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if weight_decay:
                    g = g + weight_decay * p
                if momentum:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = g.clone()
                    else:
                        state["momentum_buffer"].mul_(momentum).add_(g)
                    g = state["momentum_buffer"]
                p.sub_(lr * g)
        return loss
