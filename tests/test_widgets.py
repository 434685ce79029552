"""The explorer (`xaikit.widgets.Explorer`) driven as a user drives it: widget values set, buttons clicked.

Every registered method is covered through the registry (a method added later is tested without editing this file):
its generated form works, and the explorer's maps equal `xaikit.explain` with the same parameters and targets.
Models are the tiny CNN on small images, so the whole file runs in seconds."""
import datetime, importlib.machinery, io, sys, time, types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import xaikit
from xaikit.core import ClassLogit, ClassProb, ClusterLogit, Contrast
from xaikit.explainers.base import REGISTRY, Explainer, Result, register
from xaikit.metrics import insertion_deletion, make_sample, pointing_game
from xaikit.models import tiny_cnn
from xaikit.widgets import Explorer, MethodForm, has_label_trees, method_params

METHODS = sorted(xaikit.list_explainers())
NOW = datetime.datetime.now(datetime.timezone.utc)

@pytest.fixture(scope='module')
def net(): return tiny_cnn()

@pytest.fixture(scope='module')
def img(): return np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)

@pytest.fixture
def registry():
    "Restore the registry after a test that registers its own explainer"
    saved = dict(REGISTRY)
    yield REGISTRY
    REGISTRY.clear(); REGISTRY.update(saved)

def explorer(net, img, *methods, **kw)->Explorer:
    return Explorer(net, images={'noise': img}, methods=methods, **kw)

def click_and_wait(ex:Explorer, timeout=120):
    ex.run_button.click()
    assert ex.wait(timeout), 'the run did not finish'

def set_params(form:MethodForm, params:dict):
    "Type `params` into the form as a user would: known parameters in their widgets, the rest in the 'other' box"
    known = {k: v for k, v in params.items() if k in form.widgets}
    form.set(**known)
    form.other.value = repr({k: v for k, v in params.items() if k not in known})

# --- Every registered method --------------------------------------------------------------------------------------------

@pytest.mark.parametrize('method', METHODS)
def test_form_defaults_round_trip(net, method):
    "The generated form shows each parameter's default and reads it back unchanged (so an untouched form passes nothing)"
    form = MethodForm(method, net)
    assert set(form.widgets) == {p.name for p in method_params(method)}
    assert form.values() == {}

@pytest.mark.parametrize('method', METHODS)
def test_every_method_runs_from_its_form(net, img, method):
    "Each method, set to its cheap test parameters in its form, gives exactly `xaikit.explain`'s maps on the top-2 classes"
    cls = xaikit.get_explainer(method)
    ex = explorer(net, img, method)
    set_params(ex.form(method), cls.test_params)
    ex.target_k.value = 2
    click_and_wait(ex)
    top2 = [c for c, _, _ in net.predict(img, k=2)]
    try: ref = xaikit.explain(net, img, method=method, targets=top2, **cls.test_params)
    except (ValueError, TypeError) as e:     # a method that does not apply to this model (e.g. ViT-only): the same message, shown
        assert ex.errors == [f"{method}: {e}"] and ex.results == [], ex.errors
        return
    assert ex.errors == [] and ex.status.value == 'done: 1 of 1 methods', ex.errors
    e = ex.results[0]
    torch.testing.assert_close(e.maps, ref.maps, rtol=1e-5, atol=1e-6)
    assert (e.targets, e.params, e.n_forward) == (ref.targets, ref.params, ref.n_forward)
    assert [r.method for r in ex.history] == [method] * 2 and len(ex.maps_box.children) == 2

# --- Driving it as a user ------------------------------------------------------------------------------------------------

def test_widgets_set_by_hand(net, img):
    "Methods picked in the selector, values typed in the widgets, classes typed by name: the maps are `explain`'s"
    ex = explorer(net, img, 'gradcam')
    ex.method_select.value = ('gradcam', 'rise')
    assert [t for t in ex.form_tabs.titles] == ['gradcam', 'rise']
    f = ex.form('rise')
    f.widgets['n_masks'].value = 40; f.widgets['s'].value = 4; f.widgets['seed'].value = 7
    f.widgets['batch_size'].value = '16'; f.widgets['center'].value = True
    g = ex.form('gradcam')
    g.widgets['layer'].value = '0'; g.widgets['relu'].value = False
    ex.target_mode.value = 'classes'; ex.target_text.value = 'class 3, 5'
    click_and_wait(ex)
    assert ex.errors == []
    ref_r = xaikit.explain(net, img, method='rise', targets=[3, 5], n_masks=40, s=4, seed=7, batch_size=16, center=True)
    ref_g = xaikit.explain(net, img, method='gradcam', targets=[3, 5], layer='0', relu=False)
    torch.testing.assert_close(ex.results[0].maps, ref_g.maps)
    torch.testing.assert_close(ex.results[1].maps, ref_r.maps)
    assert ex.history[-1].params == dict(n_masks=40, s=4, batch_size=16, center=True, seed=7)

