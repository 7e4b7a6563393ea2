"""The static scanner's cases, shared by its tests (test_scan_*.py) and the corpus its registry is shuffled
over: each case is (id, a cell's source, the (severity, rule, line) triples the scan finds in it)."""
from __future__ import annotations

from support import S, U, V, cell

# Forbidden APIs (violations), and what can step around the run-time guard (for review).
FORBIDDEN = [
    # --- what can step around the run-time guard: at least for review (issue 25) ----------
    (
        "torch-C-engine",
        "torch._C._ImperativeEngine().run_backward((l,), (g,), False, False, (), False, False)",
        [(S, "introspection", 1)],
    ),
    ("tensorbase-through-mro", "type(t).__mro__[1].__dict__['log_softmax'](t, 1)", [(S, "introspection", 1)]),
    ("guard-closure", "torch.exp.__closure__[1].cell_contents.check = print", [(S, "introspection", 1)]),
    ("function-globals", "f.__globals__['x'] = 1", [(S, "introspection", 1)]),
    ("own-dict-is-fine", "class A:\n    def f(self):\n        return self.__dict__", []),
    (
        "thread",
        "import threading\nthreading.Thread(target=f).start()",
        [(S, "introspection", 1), (S, "introspection", 2)],
    ),
    (
        "thread-pool",
        "from concurrent.futures import ThreadPoolExecutor\nThreadPoolExecutor(2).submit(f)",
        [(S, "introspection", 1), (S, "introspection", 2)],
    ),
    ("ipython-input-transformer", "get_ipython().input_transformers_post.append(f)", [(S, "dynamic-code", 1)]),
    ("ipython-ast-transformer", "get_ipython().ast_transformers.append(f)", [(S, "dynamic-code", 1)]),
    ("ipython-events", "get_ipython().events.register('post_run_cell', f)", [(S, "dynamic-code", 1)]),
    ("settrace", "import sys\nsys.settrace(f)", [(S, "introspection", 2)]),
    ("frames", "import sys\nsys._getframe(1).f_back", [(S, "introspection", 2)]),
    ("ctypes", "import ctypes", [(S, "process", 1)]),
    ("gc", "import gc\ngc.get_referrers(x)", [(S, "introspection", 1), (S, "introspection", 2)]),
    ("setsid", "import os\nos.setsid()", [(S, "process", 2)]),
    ("grader-object", "__coursekit_guard.GUARD.check = print", [(S, "introspection", 1)]),
    ("torch-ops", "torch.ops.aten.exp(z)", [(S, "introspection", 1)]),
    ("torch-ops-ready-made", "torch.ops.aten._log_softmax(z, 1, False)", [(V, "ready-made-function", 1)]),
    ("distributions", "torch.distributions.Categorical(logits=z).logits", [(V, "ready-made-function", 1)]),
    # --- autograd ---------------------------------------------------------
    ("backward", "loss.backward()", [(V, "autograd", 1)]),
    ("backward-kw", "loss.backward(retain_graph=True)", [(V, "autograd", 1)]),
    ("backward-chain", "((out - y) ** 2).mean().backward()", [(V, "autograd", 1)]),
    ("torch-autograd-grad", "g, = torch.autograd.grad(loss, [w])", [(V, "autograd", 1)]),
    ("torch-autograd-function", "class F2(torch.autograd.Function): pass", [(V, "autograd", 1)]),
    ("import-autograd-as", "import torch.autograd as ag", [(V, "autograd", 1)]),
    ("import-autograd", "import torch.autograd", [(V, "autograd", 1)]),
    ("from-torch-import-autograd", "from torch import autograd", [(V, "autograd", 1)]),
    ("from-autograd-import-grad", "from torch.autograd import grad", [(V, "autograd", 1)]),
    ("from-autograd-functional", "from torch.autograd.functional import jacobian", [(V, "autograd", 1)]),
    ("alias-use", "import torch.autograd as ag\nag.grad(l, w)", [(V, "autograd", 1), (V, "autograd", 2)]),
    (
        "from-alias-use",
        "from torch import autograd\nx = 1\nautograd.grad(l, w)",
        [(V, "autograd", 1), (V, "autograd", 3)],
    ),
    ("assign-alias", "ag = torch.autograd\n\nag.grad(l, w)", [(V, "autograd", 1), (V, "autograd", 3)]),
    ("torch-func", "torch.func.grad(f)(x)", [(V, "autograd", 1)]),
    ("from-torch-func", "from torch.func import vmap, grad", [(V, "autograd", 1)]),
    ("import-torch-func", "import torch.func as tf", [(V, "autograd", 1)]),
    ("functorch", "import functorch", [(V, "autograd", 1)]),
    ("from-functorch", "from functorch import grad", [(V, "autograd", 1)]),
    ("requires-grad-kw", "w = torch.randn(3, 4, requires_grad=True)", [(V, "autograd", 1)]),
    ("requires-grad-kw-false", "w = torch.zeros(3, requires_grad=False)", []),  # saying "no gradient" is fine
    ("requires-grad-kw-computed", "w = torch.zeros(3, requires_grad=flag)", [(S, "dynamic-code", 1)]),
    ("requires-grad-kwargs-dict", "w = torch.zeros(3, **{'requires_grad': True})", [(V, "autograd", 1)]),
    ("requires-grad-kwargs-dict-call", "w = torch.zeros(3, **dict(requires_grad=True))", [(V, "autograd", 1)]),
    ("unreadable-kwargs-to-torch", "w = torch.zeros(3, **opts)", [(S, "dynamic-code", 1)]),
    ("kwargs-to-own-function", "losses = train(model, **settings)", []),
    ("requires-grad-method-false", "w.requires_grad_(False)", []),
    ("requires-grad-kw-anycall", "opts = dict(requires_grad=True)", [(V, "autograd", 1)]),
    ("requires-grad-attr-set", "w.requires_grad = True", [(V, "autograd", 1)]),
    ("requires-grad-attr-read", "print(w.requires_grad)", []),
    ("requires-grad-method", "w = torch.randn(3).requires_grad_()", [(V, "autograd", 1)]),
    ("requires-grad-fastai", "requires_grad(model, True)", [(V, "autograd", 1)]),
    ("grad-read", "w -= lr * w.grad", [(V, "autograd", 1)]),
    ("grad-zero", "w.grad.zero_()", [(V, "autograd", 1)]),
    ("grad-none", "w.grad = None", [(V, "autograd", 1)]),
    ("grad-del", "del w.grad", [(V, "autograd", 1)]),
    ("grad-fn", "print(y.grad_fn)", [(V, "autograd", 1)]),
    ("retain-grad", "h.retain_grad()", [(V, "autograd", 1)]),
    ("enable-grad-with", "with torch.enable_grad():\n    y = f(x)", [(V, "autograd", 1)]),
    ("enable-grad-call", "torch.enable_grad()", [(V, "autograd", 1)]),
    ("set-grad-true", "torch.set_grad_enabled(True)", [(V, "autograd", 1)]),
    ("set-grad-flag", "torch.set_grad_enabled(flag)", [(V, "autograd", 1)]),
    ("set-grad-bare-true", "from torch import set_grad_enabled\nset_grad_enabled(True)", [(V, "autograd", 2)]),
    ("set-grad-with-true", "with torch.set_grad_enabled(True):\n    pass", [(V, "autograd", 1)]),
    ("tensor-backward-path", "torch.Tensor.backward(loss)", [(V, "autograd", 1)]),
    ("getattr-backward", 'getattr(t, "backward")()', [(V, "autograd", 1)]),
    ("setattr-requires-grad", 'setattr(w, "requires_grad", True)', [(V, "autograd", 1)]),
    ("getattr-autograd-module", 'ag = getattr(torch, "autograd")', [(V, "autograd", 1)]),
    # --- torch.nn -----------------------------------------------------------
    ("nn-linear", "layer = nn.Linear(784, 10)", [(V, "torch.nn", 1)]),
    ("nn-module-subclass", "class Net(nn.Module):\n    pass", [(V, "torch.nn", 1)]),
    ("nn-parameter", "w = nn.Parameter(torch.zeros(3))", [(V, "torch.nn", 1)]),
    ("F-relu", "y = F.relu(x)", [(V, "torch.nn", 1)]),
    ("torch-nn-init", "torch.nn.init.kaiming_normal_(w)", [(V, "torch.nn", 1)]),
    ("torch-nn-functional", "y = torch.nn.functional.relu(x)", [(V, "torch.nn", 1)]),
    ("from-nn-import", "from torch.nn import Linear\nl = Linear(3, 4)", [(V, "torch.nn", 1), (V, "torch.nn", 2)]),
    ("import-nn-as", "import torch.nn as nn2", [(V, "torch.nn", 1)]),
    ("import-functional-as", "import torch.nn.functional as Fn\nFn.relu(x)", [(V, "torch.nn", 1), (V, "torch.nn", 2)]),
    (
        "from-nn-import-functional",
        "from torch.nn import functional\nfunctional.relu(x)",
        [(V, "torch.nn", 1), (V, "torch.nn", 2)],
    ),
    ("from-torch-import-nn", "from torch import nn", [(V, "torch.nn", 1)]),
    ("module-alias-t", "import torch as t\nl = t.nn.Linear(3, 4)", [(V, "torch.nn", 2)]),
    ("assign-nn2", "nn2 = torch.nn\nl = nn2.Linear(3, 4)", [(V, "torch.nn", 1), (V, "torch.nn", 2)]),
    ("multiline-chain", "y = (torch\n     .nn\n     .functional\n     .relu(x))", [(V, "torch.nn", 1)]),
    ("fastai-module", "class Net(Module):\n    pass", [(V, "torch.nn", 1)]),
    ("fastai-layer", "m = LinBnDrop(10, 10)", [(V, "torch.nn", 1)]),
    ("nn-star-import", "from torch.nn import *", [(V, "torch.nn", 1)]),
    ("dunder-import-nn", '__import__("torch").nn.Linear(3, 4)', [(V, "torch.nn", 1), (S, "dynamic-code", 1)]),
    ("sys-modules-nn", 'sys.modules["torch.nn"].Linear(3, 4)', [(V, "torch.nn", 1), (S, "dynamic-code", 1)]),
    ("globals-literal", 'globals()["nn"].Linear(3, 4)', [(V, "torch.nn", 1)]),
    # --- torch.optim ------------------------------------------------------
    ("optim-sgd", "opt = torch.optim.SGD(params, lr=0.1)", [(V, "torch.optim", 1)]),
    (
        "import-optim",
        "import torch.optim as optim\nopt = optim.Adam(ps)",
        [(V, "torch.optim", 1), (V, "torch.optim", 2)],
    ),
    ("from-torch-import-optim", "from torch import optim", [(V, "torch.optim", 1)]),
    (
        "from-optim-import",
        "from torch.optim import SGD\nopt = SGD(ps, 0.1)",
        [(V, "torch.optim", 1), (V, "torch.optim", 2)],
    ),
    ("lr-scheduler", "s = torch.optim.lr_scheduler.StepLR(o, 1)", [(V, "torch.optim", 1)]),
    # --- ready-made functions ---------------------------------------------
    ("torch-softmax", "p = torch.softmax(z, dim=1)", [(V, "ready-made-function", 1)]),
    ("method-softmax", "p = x.softmax(1)", [(V, "ready-made-function", 1)]),
    ("method-log-softmax", "p = logits.log_softmax(-1)", [(V, "ready-made-function", 1)]),
    ("torch-log-softmax", "p = torch.log_softmax(z, 1)", [(V, "ready-made-function", 1)]),
    ("special-log-softmax", "p = torch.special.log_softmax(z, 1)", [(V, "ready-made-function", 1)]),
    ("torch-logsumexp", "s = torch.logsumexp(z, 1)", [(V, "ready-made-function", 1)]),
    ("method-logsumexp", "s = x.logsumexp(1)", [(V, "ready-made-function", 1)]),
    ("F-cross-entropy", "l = F.cross_entropy(z, y)", [(V, "ready-made-function", 1)]),
    ("F-nll-loss", "l = F.nll_loss(z, y)", [(V, "ready-made-function", 1)]),
    ("F-mse-loss", "l = F.mse_loss(p, y)", [(V, "ready-made-function", 1)]),
    ("F-bce", "l = F.binary_cross_entropy(p, y)", [(V, "ready-made-function", 1)]),
    ("F-bce-logits", "l = F.binary_cross_entropy_with_logits(z, y)", [(V, "ready-made-function", 1)]),
    ("F-kl-div", "l = F.kl_div(p, q)", [(V, "ready-made-function", 1)]),
    ("private-softmax", "p = torch._softmax(z, 1, False)", [(V, "ready-made-function", 1)]),
    ("from-torch-import-log-softmax", "from torch import log_softmax", [(V, "ready-made-function", 1)]),
    (
        "from-F-import-log-softmax-use",
        "from torch.nn.functional import log_softmax\n\nlog_softmax(z, 1)",
        [(V, "ready-made-function", 1), (V, "ready-made-function", 3)],
    ),
    ("torch-star-softmax", "from torch import *\np = softmax(z, 1)", [(V, "ready-made-function", 2)]),
    ("getattr-softmax", 'p = getattr(torch, "softmax")(z, 1)', [(V, "ready-made-function", 1)]),
    (
        "alias-of-function",
        "f = torch.log_softmax\ny = f(z, 1)",
        [(V, "ready-made-function", 1), (V, "ready-made-function", 2)],
    ),
    # --- fastai training ----------------------------------------------------
    ("learner", "learn = Learner(dls, model, loss_func=lf)", [(V, "fastai-training", 1)]),
    ("vision-learner", "learn = vision_learner(dls, resnet18)", [(V, "fastai-training", 1), (V, "ml-library", 1)]),
    ("cnn-learner", "learn = cnn_learner(dls, arch)", [(V, "fastai-training", 1)]),
    ("fastai-sgd", "opt = SGD(params, lr=0.1)", [(V, "fastai-training", 1)]),
    ("fastai-adam-partial", "opt_func = partial(Adam, wd=0.01)", [(V, "fastai-training", 1)]),
    ("fastai-optimizer", "opt = Optimizer(params, [sgd_step])", [(V, "fastai-training", 1)]),
    ("fastai-ce-flat", "lf = CrossEntropyLossFlat()", [(V, "fastai-training", 1)]),
    ("fastai-mse-flat", "lf = MSELossFlat()", [(V, "fastai-training", 1)]),
    ("fastai-label-smoothing", "lf = LabelSmoothingCrossEntropy()", [(V, "fastai-training", 1)]),
    ("fit", "learn.fit(1)", [(V, "fastai-training", 1)]),
    ("fit-one-cycle", "learn.fit_one_cycle(3, 1e-3)", [(V, "fastai-training", 1)]),
    ("fine-tune", "learn.fine_tune(1)", [(V, "fastai-training", 1)]),
    ("lr-find", "learn.lr_find()", [(V, "fastai-training", 1)]),
    ("from-fastai-import-learner", "from fastai.learner import Learner", [(V, "fastai-training", 1)]),
    ("from-fastai-import-fit", "from fastai.callback.schedule import fit_one_cycle", [(V, "fastai-training", 1)]),
    ("fastai-module-attr", "import fastai.vision.all as fv\nfv.Learner(dls, m)", [(V, "fastai-training", 2)]),
    # --- other ML libraries -----------------------------------------------
    ("sklearn", "from sklearn.linear_model import LogisticRegression", [(V, "ml-library", 1)]),
    ("import-sklearn", "import sklearn", [(V, "ml-library", 1)]),
    ("tensorflow", "import tensorflow as tf", [(V, "ml-library", 1)]),
    ("keras", "from keras import layers", [(V, "ml-library", 1)]),
    ("jax", "import jax.numpy as jnp", [(V, "ml-library", 1)]),
    ("torchvision", "from torchvision import transforms", [(V, "ml-library", 1)]),
    ("timm", "import timm", [(V, "ml-library", 1)]),
    ("hips-autograd", "import autograd.numpy as anp", [(V, "ml-library", 1)]),
    ("micrograd", "from micrograd.engine import Value", [(V, "ml-library", 1)]),
    ("scipy-optimize", "from scipy.optimize import minimize", [(V, "ml-library", 1)]),
    ("scipy-optimize-attr", "import scipy\nscipy.optimize.minimize(f, x0)", [(V, "ml-library", 2)]),
    ("lightning", "import pytorch_lightning as pl", [(V, "ml-library", 1)]),
]

