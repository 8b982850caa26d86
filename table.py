"""The results table of finished runs: ``python table.py results/``.

The code lives in ``noisylabels/table.py`` (installed as the ``noisy-labels-table`` command); this file lets a
clone run it as ``python table.py ...``. Example::

    python table.py results/
"""

import sys

from noisylabels import table as _impl

if __name__ == "__main__":
    _impl.entry_point()
else:
    # `import table` from a clone gives the package's module itself, not a second copy
    sys.modules[__name__] = _impl
