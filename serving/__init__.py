"""Ray Serve deployments: FastAPI ingress, ensemble, allocator, risk filters, auth, audit log."""
