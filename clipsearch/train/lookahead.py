"""Lookahead weight averaging, as in the fast CIFAR-10 trainers (hlb-CIFAR10, airbench).

Every ``every`` steps from ``start_step`` on, a running average of the weights (BatchNorm
statistics included) moves toward the live weights, and the live weights are then set to the
average. The average's memory grows over the run (decay ``0.95**every * progress**3``): early
on it follows the weights closely, by the end it averages strongly. At each epoch's end and
at the last step the network is set to the average, so evaluations and the saved checkpoint
see it.
"""

from __future__ import annotations

import torch

DECAY_BASE = 0.95
DECAY_POWER = 3.0


class Lookahead:
    def __init__(self, every: int, start_step: int, total: int, steps_per_epoch: int) -> None:
        self.every, self.start_step, self.total = every, start_step, total
        self.steps_per_epoch = steps_per_epoch
        self.average: dict[str, torch.Tensor] = {}

    def after_step(self, module: torch.nn.Module, step: int) -> None:
        """Call after optimizer step number ``step`` (1-based)."""
        if self.every <= 0 or step < self.start_step:
            return
        if step % self.every == 0:
            if not self.average:
                self.average = {
                    k: v.detach().clone()
                    for k, v in module.state_dict().items()
                    if v.is_floating_point()
                }
            else:
                self._pull(module, DECAY_BASE**self.every * (step / self.total) ** DECAY_POWER)
        if self.average and (step % self.steps_per_epoch == 0 or step == self.total):
            self._pull(module, 1.0)  # the network takes the average as it is

    @torch.no_grad()
    def _pull(self, module: torch.nn.Module, decay: float) -> None:
        for name, value in module.state_dict().items():
            average = self.average.get(name)
            if average is not None:
                average.lerp_(value, 1 - decay)
                value.copy_(average)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.average

    def load_state_dict(self, average: dict[str, torch.Tensor], device: torch.device) -> None:
        self.average = {k: v.to(device, copy=True) for k, v in average.items()}
