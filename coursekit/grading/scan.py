"""Static policy scan of the code cells a student can edit.

The course forbids autograd and ready-made parts (torch.nn, torch.optim,
softmax/cross-entropy functions, fastai's training machinery, other ML
libraries).  This module finds such uses *statically*: every cell is turned
into plain Python with IPython's ``TransformerManager`` (so ``%timeit``,
``!pip`` and ``%%time`` cells parse), parsed with :mod:`ast`, and walked with
an alias map, so that ``import torch as t; t.nn.Linear`` or
``ag = torch.autograd`` are resolved to their fully qualified names.  Comments
and string literals never count.  Nothing is executed.

Public interface: :class:`Finding`, :class:`ScanPolicy`, :func:`scan_cells`
(plus the constants :data:`RULES` and :data:`SEVERITIES`).

Severities
    ``"violation"``  -- costs points (autograd, torch.nn, torch.optim,
    ready-made-function, fastai-training, ml-library);
    ``"suspicious"`` -- for a person to review (dynamic-code, file-access,
    network, process);
    ``"unparsable"`` -- the cell could not be parsed (rule ``syntax``).

Static analysis cannot know types, so a few heuristics are used (documented
where they are applied): ``.backward``/``.grad`` on ``self`` are the student's
own; when the student's classes define a ``backward`` method, a
``x.backward(...)`` call is only reported when it looks like autograd (a
tensor-valued receiver, autograd keywords, or an argument count none of the
student's ``backward`` methods accept).
"""

from __future__ import annotations

import ast
import textwrap
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

__all__ = ["Finding", "ScanPolicy", "scan_cells", "RULES", "SEVERITIES"]

VIOLATION = "violation"
SUSPICIOUS = "suspicious"
UNPARSABLE = "unparsable"
SEVERITIES = (VIOLATION, SUSPICIOUS, UNPARSABLE)

#: rule id -> severity of its findings
RULES: dict[str, str] = {
    "autograd": VIOLATION,
    "torch.nn": VIOLATION,
    "torch.optim": VIOLATION,
    "ready-made-function": VIOLATION,
    "fastai-training": VIOLATION,
    "ml-library": VIOLATION,
    "dynamic-code": SUSPICIOUS,
    "file-access": SUSPICIOUS,
    "network": SUSPICIOUS,
    "process": SUSPICIOUS,
    "monkeypatch": SUSPICIOUS,
    "encoded-blob": SUSPICIOUS,
    "syntax": UNPARSABLE,
}
MAX_LITERAL_CHARS = 2000  # a longer string or bytes literal in a cell may carry weights or data


@dataclass(frozen=True)
class Finding:
    severity: str  # "violation" | "suspicious" | "unparsable"
    rule: str  # one of RULES
    cell: int  # the cell index given by the caller
    line: int  # 1-based line within the cell's source, as the student wrote it
    message: str  # one sentence for the student


@dataclass(frozen=True)
class ScanPolicy:
    no_autograd: bool = True  # when False the "autograd" rule is not reported


# --------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------

#: ready-made functions, matched on any attribute/import name (leading and
#: trailing underscores ignored, so ``torch._softmax`` counts too)
READY_MADE = frozenset({
    "softmax", "log_softmax", "logsumexp", "cross_entropy", "nll_loss",
    "mse_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits",
    "kl_div",
    # other spellings of the same functions (aten / torch.special)
    "cross_entropy_loss", "nll_loss2d", "nll_loss_nd", "special_softmax",
    "special_log_softmax", "special_logsumexp",
})

#: attributes that only exist for autograd
AUTOGRAD_ATTRS = frozenset({
    "backward", "requires_grad", "requires_grad_", "grad", "grad_fn",
    "retain_grad",
})
#: keywords of ``Tensor.backward``
AUTOGRAD_BACKWARD_KW = frozenset({"gradient", "retain_graph", "create_graph", "inputs"})

FASTAI_LEARNERS = frozenset({
    "Learner", "vision_learner", "cnn_learner", "tabular_learner",
    "unet_learner", "collab_learner", "text_classifier_learner",
    "language_model_learner", "load_learner",
})
FASTAI_OPTIMISERS = frozenset({
    "SGD", "Adam", "RAdam", "QHAdam", "Lamb", "Larc", "Lookahead", "ranger",
    "OptimWrapper", "Optimizer",
})
FASTAI_LOSSES = frozenset({
    "CrossEntropyLossFlat", "MSELossFlat", "BCEWithLogitsLossFlat",
    "BCELossFlat", "L1LossFlat", "LabelSmoothingCrossEntropy",
    "LabelSmoothingCrossEntropyFlat", "FocalLossFlat", "FocalLoss", "DiceLoss",
    "BaseLoss",
})
FASTAI_TRAINING = FASTAI_LEARNERS | FASTAI_OPTIMISERS | FASTAI_LOSSES
#: names distinctive enough to report as an attribute of anything
FASTAI_DISTINCTIVE = FASTAI_LEARNERS | FASTAI_LOSSES | frozenset(
    {"RAdam", "QHAdam", "Lamb", "Larc", "Lookahead", "ranger", "OptimWrapper"})
#: ``learn.fit(...)`` and friends
FASTAI_FIT_METHODS = frozenset({
    "fit", "fit_one_cycle", "fine_tune", "fit_flat_cos", "fit_sgdr", "lr_find",
})
#: ready-made layers (torch.nn modules / initialisers) exported by
#: ``from fastai.vision.all import *``
FASTAI_LAYERS = frozenset({
    "Module", "Flatten", "Lambda", "PartialLambda", "LinBnDrop", "ConvLayer",
    "ResBlock", "SimpleCNN", "Embedding", "BatchNorm", "InstanceNorm",
    "BatchNorm1dFlat", "SigmoidRange", "AdaptiveConcatPool1d",
    "AdaptiveConcatPool2d", "PoolFlatten", "MaxPool", "AvgPool",
    "AdaptiveAvgPool", "Mish", "Swish", "MishJit", "SwishJit", "SequentialEx",
    "MergeLayer", "Cat", "View", "ResizeBatch", "TimeDistributed",
    "SelfAttention", "PooledSelfAttention2d", "SimpleSelfAttention",
    "ParameterModule", "ProdLayer", "PixelShuffle_ICNR", "Identity",
    "SEBlock", "SEModule", "SEResNeXtBlock", "SeparableBlock", "XResNet",
    "DynamicUnet", "UnetBlock", "TimmBody", "init_default", "init_linear",
    "trunc_normal_", "icnr_init", "apply_init", "xresnet18", "xresnet34",
    "xresnet50", "xresnet101", "xresnet152",
})
#: fastai helpers that switch autograd on/off for a module
FASTAI_AUTOGRAD = frozenset({"requires_grad", "grad_module"})
FASTAI_NETWORK = frozenset({"untar_data", "download_url", "download_data"})
#: torchvision models exported by the fastai star import
TORCHVISION_MODELS = frozenset({
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "ResNet",
    "alexnet", "AlexNet", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn",
    "VGG", "densenet121", "densenet169", "densenet201", "densenet161",
    "DenseNet", "squeezenet1_0", "squeezenet1_1", "SqueezeNet",
    "GoogLeNet", "Inception3", "MobileNetV2", "MobileNetV3", "ShuffleNetV2",
    "EfficientNet", "ConvNeXt", "RegNet", "VisionTransformer",
    "SwinTransformer", "MNASNet", "MaxVit",
})

