"""helpers.meshes on every torch the course runs on: building and applying the mesh Laplacian warns of nothing.

torch 2.11 (Colab's) warned "Sparse invariant checks are implicitly disabled" from the sparse constructor even
with ``check_invariants=True``; chapter 08 showed it under its first mesh cell. The other checks of the
mesh Laplacian live in test_reaction_diffusion.py."""
import warnings

import torch

from helpers import meshes


def test_the_mesh_laplacian_is_built_moved_and_applied_without_a_warning():
    vertices, faces = meshes.icosphere(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")             # any warning, the sparse one included, fails the test
        laplacian = meshes.MeshLaplacian(vertices, faces)
        state = torch.linspace(-1, 1, 2 * 3 * len(vertices), dtype=torch.float64).reshape(2, 3, len(vertices))
        flow = laplacian(state)                                     # float64 weights
        flow32 = laplacian(state.float())                           # moved to float32 (as on a GPU or MPS)
        dense = laplacian.dense()
    assert flow.shape == state.shape and torch.allclose(flow32.double(), flow, atol=1e-5)
    assert torch.allclose(flow[0], (dense @ state[0].T).T)
    assert laplacian.weights.is_coalesced()
