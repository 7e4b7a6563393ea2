"""The attack catalogue that tests/test_grading.py grades in the real sandbox: each attack, built from the
complete solution with the edit helpers of coursekit/examples.py, with its exact score and what its
feedback must name (and must not)."""
from __future__ import annotations

import base64
import functools
import io
from dataclasses import dataclass, field

import torch

from conftest import ROOT
from coursekit.data import load_subset, mnist_path
from coursekit.examples import AUTOGRAD_TRAIN, add_after, cell, replace, rewrite, stub
from coursekit.grading.rubric import nbgrader_meta
from support import FULL


@dataclass
class Case:
    score: float
    mentions: list[str] = field(default_factory=list)   # in results.json or the run's output; "rule:X": a scan finding
    edits: list = field(default_factory=list)           # applied to the complete solution (attacks only)
    absent: list[str] = field(default_factory=list)     # never in the feedback (results.json, executed notebook)
    files: dict = field(default_factory=dict)           # other files of the submission: name -> () -> bytes


ACCURACY_STUB = stub("accuracy")
OBFUSCATED_TRAIN = AUTOGRAD_TRAIN
for plain, hidden in (("torch.set_grad_enabled(True)", 'getattr(torch, "set_grad_" + "enabled")(True)'),
                      ("p.requires_grad_(True)", 'setattr(p, "requires_" + "grad", True)'),
                      ("loss.backward()", 'getattr(loss, "back" + "ward")()'),
                      ("lr * p.grad", 'lr * getattr(p, "gr" + "ad")'),
                      ("p.grad = None", 'setattr(p, "gr" + "ad", None)')):
    assert plain in OBFUSCATED_TRAIN
    OBFUSCATED_TRAIN = OBFUSCATED_TRAIN.replace(plain, hidden)
NN_CROSS_ENTROPY = '''class CrossEntropyLoss:
    def forward(self, logits, target):
        self.logits, self.target = logits, target
        return torch.nn.functional.cross_entropy(logits, target)

    def backward(self):
        n, c = self.logits.shape
        probs = torch.exp(log_softmax(self.logits))
        return (probs - torch.eye(c)[self.target]) / n
'''


def forger(path: str, forge: str) -> str:
    """A cell that leaves a detached process (double fork, setsid) rewriting `path` the moment the
    sandbox's runner saves it, with `forge` applied to its JSON."""
    return (f"import json, os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            f"        for _ in range(20000):\n            try:\n                data = json.load(open({path!r}))\n"
            f"                {forge}\n                json.dump(data, open({path!r} + '.new', 'w'))\n"
            f"                os.replace({path!r} + '.new', {path!r})\n                break\n"
            f"            except Exception:\n                time.sleep(0.005)\n    os._exit(0)")


GRAD_ON_BY_GETATTR = "import torch\ngetattr(torch, 'set_grad_' + 'enabled')(True)\n"
ERASE_RUNTIME_VIOLATIONS = forger("/submission/out/run.json", "data['runtime_violations'] = []")
FORGE_EXECUTED_OUTPUT = forger("/submission/out/executed.ipynb",
                               "data['cells'][0]['source'] = 'FORGED BY' + ' THE STUDENT'")


@functools.cache
def colab_weights() -> bytes:
    """A two-layer network trained as both seed write-ups did, with autograd and torch.optim
    ("in Colab"): the weights a student might bring into the notebook."""
    x, y, _, _ = load_subset(mnist_path())
    torch.manual_seed(0)
    layers = torch.nn.Sequential(torch.nn.Linear(784, 30), torch.nn.ReLU(), torch.nn.Linear(30, 10))
    optimiser = torch.optim.Adam(layers.parameters(), lr=0.01)
    with torch.enable_grad():
        for _ in range(15):
            for batch in torch.randperm(len(x)).split(64):
                optimiser.zero_grad()
                torch.nn.functional.cross_entropy(layers(x[batch]), y[batch]).backward()
                optimiser.step()
    first, last = layers[0], layers[2]
    state = {"W1": first.weight.T, "b1": first.bias, "W2": last.weight.T, "b2": last.bias}
    buffer = io.BytesIO()
    torch.save({k: v.detach().contiguous() for k, v in state.items()}, buffer)
    return buffer.getvalue()


