"""Real servers the storage tests start: an HTTP file server with ranges, moto's S3 server, a js-ipfs node."""
