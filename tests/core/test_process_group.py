"""ProcessGroupShutdown: a run's gloo process group is destroyed at exit, once, not left to the
interpreter's teardown (where a rank of a finished CPU DDP run could abort)."""

from __future__ import annotations

import atexit
from collections.abc import Callable, Iterator

import pytest
import torch

from lightstack.core.callbacks.process_group import ProcessGroupShutdown, destroy_process_group


@pytest.fixture
def at_exit(monkeypatch) -> Iterator[list[Callable[[], None]]]:
    """The ``destroy_process_group`` registrations made at exit (others pass through)."""
    registered: list[Callable[[], None]] = []
    register, unregister = atexit.register, atexit.unregister

    def fake_register(fn, *args, **kwargs):
        if fn is destroy_process_group:
            registered.append(fn)
            return fn
        return register(fn, *args, **kwargs)

    def fake_unregister(fn):
        if fn is destroy_process_group:
            registered[:] = [f for f in registered if f is not fn]
        else:
            unregister(fn)

    monkeypatch.setattr(atexit, "register", fake_register)
    monkeypatch.setattr(atexit, "unregister", fake_unregister)
    yield registered
    destroy_process_group()  # whatever the test left up


def test_a_ddp_fit_has_its_gloo_group_destroyed_at_exit_once(toy, tmp_path, at_exit):
    trainer, module = toy.fit(toy.config("trainer.strategy=ddp", "trainer.devices=1"), tmp_path)
    assert torch.distributed.is_initialized()
    assert torch.distributed.get_backend() == "gloo"
    assert at_exit == [destroy_process_group]
    shutdown = next(cb for cb in trainer.callbacks if isinstance(cb, ProcessGroupShutdown))
    shutdown.setup(trainer, module, "validate")  # a second fit or test in the same process
    assert at_exit == [destroy_process_group]
    at_exit[0]()
    assert not torch.distributed.is_initialized()
    destroy_process_group()  # a second call (Lightning's own at-exit hook, say) is harmless


def test_a_single_process_fit_registers_nothing(toy, tmp_path, at_exit):
    trainer, _ = toy.fit(toy.config(), tmp_path)
    assert any(isinstance(cb, ProcessGroupShutdown) for cb in trainer.callbacks)
    assert not torch.distributed.is_initialized() and at_exit == []
