"""Noisy cross-validation, the paper's theory check (sections 1-2): ``python noisy_cv.py --help``.

The code lives in ``noisylabels/noisy_cv.py`` (installed as the ``noisy-cv`` command); this file lets a
clone run it as ``python noisy_cv.py ...``. Example::

    python noisy_cv.py --noise_pattern sym --noisy_ratio 0.5
"""

import sys

from noisylabels import noisy_cv as _impl

if __name__ == "__main__":
    _impl.entry_point()
else:
    # `import noisy_cv` from a clone gives the package's module itself, not a second copy
    sys.modules[__name__] = _impl
