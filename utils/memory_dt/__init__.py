"""Chapter 2: a decision transformer that solves MiniGrid's memory task from a fixed start.

- :mod:`utils.memory_dt.env`: the registered environment ``MiniGrid-MemoryS7FixedStart-v0``,
  the 980-feature one-hot observation encoding and the names of features and actions;
- :mod:`utils.memory_dt.data`: scripted demonstrations with controlled noise;
- :mod:`utils.memory_dt.model`: the decision transformer (a :mod:`utils.transformer` HookedTransformer)
  and :func:`~utils.memory_dt.model.fold_layer_norm` for analysis;
- :mod:`utils.memory_dt.policy`: playing episodes with the model, and ``evaluate``;
- :mod:`utils.memory_dt.train`: ``python -m utils.memory_dt train``.
"""
