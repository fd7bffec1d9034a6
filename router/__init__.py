"""slipway-router: the stateless HTTP router in front of every app's web dynos."""
