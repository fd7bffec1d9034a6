"""The built-in add-on providers: real engines behind Heroku's partner API v3.

``slipway-addons serve`` runs on a host of the "add-ons" role (``slipway up``
embeds it). It starts the engines it serves (PostgreSQL: one cluster for every
add-on of the host, see ``postgres.py`` for why) and answers the controller
over HTTPS exactly as a third-party provider would:

    partner.py     the HTTPS server: routes, Basic auth per service, idempotency
    resources.py   what was provisioned, one JSON file per add-on (0600)
    postgres.py    the PostgreSQL cluster and its backend (database + role each)
    manifest.py    the manifest an operator registers (``addons:register``)

Nothing here imports a daemon: the controller talks to it only over the
partner API, like to any other provider.
"""