ML_LIBRARIES = frozenset({
    "sklearn", "tensorflow", "keras", "jax", "jaxlib", "flax", "optax",
    "xgboost", "lightgbm", "catboost", "pytorch_lightning", "lightning",
    "timm", "transformers", "torchvision", "tinygrad", "micrograd",
    "autograd", "mlx", "theano", "torchmetrics", "ignite", "skorch",
    "accelerate", "mxnet", "paddle", "chainer", "haiku", "equinox", "trax",
})
NETWORK_MODULES = frozenset({
    "socket", "urllib", "urllib3", "requests", "http", "httpx", "aiohttp",
    "ftplib", "smtplib", "telnetlib", "paramiko", "websocket", "websockets",
    "fastdownload", "ssl", "poplib", "imaplib", "xmlrpc",
})
PROCESS_MODULES = frozenset({
    "subprocess", "multiprocessing", "signal", "ctypes", "pty", "pexpect",
    "_posixsubprocess",
})
OS_PROCESS = frozenset({
    "system", "popen", "fork", "forkpty", "kill", "killpg", "_exit", "abort",
})
DYNAMIC_MODULES = frozenset({"importlib", "builtins", "runpy", "code", "codeop"})

#: bare builtins
DYNAMIC_BUILTINS = frozenset({"exec", "eval", "compile", "__import__"})
EXIT_BUILTINS = frozenset({"exit", "quit"})
ATTR_BUILTINS = frozenset({"getattr", "setattr", "delattr", "hasattr"})
NAMESPACE_BUILTINS = frozenset({"globals", "locals", "vars"})

#: ``get_ipython()`` methods
IPY_SHELL = frozenset({"system", "system_piped", "system_raw", "getoutput"})
IPY_DYNAMIC = frozenset({
    "run_cell", "run_line_magic", "run_cell_magic", "ex", "ev", "run_code",
    "run_ast_nodes", "safe_execfile", "safe_execfile_ipy", "safe_run_module",
    "magic", "push", "user_ns", "user_global_ns", "transform_cell",
    "run_cell_async", "find_magic", "find_line_magic", "find_cell_magic",
})

#: line magics whose argument is Python code to run, and their options that
#: take a separate value
CODE_MAGIC_OPTIONS = {
    "time": None,  # no options
    "timeit": frozenset({"-n", "-r", "-p"}),
    "prun": frozenset({"-l", "-s", "-T", "-D"}),
    "debug": frozenset({"-b", "--breakpoint"}),
}
PROCESS_LINE_MAGICS = frozenset({
    "system", "sx", "sc", "pip", "conda", "mamba", "micromamba", "uv", "alias",
})
DYNAMIC_LINE_MAGICS = frozenset({
    "run", "load", "loadpy", "macro", "rerun", "recall", "r", "edit", "paste",
    "cpaste",
})
FILE_LINE_MAGICS = frozenset({"cd", "pushd", "popd", "bookmark"})
PYTHON_CELL_MAGICS = frozenset({"time", "timeit", "prun", "capture", "debug"})
PROCESS_CELL_MAGICS = frozenset({
    "bash", "sh", "script", "system", "sx", "perl", "ruby", "python",
    "python2", "python3", "pypy", "cmd", "powershell", "zsh", "pip", "conda",
})
DYNAMIC_CELL_MAGICS = frozenset({"writefile", "file", "javascript", "js"})
HARMLESS_CELL_MAGICS = frozenset({"html", "HTML", "markdown", "latex", "svg", "md"})

#: methods whose result is a tensor (used to recognise ``(...).mean().backward()``)
TENSOR_METHODS = frozenset({
    "sum", "mean", "pow", "exp", "log", "abs", "sqrt", "square", "neg",
    "clamp", "clamp_min", "clamp_max", "matmul", "mm", "bmm", "t", "view",
    "reshape", "float", "double", "half", "squeeze", "unsqueeze", "norm",
    "detach", "to", "cuda", "cpu", "relu", "sigmoid", "tanh", "flatten",
    "gather", "softmax", "log_softmax", "logsumexp", "mul", "add", "sub",
    "div", "prod", "std", "var", "forward", "__call__", "contiguous",
    "expand", "repeat", "masked_fill", "where", "transpose", "permute",
})

_Path = Optional[str]

# Names that ``from fastai.vision.all import *`` (the course preamble) brings
# into scope.  They are assumed in scope even if the caller passes no
# preamble, because the notebook always starts with that import.
_STAR_MODULES: dict[str, str] = {
    "torch": "torch", "nn": "torch.nn", "F": "torch.nn.functional",
    "np": "numpy", "plt": "matplotlib.pyplot", "pd": "pandas", "os": "os",
    "sys": "sys", "shutil": "shutil", "glob": "glob", "requests": "requests",
    "urllib": "urllib", "multiprocessing": "multiprocessing",
    "queues": "multiprocessing.queues", "pickle": "pickle",
    "tempfile": "tempfile", "threading": "threading", "scipy": "scipy",
    "ndimage": "scipy.ndimage", "Image": "PIL.Image", "random": "random",
    "math": "math", "json": "json", "io": "io", "inspect": "inspect",
    "re": "re", "time": "time", "types": "types", "warnings": "warnings",
    "zipfile": "zipfile", "tarfile": "tarfile", "hashlib": "hashlib",
    "functools": "functools", "itertools": "itertools",
    "operator": "operator", "collections": "collections",
    "typing": "typing", "concurrent": "concurrent",
    "models": "fastai.vision.models", "matplotlib": "matplotlib",
}
_STAR_OBJECTS: dict[str, str] = {"Path": "pathlib.Path"}
_STAR_OBJECTS.update({n: "fastai.learner." + n for n in FASTAI_TRAINING})
_STAR_OBJECTS.update({n: "fastai.layers." + n for n in FASTAI_LAYERS})
_STAR_OBJECTS.update({n: "fastai.torch_core." + n for n in FASTAI_AUTOGRAD})
_STAR_OBJECTS.update({n: "fastai.data.external." + n for n in FASTAI_NETWORK})
_STAR_OBJECTS.update({n: "torchvision.models." + n for n in TORCHVISION_MODELS})

#: star-importable torch modules that export the ready-made functions
_TORCH_STAR_SOURCES = ("torch", "torch.special", "torch.nn.functional", "torch.nn")

#: allowed although under torch.autograd (same objects as torch.no_grad etc.)
_ALLOWED_PATHS = frozenset({
    "torch.autograd.no_grad", "torch.autograd.inference_mode",
    "torch.autograd.grad_mode.no_grad", "torch.autograd.grad_mode.inference_mode",
})

_IPY = "<ipython>"  # pseudo-path of get_ipython()


