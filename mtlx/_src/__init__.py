"""mtlx's private core: Jacobian types, Gramian linear algebra, T x T solvers, transform builders."""
