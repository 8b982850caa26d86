"""Label noise: the transition matrices T, corrupting labels, the theory's closed forms.

The code lives in ``noisylabels/noise.py``; this file keeps ``import noise`` working from a clone's root,
as the authors' scripts had it. Installed, import it as ``from noisylabels import noise``.
"""

import sys

from noisylabels import noise as _impl

sys.modules[__name__] = _impl
