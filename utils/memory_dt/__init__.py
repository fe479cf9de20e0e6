"""Chapter 2: a decision transformer that solves MiniGrid's memory task from a fixed start.

- :mod:`utils.memory_dt.env`: the registered environment ``MiniGrid-MemoryS7FixedStart-v0``,
  the 980-feature one-hot observation encoding and the names of features and actions;
- :mod:`utils.memory_dt.data`: scripted demonstrations with controlled noise;
- :mod:`utils.memory_dt.model`: the decision transformer (a :mod:`utils.transformer` HookedTransformer)
  and :func:`~utils.memory_dt.model.fold_layer_norm` for analysis;
- :mod:`utils.memory_dt.policy`: playing episodes with the model, and ``evaluate``;
- :mod:`utils.memory_dt.train`: ``python -m utils.memory_dt train``.
"""

#: The heads that carry the instruction from the first view to the turn, found causally in
#: chapter 2.2 (:mod:`utils.memory_dt.mechanism`). Mean-ablated over whole episodes (reference:
#: the four configurations' own contexts, :func:`utils.memory_dt.mechanism.on_path_windows`), the
#: agent fails in at least 2 of the 4 configurations; with every *other* head mean-ablated, or
#: resampled from those four contexts, it still succeeds in all 4. The mean test alone does not
#: single out L0H6, L1H2 or L1H3 (L0H1 with L0H6 passes it, and so do many sets of L0H1 plus random
#: heads); they are members because dropping any one of them makes resampling the rest break play, and
#: because patching shows L0H1's effect passing through L1H2 and L1H3 in the intact model.
#: tests/test_memory_dt_mechanism.py plays those episodes.
CIRCUIT: tuple[str, ...] = ("L0H1", "L0H6", "L1H2", "L1H3")