def _norm(name: str) -> str:
    return name.strip("_")


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".")


# --------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------


def _quote(text: str, limit: int = 70) -> str:
    text = " ".join(text.split()).replace("`", "'")
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


_TEMPLATES = {
    "autograd": "`{s}` uses PyTorch autograd{d}, which this assignment forbids; "
                "compute the gradients by hand in your layers' backward().",
    "torch.nn": "`{s}` uses torch.nn{d} (ready-made layers, functions and "
                "initialisers), which is not allowed; build it yourself from tensor operations.",
    "torch.optim": "`{s}` uses a ready-made optimiser from torch.optim, which is not "
                   "allowed; update the parameters yourself in your training loop.",
    "ready-made-function": "`{s}` uses the ready-made `{d}`, which is not allowed; "
                           "use your own implementation built from tensor operations "
                           "(e.g. your own log_softmax).",
    "fastai-training": "`{s}` uses fastai's `{d}`, but fastai may only be used for the "
                       "provided data loading; write your own model, loss, optimiser "
                       "and training loop.",
    "ml-library": "`{s}` uses the `{d}` library, but other machine-learning libraries "
                  "are not allowed in this assignment.",
    "dynamic-code": "`{s}` {d}, so the checker cannot see what it really does; "
                    "a person will review it.",
    "file-access": "`{s}` {d}; a notebook should only use files inside the "
                   "assignment folder, so a person will review it.",
    "network": "`{s}` uses the network ({d}); the assignment must not download "
               "anything, so a person will review it.",
    "process": "`{s}` {d}; running other programs is not part of the assignment, "
               "so a person will review it.",
    "monkeypatch": "`{s}` replaces `{d}` from a library; the grader never scores with your "
                   "kernel's functions, but a person will review it.",
}


def _message(rule: str, spelled: str, detail: str = "") -> str:
    return _TEMPLATES[rule].format(s=_quote(spelled), d=detail)


def _classify(path: str) -> Optional[tuple[str, str]]:
    """(rule, detail) for a fully qualified dotted name, or None."""
    if not path or path in _ALLOWED_PATHS:
        return None
    parts = path.split(".")
    root, last = parts[0], parts[-1]
    if root == _IPY:
        meth = parts[1] if len(parts) > 1 else ""
        if meth in IPY_SHELL:
            return "process", "runs a shell command"
        if meth in IPY_DYNAMIC:
            return "dynamic-code", "runs code through the IPython shell"
        return None
    for part in parts[1:]:
        if _norm(part) in READY_MADE:
            return "ready-made-function", _norm(part)
    if root == "torch":
        if (_under(path, "torch.autograd") or _under(path, "torch.func")
                or _under(path, "torch._functorch")
                or path == "torch.enable_grad"):
            return "autograd", ""
        if _under(path, "torch.nn") or _under(path, "torch._C._nn"):
            return "torch.nn", ""
        if _under(path, "torch.optim"):
            return "torch.optim", ""
        if _under(path, "torch.hub") or _under(path, "torch.utils.model_zoo"):
            return "network", "downloads pretrained models"
        if _under(path, "torch.multiprocessing"):
            return "process", "uses `torch.multiprocessing` to control processes"
        return None
    if root == "functorch":
        return "autograd", " (functorch)"
    if root == "fastai":
        if last in FASTAI_TRAINING or last in FASTAI_FIT_METHODS:
            return "fastai-training", last
        if last in FASTAI_LAYERS:
            return "torch.nn", f" (fastai's ready-made `{last}`)"
        if last in FASTAI_AUTOGRAD:
            return "autograd", f" (fastai's `{last}`)"
        if last in FASTAI_NETWORK:
            return "network", f"fastai's `{last}` downloads files"
        return None
    if root in ML_LIBRARIES or _under(path, "scipy.optimize"):
        lib = "scipy.optimize" if root == "scipy" else root
        return "ml-library", lib
    if root in NETWORK_MODULES:
        return "network", f"module `{root}`"
    if root in PROCESS_MODULES:
        return "process", f"uses the `{root}` module to control processes"
    if root == "os" and len(parts) == 2:
        if last in OS_PROCESS or last.startswith(("exec", "spawn", "posix_spawn")):
            return "process", "starts or stops a process"
        if last in ("chdir", "fchdir"):
            return "file-access", "changes the working directory"
    if root == "sys" and len(parts) >= 2:
        if parts[1] == "modules":
            return "dynamic-code", "reaches modules through `sys.modules`"
        if parts[1] == "exit":
            return "process", "stops the Python process"
    if root in DYNAMIC_MODULES:
        return "dynamic-code", f"uses the `{root}` module to load or run code"
    if _under(path, "concurrent.futures.ProcessPoolExecutor"):
        return "process", "starts worker processes"
    if root == "asyncio" and last.startswith("create_subprocess"):
        return "process", "starts a process"
    return None


# --------------------------------------------------------------------------
# Cell preparation: IPython syntax -> Python, with a line map
# --------------------------------------------------------------------------

_TM = None


def _transformer():
    global _TM
    if _TM is None:
        from IPython.core.inputtransformer2 import TransformerManager

        _TM = TransformerManager()
    return _TM


@dataclass
class _Unit:
    """Parsed Python with a map from its lines to the student's lines."""

    tree: ast.Module
    text: str
    line_of: Callable[[int], int]
    generated: frozenset  # unit lines that IPython rewrote (magics, `!`)


@dataclass
class _CellMagic:
    name: str
    args: str
    line: int
    body: list  # prepared items of the body (only for Python cell magics)


@dataclass
class _Broken:
    line: int
    error: str
    syntax: bool = True  # False: parser limits, null bytes, internal errors


def _parse(text: str) -> ast.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ast.parse(text)


