"""Labelled graphs for the planarity task.

A graph on ``N_VERTICES = 10`` vertices is given to the model as its adjacency matrix: a
``[10, 10]`` tensor of 0/1 floats, symmetric, zero on the diagonal. Its label is 1 when the graph
is planar and 0 when it is not, as decided by :func:`networkx.check_planarity`.

The training distribution is ``G(10, m)``, a graph drawn uniformly among those with exactly ``m``
edges, for ``m = 15 .. 20``, with exactly half of the graphs planar for each ``m``. Planarity gets
rarer as ``m`` grows (about 87% of ``G(10, 15)`` is planar, 10% of ``G(10, 20)``), so the edge
count alone gets about 50% right on this mix and the model has to look at the structure.

Every sampler is deterministic given its seed, whatever the number of worker processes: the
graphs for edge count ``m`` come in chunks of ``CHUNK_DRAWS`` draws, chunk ``c`` seeded by
``(seed, m, c)``, and a sampler keeps the first graphs of each class in chunk order.
"""

from __future__ import annotations

import atexit
import math
import multiprocessing
import os
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import networkx as nx
import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from utils.files import atomic_path

N_VERTICES = 10
N_PAIRS = N_VERTICES * (N_VERTICES - 1) // 2  # 45 possible edges
TRAIN_EDGE_COUNTS: tuple[int, ...] = tuple(range(15, 21))
EVAL_EDGE_COUNTS: tuple[int, ...] = tuple(range(11, 25))
TRAIN_SIZE = 94_992  # 6 edge counts x 2 classes x 7,916
VALIDATION_SIZE = 4_992  # 6 edge counts x 2 classes x 416
TRAIN_SEED = 1
VALIDATION_SEED = 2
CHUNK_DRAWS = 250
MAX_PLANAR_EDGES = 3 * N_VERTICES - 6  # 24: more edges than this is never planar
MIN_NON_PLANAR_EDGES = 9  # K3,3 has 9 edges: fewer than this is always planar

REPO_ROOT = Path(__file__).resolve().parents[2]
VALIDATION_PATH = REPO_ROOT / "data" / "planarity" / "validation.npz"
GENERATED_DIR = REPO_ROOT / "data" / "generated"

# Upper-triangle vertex pairs (i < j) in row-major order: edge slot k joins _ROWS[k] and _COLS[k].
_ROWS, _COLS = np.triu_indices(N_VERTICES, k=1)


class GraphBatch(NamedTuple):
    """A batch of labelled graphs; unpack as ``adjacency, labels, edge_counts = batch``."""

    adjacency: Float[Tensor, "graph vertex vertex"]
    """0/1 adjacency matrices, symmetric, zero diagonal."""
    labels: Int[Tensor, "graph"]
    """1 when the graph is planar, 0 when it is not."""
    edge_counts: Int[Tensor, "graph"]
    """Number of edges of each graph."""

    def to(self, device: str | torch.device) -> "GraphBatch":
        """The same batch on ``device``."""
        return GraphBatch(*(tensor.to(device) for tensor in self))

    def select(self, indices: Int[Tensor, "subset"] | slice) -> "GraphBatch":
        """The graphs at ``indices``."""
        return GraphBatch(*(tensor[indices] for tensor in self))


class MisclassifiedGraphs(NamedTuple):
    """Graphs a model gets wrong, each with networkx's proof of the right answer."""

    adjacency: Float[Tensor, "graph vertex vertex"]
    labels: Int[Tensor, "graph"]
    """The true labels (1 = planar); the model predicted the other class."""
    edge_counts: Int[Tensor, "graph"]
    certificates: list[nx.Graph]
    """``check_planarity(G, counterexample=True)[1]``: a Kuratowski subgraph (a subdivision of
    K5 or K3,3) for a non-planar graph, a planar embedding for a planar one."""
    draws: int
    """How many random graphs were examined to find these."""


# --------------------------------------------------------------------------------------------
# Conversions between networkx graphs, adjacency matrices and packed edge sets


