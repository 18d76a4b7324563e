"""The local head's ports: all distinct, since a head whose two components got the same port fails to
start (``ray start``: "trying to use a port number … that is used by other components")."""

from __future__ import annotations

from ray_jobs.local_cluster import free_ports


def test_free_ports_are_distinct():
    # probing one port at a time and releasing it gave a repeated port among 500 in 20 of 20 tries here
    ports = free_ports(500)
    assert len(set(ports)) == 500 and all(1024 < p < 65536 for p in ports)
