"""The server's routes, one APIRouter per area (sdrt.server.app assembles them): the generation
routes, options and models, listings, progress and health. A route reaches the server's shared
state (config, model manager, worker) by declaring a `Server` parameter (sdrt.server.state)."""
