"""Shared code for the Three Circuits course.

Chapters import what they need from here; everything specific to TransformerLens lives in this
package so that a port to another TransformerLens version touches one place.
"""

from __future__ import annotations

import warnings

# TransformerLens 3.9 warns about its upcoming 4.x API; the course runs on 3.9 and 4.x (its models
# are built on utils.transformer, which 4.x keeps working), so the warning tells a learner
# nothing they can act on. Silence it once, here.
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"transformer_lens(\..*)?")
warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*[Tt]ransformer[_ ]?[Ll]ens.*")

from utils.checkpoints import CheckpointError, load_config, load_metrics, load_model  # noqa: E402
from utils.device import get_device  # noqa: E402

__all__ = ["CheckpointError", "get_device", "load_config", "load_metrics", "load_model"]
