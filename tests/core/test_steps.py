from lightstack.core.callbacks.steps import EveryNOptimizerSteps


def test_fires_once_per_nth_optimizer_step_despite_accumulation():
    every = EveryNOptimizerSteps(2)
    # global_step as seen by on_train_batch_end with 2 micro-batches per optimizer step
    steps = [0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert [s for s in steps if every.due(s)] == [2, 4]


def test_zero_or_none_never_fires():
    assert not any(EveryNOptimizerSteps(n).due(s) for n in (0, None) for s in range(5))