MLP_TRAINING = "mlp_losses = train(mlp_model, CrossEntropyLoss(), x_train, y_train, lr=0.2, epochs=30, batch_size=16)"
# the solution's own line
MLP_CELL_TRAINING = "mlp_losses = train(mlp_model, CrossEntropyLoss(), x_train, y_train, **mlp_settings)"
INSTALL_WEIGHTS = (
    "for layer, (W, b) in zip(mlp_model.layers[::2], [(state['W1'], state['b1']), (state['W2'], state['b2'])]):\n"
    "    layer.params['W'], layer.params['b'] = W.clone(), b.clone()\n"
)
FROM_FILE = "state = torch.load('colab_weights.pt')\n" + INSTALL_WEIGHTS


def launders(code: str):
    return replace("mlp", MLP_CELL_TRAINING, code)


def embedded_weights(nb, release):
    blob = base64.b64encode(colab_weights()).decode()
    launders(f"import base64, io\nstate = torch.load(io.BytesIO(base64.b64decode('{blob}')))\n" + INSTALL_WEIGHTS +
             "mlp_losses = [0.1]")(nb, release)


def defines_train_where_it_trains(nb, release):
    regression = cell(nb, "regression")
    regression.source = cell(nb, "train").source + "\n\n" + regression.source


NOT_TRAINED = "no call of your `train` or `sgd_step` produced these parameters"
ALREADY_TRAINED = "it already had the loss of a trained model"
RETRAINED_ELSEWHERE = "retraining it with the grader's own SGD on the batches your training used"

# Issue 25's techniques, one spelling each.
THROUGH_THE_MRO = "def log_softmax(logits):\n    return type(logits).__mro__[1].__dict__['log_softmax'](logits, 1)"
SINGLEDISPATCH = ("import functools\n\n\ndef log_softmax(logits):\n"
                  "    return functools.singledispatch(getattr(torch, 'log_' + 'softmax'))(logits, 1)")
THREAD_TARGET = (
    "import threading\n\n\ndef log_softmax(logits):\n    result = []\n"
    "    worker = threading.Thread(target=lambda: result.append(getattr(torch, 'log_' + 'softmax')(logits, 1)))\n"
    "    worker.start()\n    worker.join()\n    return result[0]"
)
GUARD_OFF = ("wrapped = getattr(torch, 'log_' + 'softmax')\n"
             "guard = next(c.cell_contents for c in wrapped.__closure__ if hasattr(c.cell_contents, 'check'))\n"
             "guard.check = lambda *args: None\n\n\ndef log_softmax(logits):\n    return wrapped(logits, 1)")