# Libraries and calls a person reviews: files, the network, other processes.
SUSPICIOUS_USES = [
    # --- file access (suspicious) ------------------------------------------
    ("open-abs", 'f = open("/etc/passwd")', [(S, "file-access", 1)]),
    ("open-parent", 'f = open("../solutions.py")', [(S, "file-access", 1)]),
    ("path-home", 'p = Path("~/secret")', [(S, "file-access", 1)]),
    ("path-div-parent", 'p = Path("data") / ".." / "x"', [(S, "file-access", 1)]),
    ("os-listdir-abs", 'os.listdir("/home")', [(S, "file-access", 1)]),
    ("os-chdir", "os.chdir(d)", [(S, "file-access", 1)]),
    ("glob-parent", 'glob.glob("../*.ipynb")', [(S, "file-access", 1)]),
    ("shutil-abs", 'shutil.copy("a.txt", "/tmp/a.txt")', [(S, "file-access", 1)]),
    ("torch-load-abs", 'w = torch.load("/srv/ref/weights.pt")', [(S, "file-access", 1)]),
    ("fstring-abs", 'f = open(f"/home/{user}/x")', [(S, "file-access", 1)]),
    # --- network (suspicious) -----------------------------------------------
    ("requests", 'r = requests.get("http://x")', [(S, "network", 1)]),
    ("import-urllib", "import urllib.request", [(S, "network", 1)]),
    ("socket", "import socket", [(S, "network", 1)]),
    ("httpx", "from httpx import get", [(S, "network", 1)]),
    ("untar-data", "path = untar_data(URLs.MNIST)", [(S, "network", 1)]),
    ("download-url", 'download_url("http://x", "x")', [(S, "network", 1)]),
    ("torch-hub", 'm = torch.hub.load("a", "b")', [(S, "network", 1)]),
    # --- processes (suspicious) ---------------------------------------------
    ("subprocess", "import subprocess", [(S, "process", 1)]),
    ("subprocess-use", 'import subprocess\nsubprocess.run(["ls"])', [(S, "process", 1), (S, "process", 2)]),
    ("multiprocessing", "from multiprocessing import Pool", [(S, "process", 1)]),
    ("os-system", 'os.system("ls")', [(S, "process", 1)]),
    ("os-popen", 'os.popen("ls")', [(S, "process", 1)]),
    ("os-fork", "os.fork()", [(S, "process", 1)]),
    ("os-kill", "os.kill(pid, 9)", [(S, "process", 1)]),
    ("os-exit", "os._exit(0)", [(S, "process", 1)]),
    ("os-execv", 'os.execv("/bin/sh", [])', [(S, "process", 1), (S, "file-access", 1)]),
    ("os-spawnl", "os.spawnl(mode, p)", [(S, "process", 1)]),
    ("signal", "import signal", [(S, "process", 1)]),
    ("sys-exit", "sys.exit(0)", [(S, "process", 1)]),
    ("exit", "exit()", [(S, "process", 1)]),
    ("quit", "quit()", [(S, "process", 1)]),
    ("ctypes", "import ctypes", [(S, "process", 1)]),
    ("bang", "!pip install foo", [(S, "process", 1)]),
    ("bang-assign", "x = 1\nfiles = !ls", [(S, "process", 2)]),
    ("system-typed", 'get_ipython().system("ls")', [(S, "process", 1)]),
    ("system-magic", "%system ls", [(S, "process", 1)]),
    ("pip-magic", "%pip install torch", [(S, "process", 1)]),
    ("bash-cell", "%%bash\nls /\n", [(S, "process", 1)]),
    ("sh-cell", "%%sh\nrm -rf x\n", [(S, "process", 1)]),
    ("script-cell", "%%script python3\nimport torch\n", [(S, "process", 1)]),
]

