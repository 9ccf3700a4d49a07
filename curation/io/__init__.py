"""Storage: listing input shards, reading records, committing output files. Knows nothing of stages.

Object stores are reached through fsspec. Credentials and endpoints come from the standard places
(environment incl. AWS_ENDPOINT_URL, AWS config/profile), never from our config, so they never reach
logs or the manifest. Throttling (503 SlowDown) and transient errors are retried with bounded
exponential backoff and jitter: botocore's "standard" retry mode, plus s3fs's own retry loop.
"""

import fsspec.config

S3_RETRIES = 10
S3_DEFAULTS = {
    "config_kwargs": {
        "retries": {"max_attempts": S3_RETRIES, "mode": "standard"},
        "connect_timeout": 10,
        "read_timeout": 120,
    },
}

for _name, _value in S3_DEFAULTS.items():
    fsspec.config.conf.setdefault("s3", {}).setdefault(_name, _value)

try:
    import s3fs

    s3fs.S3FileSystem.retries = S3_RETRIES
except ImportError:  # S3 support is optional at import time
    pass
