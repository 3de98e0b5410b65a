"""ASGI 3.0 in the event MPM: applications, their scopes, lifespan and WebSockets."""
