"""The control plane's REST API (`/api/v1`): `app.build_api` assembles one router module per resource."""