# Code the checker cannot see: dynamic code, IPython magics, syntax errors.
DYNAMIC = [
    # --- dynamic code (suspicious) -----------------------------------------
    ("eval", 'eval("1")', [(S, "dynamic-code", 1)]),
    ("exec", 'exec(code)', [(S, "dynamic-code", 1)]),
    ("compile", 'c = compile(s, "f", "exec")', [(S, "dynamic-code", 1)]),
    ("dunder-import", 'm = __import__(name)', [(S, "dynamic-code", 1)]),
    ("importlib", "import importlib", [(S, "dynamic-code", 1)]),
    (
        "importlib-use",
        'import importlib\nm = importlib.import_module("torch.nn")',
        [(S, "dynamic-code", 1), (V, "torch.nn", 2), (S, "dynamic-code", 2)],
    ),
    ("getattr-computed", "f = getattr(t, name)", [(S, "dynamic-code", 1)]),
    ("setattr-computed", "setattr(t, name, 1)", [(S, "dynamic-code", 1)]),
    ("hasattr-computed", "hasattr(t, name)", [(S, "dynamic-code", 1)]),
    ("globals-assign", 'globals()["x"] = 1', [(S, "dynamic-code", 1)]),
    ("globals-computed-read", "v = globals()[name]", [(S, "dynamic-code", 1)]),
    ("globals-update", "globals().update(d)", [(S, "dynamic-code", 1)]),
    ("sys-modules", "m = sys.modules", [(S, "dynamic-code", 1)]),
    ("builtins-module", "import builtins", [(S, "dynamic-code", 1)]),
    ("dunder-builtins", "b = __builtins__", [(S, "dynamic-code", 1)]),
    ("run-cell", 'get_ipython().run_cell("x = 1")', [(S, "dynamic-code", 1)]),
    ("run-line-magic-typed", 'get_ipython().run_line_magic("time", "x = 1")', [(S, "dynamic-code", 1)]),
    ("ipython-alias", 'ip = get_ipython()\nip.ex("x = 1")', [(S, "dynamic-code", 2)]),
    # --- IPython magics (line numbers are the student's) --------------------
    ("timeit-backward", "x = 1\n%timeit loss.backward()", [(V, "autograd", 2)]),
    ("timeit-options", "%timeit -n 10 -r 3 F.relu(x)", [(V, "torch.nn", 1)]),
    ("time-magic", "%time y = torch.softmax(z, 1)", [(V, "ready-made-function", 1)]),
    ("cell-magic-time", "%%time\nx = 1\nloss.backward()\n", [(V, "autograd", 3)]),
    ("cell-magic-after-blank", "\n\n%%time\nx = 1\nF.relu(x)\n", [(V, "torch.nn", 5)]),
    ("cell-magic-timeit-setup", "%%timeit -n 3 z = F.relu(x)\ny = z + 1\n", [(V, "torch.nn", 1)]),
    ("cell-magic-capture", "%%capture out\n%time x = 2\nnn.Linear(1, 1)\n", [(V, "torch.nn", 3)]),
    ("cell-magic-body-error", "%%time\nx = 1\ndef f(:\n", [(U, "syntax", 3)]),
    ("writefile-cell", "%%writefile helper.py\nimport torch.nn\n", [(S, "dynamic-code", 1)]),
    ("unknown-cell-magic", "%%mystery\nanything\n", [(S, "dynamic-code", 1)]),
    ("run-magic", "%run other.py", [(S, "dynamic-code", 1)]),
    ("cd-magic", "%cd /tmp", [(S, "file-access", 1)]),
    ("magic-then-code", "%matplotlib inline\nx = 1\nloss.backward()", [(V, "autograd", 3)]),
    ("continued-magic", "!ls \\\n  -la\nx = 1\nloss.backward()", [(S, "process", 1), (V, "autograd", 4)]),
    ("leading-blank-lines", "\n\nx = 1\n%time y = 2\nloss.backward()", [(V, "autograd", 5)]),
    ("indented-magic", "for i in range(3):\n    %time step()\nloss.backward()", [(V, "autograd", 3)]),
    ("help-syntax", "torch.exp?\nx.backward??\ny = 1", []),
    (
        "run-line-magic-timeit-typed",
        'get_ipython().run_line_magic("timeit", "loss.backward()")',
        [(S, "dynamic-code", 1), (V, "autograd", 1)],
    ),
    ("ipython-imported", 'from IPython import get_ipython\nget_ipython().system("ls")', [(S, "process", 2)]),
    ("torch-multiprocessing", "import torch.multiprocessing as mp", [(S, "process", 1)]),
    ("star-rebinds-nn", "nn = 1\nfrom fastai.vision.all import *\nnn.Linear(1, 1)", [(V, "torch.nn", 3)]),
    # --- syntax errors ------------------------------------------------------
    ("syntax-error", "x = 1\ny = (\n", [(U, "syntax", 2)]),
    ("syntax-error-line3", "x = 1\ny = 2\ndef f(:\n    pass", [(U, "syntax", 3)]),
]

