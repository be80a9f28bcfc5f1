import pytest
import torch

from lightstack.physics.config import SurrogateConfig
from lightstack.physics.models.encoder import patchify
from lightstack.physics.models.history import slide_history
from lightstack.physics.models.rollout import history_rollout
from lightstack.physics.models.surrogate import LatentSurrogate


def tiny(spatial, channels=1, n_params=0, **kw) -> LatentSurrogate:
    torch.manual_seed(0)
    settings = dict(width=16, heads=2, patch_size=4, operator_depth=1) | kw
    cfg = SurrogateConfig(
        channels=channels, spatial_shape=list(spatial), n_params=n_params, **settings
    )
    return LatentSurrogate(cfg)


def grid_1d(n, batch=2):
    return (torch.arange(n) / n).view(1, n, 1).expand(batch, n, 1)


def test_patchify_2d_orders_patches_row_major():
    x = torch.arange(16.0).view(1, 4, 4, 1)
    patches = patchify(x, 2)
    assert patches.shape == (1, 4, 4)
    assert patches[0, 0].tolist() == [0, 1, 4, 5]
    assert patches[0, 1].tolist() == [2, 3, 6, 7]


@pytest.mark.parametrize("spatial", [(16,), (8, 8)])
def test_shapes_one_step_and_rollout(spatial):
    model = tiny(spatial, channels=2, n_params=1)
    b = 3
    axes = torch.meshgrid(*[torch.linspace(0, 1, n) for n in spatial], indexing="ij")
    grid = torch.stack(axes, -1).expand(b, *spatial, len(spatial))
    u = torch.randn(b, *spatial, 2)
    dt, params = torch.full((b,), 0.1), torch.rand(b, 1)
    z = model.encode(u, grid)
    n_tokens = 1
    for n in spatial:
        n_tokens *= n // 4
    assert z.shape == (b, n_tokens, 16)
    assert model(u, grid, dt, params).shape == u.shape
    assert model.rollout(u, grid, dt, params, steps=3).shape == (b, 3, *spatial, 2)


def test_rollout_is_the_step_by_step_loop():
    """``rollout`` (the shared loop of ``models.rollout``) gives, to the bit, what encoding the
    history once, stepping the latent and decoding every state (plus the increment anchor)
    gives written out by hand."""
    model = tiny((16,), channels=2, n_params=1, initial_step=2, predict_increment=True).eval()
    with torch.no_grad():
        for p in model.operator.parameters():
            p.add_(0.05 * torch.randn_like(p))  # an untrained operator is the identity
        u, grid = torch.randn(2, 16, 4), grid_1d(16)
        dt, params = torch.full((2,), 0.1), torch.rand(2, 1)
        z = model.encode(u, grid)
        anchor = u[..., -2:] - model.decode_grid(z, grid)
        frames = []
        for _ in range(3):
            z = model.step(z, dt, params)
            frames.append(model.decode_grid(z, grid) + anchor)
        roll = model.rollout(u, grid, dt, params, steps=3)
    assert roll.shape == (2, 3, 16, 2)
    assert torch.equal(roll, torch.stack(frames, dim=1))
    assert not torch.equal(roll[:, 0], roll[:, 1])


def test_history_rollout_slides_the_history():
    """Each prediction replaces the oldest snapshot of the history (PDEBench's FNO rollout)."""
    history = torch.randn(2, 8, 3 * 2)  # three snapshots of two channels

    def step(h: torch.Tensor) -> torch.Tensor:  # newest minus twice the oldest snapshot
        return h[..., -2:] - 2 * h[..., :2]

    roll = history_rollout(history, step, 4)
    seen = history
    for k in range(4):
        expected = seen[..., -2:] - 2 * seen[..., :2]
        assert torch.equal(roll[:, k], expected)
        seen = torch.cat([seen[..., 2:], expected], dim=-1)
    assert torch.equal(
        slide_history(history, roll[:, 0]), torch.cat([history[..., 2:], roll[:, 0]], -1)
    )


def test_untrained_operator_is_identity_in_latent_space():
    model = tiny((16,))
    u, grid = torch.randn(2, 16, 1), grid_1d(16)
    z = model.encode(u, grid)
    assert torch.equal(model.step(z, torch.zeros(2), torch.zeros(2, 0)), z)


def test_decoder_reads_each_point_on_its_own():
    """Queries attend to the tokens, never to each other: a point's value does not depend on
    which other points are asked for or in which order, so the grid decoded together with
    shuffled points off the grid gives ``decode_grid``'s values at the grid points."""
    model = tiny((16,)).eval()
    u, grid = torch.randn(2, 16, 1), grid_1d(16)
    with torch.no_grad():
        z = model.encode(u, grid)
        on_grid = model.decode_grid(z, grid)
        points = torch.cat([torch.rand(2, 37, 1), grid], dim=1)
        order = torch.randperm(points.shape[1])
        shuffled = model.decode(z, points[:, order], model.token_centres(grid))
    unshuffled = shuffled[:, order.argsort()]
    torch.testing.assert_close(unshuffled[:, 37:], on_grid)
    assert unshuffled[:, :37].std() > 0  # the off-grid points are decoded, not a constant


def test_normalisation_is_part_of_the_module():
    model = tiny((16,))
    model.set_normalization(torch.tensor([5.0]), torch.tensor([2.0]))
    state = model.state_dict()
    assert torch.equal(state["mean"], torch.tensor([5.0])) and torch.equal(
        state["std"], torch.tensor([2.0])
    )


def test_missing_data_shapes_is_a_clear_error():
    with pytest.raises(ValueError, match="filled from the data"):
        LatentSurrogate(SurrogateConfig())


def sine_fields(x: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Random smooth periodic fields evaluated at ``x`` (Q,) -> (n, Q, 1); known at any point."""
    g = torch.Generator().manual_seed(seed)
    amp = torch.rand(n, 3, generator=g) - 0.5
    phase = 2 * torch.pi * torch.rand(n, 3, generator=g)
    k = torch.arange(1, 4)
    return (
        amp[:, :, None] * torch.sin(2 * torch.pi * k[None, :, None] * x + phase[:, :, None])
    ).sum(1)[..., None]


def test_trained_decoder_is_accurate_between_grid_points():
    """Train encoder+decoder on a 32-point grid; decode at the midpoints, where truth is known."""
    torch.manual_seed(0)
    model = tiny((32,), width=32, decoder_depth=1)
    x = (torch.arange(32) + 0.5) / 32
    mid = (x + 0.5 / 32)[:-1]
    train = sine_fields(x, 512, seed=0)
    model.set_normalization(train.mean((0, 1)), train.std((0, 1)))
    grid = x.view(1, 32, 1).expand(64, 32, 1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        u = train[torch.randint(0, 512, (64,))]
        loss = (model.decode_grid(model.encode(u, grid), grid) - u).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    test_x, test_mid = sine_fields(x, 64, seed=1), sine_fields(mid, 64, seed=1)
    with torch.no_grad():
        z = model.encode(test_x, grid)
        on_grid = model.decode_grid(z, grid)
        between = model.decode(z, mid.view(1, -1, 1).expand(64, -1, 1), model.token_centres(grid))
    from lightstack.physics.eval.metrics import nrmse

    err_grid, err_mid = nrmse(on_grid, test_x).item(), nrmse(between, test_mid).item()
    assert err_mid < 0.15, err_mid
    assert err_mid < 2.0 * err_grid + 0.02, (err_grid, err_mid)
