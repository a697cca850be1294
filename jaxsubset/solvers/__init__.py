"""Numerical solvers shared by the selectors: the greedy engine (:mod:`~jaxsubset.solvers.greedy`),
orthogonal matching pursuit with NNLS on a Gram (:mod:`~jaxsubset.solvers.omp`) and the differentiable
facility-location LP layer (:mod:`~jaxsubset.solvers.convex_layer`)."""