# Cells in which nothing may be reported: (id, source).
CLEAN = [
    ("comment-backward", "# loss.backward()\nx = 1  # torch.nn.Linear, F.softmax"),
    ("string-torch-nn", 'msg = "torch.nn"\ns = "loss.backward() requires_grad=True"'),
    ("docstring", 'def f():\n    """Uses x.softmax(1) and torch.autograd."""\n    return 1'),
    ("no-grad", "with torch.no_grad():\n    y = x @ w"),
    ("no-grad-decorator", "@torch.no_grad()\ndef predict(x):\n    return x @ w"),
    ("inference-mode", "with torch.inference_mode():\n    y = x @ w"),
    ("set-grad-false", "torch.set_grad_enabled(False)"),
    ("set-grad-false-kw", "with torch.set_grad_enabled(mode=False):\n    pass"),
    ("autograd-no-grad-alias", "with torch.autograd.no_grad():\n    pass"),
    ("grads-plural", "g = layer.grads['W']\nx.grads['W'] = g * 2"),
    ("own-log-softmax", cell("""
        def log_softmax(logits):
            m = logits.max(dim=1, keepdim=True).values
            z = logits - m
            return z - torch.exp(z).sum(dim=1, keepdim=True).log()
        out = log_softmax(torch.randn(4, 10))
        """)),
    ("own-loss-classes", cell("""
        class CrossEntropyLoss:
            def forward(self, logits, y):
                self.p = torch.exp(self.log_softmax(logits))
                return -self.log_softmax(logits)[torch.arange(len(y)), y].mean()
            def log_softmax(self, z):
                return z - z.max(1, keepdim=True).values
        class MSELoss:
            def forward(self, p, y):
                return ((p - y) ** 2).mean()
        """)),
    ("tensor-ops", cell("""
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(8, 4, generator=g)
        y = torch.clamp(x, min=0) + torch.where(x > 0, x, 0 * x)
        m = torch.max(x, dim=1).values.exp().log()
        """)),
    ("matplotlib", "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()"),
    ("model-eval", "model.eval()\nmodel.train()"),
    ("own-sgd", "def SGD(params, lr):\n    return [p - lr for p in params]\nopt = SGD(ps, 0.1)"),
    ("own-sgd-used-before-def", "opt = SGD(ps, 0.1)\ndef SGD(params, lr):\n    return params"),
    ("nn-shadowed-by-param", "def f(nn):\n    return nn.Linear"),
    ("F-rebound", "F = x @ w\ny = F.sum()"),
    ("annotations", "def f(m: nn.Module) -> torch.Tensor:\n    x: nn.Linear = None\n    return x"),
    ("load-ext", "%load_ext autoreload\n%autoreload 2\n%matplotlib inline"),
    ("html-cell", "%%html\n<b>torch.nn</b>\n"),
    ("open-relative", 'with open("results.txt", "w") as f:\n    f.write("ok")'),
    ("path-relative", 'p = Path("data") / "mnist"'),
    ("literal-getattr-harmless", 'n = getattr(layer, "weight")'),
    ("fastai-data", cell("""
        dls = ImageDataLoaders.from_folder(path)
        xb, yb = dls.one_batch()
        """)),
    ("string-magic-like", 'x = """\n%timeit loss.backward()\n!rm -rf /\n"""'),
    ("self-backward", cell("""
        class Seq:
            def backward(self, g):
                for l in reversed(self.layers):
                    g = l.backward(g)
                return g
            def step(self):
                return self.backward(1)
        """)),
]

