"""Programs that run inside a job's sandbox (or pod): `configure` fetches the inputs, `publish` stores
the outputs and logs. They hold no credentials for the jobs database: they report through their
exit status and a small JSON result file that the engine reads.

They start in every job, so they import only what they use (no typing, urllib only for http):
the interpreter's start-up is most of a trivial job's overhead.
"""
