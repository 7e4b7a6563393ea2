"""The scanner's policy as data: which dotted names, attribute names, builtins
and IPython magics are forbidden or suspicious, and under which rule.

:data:`API_RULES` maps a pattern over fully qualified dotted names to a rule
id and a detail for the message; :func:`classify` returns the first row that
matches.  Adding a forbidden API is one row there, e.g.
``("torch.distributions.**", "autograd", "")``; adding another forbidden
library is one word in :data:`ML_LIBRARIES`.  The other name sets are read by
the rules in :mod:`.rules` (attribute names, builtins, magics).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Optional

# --------------------------------------------------------------------------
# Name sets
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
#: modules that look inside Python, or run code on another thread, out of the guard's sight
INTROSPECTION_MODULES = frozenset({"gc", "inspect", "threading", "_thread", "concurrent", "sysconfig", "weakref"})
#: attributes that reach a function's variables, a type's insides or the running frames
INTROSPECTION_ATTRS = frozenset({
    "__closure__", "__globals__", "__code__", "__mro__", "__bases__", "__subclasses__", "__dict__",
    "__defaults__", "__kwdefaults__", "f_back", "f_globals", "f_locals", "tb_frame", "gi_frame", "cr_frame",
})

#: bare builtins
DYNAMIC_BUILTINS = frozenset({"exec", "eval", "compile", "__import__"})
EXIT_BUILTINS = frozenset({"exit", "quit"})
ATTR_BUILTINS = frozenset({"getattr", "setattr", "delattr", "hasattr"})
NAMESPACE_BUILTINS = frozenset({"globals", "locals", "vars"})
#: methods that change a namespace dictionary (``globals().update(...)``)
NAMESPACE_MUTATORS = frozenset({
    "update", "__setitem__", "setdefault", "pop", "__delitem__", "clear", "popitem",
})
#: dunder methods that look an attribute up by name
DUNDER_ATTR_METHODS = frozenset({"__getattribute__", "__getattr__", "__setattr__", "__delattr__"})
#: roots of libraries whose calls may take a file path
FILE_LIBRARIES = frozenset({
    "os", "shutil", "pathlib", "glob", "io", "codecs", "torch", "numpy",
    "pandas", "PIL", "matplotlib", "tarfile", "zipfile", "fastai",
    "pickle", "json", "tempfile", "safetensors",
})

#: ``get_ipython()`` methods
IPY_SHELL = frozenset({"system", "system_piped", "system_raw", "getoutput"})
IPY_DYNAMIC = frozenset({
    "input_transformers_post", "input_transformers_cleanup", "ast_transformers", "events",
    "register_magic_function", "register_magics", "set_hook", "set_custom_exc", "compile",
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

IPYTHON = "<ipython>"  # pseudo-path of get_ipython()

# --------------------------------------------------------------------------
# Dotted-name rules
# --------------------------------------------------------------------------

ALLOWED = None  # rule of a row that exempts a name from the rows below it

#: (pattern, rule, detail), first match wins.  A pattern is a dotted name:
#: ``a.b`` matches exactly that name, ``*`` inside a part matches any
#: characters of that part, a ``**`` part any number of parts (so ``a.b.**`` is
#: ``a.b`` and everything under it), and ``<ready-made>`` a part named in
#: READY_MADE (leading/trailing underscores ignored).  In the detail, {root},
#: {last} and {name} are the name's first part, last part and that ready-made part.
API_RULES: list[tuple[str, Optional[str], str]] = [
    # the same objects as torch.no_grad / torch.inference_mode
    ("torch.autograd.no_grad", ALLOWED, ""),
    ("torch.autograd.inference_mode", ALLOWED, ""),
    ("torch.autograd.grad_mode.no_grad", ALLOWED, ""),
    ("torch.autograd.grad_mode.inference_mode", ALLOWED, ""),
    *[(f"{IPYTHON}.{m}.**", "process", "runs a shell command") for m in sorted(IPY_SHELL)],
    *[(f"{IPYTHON}.{m}.**", "dynamic-code", "runs code through the IPython shell")
      for m in sorted(IPY_DYNAMIC)],
    (f"{IPYTHON}.**", ALLOWED, ""),
    ("*.**.<ready-made>.**", "ready-made-function", "{name}"),
    ("torch.autograd.**", "autograd", ""),
    ("torch.func.**", "autograd", ""),
    ("torch._functorch.**", "autograd", ""),
    ("torch.enable_grad", "autograd", ""),
    ("torch.nn.**", "torch.nn", ""),
    ("torch._C._nn.**", "torch.nn", ""),
    ("torch.optim.**", "torch.optim", ""),
    ("torch.distributions.**", "ready-made-function", "distributions (their normalisation is a softmax)"),
    ("torch._C.**", "introspection", "reaches torch's C internals, where the grader's guard does not look"),
    ("torch.ops.**", "introspection", "calls torch's operators directly, where the grader's guard does not look"),
    ("torch.library.**", "introspection", "changes torch's operators"),
    ("torch.hub.**", "network", "downloads pretrained models"),
    ("torch.utils.model_zoo.**", "network", "downloads pretrained models"),
    ("torch.multiprocessing.**", "process", "uses `torch.multiprocessing` to control processes"),
    ("torch.**", ALLOWED, ""),
    ("functorch.**", "autograd", " (functorch)"),
    *[(f"fastai.**.{n}", "fastai-training", "{last}")
      for n in sorted(FASTAI_TRAINING | FASTAI_FIT_METHODS)],
    *[(f"fastai.**.{n}", "torch.nn", " (fastai's ready-made `{last}`)") for n in sorted(FASTAI_LAYERS)],
    *[(f"fastai.**.{n}", "autograd", " (fastai's `{last}`)") for n in sorted(FASTAI_AUTOGRAD)],
    *[(f"fastai.**.{n}", "network", "fastai's `{last}` downloads files") for n in sorted(FASTAI_NETWORK)],
    ("fastai.**", ALLOWED, ""),
    *[(f"{lib}.**", "ml-library", "{root}") for lib in sorted(ML_LIBRARIES)],
    ("scipy.optimize.**", "ml-library", "scipy.optimize"),
    *[(f"{mod}.**", "network", "module `{root}`") for mod in sorted(NETWORK_MODULES)],
    *[(f"{mod}.**", "process", "uses the `{root}` module to control processes")
      for mod in sorted(PROCESS_MODULES)],
    *[(f"os.{f}", "process", "starts or stops a process") for f in sorted(OS_PROCESS)],
    ("os.exec*", "process", "starts or stops a process"),
    ("os.spawn*", "process", "starts or stops a process"),
    ("os.posix_spawn*", "process", "starts or stops a process"),
    ("os.chdir", "file-access", "changes the working directory"),
    ("os.fchdir", "file-access", "changes the working directory"),
    ("sys.modules.**", "dynamic-code", "reaches modules through `sys.modules`"),
    *[(f"sys.{f}", "introspection", "watches or changes the running code")
      for f in ("settrace", "setprofile", "_getframe", "addaudithook", "_current_frames", "setswitchinterval")],
    *[(f"os.{f}", "process", "starts a process group or session that can outlive the notebook")
      for f in ("setsid", "setpgid", "setpgrp", "daemon")],
    *[(f"{mod}.**", "introspection", "uses the `{root}` module") for mod in sorted(INTROSPECTION_MODULES)],
    ("sys.exit.**", "process", "stops the Python process"),
    *[(f"{mod}.**", "dynamic-code", "uses the `{root}` module to load or run code")
      for mod in sorted(DYNAMIC_MODULES)],
    ("concurrent.futures.ProcessPoolExecutor.**", "process", "starts worker processes"),
    ("asyncio.**.create_subprocess*", "process", "starts a process"),
]


def _part_regex(part: str) -> str:
    if part == "<ready-made>":
        names = "|".join(sorted(READY_MADE, key=len, reverse=True))
        return f"_*(?P<name>{names})_*"
    return "[^.]*".join(re.escape(piece) for piece in part.split("*"))


def compile_pattern(pattern: str) -> re.Pattern:
    """Regular expression for one API_RULES pattern (see there)."""
    first, *rest = pattern.split(".")
    regex = _part_regex(first)
    for part in rest:
        # `**` is lazy so that the first ready-made part is the one reported
        regex += r"(?:\.[^.]*)*?" if part == "**" else r"\." + _part_regex(part)
    return re.compile(regex)


_COMPILED = [(compile_pattern(p), rule, detail) for p, rule, detail in API_RULES]


@lru_cache(maxsize=4096)
def classify(path: Optional[str]) -> Optional[tuple[str, str]]:
    """(rule, detail) for a fully qualified dotted name, or None."""
    if not path:
        return None
    for regex, rule, detail in _COMPILED:
        match = regex.fullmatch(path)
        if match:
            if rule is ALLOWED:
                return None
            parts = path.split(".")
            return rule, detail.format(root=parts[0], last=parts[-1], name=match["name"]
                                       if "name" in regex.groupindex else "")
    return None
