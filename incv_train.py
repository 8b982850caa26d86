"""INCV selection, then the modified Co-teaching (sections 3-4): ``python incv_train.py --help``.

The code lives in ``noisylabels/incv_train.py`` (installed as the ``incv-train`` command); this file lets a
clone run it as ``python incv_train.py ...``. Example::

    python incv_train.py --dataset cifar10
"""

import sys

from noisylabels import incv_train as _impl

if __name__ == "__main__":
    _impl.entry_point()
else:
    # `import incv_train` from a clone gives the package's module itself, not a second copy
    sys.modules[__name__] = _impl
