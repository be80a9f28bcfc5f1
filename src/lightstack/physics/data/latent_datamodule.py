"""Training batches of cached latents for the stages that build on a frozen encoder.

``diff_residual`` and ``consistency_distill`` learn from pairs of latent states that the
frozen operator's encoder produces. With ``cache.enabled`` the training split is encoded once
per (data, encoder) into the latent cache (``latent_cache.open_or_build``) and every training
batch is a window of cached latents, so no training step runs the encoder. Validation and
test batches stay physical fields: they are judged after decoding, exactly as without the
cache.

The cache is opened in ``prepare_data``, which Lightning runs on the first process of each
node while the others wait, and again in ``setup`` on every process, where it is complete and
only reused (a concurrent build on a shared folder is resolved by ``open_or_build``'s rename).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.utils.data import ConcatDataset

from lightstack.physics.config import LatentCacheConfig, PhysicsDataConfig
from lightstack.physics.data.latent_cache import Advance, LatentCache, open_or_build
from lightstack.physics.data.windows import PDEDataModule
from lightstack.physics.models.surrogate import LatentSurrogate

CACHED_SPLITS = ("train",)


@contextmanager
def encoding_progress(show: bool) -> Iterator[Callable[[int], Advance] | None]:
    """A progress factory for ``open_or_build``: the bar appears only if a build starts."""
    if not show:
        yield None
        return
    columns = (
        TextColumn("encoding latent cache"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    bar = Progress(*columns, transient=False)

    def start(total: int) -> Advance:
        bar.start()
        task = bar.add_task("latents", total=total)
        return lambda done: bar.advance(task, done)

    try:
        yield start
    finally:
        bar.stop()


class LatentCacheDataModule(PDEDataModule):
    """``PDEDataModule`` whose training loader serves cached latents.

    Training items are ``latents`` (horizon + 1, N, W), ``dt``, ``params`` and ``task``; the
    loader is resumable mid-epoch and honours ``data.task_weights`` like the field loader.
    ``attach_encoder`` gives it the frozen surrogate whose encoder makes the latents.
    """

    def __init__(
        self,
        cfg: PhysicsDataConfig,
        horizon: int,
        cache_cfg: LatentCacheConfig,
        progress: bool = True,
    ):
        super().__init__(cfg, horizon)
        self.cache_cfg = cache_cfg
        self.progress = progress
        self.encoder: LatentSurrogate | None = None
        self.cache: LatentCache | None = None

    def attach_encoder(self, surrogate: LatentSurrogate) -> None:
        """Use ``surrogate`` (frozen, normalisation set) to encode the cache."""
        self.encoder = surrogate
        self.cache = None

    def prepare_data(self) -> None:
        """Build (or find) the entry before fitting; validation and test need none."""
        if self.trainer is None or self.trainer.state.fn == TrainerFn.FITTING:
            self.open_cache()

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.open_cache()

    def open_cache(self) -> LatentCache:
        """The cache entry for the attached encoder: reused when complete, else built here."""
        if self.cache is not None:
            return self.cache
        if self.encoder is None:
            raise RuntimeError(
                "cache.enabled is set but no encoder is attached to the data module: build the "
                "stage with lightstack.physics.stages.build_stage(cfg, dm)"
            )
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else None
        show = self.progress and (trainer is None or trainer.local_rank == 0)
        with encoding_progress(show) as progress:
            cache = open_or_build(
                self.encoder, self, self.cache_cfg, CACHED_SPLITS, device, progress
            )
        size_mb = sum(f.stat().st_size for f in cache.path.glob("*.npy")) / 1e6
        rank_zero_info(
            f"latent cache {'built' if cache.built else 'reused'}: key {cache.key} at "
            f"{cache.path} ({size_mb:.1f} MB)"
        )
        self.cache = cache
        return cache

    def training_windows(self, horizon: int | None) -> ConcatDataset:
        """Windows of ``horizon + 1`` cached training latents (the cache is opened if needed)."""
        return self.open_cache().windows("train", horizon)
