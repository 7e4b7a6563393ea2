"""The fairness catalogue that tests/test_honest.py grades: honest habits (each must cost nothing),
the notebooks that share them, and real bugs (each costs exactly its own parts)."""
from __future__ import annotations

from coursekit.examples import add_after, replace, rewrite
from support import FULL

TRAIN = '''def train(model, loss_fn, x, y, lr, epochs, batch_size, seed=0):
    """Minibatch SGD, written {how}."""
{setup}    losses = []
    for epoch in range(epochs):
{order}        total = 0.0
{loop}            loss = loss_fn.forward(model.forward(x[batch]), y[batch])
            model.backward(loss_fn.backward())
{update}            total += loss.item() * len(batch)
        losses.append(total / len(x))
    return losses
'''
SGD = "            sgd_step(model, lr)\n"
TORCH_ORDER = "        order = torch.randperm(len(x), generator=generator)\n"
SEEDED = "    generator = torch.Generator().manual_seed(seed)\n"


def train_cell(how="", setup=SEEDED, order=TORCH_ORDER, loop=None, update=SGD):
    loop = (
        loop
        or "        for start in range(0, len(x), batch_size):\n            batch = order[start:start + batch_size]\n"
    )
    return TRAIN.format(how=how, setup=setup, order=order, loop=loop, update=update)


WHILE_LOOP = train_cell("with while loops", loop="        start = 0\n        while start < len(x):\n"
                        "            batch = order[start:start + batch_size]\n            start += batch_size\n")
SPLIT = train_cell("with torch.split", loop="        for batch in torch.split(order, batch_size):\n")
INDEX_LISTS = train_cell(
    "with lists of indices",
    order="        order = torch.randperm(len(x), generator=generator).tolist()\n",
    loop="        for start in range(0, len(x), batch_size):\n            batch = order[start:start + batch_size]\n",
)
NUMPY_SHUFFLE = train_cell("shuffling with numpy, seeded from seed", setup="    rng = np.random.default_rng(seed)\n",
                           order="        order = torch.from_numpy(rng.permutation(len(x)))\n")
INLINE_UPDATE = train_cell("with the update written out", update=(
    "            for layer in model.layers:\n                for key in layer.params:\n"
    "                    layer.params[key] -= lr * layer.grads[key]\n"))
TQDM = train_cell("with a progress bar", setup="    from tqdm.auto import tqdm\n" + SEEDED,
                  loop="        for start in tqdm(range(0, len(x), batch_size), leave=False, mininterval=30):\n"
                       "            batch = order[start:start + batch_size]\n")
