"""Static policy scan of the code cells a student can edit.

The course forbids autograd and ready-made parts (torch.nn, torch.optim,
softmax/cross-entropy functions, fastai's training machinery, other ML
libraries).  This package finds such uses *statically*: every cell is turned
into plain Python with IPython's ``TransformerManager`` (so ``%timeit``,
``!pip`` and ``%%time`` cells parse), parsed with :mod:`ast`, and walked with
scoped name resolution, so that ``import torch as t; t.nn.Linear`` or
``ag = torch.autograd`` are resolved to their fully qualified names.  Comments
and string literals never count.  Nothing is executed.

Severities
    ``"violation"``  -- costs points (autograd, torch.nn, torch.optim,
    ready-made-function, fastai-training, ml-library);
    ``"suspicious"`` -- for a person to review (dynamic-code, file-access,
    network, process, monkeypatch, encoded-blob);
    ``"unparsable"`` -- the cell could not be parsed (rule ``syntax``).

Static analysis cannot know types, so a few heuristics are used (see
:func:`.rules.is_autograd_use`): ``.backward``/``.grad`` on ``self`` are the
student's own; when the student's classes define a ``backward`` method, a
``x.backward(...)`` call is only reported when it looks like autograd (a
tensor-valued receiver, autograd keywords, or an argument count none of the
student's ``backward`` methods accept).

Layout: :mod:`.cells` (IPython cells -> parsed units), :mod:`.facts` (what the
student defines), :mod:`.resolver` (scopes and dotted names), :mod:`.apis`
(the policy as data), :mod:`.magics` (magics and ``get_ipython()`` calls,
expanded before the walk), :mod:`.rules` (small checks, registered by node
kind, that return what they find), :mod:`.visitor` (the one walk, which turns
the checks' hits into findings), :mod:`.scanner` (entry points).  Every
:class:`Finding` names the check that produced it (``Finding.check``).
"""

from .findings import MAX_LITERAL_CHARS, RULES, SEVERITIES, SUSPICIOUS, UNPARSABLE, VIOLATION, Finding, ScanPolicy
from .scanner import large_literals, scan_cells

__all__ = ["Finding", "ScanPolicy", "scan_cells", "large_literals", "RULES", "SEVERITIES",
           "VIOLATION", "SUSPICIOUS", "UNPARSABLE", "MAX_LITERAL_CHARS"]
