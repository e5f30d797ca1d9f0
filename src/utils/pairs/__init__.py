"""Preference data from judged sessions: the pair rules, dataset records, writers and statistics."""