PRINTS = train_cell(
    "printing as it goes",
    update=SGD + "            if epochs <= 3:\n                print('epoch loss', loss, f'{loss:.3f}', "
    "format(loss.item(), '.2f'), repr(batch[:2]))\n",
)
KEYWORD_CALLS = (
    "mlp_model = Sequential(Linear(784, 30), ReLU(), Linear(30, 10))\n"
    "mlp_losses = train(model=mlp_model, loss_fn=CrossEntropyLoss(), x=x_train, y=y_train, lr=0.2, epochs=20, "
    "batch_size=16)"
)
BATCHES_CLASS = '''class Batches:
    """The batches of one epoch, in a seeded order."""

    def __init__(self, n, size, generator):
        self.order, self.size = torch.randperm(n, generator=generator), size

    def __iter__(self):
        return iter(self.order.split(self.size))
'''
# Keeping every step's loss tensor, a small allocation per step, once fragmented the kernel's heap.
WITH_BATCHES = train_cell(
    "with a helper class, keeping every step's loss",
    setup=SEEDED + "    step_losses = []\n",
    order="",
    loop="        for batch in Batches(len(x), batch_size, generator):\n",
    update=SGD + "            step_losses.append(loss)\n",
)
TYPED_LINEAR = '''from dataclasses import dataclass, field


@dataclass
class Linear:
    """Fully connected layer, with type hints: out = x @ W + b."""

    n_in: int
    n_out: int
    params: dict = field(init=False)
    grads: dict = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.params = {"W": torch.randn(self.n_in, self.n_out, requires_grad=False) * (2 / self.n_in) ** 0.5,
                       "b": torch.zeros(self.n_out)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, n_in) -> (N, n_out)."""
        self.x = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, grad_out: torch.Tensor) -> torch.Tensor:
        """grad_out: (N, n_out) -> dL/dx: (N, n_in); fills grads."""
        self.grads["W"], self.grads["b"] = self.x.T @ grad_out, grad_out.sum(dim=0)
        return grad_out @ self.params["W"].T
'''
NO_GRAD_LINEAR = TYPED_LINEAR.replace("    def forward(self", "    @torch.no_grad()\n    def forward(self")
SETTINGS = (
    "from dataclasses import dataclass\n\n\n@dataclass\nclass Settings:\n"
    "    lr: float = 0.2\n    epochs: int = 20\n    batch_size: int = 16\n"
)
EARLY_STOPPING = '''import copy

logistic_settings = dict(lr=0.05, epochs=40, batch_size=32)
torch.manual_seed(0)
logistic_model, best, best_accuracy, logistic_losses = Sequential(Linear(784, 10)), None, -1.0, []
for epoch in range(40):
    logistic_losses += train(logistic_model, CrossEntropyLoss(), x_train, y_train, lr=0.05, epochs=1, batch_size=32, seed=epoch)
    validation_accuracy = accuracy(logistic_model.forward(x_val), y_val)
    if validation_accuracy > best_accuracy:
        best, best_accuracy = copy.deepcopy(logistic_model), validation_accuracy
logistic_model = best
logistic_seconds = 0.0
'''  # noqa: E501 (HTML, CSS or code, kept byte for byte)
OWN_LOOP = """regression_model = Sequential(Linear(784, 1))
loss_fn, generator, regression_losses = MSELoss(), torch.Generator().manual_seed(0), []
for epoch in range(20):
    total = 0.0
    for batch in torch.randperm(len(x_train), generator=generator).split(32):
        loss = loss_fn.forward(regression_model.forward(x_train[batch]), y_train[batch].float())
        regression_model.backward(loss_fn.backward())
        sgd_step(regression_model, 0.005)
        total += loss.item() * len(batch)
    regression_losses.append(total / len(x_train))"""
LOGISTIC_TRAINING = (
    "logistic_losses = train(logistic_model, CrossEntropyLoss(), x_train, y_train, lr=0.05, epochs=40, batch_size=32)"
)
MLP_TRAINING = "mlp_losses = train(mlp_model, CrossEntropyLoss(), x_train, y_train, lr=0.2, epochs=20, batch_size=16)"
# the solution's training lines, which the edits below replace
REGRESSION_CELL = (
    "regression_losses = train(regression_model, MSELoss(), x_train, y_train.float(), **regression_settings)"
)
LOGISTIC_CELL = "logistic_losses = train(logistic_model, CrossEntropyLoss(), x_train, y_train, **logistic_settings)"
MLP_CELL = "mlp_losses = train(mlp_model, CrossEntropyLoss(), x_train, y_train, **mlp_settings)"
SOLUTION_CELLS = ("linear", "relu", "sequential", "log_softmax", "mse_loss", "cross_entropy_loss", "sgd_step", "train",
                  "accuracy", "regression", "logistic", "mlp")


def debug_prints(notebook, release):
    """A debugging print at the end of every solution cell."""
    for cell in notebook.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") in SOLUTION_CELLS:
            cell.source += "\nprint('debug', torch.ones(2, 2) * 2, repr(torch.zeros(1)), f'{torch.tensor(1.5):.2f}')"


