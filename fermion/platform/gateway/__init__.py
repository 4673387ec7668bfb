"""The gateways: `/run/<deployment>/...` to a ready replica, in Python (`proxy`) or HAProxy (`haproxy`), and what they count."""