# A realistic clean student solution, one source per cell: no findings at all.
STUDENT_SOLUTION = [
    cell("""
        import math
        import torch

        class Linear:
            def __init__(self, n_in, n_out, generator=None):
                self.W = torch.randn(n_in, n_out, generator=generator) * math.sqrt(2 / n_in)
                self.b = torch.zeros(n_out)
                self.grads = {}

            def forward(self, x):
                self.x = x
                return x @ self.W + self.b

            def backward(self, grad_out):
                self.grads['W'] = self.x.T @ grad_out
                self.grads['b'] = grad_out.sum(0)
                return grad_out @ self.W.T

            def params(self):
                return {'W': self.W, 'b': self.b}

        class ReLU:
            def forward(self, x):
                self.mask = x > 0
                return x * self.mask

            def backward(self, grad_out):
                return grad_out * self.mask
        """),
    cell("""
        def log_softmax(logits):
            # stable: shift by the row maximum before exponentiating
            m = logits.max(dim=1, keepdim=True).values
            shifted = logits - m
            return shifted - torch.exp(shifted).sum(dim=1, keepdim=True).log()

        class CrossEntropyLoss:
            def forward(self, logits, y):
                self.y = y
                self.logp = log_softmax(logits)
                return -self.logp[torch.arange(len(y)), y].mean()

            def backward(self):
                p = torch.exp(self.logp)
                p[torch.arange(len(self.y)), self.y] -= 1
                return p / len(self.y)

        class MSELoss:
            def forward(self, pred, target):
                self.diff = pred - target
                return (self.diff ** 2).mean()

            def backward(self):
                return 2 * self.diff / self.diff.numel()
        """),
    cell("""
        %%time
        g = torch.Generator().manual_seed(42)
        torch.manual_seed(42)
        layers = [Linear(784, 128, g), ReLU(), Linear(128, 10, g)]
        loss_fn = CrossEntropyLoss()
        lr, bs = 0.1, 64
        losses = []
        for epoch in range(3):
            perm = torch.randperm(len(x_train), generator=g)
            for i in range(0, len(perm), bs):
                idx = perm[i:i + bs]
                out = x_train[idx]
                for layer in layers:
                    out = layer.forward(out)
                loss = loss_fn.forward(out, y_train[idx])
                grad = loss_fn.backward()
                for layer in reversed(layers):
                    grad = layer.backward(grad)
                for layer in layers:
                    for name, p in getattr(layer, 'params', dict)().items():
                        p -= lr * layer.grads[name]
                losses.append(loss.item())
        """),
    cell("""
        with torch.no_grad():
            out = x_valid
            for layer in layers:
                out = layer.forward(out)
            acc = (out.argmax(dim=1) == y_valid).float().mean()
        print(f"accuracy {acc:.3f}")
        import matplotlib.pyplot as plt
        plt.plot(losses); plt.show()
        """),
]

