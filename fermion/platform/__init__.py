"""The control plane (`fermion up`): deployments, replicas, the gateway, tokens and the store.

Being built; see ../shared/DESIGN.md. Layering: this package imports `fermion.serving` only
through the `fermion serve` command it starts; a replica knows nothing of the platform.
"""