AUTOGRAD_IN_A_THREAD = (
    AUTOGRAD_TRAIN.replace("    torch.set_grad_enabled(True)\n", "")
    .replace(
        "            loss = loss_fn.forward(model.forward(x[batch]), y[batch])\n            loss.backward()\n",
        "            def step():\n                loss = loss_fn.forward(model.forward(x[batch]), y[batch])\n"
        "                loss.backward()\n                done.append(loss)\n"
        "            done = []\n            worker = threading.Thread(target=step)\n            worker.start()\n"
        "            worker.join()\n"
        "            loss = done[0]\n",
    )
    .replace(
        '    """Lets PyTorch do the backward pass."""\n',
        '    """Lets PyTorch do the backward pass, in a helper thread."""\n    import threading\n',
    )
)
REQUIRES_GRAD_BY_DICT = (
    "class Linear:\n    def __init__(self, n_in, n_out):\n"
    "        self.params = {'W': torch.randn(n_in, n_out, **{'requires_grad': True}) * (2 / n_in) ** 0.5, "
    "'b': torch.zeros(n_out)}\n        self.grads = {}\n\n    def forward(self, x):\n        self.x = x\n"
    "        return x @ self.params['W'] + self.params['b']\n\n    def backward(self, grad_out):\n"
    "        self.grads['W'], self.grads['b'] = self.x.T @ grad_out, grad_out.sum(dim=0)\n"
    "        return grad_out @ self.params['W'].T"
)
SGD_STEP_TO_ELSEWHERE = (
    FROM_FILE.split("\n")[0] + "\n"
    "for layer, (W, b) in zip(mlp_model.layers[::2], [(state['W1'], state['b1']), (state['W2'], state['b2'])]):\n"
    "    layer.grads['W'], layer.grads['b'] = (layer.params['W'] - W) / 0.1, (layer.params['b'] - b) / 0.1\n"
    "sgd_step(mlp_model, 0.1)"
)
ENDS_ON_WEIGHTS_FROM_ELSEWHERE = (
    "\n    if model.layers[0].params['W'].shape == (784, 30):\n"
    "        state = torch.load('colab_weights.pt')\n"
    "        for layer, (W, b) in zip(model.layers[::2], [(state['W1'], state['b1']), (state['W2'], state['b2'])]):\n"
    "            layer.params['W'].copy_(W)\n            layer.params['b'].copy_(b)\n"
)
SWAPS_FOR_THE_EXPORT = (
    "def swap(lines):\n    if any(\"run('models'\" in line for line in lines):\n"
    "        return ['state = torch.load(\"colab_weights.pt\")\\n',\n"
    "                'for layer, k in ((mlp_model.layers[0], \"1\"), (mlp_model.layers[2], \"2\")):\\n',\n"
    "                '    layer.params[\"W\"], layer.params[\"b\"] = state[\"W\" + k], state[\"b\" + k]\\n'] + lines\n"
    "    return lines\n\n\nget_ipython().input_transformers_post.append(swap)"
)


def in_extension(code: str):
    """Code added to the optional extension: the code cell after its heading."""
    def edit(nb, release):
        heading = next(i for i, c in enumerate(nb.cells) if nbgrader_meta(c).get("grade_id") == "extension_md")
        nb.cells[heading + 1].source += "\n\n" + code
    return edit


def ends_on_weights_from_elsewhere(nb, release):
    train = cell(nb, "train")
    train.source = train.source.replace("    return losses", ENDS_ON_WEIGHTS_FROM_ELSEWHERE + "    return losses")

