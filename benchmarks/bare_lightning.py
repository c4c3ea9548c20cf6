"""The bare-Lightning baseline: seed 004's quadratic model as the smallest LightningModule.

Run as a script, it is the cold-start baseline of ``benchmarks/run.py``: import Lightning, fit
y = w0*x^2 + w1*x + w2 from w = [1, 1, 1] on seed 004's three rows for 100 epochs (300 SGD steps,
lr 0.01) with a TensorBoardLogger, and print the prediction at x=4 (8.544..., as the seed does):

    python benchmarks/bare_lightning.py LOG_DIR

``run.py`` also imports :class:`Quadratic` for the per-step baselines (everything off, ``self.log``
on every step, histograms on every step) and the long learner runs, :class:`Linear` for the
large-data one, :class:`ValidatedLinear` for the shuffled-and-validated large-data one, and
:class:`SigmoidNet` (seed 000's 2-2-2 net) for the long learner runs.
"""

from __future__ import annotations

import sys

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor


class Quadratic(pl.LightningModule):
    """y = w0*x^2 + w1*x + w2, trained as the seed trains it: MSE, then w <- w - lr * grad."""

    def __init__(
        self,
        w: tuple[float, ...] = (1.0, 1.0, 1.0),
        lr: float = 0.01,
        log_loss: bool = False,
        histograms: bool = False,
    ) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w))
        self.lr, self.log_loss, self.histograms = lr, log_loss, histograms

    def forward(self, x: Tensor) -> Tensor:
        return self.w[0] * x**2 + self.w[1] * x + self.w[2]

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = F.mse_loss(self(x), y)
        if self.log_loss:
            self.log("Loss/train_step", loss)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.histograms:
            writer = self.logger.experiment
            writer.add_histogram("weights/w", self.w.detach(), self.global_step)
            writer.add_histogram("grads/w", self.w.grad.detach(), self.global_step)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class Linear(Quadratic):
    """y = w*x (seed 003's model), for the large-data baseline."""

    def __init__(self, w: float = 3.0, **kwargs) -> None:
        super().__init__((w,), **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.w


class ValidatedLinear(Linear):
    """:class:`Linear` with a validation pass: the MSE of each validation batch, logged as
    Lightning averages it over the epoch (``self.log`` in validation_step: on_epoch)."""

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("Loss/val", loss)
        return loss


class SigmoidNet(Quadratic):
    """Seed 000's 2-2-2 net without biases: o = sigmoid(sigmoid(x W1^T) W2^T), MSE, plain SGD."""

    def __init__(
        self,
        hidden: tuple[tuple[float, ...], ...] = ((0.2, 0.5), (-0.4, 0.6)),
        output: tuple[tuple[float, ...], ...] = ((0.1, -0.3), (-0.5, 0.8)),
        lr: float = 1.0,
        **kwargs,
    ) -> None:
        super().__init__(lr=lr, **kwargs)
        del self.w
        self.W1 = torch.nn.Parameter(torch.tensor(hidden))
        self.W2 = torch.nn.Parameter(torch.tensor(output))

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(torch.sigmoid(x @ self.W1.T) @ self.W2.T)


def main(log_dir: str) -> None:
    x = torch.tensor([[1.0], [2.0], [3.0]])
    y = torch.tensor([[2.0], [4.0], [6.0]])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=1)
    model = Quadratic(log_loss=True)
    trainer = pl.Trainer(
        max_epochs=100,
        logger=TensorBoardLogger(log_dir),
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, loader)
    print("predict (after training): x=4.0 ->", model(torch.tensor(4.0)).item())


if __name__ == "__main__":
    main(sys.argv[1])
