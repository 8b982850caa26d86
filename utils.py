"""Plumbing shared by the scripts: seeds, run folders, atomic writes, JSON.

The code lives in ``noisylabels/utils.py``; this file keeps ``import utils`` working from a clone's root,
as the authors' scripts had it. Installed, import it as ``from noisylabels import utils``.
"""

import sys

from noisylabels import utils as _impl

sys.modules[__name__] = _impl
