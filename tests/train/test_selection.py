"""Best-model tracking and early stopping, apart from the loop."""

from tunelab.config import EarlyStopping
from tunelab.train.selection import BestTracker, EarlyStopper, LoopState


def test_best_tracker_keeps_the_best_by_more_than_min_delta():
    state = LoopState()
    best = BestTracker("accuracy", EarlyStopping(patience=2, min_delta=0.05))
    assert best.best(state) is None
    assert best.update(state, {"step": 0, "accuracy": 0.5})
    assert not best.update(state, {"step": 4, "accuracy": 0.54})  # not by more than 0.05
    assert state.bad_evals == 1
    assert best.update(state, {"step": 8, "accuracy": 0.6})
    assert state.bad_evals == 0 and best.best(state) == {"step": 8, "accuracy": 0.6}


def test_lower_is_better_for_loss_and_early_stopping_counts_evaluations():
    state = LoopState()
    best, stopper = BestTracker("loss"), EarlyStopper(EarlyStopping(patience=2))
    for step, loss in enumerate([1.0, 0.8, 0.9, 0.85]):
        best.update(state, {"step": step, "loss": loss})
        stopped = stopper.check(state)
    assert state.best_step == 1 and state.bad_evals == 2 and stopped and state.stopped_early
    assert not EarlyStopper(None).check(LoopState(bad_evals=10))
