"""The publisher's public front door: authenticates consumers, checks assets and algorithms, hands jobs to the operator, serves status, logs and results to each job's owner only."""
