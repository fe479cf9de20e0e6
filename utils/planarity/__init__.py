"""Chapter 1: a two-layer transformer that tells planar graphs on 10 vertices from non-planar ones.

- :mod:`utils.planarity.data`: labelled random graphs ``G(10, m)``, special sets, the committed
  validation set;
- :mod:`utils.planarity.model`: the HookedTransformer that reads an adjacency matrix;
- :mod:`utils.planarity.train`: ``python -m utils.planarity train``.
"""
