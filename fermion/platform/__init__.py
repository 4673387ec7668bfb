"""The control plane (`fermion up`): deployments, replicas, the gateways, tokens and the store, in rooms.

`controlplane` wires them: `api/` (the REST API), `reconciler` and `autoscaler` (what runs),
`gateway/` (`/run/<name>/...` to a replica, in Python or HAProxy), `backends/` (where replicas run),
`store/` (what is remembered), `auth` (who may do what). docs/architecture.md draws the rooms and
the arrows allowed between them. A replica knows nothing of the platform: it is a `fermion serve`
process (or a Ray Serve replica) the platform starts and finds again.
"""
