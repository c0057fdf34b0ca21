"""The system: configuration, checkpoint loading, the stage supervisor, the coordinator, the client API and the CLI."""