def _lines(text: str) -> list:
    """Split like Python's tokenizer: only \\r\\n, \\r and \\n end a line
    (str.splitlines would also split on form feeds, \\x85, \\u2028, ...)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n") if text else []


def _align(orig: list, new: list) -> tuple[dict, set]:
    """Map lines of IPython's transformed cell back to the student's lines.

    The transform keeps lines 1:1 except that it drops leading blank lines,
    joins a backslash-continued magic into one line, and may dedent or strip
    prompts (still 1:1).  Linear two-pointer walk; returns
    ({transformed line: original line}, {transformed lines that were rewritten}).
    """
    mapping: dict[int, int] = {}
    generated: set = set()
    i = 0
    if new and new[0].strip():
        while i < len(orig) and not orig[i].strip():
            i += 1
    for j, line in enumerate(new):
        if i >= len(orig):
            mapping[j + 1] = max(len(orig), 1)
            generated.add(j + 1)
            continue
        mapping[j + 1] = i + 1
        if orig[i] == line:
            i += 1
            continue
        generated.add(j + 1)
        if "get_ipython()" in line:  # a magic: may have swallowed `\` continuations
            while i < len(orig) - 1 and orig[i].rstrip().endswith("\\"):
                i += 1
        i += 1
    return mapping, generated


def _prepare(src: str, offset: int = 0) -> list:
    """Turn (part of) a cell into parsed units; ``offset`` = student lines
    before ``src``'s first line."""
    lines = _lines(src)
    first = 0
    while first < len(lines) and not lines[first].strip():
        first += 1
    rest = textwrap.dedent("\n".join(lines[first:]))
    if rest.startswith("%%"):
        header = rest.split("\n", 1)[0]
        name, _, args = header[2:].rstrip().partition(" ")
        if not name.endswith("?"):
            magic_line = offset + first + 1
            body_src = "\n".join(lines[first + 1:])
            body = _prepare(body_src, magic_line) if name in PYTHON_CELL_MAGICS else []
            return [_CellMagic(name, args.strip(), magic_line, body)]
    # Plain Python needs no IPython transform (every IPython-only spelling is
    # invalid Python), and skipping it keeps big cells fast: IPython's
    # transform re-tokenises the whole cell once per magic.
    try:
        tree = _parse(src)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        tree = None
    if tree is not None:
        n_lines = max(len(lines), 1)
        return [_Unit(tree, src, lambda n, _o=offset, _n=n_lines: _o + min(max(n, 1), _n),
                      frozenset())]
    try:
        text = _transformer().transform_cell(src)
    except Exception:  # e.g. IPython's 500-rewrite limit: parse the raw source
        text = src
    mapping, generated = _align(lines, _lines(text))
    n_src = max(len(lines), 1)

    def line_of(n: int, _m=mapping, _o=offset, _n=n_src) -> int:
        if n in _m:
            return _o + min(max(_m[n], 1), _n)
        return _o + min(max(n, 1), _n)

    try:
        tree = _parse(text)
    except SyntaxError as e:
        return [_Broken(line_of(e.lineno or 1), e.msg or "invalid syntax")]
    except (ValueError, MemoryError, RecursionError) as e:
        return [_Broken(offset + 1, str(e) or type(e).__name__, syntax=False)]
    return [_Unit(tree, text, line_of, frozenset(generated))]


def _units(items: list) -> Iterable[_Unit]:
    for it in items:
        if isinstance(it, _Unit):
            yield it
        elif isinstance(it, _CellMagic):
            yield from _units(it.body)


# --------------------------------------------------------------------------
# Pre-pass: what the student defines (order-independent facts)
# --------------------------------------------------------------------------


@dataclass
class _Sig:
    min_pos: int
    max_pos: float
    names: frozenset
    any_kw: bool

    def accepts(self, npos: int) -> bool:
        return self.min_pos <= npos <= self.max_pos


def _sig(fn: ast.FunctionDef) -> _Sig:
    a = fn.args
    pos = list(a.posonlyargs) + list(a.args)
    is_static = any(isinstance(d, ast.Name) and d.id == "staticmethod"
                    for d in fn.decorator_list)
    if pos and not is_static:
        pos = pos[1:]  # self
    n_def = len(a.defaults)
    min_pos = max(len(pos) - n_def, 0)
    max_pos = float("inf") if a.vararg else len(pos)
    names = frozenset(x.arg for x in pos + list(a.kwonlyargs))
    return _Sig(min_pos, max_pos, names, a.kwarg is not None)


@dataclass
class _Facts:
    classes: set = field(default_factory=set)
    methods: dict = field(default_factory=dict)  # method name -> [_Sig]
    self_attrs: set = field(default_factory=set)  # attrs assigned on self
    toplevel_defs: set = field(default_factory=set)

    def add(self, tree: ast.Module) -> None:
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                self.classes.add(node.name)
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        self.methods.setdefault(item.name, []).append(_sig(item))
            elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
                  and isinstance(node.value, ast.Name) and node.value.id == "self"):
                self.self_attrs.add(node.attr)
        stack = list(tree.body)
        while stack:
            st = stack.pop()
            if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.toplevel_defs.add(st.name)
            elif isinstance(st, (ast.If, ast.For, ast.AsyncFor, ast.While, ast.With,
                                 ast.AsyncWith, ast.Try)):
                for attr in ("body", "orelse", "finalbody"):
                    stack.extend(getattr(st, attr, []) or [])
                for h in getattr(st, "handlers", []) or []:
                    stack.extend(h.body)


