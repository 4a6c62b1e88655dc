"""Where results live: storage paths (directory, s3://, gs://), the results store, the Ray connection."""
