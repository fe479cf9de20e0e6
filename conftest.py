"""Makes the repository root importable (``import utils``) for the tests and nbval runs."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import utils  # noqa: E402,F401 - silences TransformerLens's deprecation warning once
