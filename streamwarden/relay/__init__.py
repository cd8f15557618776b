"""``streamwarden relay``: Alpaca's stream protocols served to an account's own processes over
the one upstream connection per stream kind a connection manager holds.

Modules: :mod:`._protocol` (paths, codecs, the wire form of each message), :mod:`._auth`
(downstream credentials), :mod:`._session` (one client's bounded send queue),
:mod:`._server` (the WebSocket server, one lease per client), :mod:`.command` (the CLI).
"""