def test_cluster_and_contrast_targets(net, img):
    "A typed cluster is one target; a contrast a - b is scored the way each method scores targets"
    ex = explorer(net, img, 'gradcam', 'occlusion')
    ex.form('occlusion').set(window=8, stride=8)
    ex.target_mode.value = 'cluster'; ex.target_text.value = '1, 2, class 4'
    click_and_wait(ex)
    for e, m in zip(ex.results, ('gradcam', 'occlusion')):
        extra = dict(window=8, stride=8) if m == 'occlusion' else {}
        torch.testing.assert_close(e.maps, xaikit.explain(net, img, method=m, targets=[[1, 2, 4]], **extra).maps)
    ex.target_mode.value = 'contrast'; ex.target_text.value = '3'; ex.target_b.value = '1, 2'
    click_and_wait(ex)
    assert ex.errors == []
    g, o = ex.results
    assert g.targets == [Contrast(ClassLogit(3), ClusterLogit([1, 2]))] and o.targets[0].a == ClassProb(3)
    torch.testing.assert_close(g.maps, xaikit.explain(net, img, 'gradcam', targets=Contrast(ClassLogit(3), ClusterLogit([1, 2]))).maps)

def test_label_tree_targets(net, img, monkeypatch):
    "With `xaikit.hltm` importable, the label tree's clusters of the top classes become the targets (a stand-in module here)"
    calls = []
    class LabelTree:
        @classmethod
        def from_json(cls, path): calls.append(path); return cls()
        def clusters(self, classes, cut_level=0): calls.append((list(classes), cut_level)); return [classes[:2], classes[2:]]
    mod = types.ModuleType('xaikit.hltm'); mod.LabelTree = LabelTree
    mod.__spec__ = importlib.machinery.ModuleSpec('xaikit.hltm', None)
    monkeypatch.setitem(sys.modules, 'xaikit.hltm', mod)
    assert has_label_trees()
    ex = explorer(net, img, 'gradcam')
    assert 'tree' in [v for _, v in ex.target_mode.options]
    ex.target_mode.value = 'tree'; ex.tree_path.value = 'tree.json'; ex.tree_level.value = 1; ex.target_k.value = 4
    click_and_wait(ex)
    top4 = [c for c, _, _ in net.predict(img, k=4)]
    assert calls[:2] == ['tree.json', (top4, 1)] and ex.errors == []
    torch.testing.assert_close(ex.results[0].maps, xaikit.explain(net, img, 'gradcam', targets=[top4[:2], top4[2:]]).maps)

# --- Errors are messages in the app ---------------------------------------------------------------------------------------

def test_bad_values_are_messages_not_tracebacks(net, img, capsys):
    "A value a method refuses, unreadable text and an unknown keyword: messages in the app; the other methods still run"
    ex = explorer(net, img, 'gradcam', 'rise')
    ex.form('rise').widgets['n_masks'].value = 0
    click_and_wait(ex)
    assert ex.status.value == 'done: 1 of 2 methods' and len(ex.results) == 1
    assert ex.errors == ["rise: `n_masks` must be a positive int, got 0"], ex.errors
    assert 'n_masks' in ex.message.value and 'xk-err' in ex.message.value
    ex.form('rise').widgets['n_masks'].value = 8
    ex.form('rise').widgets['batch_size'].value = 'lots'
    n = len(ex.history)
    click_and_wait(ex)                                   # a form that cannot be read: nothing runs, the last maps stay
    assert ex.errors == ["rise: `batch_size` must be an int or empty (None), got 'lots'"] and len(ex.history) == n
    ex.form('rise').widgets['batch_size'].value = ''
    ex.form('rise').other.value = "{'n_maks': 3}"
    click_and_wait(ex)
    assert len(ex.errors) == 1 and ex.errors[0].startswith('rise: ') and 'n_maks' in ex.errors[0]
    ex.form('rise').other.value = "{}"
    ex.target_mode.value = 'classes'; ex.target_text.value = 'class 99'
    click_and_wait(ex)
    assert len(ex.errors) == 1 and ex.errors[0].startswith("targets: `classes`: 'class 99' is neither a class index nor a class "
                                                           "name; did you mean ['class 9'"), ex.errors
    ex.target_text.value = '12'
    click_and_wait(ex)
    assert ex.errors == ["targets: `classes`: class 12 is out of range for a model with 10 classes"]
    ex.method_select.value = ()
    click_and_wait(ex)
    assert ex.errors == ['choose at least one method']
    out = capsys.readouterr()
    assert 'Traceback' not in out.out + out.err
    assert not ex.run_button.disabled and ex.cancel_button.disabled