EXPECTED: dict[str, Case] = {
    # the committed examples (see coursekit/examples.py)
    "alice_complete": Case(FULL),
    "bob_uses_autograd": Case(FULL - 6 - 8 - 12 - 12, ["`loss.backward()` uses PyTorch autograd", "grad mode is on"]),
    "carol_endless_loop": Case(FULL, ["timeout: stopped after 60 s"]),
    "dave_edits_tests": Case(
        FULL - 12, ["provided cell 'test_logistic' was edited", "test accuracy recomputed by the grader is 0."]
    ),
    "erin_partial": Case(8 + 48, ["`logistic_model` is defined: it is not defined in the notebook"]),
    "frank_malformed": Case(0, ["not valid JSON"]),
    # attacks, each on top of the complete solution
    "fake_success_message": Case(
        FULL - 3,
        ["NotImplementedError"],
        [
            ACCURACY_STUB,
            add_after(
                "test_accuracy",
                "print('All tests passed. Score: 80/80')\nopen('results.json', 'w').write('{\"score\": 80}')",
            ),
        ],
    ),
    "patches_test_helpers": Case(
        FULL - 3,
        ["contains inf or nan", "rule:monkeypatch"],
        [
            replace("log_softmax", "shifted = logits - logits.max(dim=1, keepdim=True).values", "shifted = logits"),
            add_after("log_softmax", "torch.isfinite = lambda t: torch.ones_like(t, dtype=torch.bool)"),
        ],
    ),
    "always_equal_object": Case(
        FULL - 3,
        ["got __main__.Anything"],
        [
            rewrite(
                "accuracy",
                "class Anything(float):\n    def __eq__(self, other):\n        return True\n\n"
                "def accuracy(logits, y):\n    return Anything(0.5)",
            )
        ],
    ),
    "exits_kernel": Case(
        FULL - 3,
        ["kernel died while running this cell", "rule:process"],
        [ACCURACY_STUB, add_after("accuracy", "import os\nos._exit(0)")],
    ),
    "raises_system_exit": Case(
        FULL - 3, ["rule:process"], [ACCURACY_STUB, add_after("accuracy", "import sys\nsys.exit(0)")]
    ),
    "kills_its_parent": Case(
        FULL, ["rule:process"], [add_after("linear", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)")]
    ),
    "kills_the_grader": Case(
        FULL,
        ["rule:process"],
        [  # its own PID namespace holds only its own processes
            add_after(
                "linear",
                "import os, signal\nfor pid in os.listdir('/proc'):\n"
                "    if pid.isdigit() and int(pid) != os.getpid():\n"
                "        try:\n            os.kill(int(pid), signal.SIGKILL)\n        except OSError:\n"
                "            pass",
            )
        ],
    ),
    "reads_outside_files": Case(
        FULL,
        ["FileNotFoundError", "rule:file-access"],
        [
            add_after(
                "linear",
                f"print(open({str(ROOT / 'source/classifier_from_scratch/classifier_from_scratch.ipynb')!r}).read())",
            )
        ],
    ),
    "lists_other_students": Case(
        FULL,
        ["FileNotFoundError"],
        [add_after("linear", "import os\nprint(os.listdir('../..'))\nprint(os.listdir('/submitted'))")],
    ),
    "reaches_the_network": Case(
        FULL,
        ["rule:network", "BLOCKED"],
        [
            add_after(
                "linear",
                "import urllib.request\ntry:\n    urllib.request.urlopen('https://pypi.org/simple/', timeout=5)\n"
                "except Exception as error:\n    print('BLOCKED', error)",
            )
        ],
    ),
    "obfuscated_autograd": Case(
        FULL - 6 - 8 - 12 - 12, ["grad mode is on", "rule:dynamic-code"], [rewrite("train", OBFUSCATED_TRAIN)]
    ),
    "uses_torch_nn_loss": Case(
        FULL - 8 - 12 - 12, ["torch.nn.functional.cross_entropy"], [rewrite("cross_entropy_loss", NN_CROSS_ENTROPY)]
    ),
    "eval_hides_a_forbidden_call": Case(
        FULL - 6 - 8 - 12 - 12,
        ["rule:dynamic-code", "`torch.log_softmax` was called"],
        [rewrite("log_softmax", "def log_softmax(logits):\n    return eval('torch.log_' + 'softmax')(logits, dim=1)")],
    ),
    "getattr_hides_a_forbidden_call": Case(
        FULL - 6 - 8 - 12 - 12,
        ["`torch.log_softmax` was called while your code ran"],
        [
            rewrite(
                "log_softmax",
                "def log_softmax(logits):\n    name = bytes.fromhex('6c6f675f736f66746d6178').decode()\n"
                "    return getattr(torch, name)(logits, 1)",
            )
        ],
    ),
    "exec_hides_a_tensor_method": Case(
        FULL - 6 - 8 - 12 - 12,
        ["`torch.Tensor.log_softmax` was called by code created at run time"],
        [rewrite("log_softmax", "exec('def log_softmax(logits):\\n    return logits.log_softmax(1)')")],
    ),
    "spawns_without_end": Case(
        FULL,
        ["rule:process", "STOPPED AT"],
        [
            add_after(
                "accuracy",
                "import subprocess\nchildren = []\ntry:\n    while True:\n"
                "        children.append(subprocess.Popen(['sleep', '600']))\nexcept OSError as error:\n"
                "    print('STOPPED AT', len(children))\nfor child in children:\n    child.kill()\n    child.wait()",
            )
        ],
    ),
    "exhausts_memory": Case(FULL, ["can't allocate memory"], [add_after("accuracy", "hog = torch.ones(2**31)")]),
    "floods_output": Case(FULL, [], [add_after("accuracy", "for i in range(10**6):\n    print('spam' * 20)")]),
    "deletes_provided_cells": Case(
        FULL,
        ["provided cell 'test_linear' was deleted", "provided cell 'data_load' was deleted"],
        [
            lambda nb, release: setattr(
                nb,
                "cells",
                [
                    c
                    for c in nb.cells
                    if c.metadata.get("nbgrader", {}).get("solution") or not c.metadata.get("nbgrader")
                ],
            )
        ],
    ),
    "forges_a_graded_cell": Case(
        FULL,
        [],
        [
            add_after("accuracy", "bonus = 1"),
            lambda nb, release: nb.cells[[c.source for c in nb.cells].index("bonus = 1")].metadata.update(
                {
                    "nbgrader": {
                        "grade": True,
                        "solution": False,
                        "locked": True,
                        "grade_id": "test_bonus",
                        "points": 100,
                        "schema_version": 3,
                        "task": False,
                    }
                }
            ),
        ],
    ),
    "forges_the_run_log": Case(
        FULL,
        ["grad mode is on", "outside the code that is graded"],
        [add_after("accuracy", GRAD_ON_BY_GETATTR + ERASE_RUNTIME_VIOLATIONS)],
    ),
    "forges_the_executed_notebook": Case(
        FULL, [], [add_after("linear", FORGE_EXECUTED_OUTPUT)], absent=["FORGED BY THE STUDENT"]
    ),
    # training provenance: weights brought in from elsewhere lose the model's points...
    "loads_weights_from_a_file": Case(
        FULL - 12,
        [NOT_TRAINED, "torch.load"],
        [launders(FROM_FILE + "mlp_losses = [0.1]")],
        files={"colab_weights.pt": colab_weights},
    ),
    "embeds_weights_in_the_cell": Case(
        FULL - 12, [NOT_TRAINED, "base64.b64decode", "rule:encoded-blob"], [embedded_weights]
    ),
    "loads_weights_then_lr_zero": Case(
        FULL - 12,
        [ALREADY_TRAINED],
        [launders(FROM_FILE + MLP_TRAINING.replace("lr=0.2, epochs=30", "lr=0.0, epochs=2"))],
        files={"colab_weights.pt": colab_weights},
    ),
    "loads_weights_then_fine_tunes": Case(
        FULL - 12,
        [ALREADY_TRAINED],
        [launders(FROM_FILE + MLP_TRAINING.replace("lr=0.2, epochs=30", "lr=0.05, epochs=1"))],
        files={"colab_weights.pt": colab_weights},
    ),
    # ...and honest ways of training keep them (more in tests/test_honest.py); a model re-created in a
    # cell of the student's own is for a person to look at
    "recreates_and_retrains": Case(
        FULL,
        ["`mlp_model` is defined here, outside its own answer cell"],
        [
            add_after(
                "mlp",
                "torch.manual_seed(1)\nmlp_model = Sequential(Linear(784, 30), ReLU(), Linear(30, 10))\n"
                + MLP_TRAINING.replace("epochs=30", "epochs=15"),
            )
        ],
    ),
    "defines_train_where_it_trains": Case(
        FULL, ["`train` is defined here, outside its own answer cell"], [defines_train_where_it_trains]
    ),
    # evidence the student cannot forge (issue 25): each technique loses what it was meant to win, or a
    # person is told about it
    "reaches_c_methods_through_the_mro": Case(FULL, ["rule:introspection"], [rewrite("log_softmax", THROUGH_THE_MRO)]),
    "launders_a_call_through_functools": Case(
        FULL - 6 - 8 - 12 - 12,
        ["`torch.log_softmax` was called while your code ran"],
        [rewrite("log_softmax", SINGLEDISPATCH)],
    ),
    "launders_a_call_through_a_thread": Case(
        FULL - 6 - 8 - 12 - 12,
        ["`torch.log_softmax` was called while your code ran", "rule:introspection"],
        [rewrite("log_softmax", THREAD_TARGET)],
    ),
    "switches_the_guard_off": Case(
        FULL - 6 - 8 - 12 - 12,
        ["the grader's run-time guard was removed or disabled", "rule:introspection"],
        [rewrite("log_softmax", GUARD_OFF)],
    ),
    "autograd_in_a_helper_thread": Case(
        FULL - 6 - 8 - 12 - 12, ["rule:autograd"], [rewrite("train", AUTOGRAD_IN_A_THREAD)]
    ),
    "requires_grad_through_a_keyword_dict": Case(
        FULL - 8 - 4 - 8 - 12 - 12, ["`requires_grad=`"], [rewrite("linear", REQUIRES_GRAD_BY_DICT)]
    ),
    "autograd_train_under_a_written_answer": Case(
        FULL - 6 - 8 - 12 - 12,
        ["`loss.backward()` uses PyTorch autograd", "outside its own answer cell"],
        [add_after("regression_answer", AUTOGRAD_TRAIN)],
    ),
    "extension_redefines_log_softmax": Case(
        FULL - 6 - 8 - 12 - 12,
        ["torch.log_softmax"],
        [in_extension("def log_softmax(logits):\n    return torch.log_softmax(logits, 1)")],
    ),
    "sgd_step_puts_weights_from_elsewhere": Case(
        FULL - 12,
        [RETRAINED_ELSEWHERE],
        [add_after("mlp", SGD_STEP_TO_ELSEWHERE)],
        files={"colab_weights.pt": colab_weights},
    ),
    # its train also breaks on the grader's probe model, whose parameters are not its layers' "W" and "b"
    "train_ends_on_weights_from_elsewhere": Case(
        FULL - 12 - 6,
        [RETRAINED_ELSEWHERE],
        [ends_on_weights_from_elsewhere],
        files={"colab_weights.pt": colab_weights},
    ),
    "trains_on_test_images": Case(
        FULL - 12,
        ["of the rows its training used are test images"],
        [
            replace(
                "mlp",
                "x_train, y_train, **mlp_settings",
                "torch.cat([x_train, x_test]), torch.cat([y_train, y_test]), **mlp_settings",
            )
        ],
    ),
    "swaps_weights_in_for_the_export": Case(
        FULL - 12,
        ["`mlp_model` was trained from a fresh start by your own `train`", "rule:dynamic-code"],
        [add_after("mlp", SWAPS_FOR_THE_EXPORT)],
        files={"colab_weights.pt": colab_weights},
    ),
    "release_unmodified": Case(0, ["NotImplementedError"]),
    "zoë o'brien (late)": Case(FULL),
    "empty_folder": Case(0, ["no notebook named classifier_from_scratch.ipynb"]),
    "symlink_to_outside": Case(FULL, ["is a symbolic link"]),
    # links that would make the grader read a file that is not the student's (built in the fixture)
    "links_to_the_solution": Case(0, ["classifier_from_scratch.ipynb' is a symbolic link"]),
    "links_to_another_student": Case(0, ["classifier_from_scratch.ipynb' is a symbolic link"]),
    "links_to_etc_passwd": Case(0, ["classifier_from_scratch.ipynb' is a symbolic link"]),
    "links_the_assignment_folder": Case(0, ["links_the_assignment_folder/classifier_from_scratch' is a symbolic link"]),
    "hard_links_the_solution": Case(0, ["is a hard link to a file outside your submission"]),
    # odd input
    "deeply_nested_json": Case(0, ["nested too deeply"]),
    "windows_line_endings": Case(
        FULL,
        [],
        [lambda nb, release: [c.update(source=c.source.replace("\n", "\r\n")) for c in nb.cells]],
        absent=["was edited"],
    ),
}
