"""Chapter 1: a two-layer transformer that tells planar graphs on 10 vertices from non-planar ones.

- :mod:`utils.planarity.data`: labelled random graphs ``G(10, m)``, special sets, the committed
  validation set;
- :mod:`utils.planarity.model`: the HookedTransformer that reads an adjacency matrix;
- :mod:`utils.planarity.train`: ``python -m utils.planarity train``.
"""

CIRCUIT: tuple[str, ...] = ("0.0", "0.3", "0.4", "0.7", "1.0", "1.1", "1.2", "1.5", "1.6", "1.7", "MLP 0", "MLP 1")
"""The circuit notebook 1.2 claims, as component names (``"L.h"`` heads, ``"MLP L"``).

Everything outside it (the other six heads) can be mean-ablated, per vertex position with the
validation graphs as reference, keeping >= 95% accuracy and >= 80% of the signed logit difference
on fresh graphs; notebook 1.2 measures that, and how it moves with the ablation choice.
"""
