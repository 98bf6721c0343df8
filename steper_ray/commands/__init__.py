"""What each `steper-ray` command does, as plain functions: config in, summary dict out."""