def adjacency_from_graph(
    graph: nx.Graph, n_vertices: int = N_VERTICES, pad: bool = False
) -> Float[Tensor, "vertex vertex"]:
    """The ``[n_vertices, n_vertices]`` 0/1 adjacency matrix of an undirected simple graph.

    Vertices are taken in sorted order when they can be sorted (``0 .. 9`` for the course's
    graphs). A graph with fewer vertices is padded with isolated vertices only when ``pad=True``
    (isolated vertices change nothing about planarity).
    """
    if not isinstance(graph, nx.Graph):
        raise ValueError(
            f"expected a networkx.Graph, got {type(graph).__name__}; build one with networkx, "
            "e.g. nx.petersen_graph()"
        )
    if graph.is_directed() or graph.is_multigraph():
        raise ValueError(
            f"expected a simple undirected graph, got a {type(graph).__name__}; convert it with "
            "nx.Graph(G.to_undirected())"
        )
    if nx.number_of_selfloops(graph):
        raise ValueError(
            "the graph has self-loops; remove them with "
            "G.remove_edges_from(nx.selfloop_edges(G))"
        )
    size = graph.number_of_nodes()
    if size > n_vertices or (size < n_vertices and not pad):
        fix = (
            f"pass pad=True to add {n_vertices - size} isolated vertices"
            if size < n_vertices
            else "the model only reads graphs this size"
        )
        raise ValueError(f"the graph has {size} vertices but {n_vertices} are expected; {fix}")
    try:
        nodes = sorted(graph.nodes)
    except TypeError:
        nodes = list(graph.nodes)
    adjacency = torch.zeros(n_vertices, n_vertices)
    if size:
        adjacency[:size, :size] = torch.from_numpy(
            nx.to_numpy_array(graph, nodelist=nodes, weight=None, dtype=np.float32)
        )
    return adjacency


def graph_from_adjacency(adjacency: Float[Tensor, "vertex vertex"]) -> nx.Graph:
    """The networkx graph of one adjacency matrix, with vertices ``0 .. n-1``."""
    matrix = torch.as_tensor(adjacency).detach().cpu()
    if matrix.ndim != 2:
        raise ValueError(
            f"expected one adjacency matrix [n, n], got shape {tuple(matrix.shape)}; "
            "pass adjacency[i] for graph i of a batch"
        )
    graph = nx.Graph()
    graph.add_nodes_from(range(matrix.shape[0]))
    rows, cols = torch.nonzero(torch.triu(matrix, diagonal=1), as_tuple=True)
    graph.add_edges_from(zip(rows.tolist(), cols.tolist()))
    return graph


def adjacency_from_edge_masks(edge_masks: Bool[np.ndarray, "graph 45"]) -> Float[Tensor, "graph 10 10"]:
    """Adjacency matrices from boolean masks over the 45 upper-triangle vertex pairs."""
    masks = torch.from_numpy(np.ascontiguousarray(edge_masks, dtype=np.float32))
    adjacency = torch.zeros(masks.shape[0], N_VERTICES, N_VERTICES)
    adjacency[:, _ROWS, _COLS] = masks
    adjacency[:, _COLS, _ROWS] = masks
    return adjacency


def edge_masks_from_adjacency(adjacency: Float[Tensor, "graph 10 10"]) -> Bool[np.ndarray, "graph 45"]:
    """The inverse of :func:`adjacency_from_edge_masks`: which of the 45 pairs are edges."""
    return adjacency.detach().cpu()[:, _ROWS, _COLS].numpy() > 0.5


def planarity_labels(adjacency: Float[Tensor, "*graph vertex vertex"]) -> Int[Tensor, "graph"]:
    """1 for each planar graph, 0 for each non-planar one (networkx's check_planarity)."""
    matrices = torch.as_tensor(adjacency).detach().cpu()
    matrices = matrices.reshape(-1, *matrices.shape[-2:])
    return torch.tensor(
        [int(nx.check_planarity(graph_from_adjacency(matrix))[0]) for matrix in matrices],
        dtype=torch.long,
    )


