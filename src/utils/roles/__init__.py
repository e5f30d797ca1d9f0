"""The pipeline's roles: their protocols, and the LLM-backed judge, reverser and conversation roles."""
