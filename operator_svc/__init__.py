"""The job registry: stores jobs, dispatches them to an engine, records and fans out their progress."""
