"""The commands: ``python -m bench run|resume|report|check|list|show|latent|perf``, and the driver
that runs a plan's units and then writes the report."""
