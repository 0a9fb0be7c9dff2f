"""The shapesearch job service: a durable job store, the job drivers and the HTTP server."""
