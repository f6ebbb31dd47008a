"""The contract every registered task must meet, checked on its real data when available."""

from __future__ import annotations

import pytest
import torch

from tasks import TASKS, list_tasks
from tasks.base import Capability, DataNotFoundError, TaskData


@pytest.fixture(params=list_tasks())
def task_and_data(request, mnist_root):
    task = TASKS.create(request.param)
    try:
        data = task.load(mnist_root, download=False)
    except DataNotFoundError as err:
        pytest.skip(f"{task.name} data not available: {err}")
    return task, data


def test_declares_name_description_metric_and_protocol(task_and_data):
    task, _ = task_and_data
    assert task.name in list_tasks() and task.description
    assert task.metric.name and task.metric.label
    p = task.protocol
    assert p.initial >= 1 and p.increment >= 0 and p.rounds >= 1 and p.epochs >= 1 and p.lr > 0


def test_data_are_float_tensors_or_uint8_images_with_matching_targets(task_and_data):
    _, data = task_and_data
    assert isinstance(data, TaskData)
    assert data.pool_x.dtype == data.test_x.dtype
    assert data.pool_x.dtype == torch.float32 or (data.pool_x.dtype == torch.uint8 and data.pool_x.ndim == 4)
    assert len(data.pool_x) > len(data.test_x) > 0
    assert data.pool_x.shape[1:] == data.test_x.shape[1:]


def test_model_loss_scores_and_embeddings_fit_together(task_and_data):
    task, data = task_and_data
    torch.manual_seed(0)
    model = task.make_model()
    x, y = data.pool_x[:8], data.pool_y[:8]
    output = model(x)
    loss = task.loss(output, y)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    scores = task.scores(output.detach(), y)
    assert list(scores)[0] == task.metric.name
    assert list(scores)[1:] == task.extra_metrics()
    embedding = model.embed(x)
    assert embedding.shape[0] == 8 and embedding.flatten(1).shape[1] > 0
    if Capability.PROBABILITIES in task.capabilities:
        assert output.ndim == 2 and output.shape[1] > 1


def test_augmentation_keeps_shape_and_is_reproducible(task_and_data):
    task, data = task_and_data
    if task.augmentation is None:
        pytest.skip(f"{task.name} offers no augmentation (nothing to check)")
    x = data.pool_x[:16]
    first = task.augment(x, torch.Generator().manual_seed(0))
    again = task.augment(x, torch.Generator().manual_seed(0))
    other = task.augment(x, torch.Generator().manual_seed(1))
    assert first.shape == x.shape and first.dtype == x.dtype and first.device == x.device
    assert torch.equal(first, again) and not torch.equal(first, other)