def _local_names(fn) -> set:
    """Names bound inside a function body (not in nested scopes)."""
    out: set = set()
    stack = list(fn.body) if isinstance(fn.body, list) else [fn.body]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
            continue
        if isinstance(node, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp,
                             ast.GeneratorExp)):
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            out.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                if a.name != "*":
                    out.add(a.asname or a.name.split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            out.add(node.name)
        elif isinstance(node, ast.Global):
            continue
        stack.extend(ast.iter_child_nodes(node))
    return out


def _global_decls(fn) -> set:
    out: set = set()
    stack = list(fn.body) if isinstance(fn.body, list) else []
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(node, (ast.Global, ast.Nonlocal)):
            out.update(node.names)
        stack.extend(ast.iter_child_nodes(node))
    return out


def _arg_names(a: ast.arguments) -> list:
    names = [x.arg for x in list(a.posonlyargs) + list(a.args) + list(a.kwonlyargs)]
    if a.vararg:
        names.append(a.vararg.arg)
    if a.kwarg:
        names.append(a.kwarg.arg)
    return names


def _target_names(target) -> list:
    return [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]


def _str_const(node) -> Optional[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _outside_path(s: str) -> bool:
    s = s.strip()
    if s.startswith(("/", "~", "\\")):
        return True
    return ".." in s.replace("\\", "/").split("/")


def _literal_outside(node) -> bool:
    s = _str_const(node)
    if s is not None:
        return _outside_path(s)
    if isinstance(node, ast.JoinedStr) and node.values:  # f"/abs/{x}", f"{d}/../x"
        head = _str_const(node.values[0])
        if head is not None and head.strip().startswith(("/", "~")):
            return True
        parts = [_str_const(v) for v in node.values]
        return any(p is not None and ".." in p.replace("\\", "/").split("/") for p in parts)
    return False


# --------------------------------------------------------------------------
# The walker
# --------------------------------------------------------------------------


class _Scope:
    __slots__ = ("kind", "paths", "kinds", "globals_")

    def __init__(self, kind: str):
        self.kind = kind  # "module" | "function" | "class" | "comp"
        self.paths: dict[str, _Path] = {}
        self.kinds: dict[str, str] = {}
        self.globals_: set = set()


class _Walker(ast.NodeVisitor):
    def __init__(self, policy: ScanPolicy, facts: _Facts):
        self.policy = policy
        self.facts = facts
        g = _Scope("module")
        g.paths.update(_STAR_MODULES)
        for name, path in _STAR_OBJECTS.items():
            if name in facts.toplevel_defs:
                continue  # the student's own def/class wins wherever it is
            g.paths[name] = path
            if name in FASTAI_LEARNERS:
                g.kinds[name] = "learner-factory"
        for name in facts.toplevel_defs:
            g.paths[name] = None
            g.kinds[name] = "class" if name in facts.classes else "function"
        self.scopes: list[_Scope] = [g]
        self.findings: dict[tuple, Finding] = {}
        self.cell = -1
        self.reporting = False
        self.cell_lines: list[str] = []
        self.unit: Optional[_Unit] = None
        self.internal: set = set()  # ids of chain nodes not classified on their own
        self.handled: set = set()  # ids of nodes whose checks were done by a parent
        self.call_of: dict[int, ast.Call] = {}
        # the three maps above are keyed by id(): keep every tree parsed during
        # the walk alive so that no id is reused by another node
        self.keep: list = []

    # ---- reporting -----------------------------------------------------

    def line(self, node) -> int:
        return self.unit.line_of(getattr(node, "lineno", 1) or 1)

    def spell(self, node) -> str:
        n = getattr(node, "lineno", None)
        if n is not None and n in self.unit.generated:
            ln = self.unit.line_of(n)
            if 1 <= ln <= len(self.cell_lines):
                return self.cell_lines[ln - 1].strip()
        seg = None
        try:
            seg = ast.get_source_segment(self.unit.text, node)
        except Exception:
            seg = None
        if not seg:
            try:
                seg = ast.unparse(node)
            except Exception:
                seg = type(node).__name__
        return seg

    def report(self, rule: str, node, detail: str = "", spelled: Optional[str] = None,
               line: Optional[int] = None) -> None:
        if not self.reporting:
            return
        if rule == "autograd" and not self.policy.no_autograd:
            return
        ln = line if line is not None else self.line(node)
        key = (self.cell, ln, rule)
        if key in self.findings:
            return
        text = spelled if spelled is not None else self.spell(node)
        self.findings[key] = Finding(RULES[rule], rule, self.cell, ln,
                                     _message(rule, text, detail))

    def report_path(self, path: _Path, node, spelled: Optional[str] = None) -> None:
        if path:
            hit = _classify(path)
            if hit:
                self.report(hit[0], node, hit[1], spelled)

    # ---- scopes ----------------------------------------------------------

    def lookup(self, name: str) -> tuple:
        top = self.scopes[-1]
        for sc in reversed(self.scopes):
            if sc.kind == "class" and sc is not top:
                continue
            if name in sc.paths:
                return True, sc.paths[name], sc.kinds.get(name)
        return False, None, None

    def unbound(self, name: str) -> bool:
        return not self.lookup(name)[0]

    def bind(self, name: str, path: _Path = None, kind: Optional[str] = None) -> None:
        sc = self.scopes[-1]
        if name in sc.globals_:
            sc = self.scopes[0]
        sc.paths[name] = path
        if kind:
            sc.kinds[name] = kind
        else:
            sc.kinds.pop(name, None)

    def push(self, kind: str, names: Iterable[str] = (), globals_: Iterable[str] = ()) -> None:
        sc = _Scope(kind)
        sc.globals_ = set(globals_)
        for n in names:
            if n not in sc.globals_:
                sc.paths[n] = None
        self.scopes.append(sc)

    # ---- resolution ------------------------------------------------------

    def resolve(self, node) -> _Path:
        """Fully qualified dotted name of an expression, if it is a module
        member we know; None for the student's own values."""
        if isinstance(node, ast.Name):
            return self.lookup(node.id)[1]
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            return f"{base}.{node.attr}" if base else None
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and self.unbound(f.id):
                if f.id == "get_ipython" and not node.args:
                    return _IPY
                if f.id == "getattr" and len(node.args) >= 2:
                    lit = _str_const(node.args[1])
                    base = self.resolve(node.args[0])
                    return f"{base}.{lit}" if base and lit else None
                if f.id == "__import__" and node.args:
                    lit = _str_const(node.args[0])
                    if lit:
                        fromlist = len(node.args) >= 4 or any(
                            k.arg == "fromlist" for k in node.keywords)
                        return lit if fromlist else lit.split(".")[0]
            fpath = self.resolve(f)
            if fpath == "importlib.import_module" and node.args:
                return _str_const(node.args[0])
            if fpath in ("IPython.get_ipython", "IPython.core.getipython.get_ipython"):
                return _IPY
            return None
        if isinstance(node, ast.Subscript):
            key = _str_const(node.slice)
            if key is None:
                return None
            v = node.value
            if (isinstance(v, ast.Call) and isinstance(v.func, ast.Name)
                    and v.func.id in ("globals", "locals") and self.unbound(v.func.id)):
                return self.lookup(key)[1]
            if self.resolve(v) == "sys.modules":
                return key
            return None
        return None

    def kind(self, node) -> Optional[str]:
        """Rough type of an expression: "tensor", "instance" (of a student
        class), "class", "learner" or None (unknown)."""
        if isinstance(node, ast.Name):
            if node.id in ("self", "cls"):
                return "instance"
            return self.lookup(node.id)[2]
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id == "super":
                return "instance"
            fk = self.kind(f) if isinstance(f, ast.Name) else None
            if fk == "class":
                return "instance"
            if fk == "instance":
                return "tensor"  # calling a model/loss object: its forward output
            if fk == "learner-factory":
                return "learner"
            fpath = self.resolve(f)
            if fpath and fpath.split(".")[0] == "torch":
                return "tensor"
            if fpath and fpath.split(".")[-1] in FASTAI_LEARNERS:
                return "learner"
            if isinstance(f, ast.Attribute):
                if f.attr in TENSOR_METHODS or self.kind(f.value) == "tensor":
                    return "tensor"
            return None
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.MatMult):
                return "tensor"
            if "tensor" in (self.kind(node.left), self.kind(node.right)):
                return "tensor"
            return None
        if isinstance(node, ast.UnaryOp):
            return "tensor" if self.kind(node.operand) == "tensor" else None
        if isinstance(node, ast.Subscript):
            return "tensor" if self.kind(node.value) == "tensor" else None
        if isinstance(node, ast.Attribute):
            p = self.resolve(node)
            if p and p.split(".")[0] == "torch" and p.split(".")[-1] in ("Tensor",):
                return "tensor"
        return None

    @staticmethod
    def is_self(node) -> bool:
        if isinstance(node, ast.Name) and node.id in ("self", "cls"):
            return True
        return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "super")

    # ---- attribute-name rules (apply to any receiver) -----------------------

    def check_attr(self, receiver, attr: str, node, call: Optional[ast.Call],
                   store: bool) -> None:
        spelled_node = call if call is not None else node
        if attr in AUTOGRAD_ATTRS:
            if self.autograd_attr(receiver, attr, call):
                self.report("autograd", spelled_node, f" (`.{attr}`)")
        if not store and _norm(attr) in READY_MADE:
            if not self.is_self(receiver) and self.kind(receiver) not in ("instance", "class"):
                self.report("ready-made-function", spelled_node, _norm(attr))
        if not store and attr in FASTAI_FIT_METHODS:
            k = self.kind(receiver)
            if k == "learner" or not (self.is_self(receiver) or k in ("instance", "class")
                                      or attr in self.facts.methods):
                self.report("fastai-training", spelled_node, f".{attr}()")
        if not store and attr in FASTAI_DISTINCTIVE and not self.is_self(receiver):
            self.report("fastai-training", spelled_node, attr)

    def autograd_attr(self, receiver, attr: str, call: Optional[ast.Call]) -> bool:
        """Is ``receiver.attr`` (called as ``call``) autograd?"""
        if attr in ("backward", "grad"):
            if self.is_self(receiver):
                return False
            own = self.facts.methods.get(attr, [])
            owned = bool(own) or attr in self.facts.self_attrs
            if not owned:
                return True
            k = self.kind(receiver)
            if k == "tensor":
                return True
            if self.resolve(receiver):
                return True  # torch.Tensor.backward, module attributes
            if call is not None and attr == "backward":
                for kw in call.keywords:
                    if kw.arg in AUTOGRAD_BACKWARD_KW and not any(
                            kw.arg in s.names or s.any_kw for s in own):
                        return True
            if k == "instance":
                return False
            if call is not None and attr == "backward" and own:
                if any(isinstance(a, ast.Starred) for a in call.args):
                    return False
                npos = len(call.args)
                if not any(s.accepts(npos) for s in own):
                    return True
            return False
        return True

    # ---- generic visiting ------------------------------------------------

    def run_unit(self, unit: _Unit) -> None:
        prev = self.unit
        self.unit = unit
        try:
            for stmt in unit.tree.body:
                self.visit(stmt)
        finally:
            self.unit = prev

    def visit_Name(self, node: ast.Name) -> None:
        if not isinstance(node.ctx, ast.Load) or id(node) in self.handled:
            return
        name = node.id
        shown = self.call_of.get(id(node), node)  # quote `eval("1")`, not `eval`
        if name == "__builtins__":
            self.report("dynamic-code", node, "reaches the builtins directly")
            return
        found, path, _ = self.lookup(name)
        if not found:
            if name in DYNAMIC_BUILTINS:
                self.report("dynamic-code", shown, "runs code built at run time")
            elif name in EXIT_BUILTINS:
                self.report("process", shown, "stops the Python process")
            elif name in ATTR_BUILTINS:
                self.report("dynamic-code", node, "passes an attribute-lookup builtin around")
            elif name == "set_grad_enabled":
                self.report("autograd", shown, " (`set_grad_enabled`)")
            return
        if id(node) not in self.internal:
            self.report_path(path, shown)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        internal = id(node) in self.internal
        if id(node) not in self.handled:
            path = self.resolve(node)
            if path and isinstance(node.value, (ast.Name, ast.Attribute)):
                self.internal.add(id(node.value))
            if internal and isinstance(node.value, (ast.Name, ast.Attribute)):
                self.internal.add(id(node.value))
            if path and not internal:
                self.report_path(path, self.call_of.get(id(node), node))
            self.check_attr(node.value, node.attr, node, self.call_of.get(id(node)),
                            store=not isinstance(node.ctx, ast.Load))
        else:
            self.internal.add(id(node.value))
        if (node.attr == "__dict__" and self.resolve(node.value)
                and id(node) not in self.handled):
            self.report("dynamic-code", node, "looks inside a module's namespace")
        self.visit(node.value)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        v = node.value
        key = _str_const(node.slice)
        if (isinstance(v, ast.Call) and isinstance(v.func, ast.Name)
                and v.func.id in NAMESPACE_BUILTINS and self.unbound(v.func.id)):
            if not isinstance(node.ctx, ast.Load) or key is None:
                self.report("dynamic-code", node,
                            "reads or changes variables through a namespace dictionary")
        if id(node) not in self.internal and key is not None:
            path = self.resolve(node)
            if path:
                self.report_path(path, node)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        self.call_of[id(f)] = node
        for kw in node.keywords:
            if kw.arg == "requires_grad":
                self.report("autograd", kw, " (`requires_grad=`)")
        if isinstance(f, ast.Attribute) and self.resolve(f.value) == _IPY:
            if self.ipython_call(node, f):
                return
        fpath = self.resolve(f)
        fname = f.id if isinstance(f, ast.Name) else None
        free = fname is not None and self.unbound(fname)
        if id(node) not in self.internal:  # __import__("torch.nn"), import_module(...)
            self.report_path(self.resolve(node), node)

        # set_grad_enabled(False) is allowed, anything else is autograd
        if fpath in ("torch.set_grad_enabled", "torch.autograd.set_grad_enabled") or (
                free and fname == "set_grad_enabled"):
            args = list(node.args) + [k.value for k in node.keywords if k.arg == "mode"]
            off = bool(args) and isinstance(args[0], ast.Constant) and args[0].value is False
            if off and fpath != "torch.autograd.set_grad_enabled":
                self.handled.add(id(f))
                if isinstance(f, ast.Attribute):
                    self.internal.add(id(f.value))
            else:
                self.report("autograd", node, " (`set_grad_enabled`)")

        # getattr(x, "name") is x.name; getattr(x, name) cannot be checked
        if free and fname in ATTR_BUILTINS:
            self.handled.add(id(f))
            if len(node.args) >= 2:
                lit = _str_const(node.args[1])
                if lit is None:
                    self.report("dynamic-code", node, "uses an attribute name computed at run time")
                else:
                    self.virtual_attr(node.args[0], lit, node, store=fname in ("setattr", "delattr"))
        if isinstance(f, ast.Attribute) and f.attr in (
                "__getattribute__", "__getattr__", "__setattr__", "__delattr__"):
            lit = _str_const(node.args[0]) if node.args else None
            if lit is None:
                self.report("dynamic-code", node, "uses an attribute name computed at run time")
            else:
                self.virtual_attr(f.value, lit, node, store=f.attr in ("__setattr__", "__delattr__"))
        if fpath in ("operator.attrgetter", "operator.methodcaller") and node.args:
            lit = _str_const(node.args[0])
            if lit is None:
                self.report("dynamic-code", node, "uses an attribute name computed at run time")
            else:
                for part in lit.split("."):
                    if part in AUTOGRAD_ATTRS:
                        self.report("autograd", node, f" (`.{part}`)")
                    if _norm(part) in READY_MADE:
                        self.report("ready-made-function", node, _norm(part))

        # globals().update(...), g = globals()
        if (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Call)
                and isinstance(f.value.func, ast.Name)
                and f.value.func.id in NAMESPACE_BUILTINS and self.unbound(f.value.func.id)
                and f.attr in ("update", "__setitem__", "setdefault", "pop", "__delitem__",
                               "clear", "popitem")):
            self.report("dynamic-code", node, "changes variables through a namespace dictionary")

        # files outside the assignment folder
        if fpath or (free and fname == "open"):
            args = list(node.args) + [k.value for k in node.keywords]
            fileish = (free and fname == "open") or (fpath and fpath.split(".")[0] in (
                "os", "shutil", "pathlib", "glob", "io", "codecs", "torch", "numpy",
                "pandas", "PIL", "matplotlib", "tarfile", "zipfile", "fastai",
                "pickle", "json", "tempfile", "safetensors"))
            if fileish and any(_literal_outside(a) for a in args):
                self.report("file-access", node, "uses a file path outside the assignment folder")
        self.generic_visit(node)

    def virtual_attr(self, receiver, attr: str, node, store: bool) -> None:
        base = self.resolve(receiver)
        if base:
            self.report_path(f"{base}.{attr}", node)
        self.check_attr(receiver, attr, node, None, store)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if isinstance(node.op, ast.Div) and _literal_outside(node.right):
            self.report("file-access", node, "builds a file path outside the assignment folder")
        self.generic_visit(node)

    # ---- IPython magics ----------------------------------------------------

    def ipython_call(self, node: ast.Call, f: ast.Attribute) -> bool:
        """Handle ``get_ipython().<method>(...)``; True when fully handled."""
        generated = node.lineno in self.unit.generated
        meth = f.attr
        lits = [_str_const(a) for a in node.args]
        if meth in IPY_SHELL:
            self.report("process", node, "runs a shell command")
            return True
        if meth not in ("run_line_magic", "run_cell_magic"):
            return False  # ordinary classification (run_cell, ex, ev, ...)
        if not generated:
            self.report("dynamic-code", node, "runs code through the IPython shell")
        if len(lits) < 2 or lits[0] is None or lits[1] is None:
            if generated:
                self.report("dynamic-code", node, "runs code through the IPython shell")
            for a in node.args:
                self.visit(a)
            return True
        line = self.line(node)
        if meth == "run_line_magic":
            self.line_magic(lits[0], lits[1], node, line)
        else:
            body = lits[2] if len(lits) > 2 and lits[2] is not None else ""
            magic = _CellMagic(lits[0], lits[1], line, [])
            if lits[0] in PYTHON_CELL_MAGICS:
                # the body has its own lines; all of them point at this call
                items = _prepare(body, 0)
                for it in items:
                    if isinstance(it, _Unit):
                        it.line_of = lambda n, _l=line: _l
                        it.generated = frozenset()
                    elif isinstance(it, (_Broken, _CellMagic)):
                        it.line = line
                magic.body = items
                self.keep.append(items)
            self.cell_magic(magic, node)
        return True

    def line_magic(self, name: str, arg: str, node, line: int) -> None:
        if name in CODE_MAGIC_OPTIONS:
            self.magic_code(name, arg, CODE_MAGIC_OPTIONS[name], line, self.spell(node))
        elif name in PROCESS_LINE_MAGICS:
            self.report("process", node, "runs a shell command or installs packages")
        elif name in DYNAMIC_LINE_MAGICS:
            self.report("dynamic-code", node, "runs or loads code from elsewhere")
        elif name in FILE_LINE_MAGICS:
            self.report("file-access", node, "changes the working directory")

    def magic_code(self, name: str, arg: str, options, line: int, spelled: str) -> None:
        """Scan the Python statement given to %time/%timeit/%prun/%debug."""
        code = arg.strip()
        if options is not None:
            while code.startswith("-"):
                parts = code.split(None, 1)
                tok = parts[0]
                code = parts[1] if len(parts) > 1 else ""
                if tok in options and code:
                    parts = code.split(None, 1)
                    code = parts[1] if len(parts) > 1 else ""
                code = code.strip()
        if not code:
            return
        try:
            tree = _parse(code)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            self.report("dynamic-code", None, f"gives `%{name}` code that could not be parsed",
                        spelled=spelled, line=line)
            return
        self.keep.append(tree)
        self.run_unit(_Unit(tree, code, lambda n, _l=line: _l, frozenset()))

    def cell_magic(self, magic: _CellMagic, node=None) -> None:
        spelled = f"%%{magic.name} {magic.args}".strip()
        if magic.name in PYTHON_CELL_MAGICS:
            if magic.name in ("timeit", "prun", "debug") and magic.args:
                # e.g. `%%timeit -n 3 setup_code`: the setup code runs too
                self.magic_code(magic.name, magic.args, CODE_MAGIC_OPTIONS[magic.name],
                                magic.line, spelled)
            self.run_items(magic.body)
        elif magic.name in PROCESS_CELL_MAGICS:
            self.report("process", node, "runs another program on the cell's contents",
                        spelled=spelled, line=magic.line)
        elif magic.name in DYNAMIC_CELL_MAGICS:
            self.report("dynamic-code", node, "writes or runs code outside Python",
                        spelled=spelled, line=magic.line)
        elif magic.name not in HARMLESS_CELL_MAGICS:
            self.report("dynamic-code", node, "uses a cell magic whose body is not checked",
                        spelled=spelled, line=magic.line)

    def run_items(self, items: list) -> None:
        for it in items:
            if isinstance(it, _Unit):
                self.run_unit(it)
            elif isinstance(it, _CellMagic):
                self.cell_magic(it)
            elif isinstance(it, _Broken) and self.reporting:
                key = (self.cell, it.line, "syntax")
                text = (f"This cell has a syntax error ({_quote(it.error, 60)}) and cannot be "
                        "checked; fix it so that the cell runs." if it.syntax else
                        f"This cell could not be parsed ({_quote(it.error, 60)}), so it cannot "
                        "be checked automatically; a person will review it.")
                self.findings.setdefault(key, Finding(UNPARSABLE, "syntax", self.cell,
                                                      it.line, text))

    # ---- imports ---------------------------------------------------------

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            spelled = f"import {a.name}" + (f" as {a.asname}" if a.asname else "")
            self.report_path(a.name, a if hasattr(a, "lineno") else node, spelled)
            if a.asname:
                self.bind(a.asname, a.name)
            else:
                root = a.name.split(".")[0]
                self.bind(root, root)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        mod = node.module or ""
        if node.level:
            for a in node.names:
                if a.name != "*":
                    self.bind(a.asname or a.name)
            return
        for a in node.names:
            where = a if hasattr(a, "lineno") else node
            if a.name == "*":
                self.report_path(mod, where, f"from {mod} import *")
                if _under(mod, "fastai"):
                    self.bind_fastai_star()
                if mod in _TORCH_STAR_SOURCES:
                    for name in READY_MADE:
                        if name not in self.facts.toplevel_defs:
                            self.bind(name, f"{mod}.{name}")
                continue
            full = f"{mod}.{a.name}"
            spelled = f"from {mod} import {a.name}" + (f" as {a.asname}" if a.asname else "")
            self.report_path(full, where, spelled)
            self.bind(a.asname or a.name, full)

    def bind_fastai_star(self) -> None:
        """``from fastai... import *`` (re)binds nn, F, torch, Learner, ..."""
        for name, path in _STAR_MODULES.items():
            self.bind(name, path)
        for name, path in _STAR_OBJECTS.items():
            if name not in self.facts.toplevel_defs:
                self.bind(name, path, "learner-factory" if name in FASTAI_LEARNERS else None)

    # ---- bindings ----------------------------------------------------------

    def assign(self, target, value) -> None:
        if isinstance(target, ast.Name):
            if value is not None and self.is_namespace_call(value):
                self.report("dynamic-code", value, "keeps a namespace dictionary to change variables")
            self.bind(target.id, self.resolve(value) if value is not None else None,
                      self.kind(value) if value is not None else None)
        elif isinstance(target, (ast.Tuple, ast.List)):
            vals = value.elts if isinstance(value, (ast.Tuple, ast.List)) else None
            if (vals is not None and len(vals) == len(target.elts)
                    and not any(isinstance(e, ast.Starred) for e in target.elts + vals)):
                for t, v in zip(target.elts, vals):
                    self.assign(t, v)
            else:
                for n in _target_names(target):
                    self.bind(n)
        elif isinstance(target, ast.Starred):
            for n in _target_names(target):
                self.bind(n)

    def is_namespace_call(self, node) -> bool:
        return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("globals", "locals", "vars") and not node.args
                and self.unbound(node.func.id))

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for t in node.targets:
            patched = self.resolve(t) if isinstance(t, ast.Attribute) and self.resolve(t.value) else None
            if patched:
                self.report("monkeypatch", t, patched, spelled=f"{self.spell(t)} = ...")
            self.assign(t, node.value)
            self.visit(t)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        # the annotation itself is not checked: `x: nn.Module` uses nothing
        if node.value is not None:
            self.visit(node.value)
            self.assign(node.target, node.value)
        if not isinstance(node.target, ast.Name):
            self.visit(node.target)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.visit(node.value)
        if isinstance(node.target, ast.Name):
            self.bind(node.target.id)
        else:
            self.visit(node.target)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self.assign(node.target, node.value)

    def visit_For(self, node) -> None:
        self.visit(node.iter)
        for n in _target_names(node.target):
            self.bind(n)
        self.visit(node.target)
        for st in node.body + node.orelse:
            self.visit(st)

    visit_AsyncFor = visit_For

    def visit_With(self, node) -> None:
        for item in node.items:
            self.visit(item.context_expr)
            if item.optional_vars is not None:
                for n in _target_names(item.optional_vars):
                    self.bind(n)
                self.visit(item.optional_vars)
        for st in node.body:
            self.visit(st)

    visit_AsyncWith = visit_With

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self.bind(node.name)
        for st in node.body:
            self.visit(st)

    def visit_Delete(self, node: ast.Delete) -> None:
        for t in node.targets:
            if isinstance(t, ast.Name):
                self.bind(t.id)
            else:
                self.visit(t)

    def visit_Global(self, node) -> None:
        self.scopes[-1].globals_.update(node.names)

    visit_Nonlocal = visit_Global

    def visit_FunctionDef(self, node) -> None:
        for d in node.decorator_list:
            self.visit(d)
        self.visit(node.args)  # defaults only; annotations are not uses
        self.bind(node.name, None, "function")
        self.push("function", set(_arg_names(node.args)) | _local_names(node),
                  _global_decls(node))
        try:
            for st in node.body:
                self.visit(st)
        finally:
            self.scopes.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_arguments(self, node: ast.arguments) -> None:
        for d in list(node.defaults) + [d for d in node.kw_defaults if d is not None]:
            self.visit(d)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.visit(node.args)
        self.push("function", _arg_names(node.args))
        try:
            self.visit(node.body)
        finally:
            self.scopes.pop()

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for d in node.decorator_list:
            self.visit(d)
        for b in node.bases:
            self.visit(b)
        for k in node.keywords:
            self.visit(k)
        self.bind(node.name, None, "class")
        self.push("class")
        try:
            for st in node.body:
                self.visit(st)
        finally:
            self.scopes.pop()

    def _comprehension(self, node, elts: list) -> None:
        gens = node.generators
        if not gens:
            return
        self.visit(gens[0].iter)
        names = set()
        for g in gens:
            names.update(_target_names(g.target))
        self.push("comp", names)
        try:
            for i, g in enumerate(gens):
                if i:
                    self.visit(g.iter)
                self.visit(g.target)
                for cond in g.ifs:
                    self.visit(cond)
            for e in elts:
                self.visit(e)
        finally:
            self.scopes.pop()

    def visit_ListComp(self, node) -> None:
        self._comprehension(node, [node.elt])

    visit_SetComp = visit_ListComp
    visit_GeneratorExp = visit_ListComp

    def visit_DictComp(self, node) -> None:
        self._comprehension(node, [node.key, node.value])


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def _source_text(src) -> str:
    if src is None:
        return ""
    if isinstance(src, (list, tuple)):
        return "".join(str(s) for s in src)
    return str(src)