def batch_from_adjacency(adjacency: Float[Tensor, "*graph vertex vertex"]) -> GraphBatch:
    """Label a stack of adjacency matrices (or one) with networkx: a :class:`GraphBatch`."""
    matrices = torch.as_tensor(adjacency, dtype=torch.float32).detach().cpu()
    matrices = matrices.reshape(-1, *matrices.shape[-2:])
    edge_counts = (matrices.sum(dim=(1, 2)) / 2).round().long()
    return GraphBatch(matrices, planarity_labels(matrices), edge_counts)


def _batch_from_masks(
    edge_masks: Bool[np.ndarray, "graph 45"], labels: Bool[np.ndarray, "graph"]
) -> GraphBatch:
    return GraphBatch(
        adjacency_from_edge_masks(edge_masks),
        torch.from_numpy(labels.astype(np.int64)),
        torch.from_numpy(edge_masks.sum(axis=1).astype(np.int64)),
    )


# --------------------------------------------------------------------------------------------
# The chunked sampler behind every random set


def _is_planar(edge_slots: Sequence[int]) -> bool:
    graph = nx.Graph()
    graph.add_edges_from(zip(_ROWS[edge_slots].tolist(), _COLS[edge_slots].tolist()))
    return nx.check_planarity(graph)[0]


def draw_chunk(
    seed: int, edge_count: int, chunk_index: int, n_draws: int = CHUNK_DRAWS
) -> tuple[Bool[np.ndarray, "draw 45"], Bool[np.ndarray, "draw"]]:
    """Chunk ``chunk_index`` of the stream of ``G(10, edge_count)`` graphs for ``seed``.

    Returns the edge masks and planarity of ``n_draws`` graphs, each uniform among the graphs
    with ``edge_count`` edges. The same arguments give the same chunk on any machine, and a
    smaller ``n_draws`` gives the first rows of the same chunk.
    """
    generator = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(edge_count, chunk_index)))
    edge_slots = np.argsort(generator.random((n_draws, N_PAIRS)), axis=1)[:, :edge_count]
    edge_masks = np.zeros((n_draws, N_PAIRS), dtype=bool)
    np.put_along_axis(edge_masks, edge_slots, True, axis=1)
    planar = np.fromiter((_is_planar(np.flatnonzero(mask)) for mask in edge_masks), bool, n_draws)
    return edge_masks, planar


