"""Stage ``consistency_distill``: consistency distillation (CD) of the diffusion residual.

Song et al. 2023, Algorithm 2, on the latent residual: draw a clean (scaled) residual ``x0``
and a pair of adjacent levels ``t_n < t_{n+1}`` of the distillation grid, noise ``x0`` to
``x_{t_{n+1}}``, run the frozen teacher's probability-flow ODE solver (one DDIM step) to
``x_{t_n}``, and pull the student's ``f(x_{t_{n+1}}, t_{n+1})`` towards the EMA student's
``f(x_{t_n}, t_n)``. The boundary condition ``f(x, t_0) = x`` anchors the chain at the clean
end, so the student learns to jump from any level to the end of the teacher's trajectory and
corrects in one or two steps instead of the teacher's N. Clean residuals come from the same
teacher-forced pairs as the teacher's, so with ``cache.enabled`` they are built from cached
latents and training never runs the encoder.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from lightstack.core.checkpoints import META_KEY, architecture_fingerprint
from lightstack.physics.config import PhysicsConfig
from lightstack.physics.data.windows import PDEDataModule
from lightstack.physics.models.consistency import ConsistencyResidual
from lightstack.physics.models.diffusion import DiffusionResidual
from lightstack.physics.stages.diff_residual import CorrectorStage
from lightstack.physics.stages.handoff import StageCheckpoint


@torch.no_grad()
def consistency_target(
    teacher: DiffusionResidual,
    student: ConsistencyResidual,
    target_net: nn.Module,
    x0: torch.Tensor,
    tokens: torch.Tensor,
    cond: torch.Tensor,
    n: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One CD training example per row: ``(x_{t_{n+1}}, t_{n+1}, target)``.

    ``n`` (B,) indexes the lower level of each pair on the student's grid (random when None);
    the target is the student's consistency function with ``target_net`` (the EMA network)
    applied to the teacher's ODE step from ``x_{t_{n+1}}`` down to ``t_n``.
    """
    levels = student.levels
    if n is None:
        n = torch.randint(0, len(levels) - 1, (x0.shape[0],), device=x0.device)
    if noise is None:
        noise = torch.randn_like(x0)
    t_high, t_low = levels[n + 1], levels[n]
    x_high = teacher.scheduler.add_noise(x0, noise, t_high)
    x_low = teacher.ode_step(x_high, t_high, t_low, tokens, cond)
    return x_high, t_high, student.consistency(x_low, t_low, tokens, cond, net=target_net)


class ConsistencyStage(CorrectorStage):
    stage = "consistency_distill"
    requires = "diff_residual"

    def __init__(self, cfg: PhysicsConfig, task_names: list[str]):
        super().__init__(cfg, task_names)
        self.teacher = DiffusionResidual(cfg.model, cfg.diffusion).requires_grad_(False).eval()
        self.teacher.surrogate = self.model.surrogate  # one frozen surrogate for both
        self.ema = (
            AveragedModel(
                self.model.denoiser,
                multi_avg_fn=get_ema_multi_avg_fn(cfg.consistency.ema_decay),
                use_buffers=False,
            )
            .requires_grad_(False)
            .eval()
        )

    def build_model(self, cfg: PhysicsConfig) -> ConsistencyResidual:
        c = cfg.consistency
        return ConsistencyResidual(cfg.model, cfg.diffusion, c.levels, c.sample_steps)

    @property
    def sample_steps(self) -> int:
        return self.cfg.consistency.sample_steps

    @classmethod
    def from_datamodule(
        cls, cfg: PhysicsConfig, dm: PDEDataModule, parent: StageCheckpoint
    ) -> ConsistencyStage:
        """Teacher from the ``diff_residual`` checkpoint; student and EMA target start as it."""
        stage = cls(cfg, dm.task_names)
        parent.load_into(stage.teacher)
        stage.model.load_state_dict(stage.teacher.state_dict())
        stage.ema.module.load_state_dict(stage.model.denoiser.state_dict())
        stage.ema.n_averaged.fill_(1)  # the target starts equal to the student, then decays
        return stage

    def train(self, mode: bool = True) -> ConsistencyStage:
        super().train(mode)
        self.teacher.eval()
        self.ema.eval()
        return self

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x0, tokens, cond = self.clean_residuals(batch)
        x_high, t_high, target = consistency_target(
            self.teacher, self.model, self.ema.module, x0, tokens, cond
        )
        pred = self.model.consistency(x_high, t_high, tokens, cond)
        loss = (pred - target).pow(2).mean()
        self.log("train/loss", loss, on_step=True, on_epoch=True)
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """After every optimizer step: ``theta_ema <- mu theta_ema + (1 - mu) theta``."""
        super().optimizer_step(*args, **kwargs)
        self.ema.update_parameters(self.model.denoiser)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[META_KEY]["teacher_fingerprint"] = architecture_fingerprint(self.teacher)
