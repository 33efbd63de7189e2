"""How every Corral service starts, serves and stops: ``run(name, Settings, build)``.

A service's ``__main__`` is ``run("gateway", Settings, serve)``, where ``serve(settings, life)`` is its
composition root (see ``Lifetime`` for what it is given and ``run`` for what happens around it).
"""

from corral.runner.lifetime import Lifetime, Refused
from corral.runner.running import Build, run, serve

__all__ = ["Build", "Lifetime", "Refused", "run", "serve"]