def _draw_chunk_task(task: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    return draw_chunk(*task)


def default_workers() -> int:
    """Worker processes for graph generation: one per CPU core this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_POOL: Any = None
_POOL_WORKERS = 0


def _close_pool() -> None:
    global _POOL, _POOL_WORKERS
    if _POOL is not None:
        _POOL.close()
        _POOL.join()
        _POOL, _POOL_WORKERS = None, 0


def _map_chunks(tasks: list[tuple[int, int, int, int]], workers: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Run chunk tasks ``(seed, m, chunk, n_draws)`` in order; in a process pool (kept for the
    rest of the process) when there are several workers and enough tasks to pay for it."""
    global _POOL, _POOL_WORKERS
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if workers == 1 or len(tasks) < 8:
        return [_draw_chunk_task(task) for task in tasks]
    if _POOL is None or _POOL_WORKERS != workers:
        _close_pool()
        methods = multiprocessing.get_all_start_methods()
        # forkserver/spawn rather than fork: the parent may hold CUDA and threads.
        context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        if "forkserver" in methods:
            # Workers fork from a server that has imported this module (and a script's __main__) once.
            context.set_forkserver_preload(["__main__", "utils.planarity.data"])
        _POOL, _POOL_WORKERS = context.Pool(workers), workers
        atexit.register(_close_pool)
    return _POOL.map(_draw_chunk_task, tasks, chunksize=1)


def _sample_classes(
    wanted: dict[int, tuple[int, int]],
    seed: int,
    workers: int = 1,
    max_draws: int | None = None,
) -> dict[int, tuple[np.ndarray, np.ndarray, int]]:
    """For each edge count ``m``, the first ``wanted[m] = (n_planar, n_non_planar)`` graphs of
    each class in the chunk stream of ``(seed, m)``.

    Returns ``{m: (planar_masks, non_planar_masks, draws)}``; a class may come back short when
    ``max_draws`` graphs of that edge count did not contain enough of it.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    found: dict[int, list[list[np.ndarray]]] = {m: [[], []] for m in wanted}
    next_chunk = {m: 0 for m in wanted}
    while True:
        tasks = []
        for m, (n_planar, n_non_planar) in wanted.items():
            have_planar = sum(len(masks) for masks in found[m][0])
            have_non_planar = sum(len(masks) for masks in found[m][1])
            need_planar = max(n_planar - have_planar, 0)
            need_non_planar = max(n_non_planar - have_non_planar, 0)
            drawn = next_chunk[m] * CHUNK_DRAWS
            if (need_planar == 0 and need_non_planar == 0) or (max_draws is not None and drawn >= max_draws):
                continue
            # Draws still needed at the planar fraction seen so far (add-one smoothed), +15%.
            planar_fraction = (have_planar + 1) / (drawn + 2)
            needed = max(need_planar / planar_fraction, need_non_planar / (1 - planar_fraction))
            n_chunks = math.ceil(1.15 * needed / CHUNK_DRAWS)
            if drawn == 0:  # a first look at this edge count before committing to many chunks
                n_chunks = min(n_chunks, workers)
            if max_draws is not None:
                n_chunks = min(n_chunks, math.ceil((max_draws - drawn) / CHUNK_DRAWS))
            tasks += [(seed, m, next_chunk[m] + index, CHUNK_DRAWS) for index in range(n_chunks)]
            next_chunk[m] += n_chunks
        if not tasks:
            break
        for (_, m, _, _), (edge_masks, planar) in zip(tasks, _map_chunks(tasks, workers)):
            found[m][0].append(edge_masks[planar])
            found[m][1].append(edge_masks[~planar])
    empty = np.zeros((0, N_PAIRS), dtype=bool)
    return {
        m: (
            np.concatenate([empty, *found[m][0]])[:n_planar],
            np.concatenate([empty, *found[m][1]])[:n_non_planar],
            next_chunk[m] * CHUNK_DRAWS,
        )
        for m, (n_planar, n_non_planar) in wanted.items()
    }


def _assemble(
    samples: dict[int, tuple[np.ndarray, np.ndarray, int]], seed: int, shuffle: bool = True
) -> GraphBatch:
    masks = np.concatenate([np.concatenate([planar, non_planar]) for planar, non_planar, _ in samples.values()])
    labels = np.concatenate(
        [np.r_[np.ones(len(planar), bool), np.zeros(len(non_planar), bool)] for planar, non_planar, _ in samples.values()]
    )
    if shuffle:
        order = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1_000_000,))).permutation(len(masks))
        masks, labels = masks[order], labels[order]
    return _batch_from_masks(masks, labels)


def _check_edge_counts(edge_counts: Sequence[int]) -> list[int]:
    edge_counts = [int(m) for m in edge_counts]
    if not edge_counts or len(set(edge_counts)) != len(edge_counts):
        raise ValueError(f"edge_counts must be distinct and non-empty, got {edge_counts}")
    for m in edge_counts:
        if not 0 <= m <= N_PAIRS:
            raise ValueError(f"a graph on {N_VERTICES} vertices has 0 to {N_PAIRS} edges, got {m}")
    return edge_counts


# --------------------------------------------------------------------------------------------
# Public samplers


def _resolve_workers(workers: int | None) -> int:
    """``None`` means one process per core; otherwise a positive int (1: no process pool)."""
    if workers is None:
        return default_workers()
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(
            f"workers must be a positive number of processes, got {workers!r}; use workers=1 for no "
            "process pool or workers=None for one per core"
        )
    return int(workers)


def balanced_dataset(
    size: int,
    edge_counts: Sequence[int] = TRAIN_EDGE_COUNTS,
    seed: int = TRAIN_SEED,
    workers: int | None = 1,
) -> GraphBatch:
    """``size`` graphs ``G(10, m)``, the same number for each ``m``, half of them planar for each.

    ``size`` must be a multiple of ``2 * len(edge_counts)`` (12 for the training edge counts).
    The graphs come shuffled. ``workers`` processes label them (``None``: one per core); the
    result does not depend on it.
    """
    edge_counts = _check_edge_counts(edge_counts)
    step = 2 * len(edge_counts)
    if size <= 0 or size % step:
        lower = max(step, size // step * step)
        raise ValueError(
            f"size must be a positive multiple of {step} (2 classes x {len(edge_counts)} edge counts) "
            f"to be exactly balanced, got {size}; use {lower} or {lower + step}"
        )
    for m in edge_counts:
        if not MIN_NON_PLANAR_EDGES <= m <= MAX_PLANAR_EDGES:
            raise ValueError(
                f"G({N_VERTICES}, {m}) has only one class (planar needs m <= {MAX_PLANAR_EDGES}, "
                f"non-planar m >= {MIN_NON_PLANAR_EDGES}); use edge counts in between"
            )
    per_class = size // step
    samples = _sample_classes({m: (per_class, per_class) for m in edge_counts}, seed, _resolve_workers(workers))
    return _assemble(samples, seed)


def gnm_batches(
    edge_counts: Sequence[int], n_graphs: int, seed: int = 0, workers: int | None = 1
) -> dict[int, GraphBatch]:
    """The natural mix: for each ``m``, the first ``n_graphs`` draws of ``G(10, m)``, any class.

    The same graphs as ``gnm_batch(m, n_graphs, seed, balanced=False)``, labelled in one go.
    """
    edge_counts = _check_edge_counts(edge_counts)
    if n_graphs <= 0:
        raise ValueError(f"n_graphs must be positive, got {n_graphs}")
    tasks = [
        (seed, m, index, min(CHUNK_DRAWS, n_graphs - index * CHUNK_DRAWS))
        for m in edge_counts for index in range(math.ceil(n_graphs / CHUNK_DRAWS))
    ]
    results = _map_chunks(tasks, _resolve_workers(workers))
    batches = {}
    for m in edge_counts:
        chunks = [result for task, result in zip(tasks, results) if task[1] == m]
        batches[m] = _batch_from_masks(
            np.concatenate([edge_masks for edge_masks, _ in chunks]), np.concatenate([planar for _, planar in chunks])
        )
    return batches


def gnm_batch(
    edge_count: int,
    n_graphs: int,
    seed: int = 0,
    balanced: bool = True,
    max_draws: int = 200_000,
    workers: int | None = 1,
) -> GraphBatch:
    """``n_graphs`` graphs ``G(10, edge_count)``.

    ``balanced=True`` gives exactly half planar, half not, by keeping the first graphs of each
    class among random draws. That is cheap for ``m = 13 .. 22``, but one class is rare at the
    ends of ``11 .. 24`` (about 1 graph in 1,400 is non-planar at ``m = 11``, 1 in 4,000 planar
    at ``m = 24``) and absent outside ``9 .. 24``: when ``max_draws`` draws do not hold enough
    of the rare class this raises ``ValueError`` rather than return a lopsided batch.
    ``balanced=False`` gives the natural mix: the first ``n_graphs`` draws, any class.
    """
    edge_count = _check_edge_counts([edge_count])[0]
    if n_graphs <= 0:
        raise ValueError(f"n_graphs must be positive, got {n_graphs}")
    if not balanced:
        return gnm_batches([edge_count], n_graphs, seed, workers)[edge_count]
    if n_graphs % 2:
        raise ValueError(f"a balanced batch needs an even n_graphs, got {n_graphs}; use {n_graphs + 1}")
    if not MIN_NON_PLANAR_EDGES <= edge_count <= MAX_PLANAR_EDGES:
        missing = "non-planar" if edge_count < MIN_NON_PLANAR_EDGES else "planar"
        raise ValueError(
            f"no graph on {N_VERTICES} vertices with {edge_count} edges is {missing}, so the batch cannot "
            "be balanced; pass balanced=False"
        )
    half = n_graphs // 2
    samples = _sample_classes({edge_count: (half, half)}, seed, _resolve_workers(workers), max_draws=max_draws)
    planar, non_planar, draws = samples[edge_count]
    for kind, masks in (("planar", planar), ("non-planar", non_planar)):
        if len(masks) < half:
            raise ValueError(
                f"only {len(masks)} of {draws:,} draws of G({N_VERTICES}, {edge_count}) were {kind}, "
                f"{half} needed; ask for fewer graphs, raise max_draws, or pass balanced=False"
            )
    return _assemble(samples, seed)


def _one_class_batch(
    n_graphs: int, planar: bool, edge_counts: Sequence[int], seed: int, workers: int | None
) -> GraphBatch:
    edge_counts = _check_edge_counts(edge_counts)
    if n_graphs <= 0:
        raise ValueError(f"n_graphs must be positive, got {n_graphs}")
    shares = [n_graphs // len(edge_counts) + (index < n_graphs % len(edge_counts)) for index in range(len(edge_counts))]
    wanted = {m: ((share, 0) if planar else (0, share)) for m, share in zip(edge_counts, shares)}
    samples = _sample_classes(wanted, seed, _resolve_workers(workers), max_draws=200_000)
    kind = "planar" if planar else "non-planar"
    for m, (planar_masks, non_planar_masks, draws) in samples.items():
        got, needed = (len(planar_masks), wanted[m][0]) if planar else (len(non_planar_masks), wanted[m][1])
        if got < needed:
            raise ValueError(
                f"only {got} of {draws:,} draws of G({N_VERTICES}, {m}) were {kind}, {needed} needed; "
                f"choose edge counts where {kind} graphs are common"
            )
    return _assemble(samples, seed)


def planar_batch(
    n_graphs: int, edge_counts: Sequence[int] = TRAIN_EDGE_COUNTS, seed: int = 0, workers: int | None = 1
) -> GraphBatch:
    """``n_graphs`` planar graphs, spread evenly over ``G(10, m)`` for ``m`` in ``edge_counts``."""
    return _one_class_batch(n_graphs, True, edge_counts, seed, workers)


def non_planar_batch(
    n_graphs: int, edge_counts: Sequence[int] = TRAIN_EDGE_COUNTS, seed: int = 0, workers: int | None = 1
) -> GraphBatch:
    """``n_graphs`` non-planar graphs, spread evenly over ``G(10, m)`` for ``m`` in ``edge_counts``."""
    return _one_class_batch(n_graphs, False, edge_counts, seed, workers)


def named_graphs(seed: int = 0) -> dict[str, Float[Tensor, "vertex vertex"]]:
    """Well-known graphs as 10-vertex adjacency matrices (smaller ones padded with isolated vertices).

    Planar: ``cycle`` (C10), ``path``, ``star`` (one centre, 9 leaves), ``wheel`` (hub + C9),
    ``empty``, ``k4``. Non-planar: ``petersen``, ``complete`` (K10), ``k5``, ``k33`` (K3,3).
    ``random`` is ``G(10, 19)`` drawn with ``seed`` (either class).
    """
    graphs = {
        "petersen": nx.petersen_graph(),
        "cycle": nx.cycle_graph(N_VERTICES),
        "complete": nx.complete_graph(N_VERTICES),
        "empty": nx.empty_graph(N_VERTICES),
        "star": nx.star_graph(N_VERTICES - 1),
        "path": nx.path_graph(N_VERTICES),
        "wheel": nx.wheel_graph(N_VERTICES),
        "k4": nx.complete_graph(4),
        "k5": nx.complete_graph(5),
        "k33": nx.complete_bipartite_graph(3, 3),
        "random": nx.gnm_random_graph(N_VERTICES, 19, seed=seed),
    }
    return {name: adjacency_from_graph(graph, pad=True) for name, graph in graphs.items()}


@torch.no_grad()
def misclassified_graphs(
    model: torch.nn.Module,
    n_graphs: int = 8,
    edge_counts: Sequence[int] = TRAIN_EDGE_COUNTS,
    seed: int = 0,
    max_draws: int = 60_000,
    batch_size: int = 4_096,
) -> MisclassifiedGraphs:
    """Up to ``n_graphs`` random graphs ``G(10, m)``, ``m`` in ``edge_counts``, that ``model`` gets wrong.

    Draws chunks of graphs for each edge count in turn (the natural mix of classes for each
    ``m``) until ``n_graphs`` mistakes are found or ``max_draws`` graphs were tried: a good
    model makes few mistakes, so fewer may come back (``draws`` says how many were looked at).
    Each comes with networkx's certificate of its true class.
    """
    edge_counts = _check_edge_counts(edge_counts)
    if n_graphs <= 0:
        raise ValueError(f"n_graphs must be positive, got {n_graphs}")
    device = next(model.parameters()).device
    wrong_masks, wrong_labels, draws, chunk_index = [], [], 0, 0
    while sum(len(masks) for masks in wrong_masks) < n_graphs and draws < max_draws:
        for m in edge_counts:
            edge_masks, planar = draw_chunk(seed, m, chunk_index)
            draws += len(edge_masks)
            adjacency = adjacency_from_edge_masks(edge_masks).to(device)
            predictions = torch.cat(
                [model(part).argmax(dim=-1) for part in adjacency.split(batch_size)]
            ).cpu().numpy()
            wrong = predictions != planar.astype(np.int64)
            wrong_masks.append(edge_masks[wrong])
            wrong_labels.append(planar[wrong])
        chunk_index += 1
    masks = np.concatenate([np.zeros((0, N_PAIRS), bool), *wrong_masks])[:n_graphs]
    labels = np.concatenate([np.zeros(0, bool), *wrong_labels])[:n_graphs]
    batch = _batch_from_masks(masks, labels)
    certificates = [
        nx.check_planarity(graph_from_adjacency(matrix), counterexample=True)[1] for matrix in batch.adjacency
    ]
    return MisclassifiedGraphs(*batch, certificates=certificates, draws=draws)


def relabel_vertices(
    adjacency: Float[Tensor, "graph vertex vertex"], generator: torch.Generator | None = None
) -> Float[Tensor, "graph vertex vertex"]:
    """Each graph with its vertices renamed by its own random permutation (same graph, new order)."""
    n_graphs, n_vertices = adjacency.shape[0], adjacency.shape[-1]
    order = torch.rand(n_graphs, n_vertices, generator=generator, device=adjacency.device).argsort(dim=1)
    rows = order[:, :, None].expand(-1, -1, n_vertices)
    columns = order[:, None, :].expand(-1, n_vertices, -1)
    return adjacency.gather(1, rows).gather(2, columns)


# --------------------------------------------------------------------------------------------
# The committed validation set and the cached training set


def save_graph_set(path: str | Path, batch: GraphBatch, **metadata: int | list[int]) -> Path:
    """Write a labelled set compactly: 45 edge bits packed into 6 bytes per graph, in an ``.npz``."""
    path = Path(path)
    masks = edge_masks_from_adjacency(batch.adjacency)
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:  # a crash keeps the old file
        np.savez_compressed(
            handle,
            packed_edges=np.packbits(masks, axis=1),
            labels=batch.labels.numpy().astype(np.uint8),
            n_vertices=np.int64(N_VERTICES),
            **{key: np.asarray(value, dtype=np.int64) for key, value in metadata.items()},
        )
    return path


def _load_npz(path: Path, fix: str) -> dict[str, np.ndarray]:
    if not path.exists():
        raise FileNotFoundError(f"graph set {path} is missing; {fix}") from None
    try:
        with np.load(path) as archive:
            contents = {key: archive[key] for key in archive.files}
        masks = np.unpackbits(contents["packed_edges"], axis=1, count=N_PAIRS).astype(bool)
    except Exception as error:  # noqa: BLE001 - any failure to read means a bad file
        raise ValueError(f"graph set {path} cannot be read ({type(error).__name__}: {error}); {fix}") from None
    if int(contents["n_vertices"]) != N_VERTICES or len(masks) != len(contents["labels"]):
        raise ValueError(f"graph set {path} does not hold labelled 10-vertex graphs; {fix}")
    contents["edge_masks"] = masks
    return contents


def load_graph_set(path: str | Path, fix: str = "regenerate it") -> tuple[GraphBatch, dict[str, Any]]:
    """Read a set written by :func:`save_graph_set`: the graphs and their metadata."""
    contents = _load_npz(Path(path), fix)
    batch = _batch_from_masks(contents["edge_masks"], contents["labels"].astype(bool))
    metadata = {
        key: value.tolist() for key, value in contents.items()
        if key not in {"packed_edges", "labels", "edge_masks", "n_vertices"}
    }
    return batch, metadata


def make_validation_set(path: str | Path = VALIDATION_PATH, workers: int | None = None) -> Path:
    """Generate the committed validation set (``python -m utils.planarity make-data``).

    The file is replaced only once all ``VALIDATION_SIZE`` graphs, exactly balanced, are in
    hand, and atomically: whatever goes wrong, the committed set is never replaced by less.
    """
    batch = balanced_dataset(VALIDATION_SIZE, TRAIN_EDGE_COUNTS, VALIDATION_SEED, workers)
    counts = {(m, label) for m in TRAIN_EDGE_COUNTS for label in (0, 1)}
    per_class = VALIDATION_SIZE // len(counts)
    for m, label in counts:
        got = int(((batch.edge_counts == m) & (batch.labels == label)).sum())
        if got != per_class:
            raise ValueError(
                f"generated {got} {'planar' if label else 'non-planar'} graphs with {m} edges, {per_class} "
                f"expected; {Path(path)} was left unchanged (report this as a bug)"
            )
    return save_graph_set(
        path, batch, seed=VALIDATION_SEED, edge_counts=list(TRAIN_EDGE_COUNTS), chunk_draws=CHUNK_DRAWS
    )


def load_validation_set(path: str | Path = VALIDATION_PATH) -> GraphBatch:
    """The committed validation set: 4,992 graphs ``G(10, m)``, ``m = 15 .. 20``, half planar per ``m``.

    Its generation seed, edge counts and chunk size are recorded in the file (see
    :func:`load_graph_set`): ``balanced_dataset(4992, edge_counts, seed)`` regenerates it.
    """
    return load_graph_set(path, "regenerate it with `python -m utils.planarity make-data`")[0]


def training_set(
    size: int = TRAIN_SIZE, seed: int = TRAIN_SEED, workers: int | None = None, cache: bool = True
) -> GraphBatch:
    """The training set: ``balanced_dataset(size, TRAIN_EDGE_COUNTS, seed)``.

    With ``cache=True`` it is kept in ``data/generated/`` (git-ignored) after the first call, so
    a resumed run does not label the graphs again.
    """
    path = GENERATED_DIR / f"planarity_train_{size}_seed{seed}_chunk{CHUNK_DRAWS}.npz"
    if cache and path.exists():
        try:
            batch, metadata = load_graph_set(path)
            if metadata.get("seed") == seed and len(batch.labels) == size:
                return batch
        except (ValueError, FileNotFoundError):
            pass  # a damaged cache is simply regenerated
    batch = balanced_dataset(size, TRAIN_EDGE_COUNTS, seed, workers)
    if cache:
        save_graph_set(path, batch, seed=seed, edge_counts=list(TRAIN_EDGE_COUNTS), chunk_draws=CHUNK_DRAWS)
    return batch
