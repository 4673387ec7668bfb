"""Entry points that turn a source string into a running replica, above both `fermion.serving` and `fermion.models`.

`python -m fermion.replica.worker` is one worker process of `fermion serve --workers N`, and
`fermion.replica.on_ray:build` the Ray Serve application builder. Each loads its source with
`fermion.sources` and hands the Service to the serving machinery, which never sees a source string.
"""