def test_unexpected_error_in_a_method(net, img, registry, capsys):
    "A method that crashes: its error in the message box (traceback kept in `last_traceback`, not printed); the app is usable"
    @register
    class Crash(Explainer):
        "A method that fails."
        name = 'crash_test'
        def _explain(self, x01, x, logits, targets): raise RuntimeError('boom')
    ex = explorer(net, img, 'crash_test', 'gradcam')
    click_and_wait(ex)
    assert ex.errors == ['crash_test: RuntimeError: boom'] and len(ex.results) == 1
    assert 'RuntimeError' in ex.last_traceback and 'Traceback' not in ''.join(capsys.readouterr())
    assert not ex.run_button.disabled

def test_new_method_with_an_odd_signature(net, img, registry):
    "A method registered later, with annotations the explorer has never seen, gets a form whose values reach it"
    from typing import Literal
    @register
    class Odd(Explainer):
        "Scales a constant map."
        name = 'odd_test'
        def __init__(self, model, scale:float=1.0, how:Literal['flat', 'ramp']='flat', shape:'Shape'=(2, 2),
                     n:'numbers.Integral|None'=None, flag=False):
            super().__init__(model); self.scale, self.how, self.shape, self.n, self.flag = scale, how, shape, n, flag
        def _explain(self, x01, x, logits, targets):
            m = torch.ones(len(targets), *x01.shape[-2:]) * self.scale
            if self.how == 'ramp': m = m * torch.linspace(0, 1, x01.shape[-1])
            return Result(m * (1 + sum(self.shape)))
    ex = explorer(net, img, 'odd_test')
    f = ex.form('odd_test')
    assert {p.name: p.kind for p in f.params} == dict(scale='float', how='choice', shape='literal', n='literal', flag='bool')
    f.widgets['scale'].value = 2.0; f.set(how='ramp'); f.widgets['shape'].value = '(1, 1, 1)'; f.widgets['flag'].value = True
    click_and_wait(ex)
    ref = xaikit.explain(net, img, 'odd_test', scale=2.0, how='ramp', shape=(1, 1, 1), flag=True)
    torch.testing.assert_close(ex.results[0].maps, ref.maps)
    f.widgets['shape'].value = '(1, 1'
    click_and_wait(ex)
    assert ex.errors == ["odd_test: `shape`: could not read '(1, 1' as a Python value (a number, a tuple like (16, 16), "
                         "a quoted string, True/False or None)"]

# --- Long runs: progress and cancel --------------------------------------------------------------------------------------

def test_progress_moves_and_cancel_stops(img):
    "A long run returns control at once, its progress bar moves while it runs, and Cancel stops it between two batches"
    net = tiny_cnn(64)
    big = np.asarray(Image.fromarray(img).resize((64, 64)))
    ex = explorer(net, big, 'rise')
    ex.form('rise').set(n_masks=200_000, batch_size=4)
    t0 = time.perf_counter()
    ex.run_button.click()
    assert ex.running and time.perf_counter() - t0 < 5 and ex.run_button.disabled and not ex.cancel_button.disabled
    seen = []
    while len(set(seen)) < 3 and time.perf_counter() - t0 < 60:
        seen.append(ex.progress.value); time.sleep(0.05)
    assert len(set(seen)) >= 3 and seen == sorted(seen), seen         # the bar moved, forward, while the kernel was free
    assert ex.progress.max == 200_000 and 'rise (1/1)' in ex.status.value
    ex.cancel_button.click()
    assert ex.wait(30)
    assert ex.status.value == 'cancelled after 0 of 1 methods' and ex.results == [] and ex.history == []
    assert ex.progress.value < 200_000 and not ex.run_button.disabled and ex.cancel_button.disabled
    ex.form('rise').set(n_masks=16)                                    # the app is usable again
    click_and_wait(ex)
    assert ex.status.value == 'done: 1 of 1 methods' and ex.progress.value == ex.progress.max

