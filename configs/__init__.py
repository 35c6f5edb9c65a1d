"""Named architecture configs, one JSON file each; installed as package data of ``w2v``
(``w2v.configs``) and read by :mod:`w2v.config` through :mod:`importlib.resources`."""
