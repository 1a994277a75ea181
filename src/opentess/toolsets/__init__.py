"""Toolsets: what an agent's ``tools`` value names — search backends, the Wikipedia client, the
guarded web fetcher, and the registry that binds them to agents and executions."""
