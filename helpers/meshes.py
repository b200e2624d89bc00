"""Diffusion on a triangle mesh (chapter 08): the same reaction-diffusion rule off the grid.

A reaction-diffusion rule needs only a Laplacian. On a triangle mesh the standard one is the
*cotangent Laplacian*: vertex i exchanges with each neighbour j at the rate
``w_ij = (cot a_ij + cot b_ij) / 2`` (a, b: the two angles opposite the edge), divided by the area
``A_i`` the vertex stands for (a third of its triangles)::

    (L u)_i = (1 / A_i) * sum_j w_ij (u_j - u_i)

It depends only on the mesh's shape, not on how the vertices are numbered or which way the mesh
faces, so a rule that was isotropic on the grid stays isotropic here. On a grid cut into right
triangles it is exactly the 5-point grid Laplacian (the diagonal edges get weight 0). The mesh is
scaled so that its mean edge is one cell long: a pattern then has the size it had on the grid.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def icosphere(subdivisions: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """A sphere of radius 1 made of triangles: an icosahedron whose faces are split in four
    ``subdivisions`` times, new vertices pushed onto the sphere. Returns vertices [N, 3] (float64)
    and faces [F, 3] (int64); ``subdivisions`` 4: 2,562 vertices, 5: 10,242."""
    if not (isinstance(subdivisions, int) and 0 <= subdivisions <= 7):
        raise ValueError(f"subdivisions must be a whole number from 0 to 7, got {subdivisions!r}")
    golden = (1 + math.sqrt(5)) / 2
    vertices = [(-1, golden, 0), (1, golden, 0), (-1, -golden, 0), (1, -golden, 0),
                (0, -1, golden), (0, 1, golden), (0, -1, -golden), (0, 1, -golden),
                (golden, 0, -1), (golden, 0, 1), (-golden, 0, -1), (-golden, 0, 1)]
    faces = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2),
             (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5),
             (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    vertices = [np.array(v, dtype=np.float64) / np.linalg.norm(v) for v in vertices]
    for _ in range(subdivisions):
        middle_of: dict[tuple[int, int], int] = {}

        def middle(i: int, j: int) -> int:
            key = (min(i, j), max(i, j))
            if key not in middle_of:
                point = vertices[i] + vertices[j]
                vertices.append(point / np.linalg.norm(point))
                middle_of[key] = len(vertices) - 1
            return middle_of[key]

        faces = [new for a, b, c in faces
                 for new in ((a, middle(a, b), middle(c, a)), (b, middle(b, c), middle(a, b)),
                             (c, middle(c, a), middle(b, c)), (middle(a, b), middle(b, c), middle(c, a)))]
    return torch.tensor(np.array(vertices)), torch.tensor(faces, dtype=torch.int64)


def grid_mesh(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A flat grid of ``height`` x ``width`` vertices one unit apart (vertex index y * width + x), each
    square cut into two right triangles along the same diagonal."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                            indexing="ij")
    vertices = torch.stack([xs.flatten(), ys.flatten(), torch.zeros(height * width, dtype=torch.float64)], 1)
    faces = []
    for y in range(height - 1):
        for x in range(width - 1):
            a, b, c, d = y * width + x, y * width + x + 1, (y + 1) * width + x, (y + 1) * width + x + 1
            faces += [(a, b, d), (a, d, c)]
    return vertices, torch.tensor(faces, dtype=torch.int64)


def edges(faces: torch.Tensor) -> torch.Tensor:
    """Every edge of the mesh once, [E, 2] with the smaller index first."""
    pairs = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return torch.unique(pairs.sort(dim=1).values, dim=0)


def mean_edge_length(vertices: torch.Tensor, faces: torch.Tensor) -> float:
    pairs = edges(faces)
    return (vertices[pairs[:, 0]] - vertices[pairs[:, 1]]).norm(dim=1).mean().item()


class MeshLaplacian:
    """The cotangent Laplacian of a triangle mesh, applied to states ``[batch, channels, vertices]``.

    ``weights`` (a sparse symmetric [N, N] matrix of w_ij), ``areas`` [N] and ``degree`` [N] (the sum of
    each row of weights) are kept; ``laplacian(state)`` returns ``(W u - degree * u) / area``."""

    def __init__(self, vertices: torch.Tensor, faces: torch.Tensor, unit_edges: bool = True):
        vertices = vertices.to(torch.float64)
        if unit_edges:                  # one cell per edge: a pattern keeps the size it had on the grid
            vertices = vertices / mean_edge_length(vertices, faces)
        self.vertices, self.faces = vertices, faces
        count = len(vertices)
        corners = vertices[faces]                                       # [F, 3 corners, 3 coordinates]
        rows, cols, values = [], [], []
        for k in range(3):               # the angle at corner k is opposite the edge (i, j)
            i, j = faces[:, (k + 1) % 3], faces[:, (k + 2) % 3]
            a = corners[:, (k + 1) % 3] - corners[:, k]
            b = corners[:, (k + 2) % 3] - corners[:, k]
            cotangent = (a * b).sum(dim=1) / torch.linalg.cross(a, b).norm(dim=1)
            rows += [i, j]
            cols += [j, i]
            values += [cotangent / 2, cotangent / 2]
        # Opting in to the invariant checks explicitly, by the context manager: torch 2.11 warns "Sparse
        # invariant checks are implicitly disabled" even when given check_invariants=True; this is silent
        # on every version (and the checks cost nothing worth measuring at this size).
        with torch.sparse.check_sparse_tensor_invariants(enable=True):
            weights = torch.sparse_coo_tensor(torch.stack([torch.cat(rows), torch.cat(cols)]), torch.cat(values),
                                              (count, count)).coalesce()
        area = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]).norm(dim=1) / 2
        thirds = area.repeat_interleave(3) / 3                       # each corner stands for a third
        self.areas = torch.zeros(count, dtype=torch.float64).index_add_(0, faces.flatten(), thirds)
        self.weights = weights
        self.degree = torch.zeros(count, dtype=torch.float64).index_add_(0, weights.indices()[0], weights.values())

    def largest_eigenvalue(self, state: torch.Tensor | None = None) -> float:
        """The largest |eigenvalue| of L, which limits a stable step's diffusion speed (``helpers.checks``;
        ``state`` is accepted for that interface and ignored). Computed once, by power iteration on the
        symmetric ``A^-1/2 (W - degree) A^-1/2`` (the same eigenvalues as L), with a 1 % margin upwards
        for what 500 iterations may leave."""
        if getattr(self, "_largest", None) is None:
            scale = self.areas.rsqrt()
            vector = torch.randn(len(scale), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
            for _ in range(500):
                vector = vector / vector.norm()
                image = scale * ((self.weights @ (scale * vector)[:, None])[:, 0] - self.degree * scale * vector)
                rayleigh = float(vector @ image)
                vector = image
            self._largest = 1.01 * abs(rayleigh)
        return self._largest

    def dense(self) -> torch.Tensor:
        """L as a dense [N, N] matrix (small meshes only: for tests and pictures)."""
        return (self.weights.to_dense() - torch.diag(self.degree)) / self.areas[:, None]

    def __call__(self, state: torch.Tensor) -> torch.Tensor:
        if state.dim() != 3 or state.shape[-1] != len(self.areas):
            raise ValueError(f"a mesh state is [batch, channels, {len(self.areas)} vertices], "
                             f"got {tuple(state.shape)}")
        batch, channels, count = state.shape
        weights, degree, areas = self._on(state.device, state.dtype)
        columns = state.reshape(batch * channels, count).T                              # [N, B*C]
        flow = (weights @ columns - degree[:, None] * columns) / areas[:, None]
        return flow.T.reshape(batch, channels, count)

    def _on(self, device, dtype) -> tuple:
        """The weights, degrees and areas on ``device`` in ``dtype`` (kept from the last call: a GPU
        run moves them once; Apple's MPS has no float64, so a float32 state gets float32 weights)."""
        key = (device, dtype)
        if getattr(self, "_moved_key", None) != key:
            self._moved = tuple(t.to(device=device, dtype=dtype) for t in (self.weights, self.degree, self.areas))
            self._moved_key = key
        return self._moved


def shaded_face_colours(vertices: torch.Tensor, faces: torch.Tensor, colours: torch.Tensor,
                        light=(0.4, 0.5, 0.8)) -> np.ndarray:
    """Each face's colour (the mean of its vertices' colours [N, 3]) dimmed by how far it turns from
    the light: a simple diffuse shading so the surface reads as 3D. [F, 3] in [0, 1]."""
    corners = vertices[faces].numpy()
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
    centres = corners.mean(axis=1)
    outward = np.sign((normals * (centres - centres.mean(axis=0))).sum(axis=1, keepdims=True))
    direction = np.asarray(light) / np.linalg.norm(light)
    brightness = 0.35 + 0.65 * np.clip((outward * normals) @ direction, 0, 1)
    face_colours = colours.numpy()[faces.numpy()].mean(axis=1)
    return np.clip(face_colours * brightness[:, None], 0, 1)


def draw_mesh(ax, vertices: torch.Tensor, faces: torch.Tensor, colours: torch.Tensor, title: str = "",
              elevation: float = 20.0, azimuth: float = 30.0) -> None:
    """Draw the mesh on a matplotlib 3D axis seen from ``elevation`` and ``azimuth`` (degrees), faces
    coloured from vertex ``colours`` [N, 3] and shaded by a light placed near the viewer."""
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection
    el, az = math.radians(elevation), math.radians(azimuth)
    viewer = (math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el))
    light = np.asarray(viewer) + np.array([0.0, 0.0, 0.6])          # from the viewer, a little from above
    corners = vertices[faces].numpy()
    ax.view_init(elev=elevation, azim=azimuth)
    ax.add_collection3d(Poly3DCollection(corners, facecolors=shaded_face_colours(vertices, faces, colours, light),
                                         edgecolor="none"))
    low, high = vertices.min().item(), vertices.max().item()
    ax.set_xlim(low, high), ax.set_ylim(low, high), ax.set_zlim(low, high)
    ax.set_box_aspect((1, 1, 1))
    ax.set_axis_off()
    ax.set_title(title)
