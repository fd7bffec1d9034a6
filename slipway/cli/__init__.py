"""The ``slipway`` command line, Heroku-shaped."""
