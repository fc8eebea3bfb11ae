"""Every task implements the Task interface; its optional hooks do nothing by default."""

from pathlib import Path

import pytest

from tunelab.tasks.base import Task
from tunelab.tasks.causal_lm import CausalLMTask
from tunelab.tasks.classification import ClassificationTask
from tunelab.tasks.masked_lm import MaskedLMTask
from tunelab.tasks.multitask import MultiTask
from tunelab.tasks.token_classification import TokenClassificationTask
from tunelab.tasks.translation import DecoderTranslationTask, Seq2SeqTranslationTask

TASKS = [ClassificationTask, TokenClassificationTask, CausalLMTask, MaskedLMTask, MultiTask,
         DecoderTranslationTask, Seq2SeqTranslationTask]


@pytest.mark.parametrize("cls", TASKS)
def test_every_task_is_a_task_with_its_own_loss_and_scores(cls):
    assert issubclass(cls, Task) and cls.name != Task.name
    for method in ("collate", "units", "loss_sum", "evaluate"):
        assert getattr(cls, method) is not getattr(Task, method), method


def test_the_hooks_default_to_nothing():
    task = Task()
    assert task.plan_batches([3, 1, 2], 2, 0, 0, False) != []
    assert task.set_step(5) is None and task.samples == 0
    assert task.choose_batches(None, None, print) is None
    assert task.write_samples(None, None, 0, Path("."), None) is None
    assert task.test_before(None, None, Path("."), False, True, print) is None
    assert task.test_after(None, None, Path("."), True, print) is None
    assert task.predict(None, None, 1, None) is None
