"""One module per ``rayfolio`` command group.

Each module has ``register(commands)``: it adds its sub-parser(s) to the
``argparse`` sub-parsers action and binds the handler with
``set_defaults(func=...)``; a handler takes the parsed ``argparse.Namespace``
and returns an exit code (or None for 0). Modules import only the standard
library and light rayfolio modules at import time: `rayfolio --help` must not
load torch or Ray's libraries; heavy imports go inside the handlers.
"""

# Order = the order in `rayfolio --help`.
COMMAND_MODULES = ("run", "data", "train", "rl", "forecasts", "explanations", "serve", "experiment", "models",
                   "monitor", "daily", "submit", "audit", "plan")  # fmt: skip
