"""Storage: key syntax, the one S3 adapter, artifact stores (file://, s3://), checked entries, local files.

Knows no CGAN key: what is where is cgan.layout's.
"""
