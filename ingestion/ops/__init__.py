"""Running the engine as a service: loading the user's app, the local cluster, the demo."""