# The student's own layers with a backward(), and which `.backward` calls are then autograd.
OWN_LAYER = cell("""
    class Linear:
        def backward(self, grad_out):
            return grad_out
    class MSE:
        def __call__(self, p, y):
            return ((p - y) ** 2).mean()
    """)

OWN_BACKWARD = [
    ("layer-arg", "layer = Linear()\ng = layer.backward(g)", []),
    ("unknown-receiver-arg", "for l in layers:\n    g = l.backward(g)", []),
    ("unknown-receiver-no-arg", "loss.backward()", [(V, "autograd", 1)]),
    ("tensor-receiver", "loss = ((p - y) ** 2).mean()\nloss.backward(g)", [(V, "autograd", 2)]),
    ("torch-result", "loss = torch.mean(p)\nloss.backward(g)", [(V, "autograd", 2)]),
    ("model-output", "crit = MSE()\nloss = crit(p, y)\nloss.backward(g)", [(V, "autograd", 3)]),
    ("autograd-keyword", "l.backward(g, retain_graph=True)", [(V, "autograd", 1)]),
    ("forward-result", "m = Linear()\nout = m.forward(x)\nout.backward(g)", [(V, "autograd", 3)]),
    ("self-grad-not-owned", "w.grad", [(V, "autograd", 1)]),
]
