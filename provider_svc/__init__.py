"""The publisher's public front door.

Authenticates consumers, checks assets and algorithms, hands jobs to the operator, and serves status,
logs and results to each job's owner only.
"""
