"""The LLM side: one async client for every role, its pipeline config, bounded concurrency."""