def scan_cells(cells: Iterable[tuple[int, str]], policy: ScanPolicy = ScanPolicy(),
               preamble: str = "") -> list[Finding]:
    """Scan student-editable code cells (``(index, source)`` in notebook order).

    ``preamble`` is the source of the provided (locked) cells: its imports
    define names in scope but it is never reported on.  Returns findings
    sorted by (cell, line), one per (cell, line, rule).  Never raises.
    """
    cell_list = []
    for entry in cells:
        try:
            idx, src = entry
        except Exception:
            continue
        cell_list.append((idx, _source_text(src)))

    facts = _Facts()
    try:
        pre_items = _prepare(_source_text(preamble)) if preamble else []
    except Exception:
        pre_items = []
    prepared = []
    for idx, src in cell_list:
        try:
            items = _prepare(src)
        except Exception as e:  # pragma: no cover - defensive
            items = [_Broken(1, f"internal scanner error: {type(e).__name__}", syntax=False)]
        prepared.append((idx, src, items))
    for items in [pre_items] + [p[2] for p in prepared]:
        for unit in _units(items):
            try:
                facts.add(unit.tree)
            except Exception:  # pragma: no cover - defensive
                pass

    if not isinstance(policy, ScanPolicy):
        policy = ScanPolicy()
    walker = _Walker(policy, facts)
    walker.reporting = False
    walker.cell_lines = _lines(_source_text(preamble))
    try:
        walker.run_items(pre_items)
    except Exception:  # pragma: no cover - defensive
        walker.scopes = walker.scopes[:1]
    walker.reporting = True
    for idx, src, items in prepared:
        walker.cell = idx
        walker.cell_lines = _lines(src)
        try:
            walker.run_items(items)
        except Exception as e:  # never raise: hand the cell to a person
            walker.scopes = walker.scopes[:1]
            key = (idx, 1, "syntax")
            walker.findings.setdefault(key, Finding(
                UNPARSABLE, "syntax", idx, 1,
                f"This cell could not be checked automatically (internal scanner error: "
                f"{type(e).__name__}); a person will review it."))
    findings = list(walker.findings.values()) + large_literals(cell_list)
    return sorted(findings, key=lambda f: (f.cell, f.line, f.rule))


def large_literals(cells: list[tuple[int, str]]) -> list[Finding]:
    """One finding per cell that carries a very long string or bytes literal (an encoded blob)."""
    found = []
    for idx, src in cells:
        try:
            tree = ast.parse(src)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue  # IPython syntax or broken code: the walker reports what it can
        blob = next((node for node in ast.walk(tree) if isinstance(node, ast.Constant)
                     and isinstance(node.value, (str, bytes)) and len(node.value) > MAX_LITERAL_CHARS), None)
        if blob is not None:
            found.append(Finding(SUSPICIOUS, "encoded-blob", idx, blob.lineno,
                                 f"a literal of {len(blob.value):,} characters: encoded data (weights?) in a cell "
                                 "is reviewed by a person"))
    return found
