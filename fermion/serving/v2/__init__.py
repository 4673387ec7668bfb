"""The Open Inference Protocol (KServe v2 REST) over a replica's endpoints: datatypes, signatures, requests, routes."""
