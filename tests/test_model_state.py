"""Issue 12: every public function that runs a user's model leaves it as it was: its train/eval mode (every module's own
flag), its `requires_grad` flags and its hooks; the forwards themselves run in eval mode. Explainers are covered by the
registry-driven `check_untouched` (tests/test_explainers.py); this file covers the metrics that run the model, found by
walking the subclasses of `Metric` (a new one is covered without editing this file) and the engine's `score`."""
import inspect

import pytest
import torch
from torch import nn

from xaikit.metrics import Metric, make_sample
from xaikit.models import wrap
from xaikit.perturb import RISEMasks, score


def _metric_classes():
    seen, todo = set(), list(Metric.__subclasses__())
    while todo:
        c = todo.pop(); seen.add(c); todo += c.__subclasses__()
    return sorted((c for c in seen if 'model' in inspect.signature(c).parameters), key=lambda c: c.__name__)


def _bn_net():
    "A tiny CNN with batch norm and dropout, so train mode would change the scores and the running statistics."
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    net.train(); net[3].eval()                                        # mixed modes must come back as they were
    net[0].weight.requires_grad_(False)
    return wrap(net, input_size=32)


def _state(m):
    return ([mod.training for mod in m.model.modules()], [p.requires_grad for p in m.model.parameters()],
            {k: v.clone() for k, v in m.model.state_dict().items()},
            sum(len(x._forward_hooks) + len(x._forward_pre_hooks) + len(x._backward_hooks) for x in m.modules()))


class _EvalSpy:
    "Records the mode of every forward of the wrapped network (removed before the state is compared)."
    def __init__(self, m): self.modes, self.h = [], m.model.register_forward_pre_hook(lambda mod, a: self.modes.append(mod.training))
    def close(self): self.h.remove()


def _same(a, b):
    assert a[0] == b[0], "train/eval flags changed"
    assert a[1] == b[1], "requires_grad flags changed"
    assert all(torch.equal(v, b[2][k]) for k, v in a[2].items()), "weights or running statistics changed"
    assert a[3] == b[3], "hooks left on the model"


def test_metric_classes_found():
    names = {c.__name__ for c in _metric_classes()}
    assert {'InsertionDeletion', 'ContrastiveFaithfulness'} <= names, names


@pytest.mark.parametrize('cls', _metric_classes(), ids=lambda c: c.__name__)
def test_metric_restores_model_state(cls):
    m = _bn_net()
    img = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1))
    sample = make_sample(img, 1, m, boxes=[[4, 4, 20, 20]])
    sal = torch.rand(32, 32, generator=torch.Generator().manual_seed(2))
    kw = dict(n_steps=4) if any(b.__name__ == 'InsertionDeletion' for b in cls.__mro__) else {}   # a short curve
    metric = cls(m, **kw)
    before = _state(m)
    spy = _EvalSpy(m)
    try: row = metric(sal, sample)
    finally: spy.close()
    assert row and spy.modes and not any(spy.modes), f"{cls.__name__}: forwards in train mode"
    _same(_state(m), before)


def test_score_restores_model_state():
    m = _bn_net()
    before = _state(m)
    spy = _EvalSpy(m)
    try: score(m, torch.rand(3, 32, 32), RISEMasks(8, 32, s=4, seed=0), targets=[1])
    finally: spy.close()
    assert spy.modes and not any(spy.modes)
    _same(_state(m), before)
