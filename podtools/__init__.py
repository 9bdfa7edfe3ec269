"""Programs that run inside a job's sandbox (or pod): `configure` fetches the inputs, `publish` stores
the outputs and logs. They hold no credentials for the jobs database: they report through their
exit status and a small JSON result file that the engine reads."""
