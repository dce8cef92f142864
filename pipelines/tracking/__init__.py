"""What reaches MLflow: runs and their tags, carbon figures, the model registry, published
summaries, run comparison, and run leases that mark a killed run as killed."""
