"""The networks (ResNet-32/110, the paper's CNN, ...).

The code lives in ``noisylabels/models.py``; this file keeps ``import models`` working from a clone's root,
as the authors' scripts had it. Installed, import it as ``from noisylabels import models``.
"""

import sys

from noisylabels import models as _impl

sys.modules[__name__] = _impl
