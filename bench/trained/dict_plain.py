"""The product's dictionary_proposals with ONE change: no row normalization in the search
basis (Ln = L / median row norm instead of L / row norms). Pass L = M = gW V_b (plain
rows) and thresh = K * sigma_k: its internal zero tests are then |M_k q| <= K sigma_k for
unit q, i.e. the noise rule."""
import inspect, textwrap
import numpy as np
from spear.attack import dictionary as _D

_src = inspect.getsource(_D.dictionary_proposals)
_src = _src.replace("norms = xp.linalg.norm(L, axis=1)",
                    "norms = xp.full(L.shape[0], float(xp.median(xp.linalg.norm(L, axis=1))))")
assert "xp.full(L.shape[0]" in _src
_ns = dict(vars(_D))
exec(compile(_src, "dict_plain", "exec"), _ns)
dictionary_proposals_plain = _ns["dictionary_proposals"]