def timed_cell(grade_id):
    def edit(notebook, release):
        cell = next(c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
        cell.source = "%%time\n" + cell.source
    return edit


def colab_metadata(notebook, release):
    notebook.metadata.update(colab={"provenance": [], "name": "classifier_from_scratch.ipynb"}, accelerator="GPU")
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    for number, cell in enumerate(notebook.cells):
        cell.metadata["id"] = f"colab{number:04d}"
        if cell.cell_type == "code":
            cell.metadata["colab"] = {"base_uri": "https://localhost:8080/"}
            cell.metadata["outputId"] = f"out{number:04d}"


def old_jupyter_metadata(notebook, release):
    notebook.nbformat_minor = 4
    notebook.metadata.update(celltoolbar="Create Assignment", toc={"nav_menu": {}})
    for cell in notebook.cells:
        cell.pop("id", None)
        cell.metadata.update(collapsed=False, scrolled=True, deletable=True, editable=True, trusted=True)


HONEST = {
    # printing and looking at tensors, in solution cells and in cells of one's own
    "prints_in_every_solution_cell": [debug_prints],
    "prints_tensors_in_train": [rewrite("train", PRINTS)],
    "prints_a_gradient_in_sgd_step": [
        rewrite(
            "sgd_step",
            "def sgd_step(model, lr):\n    if not getattr(sgd_step, 'shown', False):\n"
            "        sgd_step.shown = True\n        print('a gradient', model.layers[0].grads)\n"
            "    for layer in model.layers:\n        for key in layer.params:\n"
            "            layer.params[key] -= lr * layer.grads[key]\n",
        )
    ],
    "str_of_a_slice_in_linear_forward": [
        rewrite("linear", TYPED_LINEAR.replace("        self.x = x\n", "        self.x = x\n        str(x[:1, :3])\n"))
    ],
    "prints_in_an_added_cell": [add_after("accuracy", "print(x_train.shape, y_train[:10])\nx_train[:3]")],
    "tolist_numpy_item_repr": [
        add_after(
            "accuracy", "print(y_train[:5].tolist(), x_train[0, :3].numpy(), y_train[0].item(), repr(x_train[0, :2]))"
        )
    ],
    "matplotlib_on_tensors": [
        add_after(
            "mlp",
            "plt.figure(figsize=(2, 2))\nplt.plot(torch.tensor(mlp_losses))\n"
            "plt.imshow(mlp_model.layers[0].params['W'][:, 0].reshape(28, 28))\nplt.show()",
        )
    ],
    # copying, saving, no-grad, checks of one's own
    "deepcopies_the_model": [
        add_after("mlp", "import copy\nbackup = copy.deepcopy(mlp_model)\nprint(len(backup.layers))")
    ],
    "saves_its_own_results": [
        add_after(
            "mlp",
            "torch.save({'mlp_losses': torch.tensor(mlp_losses), "
            "'W1': mlp_model.layers[0].params['W']}, 'my_results.pt')",
        )
    ],
    "no_grad_and_inference_mode": [
        add_after(
            "logistic",
            "with torch.no_grad():\n    print(accuracy(logistic_model.forward(x_val), y_val))\n"
            "with torch.inference_mode():\n    print(accuracy(logistic_model.forward(x_val), y_val))",
        )
    ],
    "no_grad_decorators": [rewrite("linear", NO_GRAD_LINEAR)],
    "assert_close_in_own_checks": [
        add_after(
            "log_softmax", "torch.testing.assert_close(log_softmax(torch.randn(4, 10)).exp().sum(1), torch.ones(4))"
        )
    ],
    "requires_grad_false": [rewrite("linear", TYPED_LINEAR)],
    "gradient_check_of_its_own": [add_after("linear", "check_layer(Linear(5, 3), torch.randn(4, 5))")],
    # the training loop, written differently
    "train_with_while_loops": [rewrite("train", WHILE_LOOP)],
    "train_with_torch_split": [rewrite("train", SPLIT)],
    "train_with_index_lists": [rewrite("train", INDEX_LISTS)],
    "train_shuffles_with_numpy": [rewrite("train", NUMPY_SHUFFLE)],
    "train_updates_without_sgd_step": [rewrite("train", INLINE_UPDATE)],
    "train_with_tqdm": [rewrite("train", TQDM)],
    "train_with_a_helper_class": [add_after("sgd_step", BATCHES_CLASS), rewrite("train", WITH_BATCHES)],
    "trains_by_keyword": [
        replace(
            "mlp", "mlp_model = Sequential(Linear(784, 30), ReLU(), Linear(30, 10))\n" + MLP_CELL, KEYWORD_CALLS
        )
    ],
    "own_loop_around_sgd_step": [
        replace(
            "regression",
            "regression_model = Sequential(Linear(784, 1))\n" + REGRESSION_CELL,
            OWN_LOOP,
        )
    ],
    # helpers, types, magics, other editors
    "helper_function_in_an_added_cell": [
        add_after("relu", "def row_max(z):\n    return z.max(dim=1, keepdim=True).values"),
        replace("log_softmax", "logits.max(dim=1, keepdim=True).values", "row_max(logits)"),
    ],
    "dataclass_settings": [
        add_after("logistic", SETTINGS),
        replace(
            "mlp",
            MLP_CELL,
            "settings = Settings()\n"
            + MLP_TRAINING.replace(
                "lr=0.2, epochs=20, batch_size=16",
                "lr=settings.lr, epochs=settings.epochs, batch_size=settings.batch_size",
            ),
        ),
    ],
    "time_magics": [
        timed_cell("mlp"),
        add_after("accuracy", "%time accuracy(torch.eye(10), torch.arange(10))\n%matplotlib inline"),
    ],
    "colab_metadata": [colab_metadata],
    "old_jupyter_metadata": [old_jupyter_metadata],
    "seeds_everywhere": [
        add_after("accuracy", "import random\nrandom.seed(0)\nnp.random.seed(0)\ntorch.manual_seed(123)")
    ],
    # models trained in several calls, kept at their best, and extra models
    "warm_restart": [
        replace(
            "logistic",
            LOGISTIC_CELL,
            LOGISTIC_TRAINING.replace("epochs=40", "epochs=20")
            + "\n"
            + LOGISTIC_TRAINING.replace("epochs=40", "epochs=20, seed=1").replace(
                "logistic_losses =", "logistic_losses +="
            ),
        )
    ],
    "learning_rate_schedule": [
        replace(
            "mlp",
            MLP_CELL,
            MLP_TRAINING.replace("epochs=20", "epochs=14")
            + "\n"
            + MLP_TRAINING.replace("lr=0.2, epochs=20", "lr=0.05, epochs=6").replace("mlp_losses =", "mlp_losses +="),
        )
    ],
    "retrains_a_model": [
        add_after(
            "logistic",
            "logistic_losses += train(logistic_model, CrossEntropyLoss(), x_train, y_train, "
            "lr=0.01, epochs=2, batch_size=32)",
        )
    ],
    "keeps_the_best_epoch_with_deepcopy": [rewrite("logistic", EARLY_STOPPING)],
    "an_extra_model_of_its_own": [
        add_after(
            "logistic",
            "tiny = Sequential(Linear(784, 10))\n"
            "tiny_losses = train(tiny, CrossEntropyLoss(), x_fit[:500], y_fit[:500], lr=0.05, epochs=2, "
            "batch_size=50)\n"
            "print(accuracy(tiny.forward(x_val), y_val))",
        )
    ],
}

# The habits share notebooks, since each notebook is a whole training run and the catalogue's time is its
# notebooks': one way of writing `train` per notebook, and no two habits in one notebook change the same
# cell (a fast test checks that each habit's cells are intact in its notebook). Whole-notebook edits go last.
NOTEBOOKS = {
    "printing": [
        "prints_tensors_in_train",
        "prints_a_gradient_in_sgd_step",
        "str_of_a_slice_in_linear_forward",
        "prints_in_an_added_cell",
        "tolist_numpy_item_repr",
        "matplotlib_on_tensors",
        "prints_in_every_solution_cell",
    ],
    "copies_and_checks": [
        "train_with_while_loops",
        "no_grad_decorators",
        "deepcopies_the_model",
        "saves_its_own_results",
        "no_grad_and_inference_mode",
        "assert_close_in_own_checks",
        "trains_by_keyword",
    ],
    "own_loops": [
        "train_with_torch_split",
        "requires_grad_false",
        "gradient_check_of_its_own",
        "own_loop_around_sgd_step",
        "dataclass_settings",
    ],
    "helpers_and_magics": ["train_with_index_lists", "helper_function_in_an_added_cell", "time_magics", "warm_restart"],
    "schedules_and_colab": [
        "train_shuffles_with_numpy",
        "learning_rate_schedule",
        "keeps_the_best_epoch_with_deepcopy",
        "colab_metadata",
    ],
    "inline_updates": [
        "train_updates_without_sgd_step",
        "retrains_a_model",
        "an_extra_model_of_its_own",
        "old_jupyter_metadata",
    ],
    "tqdm_and_seeds": ["train_with_tqdm", "seeds_everywhere"],
    "batches_class": ["train_with_a_helper_class"],
}
WHOLE_NOTEBOOK = (debug_prints, colab_metadata, old_jupyter_metadata)


def together(habits: list[str]) -> list:
    """The edits of these habits, for one notebook: whole-notebook edits after the others."""
    edits = [edit for habit in habits for edit in HONEST[habit]]
    return sorted(edits, key=lambda edit: edit in WHOLE_NOTEBOOK)


# Real bugs: (score, the parts that lose points). Each loses exactly its own parts.
BUGS = {
    "ignores_the_seed": (
        [rewrite("train", train_cell("without its seed", setup="", order="        order = torch.randperm(len(x))\n"))],
        FULL - 1,
        {"test_train"},
    ),
    "broadcasts_in_mse": (
        [replace("mse_loss", "pred.reshape(-1) - target.reshape(-1)", "pred - target")],
        FULL - 2.5 - 8,
        {"test_mse_loss", "test_regression"},
    ),
    "a_typo_in_a_second_train_call": (
        [
            add_after(
                "regression",
                "regression_losses += train(regression_model, MSELoss(), x_train, "
                "y_train.float(), lr=0.001, epoch=2, batch_size=32)",
            )
        ],
        FULL,
        set(),
    ),
    "bias_gradient_is_a_mean": (
        [rewrite("linear", TYPED_LINEAR.replace("grad_out.sum(dim=0)", "grad_out.mean(dim=0)"))],
        None,
        {"test_linear", "test_sequential"},
    ),
    "unstable_log_softmax": (
        [replace("log_softmax", "shifted = logits - logits.max(dim=1, keepdim=True).values", "shifted = logits")],
        FULL - 3,
        {"test_log_softmax"},
    ),
    "accuracy_returns_a_tensor": (
        [rewrite("accuracy", "def accuracy(logits, y):\n    return (logits.argmax(dim=1) == y).float().mean()")],
        FULL - 3,
        {"test_accuracy"},
    ),
    "mlp_without_its_relu": (
        [
            replace(
                "mlp",
                "Sequential(Linear(784, 30), ReLU(), Linear(30, 10))",
                "Sequential(Linear(784, 30), Linear(30, 10))",
            )
        ],
        FULL - 12,
        {"test_mlp"},
    ),
    "train_returns_nothing": (
        [rewrite("train", train_cell("forgetting to return").replace("    return losses\n", "    return None\n"))],
        FULL - 6,
        {"test_train"},
    ),
    "sgd_step_climbs": (
        [
            rewrite(
                "sgd_step",
                "def sgd_step(model, lr):\n    for layer in model.layers:\n        for key in layer.params:\n"
                "            layer.params[key] += lr * layer.grads[key]\n",
            )
        ],
        42,
        {"test_sgd_step", "test_train", "test_regression", "test_logistic", "test_mlp"},
    ),
    "mse_backward_wrong_sign": (
        [replace("mse_loss", "(2 * self.diff / self.diff.numel())", "(-2 * self.diff / self.diff.numel())")],
        None,
        {"test_mse_loss", "test_regression"},
    ),
    "relu_backward_without_its_mask": (
        [replace("relu", "return grad_out * self.mask", "return grad_out")],
        None,
        {"test_relu", "test_sequential", "test_mlp"},
    ),
}
