"""mpmd: Apache httpd's Multi-Processing Modules (prefork, worker, event) for Python web apps."""

__version__ = "0.1.0"
SERVER_SOFTWARE = f"mpmd/{__version__}"
