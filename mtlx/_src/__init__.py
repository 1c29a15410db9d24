"""mtlx's private core: Jacobian types, the weighting value and its builder, Gramian algebra, solvers."""
