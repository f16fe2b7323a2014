"""Import and export of items, interactions and feedback as JSONL, CSV and Parquet."""
