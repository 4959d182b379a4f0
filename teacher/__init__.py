"""The teacher: pure curriculum policies, learning-progress signals and IRT difficulty.

Modules: `progress` (ALP, EMA, window slope), `policies` (registry, `make_policy`),
`bandits` and `lp_zpd` (the policies), `difficulty` (1PL/2PL IRT). numpy and scipy only.
"""
