"""The span of the training rows, from their Gram matrix: coordinates for an L2-penalised
linear model without copying the feature matrix or forming a basis of the span.

For a loss that sees the weights only through ``x @ w + b`` and an ``||w||²`` penalty, the
optimal ``w`` lies in the span of the centred training rows; any factor ``G = Z Zᵀ`` of their
Gram matrix ``G`` gives coordinates ``Z`` on which the fit has the same optimum as on the raw
features (an isometry of the span). :func:`centred_gram` computes ``G`` in float32 column
chunks straight from the matrix and its row indices; :func:`factor` takes a pivoted Cholesky
factor of it, whose pivot rows are a basis of the span, so that fits map back to raw
features (:meth:`RowFactor.raw_weights`) and other rows get coordinates from their inner
products with those rows alone (:meth:`RowFactor.coordinates`).

No library call fits: scikit-learn's ``PCA`` (the path of ``run_search(c_path=False)``) copies
the training rows and takes their full SVD, which needs a ``d x n`` basis and most of that
search's time and memory on wide features. The Gram needs one column chunk besides itself, and
a pivoted Cholesky factor (LAPACK ``dpstrf``) of it is several times cheaper than ``eigh``,
whose orthogonal coordinates save a solver fewer steps than they cost (figures:
docs/performance.md, ``scripts/bench_classify.py --shared``; the method: docs/logreg-path.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Columns per chunk of :func:`centred_gram`: a chunk of a few thousand rows stays near 100 MB.
BLOCK_COLUMNS = 4096

#: Row blocks of the Gram products: only the blocks on and below the diagonal are multiplied,
#: ``(b + 1) / 2b`` of the full product, with each product still large enough for BLAS to run
#: near its peak (``ssyrk``, which should halve the work, ran slower than the full ``gemm``;
#: docs/performance.md).
ROW_BLOCKS = 3

#: Pivots whose remaining squared norm falls below this fraction of the largest row's are
#: dropped as numerically null: a float32 Gram is good to about 1e-7 relative per entry, so a
#: row within it of the span of the others (a duplicate image, the last row after centring)
#: is its rounding error, and keeping it would amplify that error when mapping back.
RANK_TOLERANCE = 1e-5

#: The same for a float64 Gram (of float64 features): exact to about 1e-16, so only rows
#: within 1e-12 of the others' span are null there.
RANK_TOLERANCE_FLOAT64 = 1e-12


Source = tuple[np.ndarray, np.ndarray]


def compute_dtype(sources: Sequence[Source]) -> type:
    """float64 for float64 features (kept as precise as they are), float32 otherwise (float16
    features are multiplied in float32)."""
    return np.float64 if any(matrix.dtype == np.float64 for matrix, _ in sources) else np.float32


def _stacked(sources: Sequence[Source], columns: slice) -> np.ndarray:
    """The rows of ``sources`` (each ``(matrix, row indices)``), in order, at ``columns``."""
    dtype = compute_dtype(sources)
    parts = [np.asarray(matrix[rows, columns], dtype=dtype) for matrix, rows in sources]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def n_rows(sources: Sequence[Source]) -> int:
    """How many rows ``sources`` stack."""
    return sum(len(rows) for _, rows in sources)


def centred_gram(
    sources: Sequence[Source], *, block_columns: int = BLOCK_COLUMNS, row_blocks: int = ROW_BLOCKS
) -> tuple[np.ndarray, np.ndarray]:
    """The Gram matrix (float64, ``n x n``) of the stacked rows of ``sources``, centred on
    their mean, and that mean (float64, ``d``).

    ``sources`` are ``(matrix, row indices)`` pairs: the training rows of ``X``, and with
    ``--augment`` those of the mirrored features too. The rows are read a chunk of columns at
    a time and centred per column (no cancellation, as centring the Gram afterwards would
    suffer from in float32), so the memory is one chunk besides the Gram.

    Examples
    --------
    >>> X = np.arange(12, dtype=np.float32).reshape(4, 3)
    >>> G, mean = centred_gram([(X, np.array([0, 2]))])
    >>> G.tolist(), mean.tolist()
    ([[27.0, -27.0], [-27.0, 27.0]], [3.0, 4.0, 5.0])
    """
    n = n_rows(sources)
    d = sources[0][0].shape[1]
    gram = np.zeros((n, n))
    mean = np.empty(d)
    edges = np.linspace(0, n, min(row_blocks, n) + 1).astype(int)
    blocks = [slice(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    for start in range(0, d, block_columns):
        columns = slice(start, min(start + block_columns, d))
        chunk = _stacked(sources, columns)
        centre = chunk.mean(axis=0, dtype=np.float64)
        mean[columns] = centre
        chunk -= centre.astype(chunk.dtype)
        for i, rows_i in enumerate(blocks):
            for rows_j in blocks[: i + 1]:
                gram[rows_i, rows_j] += chunk[rows_i] @ chunk[rows_j].T
    lower = np.tril(gram)
    return lower + np.tril(lower, -1).T, mean


@dataclass
class RowFactor:
    """A pivoted Cholesky factor ``G[order][:, order] = L Lᵀ`` of a centred Gram matrix.

    Attributes
    ----------
    order : ndarray of int
        The Gram's rows in pivot order; the first ``rank`` are a basis of the span.
    lower : ndarray, float64, ``(n, rank)``
        ``L``: row ``i`` holds the coordinates of Gram row ``order[i]``.
    """

    order: np.ndarray
    lower: np.ndarray

    @property
    def rank(self) -> int:
        """The dimension of the span."""
        return self.lower.shape[1]

    @property
    def basis_rows(self) -> np.ndarray:
        """The Gram rows whose centred features span the rest."""
        return self.order[: self.rank]

    def coords(self, dtype: type = np.float32) -> np.ndarray:
        """The coordinates (``n x rank``) of every Gram row, in the Gram's order: their inner
        products equal the Gram's."""
        z = np.empty((len(self.order), self.rank), dtype=dtype)
        z[self.order] = self.lower
        return z

    def coordinates(self, products: np.ndarray, dtype: type = np.float32) -> np.ndarray:
        """Coordinates of other centred rows, from their inner products with the
        basis rows (``products[:, j]`` with row ``basis_rows[j]``): those of their projection
        on the span, all that a weight vector in the span sees."""
        from scipy.linalg import solve_triangular

        square = self.lower[: self.rank]
        return solve_triangular(square, np.asarray(products, dtype=np.float64).T, lower=True).T.astype(dtype)

    def dual(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The same weights as ``weights`` (``k x rank``, on the coordinates) as a combination
        of the centred basis rows: those rows (Gram rows) and their coefficients (float64,
        ``rank x k``), ``w = X_c[rows]ᵀ L11⁻ᵀ weightsᵀ``.

        Examples
        --------
        >>> f = factor(np.array([[4.0, 2.0], [2.0, 5.0]]))
        >>> rows, mixing = f.dual(np.array([[1.0, 0.0]]))
        >>> rows.tolist(), mixing.round(6).ravel().tolist()
        ([1, 0], [0.447214, 0.0])
        """
        from scipy.linalg import solve_triangular

        mixing = solve_triangular(self.lower[: self.rank], np.asarray(weights, dtype=np.float64).T,
                                  lower=True, trans="T")
        return self.basis_rows, mixing

    def raw_weights(self, weights: np.ndarray, sources: Sequence[Source], mean: np.ndarray,
                    *, block_columns: int = BLOCK_COLUMNS) -> np.ndarray:
        """Weights on the raw features (float64, ``k x d``) equal to ``weights`` (``k x rank``)
        on the coordinates (:meth:`dual`, over the centred stacked rows of ``sources``, read a
        chunk of columns at a time).

        The logits ``x @ w + b`` then equal ``z @ weightsᵀ + b`` for ``z`` the coordinates of
        ``x - mean``.
        """
        basis, mixing = self.dual(weights)
        ascending = np.argsort(basis, kind="stable")  # read in the matrices' order, mixed alike
        mixing = mixing[ascending].astype(compute_dtype(sources))
        picked = _pick(sources, basis[ascending])
        d = sources[0][0].shape[1]
        raw = np.empty((mixing.shape[1], d))
        for start in range(0, d, block_columns):
            columns = slice(start, min(start + block_columns, d))
            chunk = _stacked(picked, columns)
            chunk -= mean[columns].astype(chunk.dtype)  # centred first: no cancellation after
            raw[:, columns] = (chunk.T @ mixing).T
        return raw


def _pick(sources: Sequence[Source], stacked_rows: np.ndarray) -> list[Source]:
    """``sources`` narrowed to some of their stacked rows, in the order given."""
    offsets = np.cumsum([0] + [len(rows) for _, rows in sources])
    picked = []
    for (matrix, rows), start, stop in zip(sources, offsets[:-1], offsets[1:], strict=True):
        mine = stacked_rows[(stacked_rows >= start) & (stacked_rows < stop)]
        if len(mine):
            picked.append((matrix, np.asarray(rows)[mine - start]))
    return picked if picked else [(sources[0][0], np.asarray([], dtype=int))]


def rank_tolerance(dtype: type) -> float:
    """:func:`factor`'s tolerance for a Gram computed in ``dtype`` (:func:`compute_dtype`).

    Examples
    --------
    >>> rank_tolerance(np.float32), rank_tolerance(np.float64)
    (1e-05, 1e-12)
    """
    return RANK_TOLERANCE_FLOAT64 if dtype == np.float64 else RANK_TOLERANCE


def factor(gram: np.ndarray, *, tolerance: float = RANK_TOLERANCE) -> RowFactor:
    """The pivoted Cholesky factor of a centred Gram matrix, numerically null directions
    dropped (:data:`RANK_TOLERANCE`).

    Examples
    --------
    >>> f = factor(np.array([[4.0, 2.0, -6.0], [2.0, 1.0, -3.0], [-6.0, -3.0, 9.0]]))
    >>> f.rank, f.basis_rows.tolist()
    (1, [2])
    >>> (f.coords() @ f.coords().T).tolist()
    [[4.0, 2.0, -6.0], [2.0, 1.0, -3.0], [-6.0, -3.0, 9.0]]
    """
    from scipy.linalg import lapack

    gram = np.asarray(gram, dtype=np.float64)
    if len(gram) == 0:
        return RowFactor(np.arange(0), np.zeros((0, 0)))
    top = float(np.max(np.diag(gram)))
    if top <= 0:
        return RowFactor(np.arange(len(gram)), np.zeros((len(gram), 0)))
    lower, piv, rank, info = lapack.dpstrf(gram, tol=tolerance * top, lower=1)
    if info < 0:
        raise ValueError(f"dpstrf: argument {-info} is invalid")
    return RowFactor(piv - 1, np.tril(lower[:, :rank]))