def test_blocking_mode(net, img):
    "background=False (scripts, papermill): `run` returns when the maps are there"
    ex = explorer(net, img, 'gradcam', background=False)
    ex.run()
    assert not ex.running and len(ex.results) == 1 and ex._thread is None

# --- Metrics, images, history ---------------------------------------------------------------------------------------------

def test_metrics_pointing_game_and_curves(net, img):
    "With ground truth (a Sample with a box), each map gets its pointing-game hit and insertion/deletion AUCs, plotted"
    label = net.predict(img, k=1)[0][0]
    s = make_sample(img, label, net, boxes=[[4, 4, 20, 20]], id='boxed')
    ex = Explorer(net, images=[s], methods=('gradcam',))
    ex.metrics_box.value = True; ex.curve_steps.value = 8; ex.curve_patch.value = 4
    click_and_wait(ex)
    assert ex.errors == []
    r, e = ex.history[0], ex.results[0]
    assert r.metrics['pg_hit'] == pointing_game(e.maps[0], s.gt)['pg_hit']
    c = insertion_deletion(net, None, e, n_steps=8, patch=4)
    assert r.metrics['ins_auc'] == round(c.ins_auc, 4) and r.metrics['del_auc'] == round(c.del_auc, 4)
    assert ex.curves_view.layout.display != 'none' and ex.curves_view.value[:4] == b'\x89PNG'
    ex.target_mode.value = 'classes'; ex.target_text.value = str((label + 1) % 10)   # a class without a box: no pointing game
    click_and_wait(ex)
    assert 'pg_hit' not in ex.history[-1].metrics and 'ins_auc' in ex.history[-1].metrics

def test_image_sources_and_upload(net, tmp_path):
    "A folder of images, then an uploaded file: each becomes the selected image with its top classes"
    for i in range(2): Image.fromarray(np.full((40, 50, 3), 60 * i, np.uint8)).save(tmp_path/f'im{i}.png')
    (tmp_path/'notes.txt').write_text('not an image')
    ex = Explorer(net, images=tmp_path)
    assert [o for o, _ in ex.image_select.options] == ['im0.png', 'im1.png'] and len(ex.preds) == 5
    buf = io.BytesIO(); Image.fromarray(np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(buf, 'PNG')
    ex.upload.value = ({'name': 'mine.png', 'type': 'image/png', 'size': len(buf.getvalue()),
                        'content': memoryview(buf.getvalue()), 'last_modified': NOW},)
    assert ex.image_select.label == 'upload: mine.png' and ex.image().shape == (20, 30, 3)
    assert ex.preds == net.predict(ex.image(), k=5) and 'mine.png' not in ex.message.value
    ex.upload.value = ({'name': 'bad.png', 'type': 'image/png', 'size': 3, 'content': memoryview(b'abc'), 'last_modified': NOW},)
    assert ex.errors[-1].startswith('upload bad.png: not an image') and ex.image_select.label == 'upload: mine.png'
    (tmp_path/'empty').mkdir()
    with pytest.raises(ValueError, match='no image files'): Explorer(net, images=tmp_path/'empty')

def test_history_export(net, img, tmp_path):
    "Every map of every run is a history row; the table exports to CSV and as a download link"
    ex = explorer(net, img, 'gradcam', 'occlusion')
    ex.form('occlusion').set(window=8, stride=8)
    ex.target_k.value = 2
    click_and_wait(ex); click_and_wait(ex)
    t = ex.history_table()
    assert len(t) == 8 and [r['run'] for r in t] == [1] * 4 + [2] * 4
    assert {'method', 'target', 'params', 'n_forward', 'seconds'} <= set(t.columns)
    p = ex.export_history(tmp_path/'h.csv')
    lines = p.read_text().splitlines()
    assert len(lines) == 9 and 'occlusion' in lines[-1] and "window=8" in lines[-1]
    assert 'data:text/csv;base64,' in ex.export_link.value and '8 rows' in ex.export_link.value
    assert '<table>' in ex.history_view.value and 'occlusion' in ex.history_view.value
