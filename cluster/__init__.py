"""Several processes as one platform: node leases, reaping lost nodes, live-call commands."""
